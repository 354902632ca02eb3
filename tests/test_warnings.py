"""Warnings a careful analyst would give (issue 15, item 4), as plain functions of hcl_explore.report:
more features than samples per modality, nodes the stability check rarely found; and the offline
HTML report that carries them."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

import hcl_explore as hx
from hcl_explore import report, runs


def test_p_greater_than_n_per_modality():
    data, _ = hx.simulate(n=40, dims={"genes": 120, "lipids": 20}, ranks={("genes", "lipids"): 1, ("genes",): 1},
                          noise=0.5, seed=0)
    w = report.data_warnings(data)
    assert len(w) == 1 and w[0].startswith("genes: 120 features but only 40 samples")
    assert report.dims_warnings(100, {"a": 50, "b": 150}, {"a": 100, "b": 120}) == [
        report.dims_warnings(120, {"b": 150})[0]]
    assert report.dims_warnings(100, {"a": 50}) == []


def test_low_stability_nodes_are_flagged():
    stab = pd.DataFrame({"node": ["a+b", "a", "b+c"], "rank": [1, 2, 0], "found": [0.35, 1.0, 0.1],
                         "same_rank": [0.3, 0.9, 0.9], "resamples": 20})
    w = report.stability_warnings(stab)
    assert len(w) == 1 and "a+b is unstable" in w[0] and "7 of 20" in w[0]  # b+c: not found by the fit
    assert report.stability_warnings(None) == [] and report.stability_warnings(stab, threshold=0.3) == []


def test_html_report_has_warnings_and_the_matrix_from_five_modalities(tmp_path):
    mods = ["m0", "m1", "m2", "m3", "m4"]
    data, _ = hx.simulate(n=60, dims={m: 8 for m in mods[:4]} | {"m4": 90},
                          ranks={tuple(mods): 1, **{(m,): 1 for m in mods}}, noise=0.3, seed=0)
    folder = tmp_path / "files"
    folder.mkdir()
    paths = {}
    for m in mods:
        df = pd.DataFrame(data.X[m], columns=data.feature_names[m])
        df.insert(0, "sid", [f"S{i}" for i in range(60)])
        paths[m] = str(folder / f"{m}.csv")
        df.to_csv(paths[m], index=False)
    ws = runs.workspace_dir(str(tmp_path / "ws"))
    rid = runs.create_run(ws, {"kind": "fit", "dataset": {"modalities": paths, "id_column": "sid", "name": "five"},
                               "lattice": "shared_private", "lattice_name": "shared_private"})
    assert runs.run_worker(runs.run_path(ws, rid)) == 0, runs.read_log(ws, rid)
    html = report.run_html(runs.run_path(ws, rid))
    assert "<h2>Warnings</h2>" in html and "m4: 90 features but only 60 samples" in html
    assert "Nodes found (modality × node)" in html
    st = runs.read_status(ws, rid)
    assert st["step"] == "finished" and os.path.exists(os.path.join(ws, "worker_start.json")) is False


def test_structure_page_warns_when_a_modality_has_more_features_than_samples(ws, tmp_path):
    """The Structure page of a run on 40 samples x 120 genes says so (it said nothing before; the
    Data page and the report did)."""
    from streamlit.testing.v1 import AppTest

    data, _ = hx.simulate(n=40, dims={"genes": 120, "lipids": 20}, ranks={("genes", "lipids"): 1, ("genes",): 1},
                          noise=0.5, seed=0)
    paths = {}
    for m in data.modalities:
        df = pd.DataFrame(data.X[m], columns=data.feature_names[m])
        df.insert(0, "sid", [f"S{i}" for i in range(40)])
        paths[m] = str(tmp_path / f"{m}.csv")
        df.to_csv(paths[m], index=False)
    rid = runs.create_run(ws, {"kind": "fit", "dataset": {"modalities": paths, "id_column": "sid", "name": "wide"},
                               "lattice": "full", "lattice_name": "full"})
    assert runs.run_worker(runs.run_path(ws, rid)) == 0, runs.read_log(ws, rid)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=60)
    at.query_params["run"] = rid
    at.run()
    at.switch_page("pages/structure.py").run()
    assert not at.exception, at.exception
    warns = [str(w.value) for w in at.warning]
    assert any("genes: 120 features but only 40 samples" in w for w in warns), warns
    assert not any(w.startswith("lipids") for w in warns)
