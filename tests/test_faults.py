"""Nothing lost: each fault (a damaged run folder beside good ones, a worker killed mid-run, a
cancel) leaves every byte of the good runs as it was, and they stay listed and loadable."""

import os
import signal

import pandas as pd
import pytest

import hcl_explore as hx
from hcl_explore import runs
from workspace_helpers import tree_hashes, wait_for_run

RANKS = {("a", "b"): 1, ("a",): 1, ("b",): 1}


def _files(tmp_path, n, dims, seed):
    data, _ = hx.simulate(n=n, dims=dims, ranks=RANKS, noise=0.3, seed=seed)
    paths = {}
    for m in data.modalities:
        df = pd.DataFrame(data.X[m], columns=data.feature_names[m])
        df.insert(0, "sid", [f"S{i}" for i in range(n)])
        paths[m] = str(tmp_path / f"{m}_{n}.csv")
        df.to_csv(paths[m], index=False)
    return {"modalities": paths, "id_column": "sid", "name": f"sim{n}"}


@pytest.fixture
def workspace(tmp_path):
    """Two good runs, fitted in this process (tiny data)."""
    ws = runs.workspace_dir(str(tmp_path / "ws"))
    spec = _files(tmp_path, 120, {"a": 5, "b": 4}, seed=0)
    good = []
    for _ in range(2):
        rid = runs.create_run(ws, {"kind": "fit", "dataset": spec, "lattice": "full", "lattice_name": "full",
                                   "ranks": "auto"})
        assert runs.run_worker(runs.run_path(ws, rid)) == 0, runs.read_status(ws, rid)
        good.append(rid)
    return ws, good


def _good_snapshot(ws, good):
    return {rid: tree_hashes(runs.run_path(ws, rid)) for rid in good}


def _check_good(ws, good, before):
    assert _good_snapshot(ws, good) == before, "a good run's files changed"
    table = runs.list_runs(ws).set_index("run_id")
    for rid in good:
        assert table.loc[rid, "state"] == "done"
        model = hx.HCL.load(os.path.join(runs.run_path(ws, rid), "model.npz"))
        assert model.ranks_[("a", "b")] >= 0
    for dirpath, _, files in os.walk(ws):
        assert not [f for f in files if f.endswith(".tmp") or ".tmp." in f], (dirpath, files)


def test_a_damaged_run_folder_beside_good_ones(workspace):
    ws, good = workspace
    before = _good_snapshot(ws, good)
    bad, damaged = [], []
    for k, (status, config) in enumerate([(b"[1]", None), (b'"done"', None), (b"\x00\xff", None), (b'{"state": "do', None),
                                           (None, b"[]"), (None, b"null"), (None, b'{"dataset": 3}')]):
        rid = runs.create_run(ws, {"kind": "fit", "dataset": {"name": "bad"}}, run_id=f"bad-{k}")
        d = runs.run_path(ws, rid)
        for name, content in (("status.json", status), ("config.json", config)):
            if content is not None:
                with open(os.path.join(d, name), "wb") as fh:
                    fh.write(content)
                damaged.append(os.path.join(d, name))
        bad.append(rid)
    bad_before = {p: tree_hashes(os.path.dirname(p))[os.path.basename(p)] for p in damaged}
    table = runs.list_runs(ws).set_index("run_id")
    assert (table.loc[bad, "state"] == "broken").all() and table.loc[bad, "error"].str.len().gt(0).all()
    for rid in bad:
        runs.read_status(ws, rid)
        runs.cancel(ws, rid)
    # The damaged files are reported, never rewritten (a queued run with a damaged config may be cancelled).
    assert {p: tree_hashes(os.path.dirname(p))[os.path.basename(p)] for p in damaged} == bad_before
    _check_good(ws, good, before)


