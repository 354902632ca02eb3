"""The real multi-view data sets vendored in benchmarks/data/ load whole and consistent."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import hcl_explore as hx

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
_spec = importlib.util.spec_from_file_location("real_data", BENCH / "real_data.py")
rd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rd)  # type: ignore[union-attr]

# name -> (n samples, {view: features}, {label: number of classes})
EXPECTED = {
    "mfeat": (2000, {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}, {"digit": 10}),
    "nutrimouse": (40, {"gene": 120, "lipid": 21}, {"genotype": 2, "diet": 5}),
    "covid_serology": (438, {v: 11 for v in ["S", "RBD", "N", "S1", "S2", "S1_Trimer"]}, {"status": 5}),
}


def test_every_vendored_file_is_listed():
    on_disk = sorted(p.stem for p in (BENCH / "data").glob("*.npz"))
    assert on_disk == sorted(rd.REAL_DATASETS) == sorted(EXPECTED)
    assert (BENCH / "data" / "README.md").is_file()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_load_real_shapes_ids_labels(name):
    n, dims, classes = EXPECTED[name]
    data, labels = rd.load_real(name)
    assert isinstance(data, hx.MultimodalData)
    assert data.n_samples == n
    assert data.modalities == list(dims)
    assert data.dims == dims
    assert data.ids.shape == (n,) and len(np.unique(data.ids)) == n
    assert data.observed.all()
    for m in data.modalities:
        X = data.X[m]
        assert X.shape == (n, dims[m])
        assert np.isfinite(X).all()
        assert len(data.feature_names[m]) == dims[m] and len(set(data.feature_names[m])) == dims[m]
    assert set(labels) == set(classes)
    for k, y in labels.items():
        assert y.shape == (n,)
        assert len(np.unique(y)) == classes[k]


def test_load_real_unknown_name():
    with pytest.raises(ValueError, match="available"):
        rd.load_real("nope")


@pytest.mark.parametrize("name", ["covid_serology", "nutrimouse"])
def test_structure_on_real_data_keeps_only_factors_that_raise_the_heldout_score(name):
    # The first version turned real views into a hairball of factors (one noise level per
    # modality); each factor kept now has to earn its place on rows the fit did not see.
    data, _ = rd.load_real(name)
    rng = np.random.default_rng(0)
    rows = rng.permutation(data.n_samples)
    cut = int(0.8 * data.n_samples)
    train, test = data.subset(np.sort(rows[:cut])), data.subset(np.sort(rows[cut:]))
    model = hx.HCL(ranks="auto").fit(train)
    assert 0 < model.W_.shape[1] <= 40
    base = model.score(test)
    assert np.isfinite(base)
    W = model.W_
    for j in range(W.shape[1]):
        model.W_ = np.delete(W, j, axis=1)
        assert model.score(test) < base, f"dropping factor {j} raised the held-out score"
    model.W_ = W


def test_small_samples_report_only_nodes_that_resamples_find_again():
    # 438 sera x 6 antigens: the fold confirmation alone left four one-factor nodes that 10-60 %
    # of subsamples found; below 1,000 samples an uncertain structure is resampled and keeps only
    # nodes found again, so every node shown is one stability() finds too.
    data, _ = rd.load_real("covid_serology")
    model = hx.HCL(ranks="auto").fit(data)
    res = model.rank_diagnostics_["search"]["resample"]
    assert res["resamples"] == 8 and res["dropped"]
    assert all(res["found"][lab] >= res["need"] for lab in map(hx.node_label, model.nodes_) if "+" in lab)
    st = model.stability(data, n_resamples=10, random_state=1).set_index("node")
    for node in model.nodes_:
        assert st.loc[hx.node_label(node), "found"] >= 0.8, node
