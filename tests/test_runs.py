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
from workspace_helpers import wait_for_run


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
    st = wait_for_run(ws, rid)
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
    assert wait_for_run(ws, pid)["state"] == "done", runs.read_log(ws, pid)
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
    st = wait_for_run(ws, rid)
    assert st["state"] == "failed" and "bad.csv: looks like a binary file" in st["error"]


def test_cancel_before_start_and_while_running(tmp_path):
    ws = runs.workspace_dir(str(tmp_path / "ws"))
    rid = runs.create_run(ws, {"kind": "fit", "dataset": {"bundled": "clinical"}})
    runs.cancel(ws, rid)
    assert runs.read_status(ws, rid)["state"] == "cancelled"
    rid2 = runs.create_run(ws, {"kind": "fit", "dataset": {"bundled": "clinical"}})
    runs.launch(ws, rid2)
    wait_for_run(ws, rid2, states=("running",) + runs.FINAL)
    runs.cancel(ws, rid2)
    st = wait_for_run(ws, rid2)
    assert st["state"] == "cancelled"
    assert not os.path.exists(os.path.join(runs.run_path(ws, rid2), "model.npz"))


def test_a_killed_worker_is_reported_failed(tmp_path):
    ws = runs.workspace_dir(str(tmp_path / "ws"))
    rid = runs.create_run(ws, {"kind": "fit", "dataset": {"bundled": "clinical"}})
    pid = runs.launch(ws, rid)
    wait_for_run(ws, rid, states=("running",) + runs.FINAL)
    os.kill(pid, signal.SIGKILL)
    st = wait_for_run(ws, rid)
    assert st["state"] == "failed" and "ended unexpectedly" in st["error"]


def test_two_runs_side_by_side_do_not_interfere(tmp_path, small_files):
    ws = runs.workspace_dir(str(tmp_path / "ws"))
    a = runs.create_run(ws, {"kind": "fit", "dataset": small_files, "lattice": "full"})
    b = runs.create_run(ws, {"kind": "fit", "dataset": small_files, "lattice": "shared_private"})
    runs.launch(ws, a)
    runs.launch(ws, b)
    assert wait_for_run(ws, a)["state"] == "done" and wait_for_run(ws, b)["state"] == "done"
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


# ------------------------------------------------------------------------------------ stability
def test_worker_checks_the_structure_stability(tmp_path, small_files):
    ws = runs.workspace_dir(str(tmp_path / "ws"))
    rid = runs.create_run(ws, {"kind": "fit", "dataset": small_files, "lattice": "full",
                               "stability": runs.stability_option(True, 5)})
    assert runs.read_json(os.path.join(runs.run_path(ws, rid), "config.json"))["stability"] == {"n_resamples": 5}
    assert runs.run_worker(runs.run_path(ws, rid)) == 0, runs.read_log(ws, rid)
    assert runs.read_status(ws, rid)["state"] == "done"
    d = runs.run_path(ws, rid)
    recs = json.load(open(os.path.join(d, "stability.json")))  # plain JSON records
    model = hx.HCL.load(os.path.join(d, "model.npz"))
    assert {r["node"] for r in recs} == {hx.lattice.node_label(n) for n in model.lattice_.nodes} and len(recs) == 7
    stab = runs.read_stability(ws, rid)
    assert stab["found"].between(0, 1).all() and stab["same_rank"].between(0, 1).all()
    assert (stab["resamples"] == 5).all()
    assert dict(zip(stab.node, stab["rank"])) == {hx.lattice.node_label(n): r for n, r in model.ranks_.items()}
    assert stab.set_index("node").loc["a+b", "found"] == 1.0  # a true node of this easy data set
    ev = [e for e in runs.read_metrics(ws, rid) if e["stage"] == "stability"]
    assert [e["resample"] for e in ev] == [1, 2, 3, 4, 5]
    stages = [e["stage"] for e in runs.read_metrics(ws, rid)]
    assert stages.index("saved") < stages.index("stability")  # after the model is saved
    table = runs.summary_table(model, stab)
    assert {"found in resamples", "same rank in resamples"} <= set(table.columns) and len(table) == 7
    assert "refitted on 5 random subsamples" in runs.stability_note(stab)
    # Without the option: no check, no file, and the page says so.
    rid2 = runs.create_run(ws, {"kind": "fit", "dataset": small_files, "lattice": "shared_private", "stability": False})
    assert runs.run_worker(runs.run_path(ws, rid2)) == 0
    assert runs.read_stability(ws, rid2) is None
    assert "not computed" in runs.stability_note(None)
    assert "found in" not in " ".join(runs.summary_table(model).columns)


