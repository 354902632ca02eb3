"""One contract for every registered estimator (docs/architecture.md): fit sets the documented
attributes, transform / summary / save -> load / get_params behave the same way, and an interrupted
fit leaves the model unfitted. The toy PCA-per-node estimator (tests/toy_estimator.py) is
registered the way a newcomer would, through HCL_EXPLORE_ESTIMATORS."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hcl_explore as hx
from hcl_explore import estimators

ROOT = Path(__file__).resolve().parents[1]
RANKS = {("a", "b", "c"): 1, ("a", "b"): 1, ("a",): 1, ("b",): 1, ("c",): 1}
FAST = {"contrastive": {"max_epochs": 2, "batch_size": 128, "hidden": (16,), "val_fraction": 0.1},
        "linear": {}, "pca_node": {}}


@pytest.fixture(scope="module", autouse=True)
def toy_registered():
    os.environ["HCL_EXPLORE_ESTIMATORS"] = "toy_estimator"
    sys.path.insert(0, str(Path(__file__).parent))
    estimators._DONE = False
    estimators.names()
    yield
    os.environ.pop("HCL_EXPLORE_ESTIMATORS", None)


@pytest.fixture(scope="module")
def data():
    d, _ = hx.simulate(n=600, dims=(12, 10, 8), ranks=RANKS, noise=0.3, seed=0)
    return d


def test_the_registry_holds_the_built_ins_and_the_plugin():
    assert estimators.names()[:2] == ["linear", "contrastive"]
    assert "pca_node" in estimators.names()
    with pytest.raises(ValueError, match="Unknown estimator 'nope'; available"):
        hx.HCL(estimator="nope").fit(hx.simulate(n=50, dims=(3, 3), ranks=1, seed=0)[0])


@pytest.mark.parametrize("name", ["linear", "contrastive", "pca_node"])
def test_contract(name, data, tmp_path):
    lat = hx.Lattice.full(data.modalities)
    full = {n: RANKS.get(n, 0) for n in lat.nodes}
    model = hx.HCL(lattice=lat, ranks=full, estimator=name, device="cpu", **FAST[name]).fit(data)
    R = sum(full.values())
    # the documented fitted attributes
    assert model.modalities_ == data.modalities and model.dims_ == data.dims
    assert model.ranks_ == full and set(model.nodes_) == set(RANKS)
    assert np.asarray(model.W_).shape == (sum(data.dims.values()), R)
    assert model.mean_.shape == model.scale_.shape == (sum(data.dims.values()),)
    # transform: one block per node, finite, in the column order
    Z = model.transform(data)
    assert list(Z) == model.nodes_ and all(Z[n].shape == (data.n_samples, RANKS[n]) for n in Z)
    assert all(np.isfinite(v).all() for v in Z.values())
    # summary: one row per candidate node with its rank
    s = model.summary().set_index("node")
    assert len(s) == len(lat.nodes) and int(s.loc["a+b+c", "rank"]) == 1
    # get_params round trip: an equal, unfitted model
    clone = hx.HCL(**{**model.get_params(), "lattice": lat})
    assert clone.get_params() == model.get_params() and not hasattr(clone, "W_")
    # save -> load: the same transform (no pickle anywhere)
    path = tmp_path / "m.npz"
    model.save(path)
    back = hx.HCL.load(path)
    assert back.estimator == name and back.ranks_ == model.ranks_
    np.testing.assert_allclose(np.concatenate([back.transform(data)[n] for n in back.nodes_], axis=1),
                               np.concatenate([Z[n] for n in model.nodes_], axis=1), rtol=1e-5, atol=1e-6)
    assert back.rank_diagnostics_ == model.rank_diagnostics_
    if name == "contrastive":  # why training stopped survives the file too
        assert model.stop_reason_ in ("patience", "max_epochs", "max_time") and back.stop_reason_ == model.stop_reason_


@pytest.mark.parametrize("name", ["linear", "contrastive", "pca_node"])
def test_an_interrupted_fit_leaves_the_model_unfitted(name, data):
    lat = hx.Lattice.full(data.modalities)

    def stop(stage, info):
        raise KeyboardInterrupt

    model = hx.HCL(lattice=lat, ranks={n: RANKS.get(n, 0) for n in lat.nodes}, estimator=name, device="cpu",
                   **FAST[name])
    with pytest.raises(KeyboardInterrupt):
        model.fit(data, callback=stop)
    assert not any(k.endswith("_") and not k.startswith("_") for k in vars(model))
    with pytest.raises(RuntimeError, match="not fitted"):
        model.transform(data)


def test_transform_checks_feature_names(data):
    model = hx.HCL(ranks=RANKS, lattice=hx.Lattice.full(data.modalities)).fit(data)
    X = {m: data.X[m] for m in data.modalities}
    names = {m: list(data.feature_names[m]) for m in data.modalities}
    names["b"] = names["b"][::-1]
    swapped = hx.MultimodalData(X, ids=data.ids, feature_names=names)
    with pytest.raises(ValueError, match="Modality 'b'.*feature"):
        model.transform(swapped)


def test_the_supervised_head_uses_the_one_outcome_rule(data):
    lat = hx.Lattice.full(data.modalities)
    ranks = {n: RANKS.get(n, 0) for n in lat.nodes}
    y = np.where(data.X["a"][:, 0] > 0, "readmitted", "not readmitted").astype(object)
    y[:50] = None
    m = hx.HCL(lattice=lat, ranks=ranks, estimator="contrastive", **FAST["contrastive"]).fit(data, y=y)
    assert m.task_ == "binary"
    with pytest.raises(ValueError, match="binary or a continuous outcome; this one has 3 classes"):
        hx.HCL(lattice=lat, ranks=ranks, estimator="contrastive", **FAST["contrastive"]).fit(
            data, y=np.array(["x", "y", "z"] * 200, dtype=object))
    with pytest.raises(ValueError, match="unsupervised"):
        hx.HCL(lattice=lat, ranks=ranks).fit(data, y=np.zeros(data.n_samples))
def test_the_toy_estimator_runs_from_the_cli(tmp_path, data):
    folder = tmp_path / "csv"
    folder.mkdir()
    for m in data.modalities:
        pd.DataFrame(data.X[m], index=data.ids, columns=data.feature_names[m]).rename_axis("id") \
            .to_csv(folder / f"{m}.csv")
    env = {**os.environ, "HCL_EXPLORE_ESTIMATORS": "toy_estimator",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(ROOT)])}
    out = tmp_path / "model.npz"
    res = subprocess.run([sys.executable, "-m", "hcl_explore", "fit", *sorted(map(str, folder.glob("*.csv"))),
                          "--estimator", "pca_node", "--ranks", "1", "--out", str(out)],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert importlib.util.find_spec("toy_estimator") is not None
    model = hx.HCL.load(out)
    assert model.estimator == "pca_node" and sum(model.ranks_.values()) > 0
    # An estimator nobody registered: a one-line error that lists the available ones.
    bad = subprocess.run([sys.executable, "-m", "hcl_explore", "fit", *sorted(map(str, folder.glob("*.csv"))),
                          "--estimator", "nope"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert bad.returncode != 0 and "Unknown estimator 'nope'" in bad.stderr and "pca_node" in bad.stderr


def test_the_toy_estimator_runs_in_a_background_app_run(tmp_path, data):
    from hcl_explore import runs
    from workspace_helpers import wait_for_run

    folder = tmp_path / "csv"
    folder.mkdir()
    files = {}
    for m in data.modalities:
        files[m] = str(folder / f"{m}.csv")
        pd.DataFrame(data.X[m], index=data.ids, columns=data.feature_names[m]).rename_axis("id").to_csv(files[m])
    ws = runs.workspace_dir(str(tmp_path / "ws"))
    rid = runs.create_run(ws, {"kind": "fit", "dataset": {"modalities": files}, "lattice": "full",
                               "lattice_name": "full", "ranks": 1,
                               "params": runs.fit_params("pca_node")})
    runs.launch(ws, rid, env={"HCL_EXPLORE_ESTIMATORS": "toy_estimator",
                              "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(ROOT)])})
    st = wait_for_run(ws, rid, timeout=300)
    assert st["state"] == "done", runs.read_log(ws, rid)
    model = hx.HCL.load(os.path.join(runs.run_path(ws, rid), "model.npz"))
    assert model.estimator == "pca_node" and sum(model.ranks_.values()) == 7
