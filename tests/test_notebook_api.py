"""The library in a notebook: rich displays, one-line figures, progress bars, safe interrupts."""


import numpy as np
import pytest

import hcl_explore as hx
from hcl_explore import figures

RANKS = {("a", "b", "c"): 2, ("a", "b"): 1, ("a",): 1, ("b",): 1, ("c",): 2}


@pytest.fixture(scope="module")
def fitted():
    data, truth = hx.simulate(n=1500, dims={"a": 20, "b": 15, "c": 12}, ranks=RANKS, noise=0.3, missing=0.1, seed=0)
    return data, hx.HCL().fit(data)


def test_displays_are_small_html(fitted):
    data, model = fitted
    lat = hx.Lattice.full(data.modalities)
    for obj, needle in [(lat, "7 candidate nodes"), (data, "1,500 samples"), (model, "a+b"), (hx.HCL(), "not fitted")]:
        h = obj._repr_html_()
        assert needle in h and "<script" not in h and len(h) < 20_000
        assert repr(obj)  # the plain repr still works
    y = (data.observed[:, 0] & (np.arange(data.n_samples) % 2 == 0)).astype(float)
    rng = np.random.default_rng(0)
    y = (model.transform(data)[("a", "b")][:, 0] + rng.normal(size=data.n_samples) > 0).astype(float)
    rep = hx.evaluate_prediction(model, data, y, baselines=["raw"], n_bootstrap=20)
    h = rep._repr_html_()
    assert "selected nodes" in h and "raw features" in h and "<script" not in h


def test_plot_methods_are_the_apps_figures(fitted):
    data, model = fitted
    assert model.plot_hierarchy().to_dict() == figures.model_hierarchy(model).to_dict()
    assert model.plot_variance().to_dict() == figures.variance_figure(model).to_dict()
    assert model.plot_loadings(("a", "b"), top=5).to_dict() == figures.loadings_figure(model, ("a", "b"), top=5).to_dict()
    lat = hx.Lattice.full(data.modalities)
    assert lat.plot().to_dict() == figures.lattice_figure(lat).to_dict()
    assert data.plot_overlap().to_dict() == figures.overlap_figure(data.observed, data.modalities).to_dict()
    assert len(model.plot_objective().data) >= 1


def test_progress_bar_reaches_the_end(fitted, capsys):
    data, _ = fitted
    model = hx.HCL().fit(data, progress=True)
    err = capsys.readouterr().err
    assert "HCL fit" in err and "100%" in err
    assert model.ranks_[("a", "b")] == 1


def test_an_interrupt_leaves_the_estimator_unfitted_and_reusable(fitted):
    data, _ = fitted
    model = hx.HCL().fit(data)

    def interrupt(stage, info):
        if stage == "refine":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model.fit(data, callback=interrupt)
    assert not hasattr(model, "W_") and not hasattr(model, "ranks_")
    with pytest.raises(RuntimeError, match="not fitted"):
        model.transform(data)
    model.fit(data)  # the same object fits again
    assert model.ranks_[("a", "b", "c")] == 2