def test_stability_progress_moves_through_its_own_stage(tmp_path):
    from hcl_explore import progress as P

    d = tmp_path / "run"
    d.mkdir()
    runs.write_json(str(d / "status.json"), {"state": "running", "progress": 0.0})
    rep = runs._Reporter(str(d))
    lat = hx.Lattice(["a", "b", "c"])
    rep.set_plan(runs.fit_plan(500, {"a": 10, "b": 10, "c": 10}, lat, {"estimator": "linear"}, 4), max_iter=5000)
    assert rep.tracker.plan.stages[-1] == "stability" and rep.status["planned_s"] > 0
    rep.event("refine", {"iteration": 5, "objective": 1.0})
    rep.event("stability", {"resample": 0, "of": 4})
    fit_end = rep.status["progress"]
    seen = []
    for i in range(1, 5):
        rep.event("stability", {"resample": i, "of": 4})
        seen.append(rep.status["progress"])
        assert rep.status["stage"] == "stability" and rep.status["detail"] == f"resample {i} of 4"
        assert rep.status["step"] == P.words("stability")
    rep.close()
    assert fit_end <= seen[0] <= seen[1] <= seen[2] <= seen[3] <= 0.99


def test_cancel_during_stability_keeps_the_saved_model(tmp_path, small_files, monkeypatch):
    from hcl_explore.model import HCL

    ws = runs.workspace_dir(str(tmp_path / "ws"))
    rid = runs.create_run(ws, {"kind": "fit", "dataset": small_files, "stability": {"n_resamples": 20}})
    d = runs.run_path(ws, rid)
    orig = HCL.stability

    def stability(self, data, **kw):
        cb = kw["callback"]

        def cancel_at_2(stage, info):
            if info.get("resample") == 2:
                runs.cancel(ws, rid)  # the CANCEL file (the worker here is this process: no signal)
            cb(stage, info)
        return orig(self, data, **dict(kw, callback=cancel_at_2))

    monkeypatch.setattr(HCL, "stability", stability)
    monkeypatch.setattr(runs, "_alive", lambda pid: False)  # cancel() must not signal this process
    assert runs.run_worker(d) == 1
    st = runs.read_status(ws, rid)
    assert st["state"] == "cancelled" and st["stage"] == "cancelled"
    assert os.path.exists(os.path.join(d, "model.npz")) and os.path.exists(os.path.join(d, "summary.csv"))
    assert runs.read_stability(ws, rid) is None
    assert max(e.get("resample", 0) for e in runs.read_metrics(ws, rid)) == 1  # stopped at the 2nd


