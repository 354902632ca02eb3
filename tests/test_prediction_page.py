"""The Prediction page with outcomes as people name them: a text binary outcome's positive class, a
multi-class outcome with its own labels, the structure note and the warnings (AppTest, no browser)."""

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
from streamlit.testing.v1 import AppTest

import hcl_explore as hx
from hcl_explore import runs

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


def _texts(at) -> str:
    parts = [e.value for e in at.markdown] + [e.value for e in at.caption] + [str(e.value) for e in at.success]
    parts += [str(e.value) for e in at.info] + [str(e.value) for e in at.warning]
    return "\n".join(map(str, parts))


def test_prediction_page_names_the_positive_class_the_classes_and_warns(ws, tmp_path):
    n = 240
    data, truth = hx.simulate(n=n, dims={"a": 8, "b": 6}, ranks={("a", "b"): 1, ("a",): 1, ("b",): 1}, noise=0.3, seed=3)
    ids = [f"P{i}" for i in range(n)]
    paths = {}
    for m in data.modalities:
        df = pd.DataFrame(data.X[m], columns=data.feature_names[m]).round(4)
        df.insert(0, "pid", ids)
        paths[m] = str(tmp_path / f"{m}.csv")
        df.to_csv(paths[m], index=False)
    z = truth.Z[("a", "b")][:, 0]
    digit = np.digitize(z, np.quantile(z, [0.25, 0.5, 0.75]))  # 4 classes, coded 0-3
    out = pd.DataFrame({"pid": ids, "genotype": np.where(z > 0.4, "ppar", "wt"), "stage": digit})
    out.loc[::3, "genotype"] = None  # a third unlabelled: the many-missing warning
    out.to_csv(tmp_path / "out.csv", index=False)
    spec = {"modalities": paths, "id_column": "pid", "outcomes": str(tmp_path / "out.csv"), "name": "page"}
    rid = runs.create_run(ws, {"kind": "fit", "dataset": spec, "lattice": "full", "lattice_name": "full"})
    runs.run_worker(runs.run_path(ws, rid))
    assert runs.read_status(ws, rid)["state"] == "done"
    d = runs.run_path(ws, rid)
    assert runs.read_json(os.path.join(d, "outcome_kinds.json")) == {"genotype": "binary", "stage": "multiclass"}
    # The run's outcome table carries the file's labels (score plots colour by 'wt' / 'ppar', not 0/1).
    assert set(pd.read_csv(os.path.join(d, "outcomes.csv"))["genotype"].dropna()) == {"wt", "ppar"}
    for outcome in ("genotype", "stage"):
        pid = runs.create_run(ws, {"kind": "predict", "parent": rid, "outcome": outcome, "dataset": {"name": "p"},
                                   "options": {"n_bootstrap": 20, "cv": 3, "baselines": ["raw"]}})
        runs.run_worker(runs.run_path(ws, pid))
        assert runs.read_status(ws, pid)["state"] == "done", runs.read_log(ws, pid)

    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = rid
    at.run()
    at.switch_page("pages/prediction.py").run()
    assert not at.exception, at.exception
    text = _texts(at)
    assert "Positive class: **genotype = ppar** (against wt)" in text
    assert "Many missing outcomes" in text
    assert "Same structure as the fitted model" in text
    assert len(at.get("plotly_chart")) == 3

    at.selectbox(key="outcome").set_value("stage").run()
    assert not at.exception, at.exception
    text = _texts(at)
    assert "**4 classes** of stage: 0, 1, 2, 3" in text
    assert {m.label for m in at.metric} == {"AUROC", "Macro-F1", "Accuracy", "Brier score"}
    charts = at.get("plotly_chart")
    assert len(charts) == 3
    import json

    confusion = json.loads(charts[0].proto.spec)
    assert confusion["data"][0]["x"] == ["0", "1", "2", "3"] and "stage" in confusion["layout"]["xaxis"]["title"]["text"]


def test_a_running_evaluation_shows_its_step_elapsed_time_and_time_left(ws, tmp_path):
    """Issue 15: the Prediction page showed "evaluating (predict) ..." and a bare share for the
    whole evaluation; now the step in words with its detail, the elapsed time and the time left,
    as on the Train page."""
    import time

    n = 120
    data, truth = hx.simulate(n=n, dims={"a": 6, "b": 5}, ranks={("a", "b"): 1, ("a",): 1}, noise=0.3, seed=1)
    ids = [f"P{i}" for i in range(n)]
    paths = {}
    for m in data.modalities:
        df = pd.DataFrame(data.X[m], columns=data.feature_names[m]).round(4)
        df.insert(0, "pid", ids)
        paths[m] = str(tmp_path / f"{m}.csv")
        df.to_csv(paths[m], index=False)
    pd.DataFrame({"pid": ids, "y": np.where(truth.Z[("a", "b")][:, 0] > 0, "yes", "no")}).to_csv(tmp_path / "o.csv", index=False)
    spec = {"modalities": paths, "id_column": "pid", "outcomes": str(tmp_path / "o.csv"), "name": "page"}
    rid = runs.create_run(ws, {"kind": "fit", "dataset": spec, "lattice": "shared_private", "lattice_name": "shared_private"})
    runs.run_worker(runs.run_path(ws, rid))
    pid = runs.create_run(ws, {"kind": "predict", "parent": rid, "outcome": "y", "dataset": {"name": "p"}, "options": {}})
    now = time.time()
    runs.write_json(os.path.join(runs.run_path(ws, pid), "status.json"), {
        "state": "running", "created": now - 95, "started": now - 94, "updated": now, "pid": os.getpid(),
        "stage": "predict", "step": "comparing with the baselines", "detail": "baseline 2 of 4", "progress": 0.6,
        "eta_s": 150.0})
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["run"] = rid
    at.run()
    at.switch_page("pages/prediction.py")
    at.session_state["predict_job"] = pid
    at.run()
    assert not at.exception, at.exception
    bar = at.get("progress")[0].proto
    assert "Evaluating: comparing with the baselines (baseline 2 of 4) · 60%" in bar.text
    caps = "\n".join(c.value for c in at.caption)
    assert re.search(r"Elapsed \d+ min · time left \(estimate\): \d+ min", caps), caps
