"""Runs that target a Dask scheduler (issue 14, "The app and runs"): the address from
$HCL_EXPLORE_DASK or the Train page, recorded in the run's config; the covariance pass on the
cluster with partitions done as progress; the same ranks as an in-process run; a cancel cancels
the run's futures and closes its client; without Dask, a clear error and never an import failure."""

from __future__ import annotations

import importlib.util
import os
import signal
import time

import numpy as np
import pandas as pd
import pytest

import hcl_explore as hx
from hcl_explore import runs
from hcl_explore.runs import RunConfig
from workspace_helpers import wait_for_run

RANKS = {("a", "b", "c"): 1, ("a", "b"): 1, ("a",): 1, ("b",): 1, ("c",): 1}


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded workers in this process, reachable over TCP (a launched worker process
    connects to it as to any scheduler)."""
    pytest.importorskip("dask.dataframe")
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                                  dashboard_address=None) as cl:
        yield cl


@pytest.fixture
def dataset(tmp_path):
    """A seeded 3-modality CSV dataset (n > 1000: the in-process fit's small-sample resampling,
    which needs rows in memory, is not used, so both engines run the same search)."""
    data, _ = hx.simulate(n=1500, dims={"a": 10, "b": 8, "c": 6}, ranks=RANKS, noise=0.3, seed=1)
    folder = tmp_path / "ds"
    folder.mkdir()
    paths = {}
    for m in data.modalities:
        df = pd.DataFrame(data.X[m], columns=data.feature_names[m])
        df.insert(0, "sid", [f"S{i}" for i in range(data.n_samples)])
        paths[m] = str(folder / f"{m}.csv")
        df.to_csv(paths[m], index=False)
    return {"modalities": paths, "id_column": "sid", "name": "dask-test"}


@pytest.fixture
def in_process_worker():
    """run_worker in this process installs its SIGTERM handler: put the test process's back."""
    old = signal.getsignal(signal.SIGTERM)
    yield runs.run_worker
    signal.signal(signal.SIGTERM, old)


def _model(ws, rid):
    from hcl_explore.runs import files as RF

    return hx.HCL.load(RF.path(runs.run_path(ws, rid), RF.MODEL))


# ---------------------------------------------------------------------------- the config
def test_the_config_records_the_scheduler_and_old_configs_read_as_before(monkeypatch):
    monkeypatch.delenv(runs.DASK_ENV, raising=False)
    assert RunConfig.fit({"bundled": "clinical"}).dask is None
    assert "dask" not in RunConfig.fit({"bundled": "clinical"}).to_dict()
    monkeypatch.setenv(runs.DASK_ENV, " tcp://sched:8786 ")
    cfg = RunConfig.fit({"bundled": "clinical"}, "full")
    assert cfg.dask == "tcp://sched:8786" and cfg.to_dict()["dask"] == "tcp://sched:8786"
    assert RunConfig.fit({"bundled": "clinical"}, dask="").dask is None  # the page's empty field: none
    assert RunConfig.fit({"bundled": "clinical"}, dask="tcp://other:1").dask == "tcp://other:1"
    # The environment's scheduler is for the linear estimator: a contrastive run does not pick it up.
    assert RunConfig.fit({"bundled": "clinical"}, params={"estimator": "contrastive"}).dask is None
    assert RunConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    old = {"kind": "fit", "dataset": {"bundled": "clinical"}, "lattice": "full", "ranks": "auto", "params": {}}
    back = RunConfig.from_dict(old)
    assert back.dask is None and back.plan is None and "dask" not in back.to_dict() and "plan" not in back.to_dict()
    # The plan shown at launch is recorded too, and gives planned_s.
    from hcl_explore import progress as P

    plan = P.plan_fit(100, {"a": 3, "b": 4}, 3)
    withplan = RunConfig.fit({"bundled": "clinical"}, plan=plan, dask="")
    assert withplan.planned_s == round(plan.total, 1) and P.Plan.from_dict(withplan.to_dict()["plan"]).stages == plan.stages