def test_read_stability_absent_or_corrupt_is_none(tmp_path, caplog):
    ws = runs.workspace_dir(str(tmp_path / "ws"))
    rid = runs.create_run(ws, {"kind": "fit", "dataset": {"bundled": "clinical"}})
    assert runs.read_stability(ws, rid) is None
    path = os.path.join(runs.run_path(ws, rid), "stability.json")
    for bad in ('[{"node": "a", "found": 0.5', '{"node": "a"}', '[{"node": "a"}]', '[{"node": "a", "found": "x"}]',
                '[{"node": "a", "found": 3}]', '"text"', "\x00\x01"):
        with open(path, "w") as fh:
            fh.write(bad)
        caplog.clear()
        with caplog.at_level("WARNING", logger="hcl_explore.runs"):
            assert runs.read_stability(ws, rid) is None, bad
        assert "stability.json could not be read" in caplog.text, bad
    runs.write_json(path, [{"node": "a", "rank": 1, "found": 0.75, "same_rank": 0.5, "resamples": 4}])
    assert runs.read_stability(ws, rid).to_dict(orient="records") == \
        [{"node": "a", "rank": 1, "found": 0.75, "same_rank": 0.5, "resamples": 4}]


def test_stability_option_shapes():
    assert runs.stability_option(True) == {"n_resamples": 20} and runs.stability_option(False) is False
    assert runs.stability_option(True, 0) is False
    assert runs.stability_is_fast(20_000, 2_000) and not runs.stability_is_fast(20_001, 10)
    assert not runs.stability_is_fast(100, 2_001) and not runs.stability_is_fast(100, 10, "contrastive")
    assert runs._stability_request({}) is None and runs._stability_request({"stability": False}) is None
    assert runs._stability_request({"stability": True}) == 20 and runs._stability_request({"stability": {"n_resamples": 5}}) == 5
    with pytest.raises(ValueError, match="stability"):
        runs._stability_request({"stability": {"n_resamples": "many"}})


def test_a_run_refuses_a_stored_file_changed_since_upload(tmp_path, small_files):
    from hcl_explore import datasets

    ws = runs.workspace_dir(str(tmp_path / "ws"))
    staged = [datasets.stage_upload(ws, os.path.basename(p), open(p, "rb").read(), id_column="sid")
              for p in small_files["modalities"].values()]
    did = datasets.create_dataset(ws, staged, id_column="sid")
    spec = datasets.dataset_spec(ws, did)
    with open(spec["modalities"]["b"], "ab") as fh:
        fh.write(b"S9999" + b",1" * 10 + b"\n")
    rid = runs.create_run(ws, {"kind": "fit", "dataset": spec})
    assert runs.run_worker(runs.run_path(ws, rid)) == 1
    st = runs.read_status(ws, rid)
    assert st["state"] == "failed" and "b.csv" in st["error"] and "changed after it was uploaded" in st["error"]


# ---------------------------------------------------------------------------------------------
# fault battery: status races, damaged run folders, temporary files
def _running_run(ws, pid):
    rid = runs.create_run(ws, {"kind": "fit", "dataset": {"name": "x"}})
    d = runs.run_path(ws, rid)
    runs.write_json(os.path.join(d, "status.json"), {"state": "running", "pid": pid, "started": 1.0, "stage": "load",
                                                     "progress": 0.0})
    return rid, d


def test_a_done_written_during_the_pid_check_is_never_lost(tmp_path, monkeypatch):
    """The worker writes 'done' (and exits) exactly between read_status's read and its pid check:
    the check must not turn the run into 'failed' afterwards."""
    import threading

    ws = runs.workspace_dir(str(tmp_path / "ws"))
    rid, d = _running_run(ws, 424242)
    lost = 0
    for i in range(60):
        runs.write_json(os.path.join(d, "status.json"), {"state": "running", "pid": 424242, "stage": "load"})
        wrote = threading.Event()

        def worker():
            runs._write_status(d, {"state": "done", "pid": 424242, "stage": "done", "progress": 1.0, "finished": 2.0})
            wrote.set()

        def alive(pid):  # the worker finishes and exits while the checker looks at its pid
            threading.Thread(target=worker).start()
            wrote.wait(0.05)
            return False

        monkeypatch.setattr(runs, "_alive", alive)
        runs.read_status(ws, rid)
        assert wrote.wait(5)
        lost += runs.read_json(os.path.join(d, "status.json"))["state"] != "done"
    assert lost == 0
    monkeypatch.undo()
    assert runs.read_status(ws, rid)["state"] == "done"


