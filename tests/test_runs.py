"""Background runs: a worker process writes the run directory; crashes, cancels and restarts are safe."""

import json
import os
import signal
import time

import numpy as np
import pandas as pd
import pytest

import hcl_explore as hx
from hcl_explore import report, runs
from hcl_explore.cli import main


def wait(ws, rid, states=runs.FINAL, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        st = runs.read_status(ws, rid)
        if st["state"] in states:
            return st
        time.sleep(0.05)
    raise AssertionError(f"run {rid} still {runs.read_status(ws, rid)} after {timeout} s")


@pytest.fixture
def small_files(tmp_path):
    data, truth = hx.simulate(n=800, dims={"a": 12, "b": 10, "c": 8},
                              ranks={("a", "b", "c"): 1, ("a", "b"): 1, ("a",): 1, ("b",): 1, ("c",): 1}, noise=0.3, seed=0)
    paths = {}
    for m in data.modalities:
        df = pd.DataFrame(data.X[m], columns=data.feature_names[m])
        df.insert(0, "sid", [f"S{i}" for i in range(800)])
        paths[m] = str(tmp_path / f"{m}.csv")
        df.to_csv(paths[m], index=False)
    out = pd.DataFrame({"sid": [f"S{i}" for i in range(800)], "y": (truth.Z[("a", "b")][:, 0] > 0).astype(int)})
    out.to_csv(tmp_path / "out.csv", index=False)
    return {"modalities": paths, "id_column": "sid", "outcomes": str(tmp_path / "out.csv"), "name": "small"}


def test_worker_writes_a_complete_run(tmp_path, small_files):
    ws = runs.workspace_dir(str(tmp_path / "ws"))
    rid = runs.create_run(ws, {"kind": "fit", "dataset": small_files, "lattice": "full", "lattice_name": "full"})
    assert runs.read_status(ws, rid)["state"] == "queued"
    runs.launch(ws, rid)
    st = wait(ws, rid)
    assert st["state"] == "done", runs.read_log(ws, rid)
    d = runs.run_path(ws, rid)
    for f in ("config.json", "status.json", "metrics.jsonl", "model.npz", "summary.csv", "scores.npz", "outcomes.csv"):
        assert os.path.exists(os.path.join(d, f)), f
    assert st["progress"] == 1.0 and st["finished"] >= st["started"]
    stages = [e["stage"] for e in runs.read_metrics(ws, rid)]
    assert stages.index("covariance") < stages.index("ranks") < stages.index("refine")
    model = hx.HCL.load(os.path.join(d, "model.npz"))
    assert model.ranks_[("a", "b")] == 1 and model.ranks_[("a", "c")] == 0
    table = runs.list_runs(ws)
    assert table.loc[0, "run_id"] == rid and table.loc[0, "state"] == "done" and table.loc[0, "dataset"] == "small"
    # A predict job evaluates an outcome in the background and files the result with its parent run.
    pid = runs.create_run(ws, {"kind": "predict", "parent": rid, "outcome": "y", "dataset": {"name": "p"},
                               "options": {"n_bootstrap": 20, "baselines": ["raw"]}})
    runs.launch(ws, pid)
    assert wait(ws, pid)["state"] == "done", runs.read_log(ws, pid)
    pred = json.load(open(os.path.join(d, "prediction_y.json")))
    assert pred["task"] == "binary" and pred["counts"]["labelled"] == 800
    # Exports.
    import io
    import zipfile

    z = zipfile.ZipFile(io.BytesIO(report.run_zip(d)))
    assert {"config.json", "summary.csv", "loadings.csv", "scores.csv", "metrics.json"} <= set(z.namelist())
    met = json.loads(z.read("metrics.json"))
    assert "y" in met["predictions"]
    page = report.run_html(d)
    assert page.count("<script") >= 2 and "a+b" in page
    assert "<script src=" not in page  # plotly.js is inlined: the report works offline


def test_failed_run_shows_the_loader_message(tmp_path):
    ws = runs.workspace_dir(str(tmp_path / "ws"))
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\x00\x01\x02binary")
    rid = runs.create_run(ws, {"kind": "fit", "dataset": {"modalities": {"a": str(bad), "b": str(bad)}}})
    runs.launch(ws, rid)
    st = wait(ws, rid)
    assert st["state"] == "failed" and "bad.csv: looks like a binary file" in st["error"]


def test_cancel_before_start_and_while_running(tmp_path):
    ws = runs.workspace_dir(str(tmp_path / "ws"))
    rid = runs.create_run(ws, {"kind": "fit", "dataset": {"bundled": "clinical"}})
    runs.cancel(ws, rid)
    assert runs.read_status(ws, rid)["state"] == "cancelled"
    rid2 = runs.create_run(ws, {"kind": "fit", "dataset": {"bundled": "clinical"}})
    runs.launch(ws, rid2)
    wait(ws, rid2, states=("running",) + runs.FINAL)
    runs.cancel(ws, rid2)
    st = wait(ws, rid2)
    assert st["state"] == "cancelled"
    assert not os.path.exists(os.path.join(runs.run_path(ws, rid2), "model.npz"))


def test_a_killed_worker_is_reported_failed(tmp_path):
    ws = runs.workspace_dir(str(tmp_path / "ws"))
    rid = runs.create_run(ws, {"kind": "fit", "dataset": {"bundled": "clinical"}})
    pid = runs.launch(ws, rid)
    wait(ws, rid, states=("running",) + runs.FINAL)
    os.kill(pid, signal.SIGKILL)
    st = wait(ws, rid)
    assert st["state"] == "failed" and "ended unexpectedly" in st["error"]


def test_two_runs_side_by_side_do_not_interfere(tmp_path, small_files):
    ws = runs.workspace_dir(str(tmp_path / "ws"))
    a = runs.create_run(ws, {"kind": "fit", "dataset": small_files, "lattice": "full"})
    b = runs.create_run(ws, {"kind": "fit", "dataset": small_files, "lattice": "shared_private"})
    runs.launch(ws, a)
    runs.launch(ws, b)
    assert wait(ws, a)["state"] == "done" and wait(ws, b)["state"] == "done"
    ma = hx.HCL.load(os.path.join(runs.run_path(ws, a), "model.npz"))
    mb = hx.HCL.load(os.path.join(runs.run_path(ws, b), "model.npz"))
    assert len(ma.lattice_.nodes) == 7 and len(mb.lattice_.nodes) == 4


def test_run_ids_and_upload_names_are_sanitized(tmp_path):
    ws = runs.workspace_dir(str(tmp_path / "ws"))
    with pytest.raises(ValueError):
        runs.run_path(ws, "../../etc")
    assert runs.sanitize_filename("../../evil name.csv") == "evil_name.csv"
    assert runs.sanitize_filename("..\\x\\.hidden.csv") == "hidden.csv"


def test_cli_run_is_headless_and_writes_the_same_directory(tmp_path, small_files, capsys):
    ws = str(tmp_path / "ws")
    specs = [f"{m}={p}" for m, p in small_files["modalities"].items()]
    assert main(["run", *specs, "--id-column", "sid", "--workspace", ws]) == 0
    out = capsys.readouterr().out
    assert "a+b" in out
    table = runs.list_runs(ws)
    assert list(table.state) == ["done"]