# ---------------------------------------------------------------------------- a run on the cluster
def test_a_run_on_the_cluster_gives_the_in_process_ranks(tmp_path, cluster, dataset, in_process_worker):
    """The app's path: a launched worker process connects to the scheduler; its covariance pass
    runs on the cluster partition by partition, and the fit equals an in-process run's."""
    ws = runs.workspace_dir(str(tmp_path / "ws"))
    on_dask = runs.create_run(ws, RunConfig.fit(dataset, "full", dask=cluster.scheduler_address))
    runs.launch(ws, on_dask)
    local = runs.create_run(ws, RunConfig.fit(dataset, "full", dask=""))
    assert in_process_worker(runs.run_path(ws, local)) == 0, runs.read_log(ws, local)
    st = wait_for_run(ws, on_dask)
    assert st["state"] == "done", (st, runs.read_log(ws, on_dask))
    a, b = _model(ws, on_dask), _model(ws, local)
    assert a.ranks_ == b.ranks_ and a.nodes_ == b.nodes_
    assert sum(a.ranks_.values()) == sum(RANKS.values())
    np.testing.assert_allclose(a.W_, b.W_, atol=1e-5 * np.abs(b.W_).max())
    cfg = runs.read_json(os.path.join(runs.run_path(ws, on_dask), "config.json"))
    assert cfg["dask"] == cluster.scheduler_address
    assert "dask" not in runs.read_json(os.path.join(runs.run_path(ws, local), "config.json"))
    # Progress: partitions done of partitions, each partition once, in the covariance stage.
    ev = [e for e in runs.read_metrics(ws, on_dask) if e["stage"] == "covariance"]
    parts = ev[0]["partitions"]
    assert parts >= 4 and [e["partitions_done"] for e in ev[:parts]] == list(range(1, parts + 1))
    assert ev[-1]["rows"] == 1500
    assert any("Dask scheduler" in str(e.get("message")) for e in runs.read_metrics(ws, on_dask))
    # The in-process run reports rows, as before.
    assert all("partitions_done" not in e for e in runs.read_metrics(ws, local))


# ---------------------------------------------------------------------------- cancel
def test_cancelling_a_run_cancels_its_futures_and_closes_its_client(tmp_path, cluster, dataset, monkeypatch,
                                                                     in_process_worker):
    """The first partition to finish asks for a cancel (as the Train page's button does); the
    others are slow, so the run still has futures on the cluster when it notices."""
    import distributed

    from hcl_explore import dask_source as DS

    ws = runs.workspace_dir(str(tmp_path / "ws"))
    rid = runs.create_run(ws, RunConfig.fit(dataset, "full", dask=cluster.scheduler_address))
    d = runs.run_path(ws, rid)
    real = DS._partition_sums

    def slow_partition(pdf, cols, layout, shift, chunk_size, n_parts, index, names=None):
        if index == 0:
            with open(os.path.join(d, "CANCEL"), "w") as fh:
                fh.write("test")
        else:
            time.sleep(3.0)
        return real(pdf, cols, layout, shift, chunk_size, n_parts, index, names)

    monkeypatch.setattr(DS, "_partition_sums", slow_partition)
    cancelled, closed = [], []
    real_cancel, real_close = distributed.Client.cancel, distributed.Client.close

    def spy_cancel(self, futures, *args, **kwargs):
        cancelled.append([(f.key, f.done()) for f in futures])
        return real_cancel(self, futures, *args, **kwargs)

    def spy_close(self, *args, **kwargs):
        closed.append(self.id)
        return real_close(self, *args, **kwargs)

    monkeypatch.setattr(distributed.Client, "cancel", spy_cancel)
    monkeypatch.setattr(distributed.Client, "close", spy_close)
    assert in_process_worker(d) == 1
    st = runs.read_status(ws, rid)
    assert st["state"] == "cancelled", (st, runs.read_log(ws, rid))
    assert cancelled and cancelled[0], "the outstanding futures were not cancelled"
    assert not any(done for _, done in cancelled[0])  # only what was still outstanding
    assert len(closed) >= 1
    # Stopped before the pass was through (the scheduler may run a slow partition before the one
    # that asks for the cancel; the event that finds the request is not logged).
    assert all(e["partitions_done"] < 4 for e in runs.read_metrics(ws, rid) if e["stage"] == "covariance")
    assert not os.path.exists(os.path.join(d, "model.npz"))
    # Nothing of the run is left on the scheduler once its client is gone.
    for _ in range(100):
        if not cluster.scheduler.tasks:
            break
        time.sleep(0.1)
    assert not cluster.scheduler.tasks


def test_a_source_cancels_its_outstanding_futures_when_the_callback_raises(cluster):
    """The library's side of the cancel: DaskSource.covariance_stats cancels before it re-raises."""
    import distributed

    from hcl_explore import dask_source as DS

    data, _ = hx.simulate(n=2000, dims=(6, 5), ranks={("a", "b"): 1, ("a",): 1, ("b",): 1}, noise=0.3, seed=3)

    class Stop(Exception):
        pass

    def stop(stage, info):
        raise Stop()

    with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        src = DS.from_data(data, client=client, npartitions=6)
        seen = []
        src.covariance_stats(callback=lambda s, i: seen.append(i.get("partitions_done")))
        assert seen[:6] == [1, 2, 3, 4, 5, 6] and src._futures == []
        with pytest.raises(Stop):
            src.covariance_stats(callback=stop)
        assert src._futures == [] and src.cancel() == 0