def test_real_worker_processes_that_finish_during_polling_keep_done(tmp_path):
    """Forked 'workers' write done (as the worker does) and exit while the parent polls read_status."""
    ws = runs.workspace_dir(str(tmp_path / "ws"))
    rid = runs.create_run(ws, {"kind": "fit", "dataset": {"name": "x"}})
    d = runs.run_path(ws, rid)
    rng = np.random.default_rng(0)
    lost = 0
    for i in range(150):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            try:
                os.close(w)
                os.read(r, 1)
                time.sleep(float(rng.uniform(0, 0.002)))
                runs._write_status(d, {"state": "done", "pid": os.getpid(), "stage": "done", "progress": 1.0})
            finally:
                os._exit(0)
        os.close(r)
        runs.write_json(os.path.join(d, "status.json"), {"state": "running", "pid": pid, "stage": "load"})
        os.write(w, b"x")
        os.close(w)
        while runs.read_status(ws, rid)["state"] not in runs.FINAL:
            pass
        os.waitpid(pid, 0)
        lost += runs.read_status(ws, rid)["state"] != "done"
    assert lost == 0


def test_a_dead_worker_is_still_reported_failed_and_final_states_are_kept(tmp_path):
    ws = runs.workspace_dir(str(tmp_path / "ws"))
    p = __import__("subprocess").Popen(["true"])
    p.wait()
    rid, d = _running_run(ws, p.pid)
    st = runs.read_status(ws, rid)
    assert st["state"] == "failed" and "ended unexpectedly" in st["error"]
    for state in runs.FINAL:
        runs.write_json(os.path.join(d, "status.json"), {"state": state, "pid": p.pid})
        assert runs.read_status(ws, rid)["state"] == state
        runs.cancel(ws, rid)  # cancelling a finished run changes nothing
        assert runs.read_json(os.path.join(d, "status.json"))["state"] == state
    assert not os.path.exists(os.path.join(d, "CANCEL"))


CORRUPT = {
    "list": b"[1, 2, 3]", "string": b'"done"', "number": b"42", "null": b"null", "true": b"true",
    "state_list": b'{"state": ["done"]}', "state_unknown": b'{"state": "weird"}', "no_state": b'{"stage": "x"}',
    "started_str": b'{"state": "done", "started": "yesterday"}', "started_huge": b'{"state": "done", "started": 1e300}',
    "progress_str": b'{"state": "running", "progress": "half", "pid": 1}', "pid_str": b'{"state": "running", "pid": "abc"}',
    "pid_float": b'{"state": "running", "pid": 1.5}', "stage_dict": b'{"state": "done", "stage": {"a": 1}}',
    "error_num": b'{"state": "failed", "error": 3}', "truncated": b'{"state": "do', "binary": b"\x00\xff\xfe\x80garbage",
    "empty": b"", "deep": b"[" * 100000,
}
CORRUPT_CONFIG = {
    "list": b"[]", "string": b'"fit"', "number": b"1", "null": b"null", "kind_num": b'{"kind": 3}',
    "dataset_list": b'{"dataset": ["a"]}', "dataset_name_num": b'{"dataset": {"name": 5}}',
    "lattice_name_dict": b'{"lattice_name": {}}', "truncated": b'{"kind": "fi', "binary": b"\xff\xfe\x00\x01",
}


def _good_run(ws):
    rid = runs.create_run(ws, {"kind": "fit", "dataset": {"name": "good"}, "lattice_name": "full"})
    runs.write_json(os.path.join(runs.run_path(ws, rid), "status.json"),
                    {"state": "done", "started": 1.0e9, "finished": 1.0e9 + 3, "stage": "done", "progress": 1.0})
    return rid


@pytest.mark.parametrize("which,content", [("status.json", c) for c in CORRUPT.values()] +
                         [("config.json", c) for c in CORRUPT_CONFIG.values()],
                         ids=[f"status-{k}" for k in CORRUPT] + [f"config-{k}" for k in CORRUPT_CONFIG])