def test_a_worker_killed_mid_run(workspace, tmp_path):
    ws, good = workspace
    before = _good_snapshot(ws, good)
    spec = _files(tmp_path, 4000, {"a": 60, "b": 60}, seed=1)  # a few seconds of work
    rid = runs.create_run(ws, {"kind": "fit", "dataset": spec, "lattice": "full"})
    pid = runs.launch(ws, rid)
    st = wait_for_run(ws, rid, ("running",) + runs.FINAL)
    assert st["state"] == "running", st
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    st = wait_for_run(ws, rid, runs.FINAL)
    assert st["state"] == "failed" and "ended unexpectedly" in st["error"]
    assert runs.read_status(ws, rid)["state"] == "failed"  # recorded, and stays so
    _check_good(ws, good, before)


def test_cancels(workspace, tmp_path):
    ws, good = workspace
    before = _good_snapshot(ws, good)
    for rid in good:  # cancelling a finished run changes nothing
        runs.cancel(ws, rid)
    queued = runs.create_run(ws, {"kind": "fit", "dataset": {"name": "q"}})
    runs.cancel(ws, queued)
    assert runs.read_status(ws, queued)["state"] == "cancelled"
    spec = _files(tmp_path, 4000, {"a": 60, "b": 60}, seed=2)
    rid = runs.create_run(ws, {"kind": "fit", "dataset": spec, "lattice": "full"})
    pid = runs.launch(ws, rid)
    wait_for_run(ws, rid, ("running",) + runs.FINAL)
    runs.cancel(ws, rid)
    os.waitpid(pid, 0)
    assert wait_for_run(ws, rid, runs.FINAL)["state"] in ("cancelled", "done")
    _check_good(ws, good, before)


def test_a_run_folders_own_csv_files_carry_no_formulas(tmp_path):
    """summary.csv and outcomes.csv in the run folder (opened straight from the workspace) neutralize
    names a spreadsheet would run, as the zip export does."""
    import csv
    import io

    ws = runs.workspace_dir(str(tmp_path / "ws"))
    data, _ = hx.simulate(n=120, dims={"a": 4, "b": 3}, ranks=RANKS, noise=0.3, seed=0)
    ids = [("=id" if i % 2 else "@id") + str(i) for i in range(120)]
    mods = {}
    for m, alias in (("a", "=mod"), ("b", "@mod")):
        df = pd.DataFrame(data.X[m], columns=[f"+{m}{j}" for j in range(data.dims[m])])
        df.insert(0, "sid", ids)
        mods[alias] = str(tmp_path / f"{m}.csv")
        df.to_csv(mods[alias], index=False)
    pd.DataFrame({"sid": ids, "-y": [i % 2 for i in range(120)]}).to_csv(tmp_path / "o.csv", index=False)
    spec = {"modalities": mods, "id_column": "sid", "outcomes": str(tmp_path / "o.csv"), "name": "=evil"}
    rid = runs.create_run(ws, {"kind": "fit", "dataset": spec, "lattice": "full"})
    assert runs.run_worker(runs.run_path(ws, rid)) == 0, runs.read_log(ws, rid)
    d = runs.run_path(ws, rid)
    seen = 0
    for f in ("summary.csv", "outcomes.csv"):
        cells = [c for row in csv.reader(io.StringIO(open(os.path.join(d, f), encoding="utf-8").read())) for c in row]
        bad = [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r") or (c[:1] == "-" and not c[1:2].isdigit())]
        assert not bad, (f, bad[:5])
        seen += sum(c.startswith("'") for c in cells)
    assert seen >= 3  # the names are kept, behind a quote


def test_a_binary_metrics_log_does_not_break_reading(workspace):
    ws, good = workspace
    d = runs.run_path(ws, good[0])
    with open(os.path.join(d, "metrics.jsonl"), "ab") as fh:
        fh.write(b"\x00\xff\xfe not json\n")
    before = runs.read_metrics(ws, good[0])
    assert isinstance(before, list)
    assert runs.list_runs(ws).set_index("run_id").loc[good[0], "state"] == "done"