# ---------------------------------------------------------------------------- without Dask
def _no_dask(monkeypatch):
    """This Python as if the extra were not installed (find_spec and imports of dask, distributed)."""
    import builtins

    real_find, real_import = importlib.util.find_spec, builtins.__import__

    def find_spec(name, *args, **kwargs):
        if name.split(".")[0] in ("dask", "distributed"):
            return None
        return real_find(name, *args, **kwargs)

    def blocked(name, *args, **kwargs):
        if name.split(".")[0] in ("dask", "distributed"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(builtins, "__import__", blocked)


def test_without_dask_a_run_that_targets_a_scheduler_fails_clearly(tmp_path, dataset, monkeypatch,
                                                                   in_process_worker):
    _no_dask(monkeypatch)
    problem = runs.dask_problem("tcp://sched:8786")
    assert "Dask is not installed" in problem and "pip install hcl-explore[dask]" in problem
    assert runs.dask_problem("") is None and runs.dask_problem(None) is None
    ws = runs.workspace_dir(str(tmp_path / "ws"))
    rid = runs.create_run(ws, RunConfig.fit(dataset, "full", dask="tcp://sched:8786"))
    assert in_process_worker(runs.run_path(ws, rid)) == 1
    st = runs.read_status(ws, rid)
    assert st["state"] == "failed"
    assert "tcp://sched:8786" in st["error"] and "pip install hcl-explore[dask]" in st["error"], st["error"]
    # The same dataset without a scheduler still runs.
    rid2 = runs.create_run(ws, RunConfig.fit(dataset, "full", dask=""))
    assert in_process_worker(runs.run_path(ws, rid2)) == 0, runs.read_log(ws, rid2)


def test_an_unreachable_scheduler_is_a_clear_error(cluster):
    from hcl_explore import dask_source as DS

    with pytest.raises(ValueError, match=r"Cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        DS.connect("tcp://127.0.0.1:9", timeout=1)
    with pytest.raises(ValueError, match="Not a Dask scheduler address"):
        DS.connect("tcp://a b")
    assert runs.dask_problem("tcp://a b").startswith("Not a Dask scheduler address")


def test_a_contrastive_run_refuses_a_scheduler(tmp_path, dataset, in_process_worker):
    ws = runs.workspace_dir(str(tmp_path / "ws"))
    rid = runs.create_run(ws, RunConfig.fit(dataset, "full", params={"estimator": "contrastive"}, dask="tcp://x:1"))
    assert in_process_worker(runs.run_path(ws, rid)) == 1
    assert "linear estimator" in runs.read_status(ws, rid)["error"]


# ---------------------------------------------------------------------------- the Train page
def _train_page(ws, dataset, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("HCL_EXPLORE_WORKSPACE", ws)
    runs.write_json(os.path.join(ws, "state.json"), {"dataset": dataset})
    app = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "app.py")
    at = AppTest.from_file(app, default_timeout=60)
    at.run()
    at.switch_page("pages/train.py").run()
    assert not at.exception, at.exception
    return at


def test_the_train_page_field_launches_a_run_on_the_scheduler(tmp_path, cluster, dataset, monkeypatch):
    monkeypatch.setenv(runs.DASK_ENV, cluster.scheduler_address)
    ws = runs.workspace_dir(str(tmp_path / "ws"))
    at = _train_page(ws, dataset, monkeypatch)
    field = at.text_input(key="dask_scheduler")
    assert field.value == cluster.scheduler_address  # the environment's scheduler is the default
    assert "HCL_EXPLORE_DASK" in field.help and "pip install hcl-explore[dask]" in field.help
    assert "runs on the Dask scheduler at" in " ".join(c.value for c in at.caption)
    at.button[0].click().run()
    assert not at.exception, at.exception
    rid = runs.list_runs(ws).run_id[0]
    cfg = runs.read_json(os.path.join(runs.run_path(ws, rid), "config.json"))
    assert cfg["dask"] == cluster.scheduler_address and cfg["plan"]["stages"][0] == "load"
    # (A launched run on the scheduler is followed to the end by the test above.)
    runs.cancel(ws, rid)
    wait_for_run(ws, rid)
    # An emptied field: the next run stays in its worker process.
    at.text_input(key="dask_scheduler").set_value("").run()
    at.button[0].click().run()
    rid2 = [r for r in runs.list_runs(ws).run_id if r != rid][0]
    assert "dask" not in runs.read_json(os.path.join(runs.run_path(ws, rid2), "config.json"))
    runs.cancel(ws, rid2)
    wait_for_run(ws, rid2)


def test_the_train_page_without_dask_explains_and_does_not_launch(tmp_path, dataset, monkeypatch):
    ws = runs.workspace_dir(str(tmp_path / "ws"))
    monkeypatch.delenv(runs.DASK_ENV, raising=False)
    at = _train_page(ws, dataset, monkeypatch)
    _no_dask(monkeypatch)
    at.text_input(key="dask_scheduler").set_value("tcp://sched:8786").run()
    assert not at.exception, at.exception
    errors = " ".join(str(e.value) for e in at.error)
    assert "Dask is not installed" in errors and "pip install hcl-explore" in errors
    assert at.button[0].disabled
    assert not len(runs.list_runs(ws))