def test_one_damaged_run_is_listed_broken_and_the_others_work(tmp_path, which, content):
    ws = runs.workspace_dir(str(tmp_path / "ws"))
    good = _good_run(ws)
    bad = runs.create_run(ws, {"kind": "fit", "dataset": {"name": "bad"}}, run_id="zz-bad")
    path = os.path.join(runs.run_path(ws, bad), which)
    with open(path, "wb") as fh:
        fh.write(content)
    table = runs.list_runs(ws)
    assert list(table.columns) == runs.LIST_COLUMNS and len(table) == 2
    row = table.set_index("run_id").loc[bad]
    assert row["state"] == "broken" and which in row["error"]
    ok = table.set_index("run_id").loc[good]
    assert ok["state"] == "done" and ok["dataset"] == "good" and ok["duration_s"] == 3.0 and ok["error"] == ""
    st = runs.read_status(ws, bad)
    if which == "status.json":
        assert st["state"] == "broken" and "status.json" in st["error"]
        assert isinstance(st["progress"], float) and isinstance(st["stage"], str)
    runs.cancel(ws, bad)
    with open(path, "rb") as fh:
        assert fh.read() == content  # a damaged file is reported, never rewritten


def test_write_json_leaves_no_temporary_file_on_failure(tmp_path):
    path = str(tmp_path / "status.json")
    runs.write_json(path, {"state": "queued"})
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError):
        runs.write_json(path, {"bad": loop})  # a circular structure fails half-way through
    assert sorted(os.listdir(tmp_path)) == ["status.json"]
    assert runs.read_json(path) == {"state": "queued"}
    names = {runs._tmp_name(path) for _ in range(100)}
    assert len(names) == 100 and all(str(os.getpid()) in n for n in names)


def test_concurrent_writers_never_share_a_temporary_file(tmp_path):
    import threading

    path = str(tmp_path / "status.json")
    errors = []

    def writer(k):
        try:
            for i in range(50):
                runs.write_json(path, {"writer": k, "i": i, "pad": "x" * 2000})
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(os.listdir(tmp_path)) == ["status.json"]
    assert runs.read_json(path)["i"] == 49


def test_one_config_shape_whoever_writes_it(tmp_path):
    # The Train page (a Lattice), the CLI (a preset name) and an older config (a bare preset
    # string) all become the RunConfig shape; the worker resolves each to the same lattice.
    from hcl_explore.runs import RunConfig
    from hcl_explore.runs import files as RF

    ws = runs.workspace_dir(str(tmp_path / "ws"))
    mods = ["a", "b", "c"]
    page = RunConfig.fit({"bundled": "clinical"}, hx.Lattice.full(mods), {"a+b": 2}, {"estimator": "linear"},
                         lattice_name="full")
    cli = RunConfig.fit({"bundled": "clinical"}, "full", {"a+b": 2}, {"estimator": "linear"})
    old = {"kind": "fit", "dataset": {"bundled": "clinical"}, "lattice": "full", "ranks": {"a+b": 2},
           "params": {"estimator": "linear"}, "note": "kept"}
    written = []
    for cfg in (page, cli, old):
        rid = runs.create_run(ws, cfg)
        written.append(runs.read_json(RF.path(runs.run_path(ws, rid), RF.CONFIG)))
    for w in written:
        assert set(w) >= {"kind", "dataset", "lattice", "lattice_name", "ranks", "params", "stability"}
        assert set(w["lattice"]) <= {"nodes", "preset"} and w["lattice_name"] == "full"
        assert RunConfig.from_dict(w).resolve_lattice(mods).nodes == hx.Lattice.full(mods).nodes
    assert written[2]["note"] == "kept" and written[1]["lattice"] == {"preset": "full"}
    assert RunConfig.from_dict(written[0]).to_dict() == written[0]
