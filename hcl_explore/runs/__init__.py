"""Background runs: a run is a directory written by a worker process, read by anyone.

```
<workspace>/runs/<run_id>/
    config.json     what to do (dataset, lattice, ranks, estimator settings) - written once
    status.json     state, stage, progress, pid, times, error - rewritten atomically
    metrics.jsonl   one JSON line per progress event (stage, iteration, objective, ...)
    log.txt         the worker's stdout/stderr (tracebacks of failed runs)
    model.npz       the fitted model (HCL.save), summary.csv, scores.npz, data_report.json
    stability.json  how often each candidate node was found when the structure search was refitted
                    on subsamples (``HCL.stability``; only when the config asks, linear estimator)
    prediction_<outcome>.json   evaluations of outcomes (``kind="predict"`` runs write into their parent)
```
The worker is ``python -m hcl_explore worker RUN_DIR`` (the CLI's entry point), started in its own
session so that it outlives the app process (``torchrun --nproc-per-node=N -m hcl_explore worker
RUN_DIR`` trains the contrastive estimator data-parallel; only rank 0 writes); the app only polls these files. Every file is
written to a temporary name and renamed, so a reader never sees half a file; a crashed worker is
detected from its pid and shown as failed; a cancel request is a file the worker checks at every
progress event (and a SIGTERM).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from typing import Any, Iterator, Mapping, Sequence

try:
    import fcntl
except ImportError:  # pragma: no cover  (not POSIX: status updates are not locked)
    fcntl = None

import numpy as np
import pandas as pd

from . import files as F
from .config import DASK_ENV, RunConfig, dask_default  # noqa: F401  (the Train page and the CLI use them)
from .files import prediction_path, read_prediction, read_predictions  # noqa: F401  (the run folder's readers)

log = logging.getLogger(__name__)

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")
#: The state :func:`read_status` and :func:`list_runs` give a run whose status.json or config.json
#: is damaged (not JSON, or JSON of the wrong shape); its ``error`` says what is wrong.
BROKEN = "broken"
#: Resamples of the stability check offered by the Train page.
STABILITY_RESAMPLES = 20
#: The Train page turns the stability check on by default up to this size (samples, features in all).
STABILITY_FAST = (20_000, 2_000)


class Cancelled(Exception):
    """Raised inside the worker when the run was cancelled."""


def workspace_dir(path: str | None = None) -> str:
    """The workspace folder: ``path``, else ``$HCL_EXPLORE_WORKSPACE``, else ``./workspace``."""
    ws = path or os.environ.get("HCL_EXPLORE_WORKSPACE") or os.path.join(os.getcwd(), "workspace")
    os.makedirs(os.path.join(ws, "runs"), exist_ok=True)
    return os.path.abspath(ws)


def _tmp_name(path: str, suffix: str = ".tmp") -> str:
    """A temporary name beside ``path`` that no other writer uses (pid + random)."""
    return f"{path}.{os.getpid()}.{uuid.uuid4().hex[:12]}{suffix}"


def write_json(path: str, obj: Any) -> None:
    """Write JSON atomically (temporary file + rename). The temporary name is unique to this call;
    on any failure it is removed and ``path`` is left as it was."""
    tmp = _tmp_name(path)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=1, default=_jsonable)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def _status_lock(d: str) -> Iterator[None]:
    """Hold the run's lock (``status.lock``, ``flock``) around a read-modify-write of status.json.
    Every writer of status.json (the worker, the pid check of :func:`read_status`, :func:`cancel`)
    takes it, so a check never acts on a state that changed since it was read."""
    fd = None
    if fcntl is not None:
        try:
            fd = os.open(os.path.join(d, "status.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:  # a read-only run folder: nothing will be written anyway
            fd = None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def _write_status(d: str, st: Mapping[str, Any]) -> None:
    """Write a run's status.json under its lock."""
    with _status_lock(d):
        write_json(os.path.join(d, F.STATUS), dict(st))


def _jsonable(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    return str(o)


def read_json(path: str, default: Any = None) -> Any:
    """The JSON in ``path``, or ``default`` when it is missing, unreadable, not text or not JSON."""
    obj, err = _read_json_checked(path)
    return default if obj is None or obj is _MISSING or err else obj


_MISSING = object()


def _read_json_checked(path: str) -> tuple[Any, str | None]:
    """(the JSON in ``path``, None) or (None, why it cannot be read); a missing file is
    (``_MISSING``, None)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh), None
    except FileNotFoundError:
        return _MISSING, None
    except UnicodeDecodeError:
        return None, f"{os.path.basename(path)} is not text (a binary or damaged file)"
    except json.JSONDecodeError as exc:
        return None, f"{os.path.basename(path)} is not valid JSON (truncated or damaged: {exc.msg} at line {exc.lineno})"
    except (OSError, ValueError, RecursionError) as exc:
        return None, f"{os.path.basename(path)} cannot be read ({type(exc).__name__}: {exc})"


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _status_problem(st: Any) -> str | None:
    """Why a parsed status.json is not a usable status (None when it is)."""
    if not isinstance(st, dict):
        return f"status.json holds {type(st).__name__ if st is not None else 'null'}, not an object"
    state = st.get("state")
    if not isinstance(state, str) or state not in STATES:
        return f"status.json has no valid state (got {state!r:.60})"
    for k in ("created", "started", "finished", "updated"):
        v = st.get(k)
        if v is not None and not (_is_num(v) and 0 <= v < 1e11):
            return f"status.json field {k!r} is not a time (got {v!r:.60})"
    if st.get("progress") is not None and not _is_num(st["progress"]):
        return f"status.json field 'progress' is not a number (got {st['progress']!r:.60})"
    if st.get("pid") is not None and not (isinstance(st["pid"], int) and not isinstance(st["pid"], bool) and st["pid"] > 0):
        return f"status.json field 'pid' is not a process id (got {st['pid']!r:.60})"
    for k in ("stage", "error", "detail"):
        if st.get(k) is not None and not isinstance(st[k], str):
            return f"status.json field {k!r} is not text (got {st[k]!r:.60})"
    return None


def _config_problem(cfg: Any) -> str | None:
    """Why a parsed config.json cannot be listed (None when it can)."""
    if not isinstance(cfg, dict):
        return f"config.json holds {type(cfg).__name__ if cfg is not None else 'null'}, not an object"
    for k in ("kind", "lattice_name"):
        if cfg.get(k) is not None and not isinstance(cfg[k], str):
            return f"config.json field {k!r} is not text (got {cfg[k]!r:.60})"
    ds = cfg.get("dataset")
    if ds is not None and not isinstance(ds, dict):
        return f"config.json field 'dataset' is not an object (got {ds!r:.60})"
    if isinstance(ds, dict) and ds.get("name") is not None and not isinstance(ds["name"], str):
        return f"config.json field 'dataset.name' is not text (got {ds['name']!r:.60})"
    return None


def _broken(error: str) -> dict:
    return {"state": BROKEN, "stage": "", "progress": 0.0, "error": error}


def _worker_pid(d: str) -> int | None:
    """The pid ``launch`` recorded in worker.json (None when absent or damaged)."""
    w = read_json(os.path.join(d, F.WORKER), None)
    pid = w.get("pid") if isinstance(w, dict) else None
    return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None


def _load_status(d: str) -> dict:
    """status.json as a checked dict: a usable status, ``failed`` when it is missing, ``broken``
    (with the reason) when it is damaged or of the wrong shape."""
    st, err = _read_json_checked(os.path.join(d, F.STATUS))
    if err:
        return _broken(err)
    if st is _MISSING:
        return {"state": "failed", "error": "status.json is missing or unreadable"}
    problem = _status_problem(st)
    return _broken(problem) if problem else st


_ID = re.compile(r"^[A-Za-z0-9_\-]+$")


def run_path(workspace: str, run_id: str) -> str:
    """The folder of a run; the id is checked so that it cannot point outside the workspace."""
    if not _ID.match(run_id or ""):
        raise ValueError(f"Not a run id: {run_id!r}.")
    return os.path.join(workspace, "runs", run_id)


#: The standardization choices offered to users, as ``HCL(standardize=...)`` values.
STANDARDIZE = {"auto": "auto", "yes": True, "no": False}


def fit_params(estimator: str = "linear", standardize: str = "auto", device: str = "auto", *,
               max_iter: int | None = None, epochs: int = 100, loss: str = "infonce",
               hidden: Sequence[int] = (128,), max_time: float | None = None) -> dict:
    """The ``HCL`` keyword arguments of a fit run (``config["params"]``) from the choices the
    Train page and the CLI offer: ``standardize`` is ``"auto"``/``"yes"``/``"no"``; ``max_iter``
    (linear) is left to the default when None; ``epochs``, ``loss`` and ``hidden`` (contrastive;
    empty or 0 = linear encoders) and ``max_time`` (seconds; None or 0 = no limit) are used only by the
    contrastive estimator."""
    params: dict = {"estimator": estimator, "standardize": STANDARDIZE[standardize], "device": device}
    if estimator == "contrastive":
        widths = [int(h) for h in hidden if int(h) > 0]
        params.update({"max_epochs": int(epochs), "loss": loss,
                       **({"hidden": widths} if widths else {"encoder": "linear"})})
        if max_time is not None and float(max_time) > 0:
            params["max_time"] = float(max_time)  # seconds of training (HCL(max_time=...))
    elif max_iter is not None:
        params["max_iter"] = int(max_iter)
    return params


def stability_option(on: bool = True, n_resamples: int = STABILITY_RESAMPLES) -> dict | bool:
    """The ``config["stability"]`` value of a fit run: ``{"n_resamples": n}`` to check the structure
    on ``n`` subsamples after the fit (linear estimator), ``False`` not to."""
    return {"n_resamples": int(n_resamples)} if on and int(n_resamples) > 0 else False


def stability_is_fast(n_samples: int, n_features: int, estimator: str = "linear") -> bool:
    """Whether the stability check is cheap enough to be on by default: the linear estimator on at
    most :data:`STABILITY_FAST` samples and features (in all modalities)."""
    return estimator == "linear" and n_samples <= STABILITY_FAST[0] and n_features <= STABILITY_FAST[1]


def _stability_request(cfg: Mapping[str, Any]) -> int | None:
    """The number of resamples a fit config asks for (None: no check). Accepts ``{"n_resamples": n}``,
    ``True`` (the default number), an int, or ``False``/None/absent."""
    opt = cfg.get("stability")
    if opt is None or opt is False:
        return None
    if opt is True:
        return STABILITY_RESAMPLES
    n = opt.get("n_resamples", STABILITY_RESAMPLES) if isinstance(opt, Mapping) else opt
    try:
        n = int(n)
    except (TypeError, ValueError):
        raise ValueError(f"config 'stability' must be {{'n_resamples': n}} or false, got {opt!r}.") from None
    return n if n > 0 else None


def runs_using_dataset(workspace: str, dataset_id: str) -> list[str]:
    """The ids of the runs whose config names the stored dataset ``dataset_id`` (oldest first); a
    run folder that cannot be read is skipped."""
    out = []
    root = os.path.join(workspace, "runs")
    for rid in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        cfg = read_json(F.path(os.path.join(root, rid), F.CONFIG), None)
        if isinstance(cfg, dict) and isinstance(cfg.get("dataset"), dict) \
                and cfg["dataset"].get("dataset_id") == dataset_id:
            out.append(rid)
    return out


def create_run(workspace: str, config: "RunConfig | Mapping[str, Any]", run_id: str | None = None) -> str:
    """Create a run folder with its config (always the :class:`RunConfig` shape, whoever writes
    it) and a ``queued`` status; returns the run id."""
    rid = run_id or time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
    cfg = config if isinstance(config, RunConfig) else RunConfig.from_dict(config)
    d = run_path(workspace, rid)
    os.makedirs(d, exist_ok=False)
    write_json(os.path.join(d, F.CONFIG), cfg.to_dict())
    write_json(os.path.join(d, F.STATUS), {"state": "queued", "created": time.time(), "stage": "queued", "progress": 0.0})
    return rid


def launch(workspace: str, run_id: str, *, env: Mapping[str, str] | None = None) -> int:
    """Start the worker for a run in its own session (it survives the caller); returns its pid."""
    d = run_path(workspace, run_id)
    log = open(os.path.join(d, F.LOG), "ab")
    e = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    e["PYTHONPATH"] = root + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e.pop(PLANNED_ENV, None)
    cfg = read_json(os.path.join(d, F.CONFIG), {})
    if isinstance(cfg, dict) and not _is_num(cfg.get("planned_s")):
        # A prediction run's config has no plan (the page does not make one): its predicted
        # seconds from the parent fit's folder, for the page while the worker starts.
        from .. import progress as P

        first = _predict_first_plan(workspace, cfg)
        if first is not None:
            e[PLANNED_ENV] = f"{P.scaled(first, _predict_speed(_machine(workspace).get('speed'))).total:.1f}"
    e.update(env or {})
    p = subprocess.Popen([sys.executable, "-c", _BOOT, d, root], stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True, env=e, cwd=root)
    log.close()
    # The pid goes to its own file: status.json belongs to the worker from now on.
    write_json(os.path.join(d, F.WORKER), {"pid": p.pid, "launched": time.time()})
    return p.pid


#: The worker's first lines (``python -c``): with the standard library only, the run leaves
#: "queued" at once (state running, step "starting the worker") - before numpy, pandas or torch are
#: imported, which takes seconds on a busy machine. The package itself is light (its names load on
#: first use; torch only with the model).
_BOOT = r"""
import fcntl, json, os, sys, time, uuid
d, root = os.path.abspath(sys.argv[1]), sys.argv[2]
def _write(st):
    tmp = os.path.join(d, "status.json.%d.%s.tmp" % (os.getpid(), uuid.uuid4().hex[:12]))
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(st, fh, indent=1)
    os.replace(tmp, os.path.join(d, "status.json"))
try:
    fd = os.open(os.path.join(d, "status.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with open(os.path.join(d, "status.json"), encoding="utf-8") as fh:
            st = json.load(fh)
        if isinstance(st, dict) and st.get("state") == "queued" and not os.path.exists(os.path.join(d, "CANCEL")):
            now = time.time()
            st.update(state="running", stage="starting", step="starting the worker (loading the libraries)",
                      pid=os.getpid(), started=now, updated=now, progress=0.0)
            try:  # what the page needs to show this start's share of the run
                with open(os.path.join(os.path.dirname(os.path.dirname(d)), "worker_start.json"), encoding="utf-8") as fh:
                    st["planned_start_s"] = float(json.load(fh)["seconds"])
            except Exception:
                pass
            try:
                st["planned_s"] = float(os.environ["HCL_EXPLORE_PLANNED_S"])
            except Exception:
                pass
            try:
                with open(os.path.join(d, "config.json"), encoding="utf-8") as fh:
                    st["planned_s"] = float(json.load(fh)["planned_s"])
            except Exception:
                pass
            _write(st)
    finally:
        os.close(fd)
except Exception as exc:  # the worker itself reports what is wrong with the folder
    print("worker start: %s" % exc, flush=True)
from hcl_explore.runs import run_worker
sys.exit(run_worker(d))
"""


#: The predicted seconds of a run without a plan in its config (set by :func:`launch` for the
#: worker's first status; a prediction run's, from its parent fit's folder).
PLANNED_ENV = "HCL_EXPLORE_PLANNED_S"


def _predict_speed(speed: float | None) -> float | None:
    """The machine speed a prediction's plan is scaled by: the fits' measured speed when it says
    the machine is slower than the cost model (busy), never faster - a fit's stages ran faster than
    predicted on its data, which says nothing of the prediction's group lasso and baselines."""
    return None if speed is None else max(float(speed), 1.0)


def _predict_first_plan(workspace: str, cfg: Mapping[str, Any]) -> Any:
    """A prediction run's plan (:func:`hcl_explore.progress.plan_predict`) before its worker has
    imported anything heavy: the samples and features from the parent fit's data report, the
    outcome's classes from its outcomes file, the fit's seconds from its metrics. None when the
    config is not a prediction's or the parent's files say too little."""
    from .. import progress as P

    if cfg.get("kind") != "predict" or not isinstance(cfg.get("parent"), str):
        return None
    try:
        parent = run_path(workspace, cfg["parent"])
        rep = read_json(os.path.join(parent, F.DATA_REPORT), {})
        n = int(rep["n_samples"])
        D = sum(int(m.get("features_kept") or 0) for m in rep["modalities"].values())
        kind = (read_json(os.path.join(parent, F.OUTCOME_KINDS), {}) or {}).get(cfg.get("outcome"))
        K = 2
        if kind == "continuous":
            K = 1
        elif kind not in ("binary", None):
            K = int(pd.read_csv(os.path.join(parent, F.OUTCOMES), usecols=[cfg["outcome"]])[cfg["outcome"]].nunique())
        fit_s = None
        ev = read_metrics(workspace, cfg["parent"])
        t_load = [e["t"] for e in ev if e.get("stage") == "load" and e.get("n_samples")]
        t_save = [e["t"] for e in ev if e.get("stage") == "save"]
        if t_load and t_save and t_save[0] > t_load[0]:
            fit_s = t_save[0] - t_load[0]
    except (OSError, KeyError, TypeError, ValueError, AttributeError):
        return None
    if D <= 0 or n <= 0:
        return None
    options = cfg.get("options") if isinstance(cfg.get("options"), Mapping) else {}
    base = options.get("baselines", True)
    base = list(P.PREDICT_BASELINES) if base is True else (list(base) if isinstance(base, (list, tuple)) else [])
    return P.plan_predict(_predict_steps(options), fit_s, n_samples=n, n_features=D, n_classes=K, baselines=base)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A finished child of this process is a zombie until reaped: not alive.
    try:
        with open(f"/proc/{int(pid)}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def read_status(workspace: str, run_id: str) -> dict:
    """The run's status; a run whose worker died without saying so is reported (and recorded) as
    failed. A damaged status.json (not JSON, or JSON of the wrong shape) gives state ``"broken"``
    with the reason in ``error``, and is left as it is.

    The pid check is race-free: it is repeated under the run's lock (see :func:`_status_lock`),
    which the worker also holds while it writes, so a worker that writes ``done`` and exits between
    the first read and the check keeps its ``done``; a final state is never overwritten here."""
    d = run_path(workspace, run_id)
    st = _load_status(d)
    if st["state"] in ("queued", "running") and _dead_worker(d, st):
        with _status_lock(d):
            st = _load_status(d)  # again, now that no writer can change it
            if st["state"] in ("queued", "running") and _dead_worker(d, st) and os.path.exists(os.path.join(d, "CANCEL")):
                # Stopped by a cancel before the worker could say so (e.g. while it was starting).
                st = dict(st, state="cancelled", stage="cancelled", step="cancelled", eta_s=None)
            elif st["state"] in ("queued", "running") and _dead_worker(d, st):
                st = dict(st, state="failed", error=st.get("error") or "The worker process ended unexpectedly (killed or crashed); see the log.")
                st["finished"] = st.get("finished") or time.time()
                write_json(os.path.join(d, F.STATUS), st)
    return st


def _dead_worker(d: str, st: Mapping[str, Any]) -> bool:
    pid = st.get("pid") or _worker_pid(d)
    return bool(pid) and not _alive(pid)


def cancel(workspace: str, run_id: str) -> None:
    """Ask a run to stop: a CANCEL file the worker checks, then SIGTERM to its process group."""
    d = run_path(workspace, run_id)
    st = _load_status(d)
    if st["state"] in FINAL or st["state"] == BROKEN:
        return  # nothing to stop: a finished (or damaged) run is left exactly as it is
    with open(os.path.join(d, "CANCEL"), "w") as fh:
        fh.write(str(time.time()))
    with _status_lock(d):
        st = _load_status(d)
        pid = st.get("pid") or _worker_pid(d)
        if st["state"] == "queued" and not _alive(pid):
            write_json(os.path.join(d, F.STATUS), dict(st, state="cancelled", finished=time.time()))
            return
    if pid and _alive(pid):
        try:
            os.killpg(int(pid), signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass


def list_runs(workspace: str) -> pd.DataFrame:
    """One row per run, newest first: run_id, kind, state, dataset, lattice, started, duration_s,
    stage, error. A run whose status.json or config.json is damaged (or of the wrong shape) is
    listed with state ``"broken"`` and the reason in ``error``; it never hides the other runs."""
    root = os.path.join(workspace, "runs")
    rows = []
    for rid in sorted(os.listdir(root), reverse=True) if os.path.isdir(root) else []:
        if not _ID.match(rid) or not os.path.isdir(os.path.join(root, rid)):
            continue
        try:
            rows.append(_run_row(workspace, rid))
        except Exception as exc:  # noqa: BLE001  one damaged run must not take down the list
            log.warning("run %s cannot be listed: %s", rid, exc)
            rows.append({"run_id": rid, "kind": "fit", "state": BROKEN, "dataset": "", "lattice": "", "started": "",
                         "duration_s": None, "stage": "", "error": f"{type(exc).__name__}: {exc}"})
    return pd.DataFrame(rows, columns=LIST_COLUMNS)


#: The columns of :func:`list_runs`.
LIST_COLUMNS = ["run_id", "kind", "state", "dataset", "lattice", "started", "duration_s", "stage", "error"]


def _run_row(workspace: str, rid: str) -> dict:
    d = run_path(workspace, rid)
    cfg, cfg_err = _read_json_checked(os.path.join(d, F.CONFIG))
    cfg_err = cfg_err or (_config_problem(cfg) if cfg is not _MISSING else None)
    cfg = cfg if isinstance(cfg, dict) and not cfg_err else {}
    st = read_status(workspace, rid)
    if cfg_err and st["state"] != BROKEN:
        st = dict(_broken(cfg_err), started=st.get("started"), created=st.get("created"), finished=st.get("finished"))
    start = st.get("started") or st.get("created")
    end = st.get("finished") or (time.time() if st.get("state") == "running" else None)
    return {
        "run_id": rid,
        "kind": cfg.get("kind") or "fit",
        "state": st["state"],
        "dataset": (cfg.get("dataset") or {}).get("name") or "",
        "lattice": cfg.get("lattice_name") or "",
        "started": pd.Timestamp(start, unit="s").strftime("%Y-%m-%d %H:%M:%S") if start else "",
        "duration_s": round(end - start, 1) if (start and end) else None,
        "stage": st.get("stage") or "",
        "error": (st.get("error") or "") if st["state"] in ("failed", BROKEN) else "",
    }


def read_metrics(workspace: str, run_id: str) -> list[dict]:
    """The progress events logged so far (a partly written last line is skipped)."""
    out = []
    try:
        with open(os.path.join(run_path(workspace, run_id), F.METRICS), encoding="utf-8", errors="replace") as fh:
            for line in fh:  # a damaged (binary) line reads as text that is not JSON: the log ends there
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    break
    except FileNotFoundError:
        pass
    return out


def read_log(workspace: str, run_id: str, tail: int = 4000) -> str:
    try:
        with open(os.path.join(run_path(workspace, run_id), F.LOG), encoding="utf-8", errors="replace") as fh:
            return fh.read()[-tail:]
    except FileNotFoundError:
        return ""


# ---------------------------------------------------------------------------------------------
# dataset specs (what a run loads)
def load_from_spec(spec: Mapping[str, Any], **kwargs: Any):
    """(data, outcomes or None, truth or None) from a dataset spec: ``{"bundled": "clinical"}``,
    ``{"folder": path}`` or ``{"modalities": {name: path}, "id_column": ..., "outcomes": path}``."""
    from .. import io

    if spec.get("bundled") or spec.get("folder"):
        ds = io.load_dataset(spec.get("folder") or spec["bundled"], **kwargs)
        return ds.data, ds.outcomes, ds.truth
    mods = spec.get("modalities") or {}
    if not mods:
        raise ValueError("The dataset spec names no modality files.")
    data = io.load_modalities(mods, id_column=spec.get("id_column") or None, **kwargs)
    outcomes = None
    if spec.get("outcomes"):
        outcomes = io.load_outcomes(spec["outcomes"], id_column=spec.get("outcomes_id_column") or spec.get("id_column") or None)
        outcomes.align(data)
    return data, outcomes, None


# ---------------------------------------------------------------------------------------------
# the worker

#: Seconds between the worker's progress rewrites when the library reports nothing.
HEARTBEAT_S = 0.5


class _Reporter:
    """Writes status and metrics for a running job and checks for cancellation. Progress, ETA and
    the step in words come from :class:`hcl_explore.progress.Tracker` (one rule for every run)."""

    def __init__(self, d: str, plan: Any = None, speed: float | None = None):
        from .. import progress as P

        self.d = d
        #: How much slower than the cost model this machine measured in an earlier run (None: unknown).
        self.speed = speed
        st = read_json(os.path.join(d, F.STATUS), {})
        self.status = dict(st) if isinstance(st, dict) else {}
        self.metrics = open(os.path.join(d, F.METRICS), "a", encoding="utf-8")
        self.last_write = 0.0
        start = self.status.get("started") if _is_num(self.status.get("started")) else None
        self.tracker = P.Tracker(plan or P.Plan(["load"], {"load": 1.0}, {"load": None}), start=start)
        #: The tracker and the status are shared with the heartbeat (:meth:`heartbeat`).
        self.lock = threading.RLock()
        self._stop = threading.Event()

    def heartbeat(self, every_s: float = HEARTBEAT_S) -> None:
        """Rewrite the progress every ``every_s`` seconds while the run is running, between the
        library's events too: some steps report nothing for long (the rank confirmation on
        subsamples, a prediction's baselines: minutes on mfeat), and the bar moves through them by
        the tracker's rule (the step's predicted seconds counted down). Stops at :meth:`close`
        and once the state is no longer "running"."""

        def beat() -> None:
            while not self._stop.wait(every_s):
                with self.lock:
                    if self._stop.is_set() or self.status.get("state") != "running":
                        return
                    with contextlib.suppress(Exception):  # progress is best effort; the run goes on
                        self.set(**self.tracker.snapshot())

        threading.Thread(target=beat, name="hcl-explore-progress", daemon=True).start()

    def set_plan(self, plan: Any, *, max_iter: int | None = None, tol: float | None = None) -> None:
        """The run's predicted stages (:func:`hcl_explore.progress.plan_fit`), once the data are loaded:
        scaled to this machine's measured speed, after the start-up as it was measured."""
        from .. import progress as P

        start = self.tracker.actual.get("starting", self.tracker.plan.seconds.get("starting"))
        plan = P.scaled(plan, self.speed)
        if "starting" in self.tracker.plan.stages:
            plan = P.with_start(plan, start)
        self.tracker.plan = plan
        if max_iter is not None:
            self.tracker.max_iter = int(max_iter)
        if tol is not None:
            self.tracker.tol = float(tol)
        self.set(force=True, planned_s=round(plan.total, 1))

    def reserve_stability(self) -> None:
        """Kept for callers of older versions: the plan (:meth:`set_plan`) holds the stability check."""

    def cancelled(self) -> bool:
        return os.path.exists(os.path.join(self.d, "CANCEL"))

    def set(self, force: bool = False, **kw: Any) -> None:
        with self.lock:
            self.status.update(kw)
            now = time.time()
            # Status is rewritten at most ~10 times a second; state changes always.
            if force or now - self.last_write > 0.1:
                self.status["updated"] = now
                # Under the run's lock: the worker's own word (done, failed, cancelled) always lands
                # after any pid check of read_status, never before it.
                _write_status(self.d, self.status)
                self.last_write = now

    def event(self, stage: str, info: Mapping[str, Any]) -> None:
        if self.cancelled():
            raise Cancelled()
        rec = {"t": time.time(), "stage": stage}
        for k, v in info.items():
            if isinstance(v, (int, float, str, bool)) or v is None:
                rec[k] = v
            elif isinstance(v, (np.integer, np.floating)):
                rec[k] = v.item()
            elif isinstance(v, tuple):
                rec[k] = "+".join(map(str, v))
        self.metrics.write(json.dumps(rec) + "\n")
        self.metrics.flush()
        with self.lock:
            self.tracker.event(stage, info)
            snap = self.tracker.snapshot()
            # The tracker may have moved on by itself (the silent rank confirmation after the last node).
            shown = self.tracker.stage if stage == "ranks" and self.tracker.stage == "confirm" else stage
            self.set(force=shown != self.status.get("stage"), stage=shown, **snap,
                     **({"objective": float(info["objective"])} if "objective" in info else {}),
                     **({"objective": float(info["loss"])} if stage == "epoch" and "loss" in info else {}))

    def mark(self, stage: str, info: Mapping[str, Any]) -> None:
        """A stage starts (progress and status only; the run log keeps the library's events)."""
        if self.cancelled():
            raise Cancelled()
        with self.lock:
            self.tracker.event(stage, info)
            self.set(force=True, stage=stage, **self.tracker.snapshot())

    def close(self) -> None:
        self._stop.set()
        with self.lock:
            self.metrics.close()


def run_worker(run_dir: str) -> int:
    """Execute the job in ``run_dir`` (called by ``python -m hcl_explore worker``). Returns an exit code."""
    d = os.path.abspath(run_dir)
    cfg, err = _read_json_checked(os.path.join(d, F.CONFIG))
    err = err or ("config.json is missing" if cfg is _MISSING else _config_problem(cfg))
    if err:
        print(f"{d}: {err}", file=sys.stderr)
        if os.path.isdir(d):
            _write_status(d, {"state": "failed", "error": err, "stage": "failed", "progress": 0.0, "finished": time.time()})
        return 2
    if int(os.environ.get("RANK", "0")) != 0:
        # Under torchrun only rank 0 writes the run directory; the others train and stay silent.
        return _follower(cfg)
    from .. import progress as P

    ws = os.path.dirname(os.path.dirname(d))
    machine = _machine(ws)
    # Until the data are loaded and the run's own plan is made: the plan shown at launch (or, from
    # an older config or the CLI, its total in one piece), after the worker's start-up.
    planned = cfg.get("planned_s") if _is_num(cfg.get("planned_s")) else 10.0
    first = P.Plan.from_dict(cfg.get("plan")) if isinstance(cfg.get("plan"), Mapping) else None
    first = first or _predict_first_plan(ws, cfg)
    first = first or P.Plan(["load", "rest"], {"load": 1.0, "rest": float(planned)}, {"load": None, "rest": None})
    speed = _predict_speed(machine.get("speed")) if cfg.get("kind") == "predict" else machine.get("speed")
    rep = _Reporter(d, P.with_start(P.scaled(first, speed), machine.get("seconds")), speed=speed)

    def on_term(signum, frame):  # noqa: ARG001
        raise Cancelled()

    signal.signal(signal.SIGTERM, on_term)
    from ..progress import status_line

    booted = rep.status.get("stage") == "starting"  # started by launch()'s first lines (not in-process)
    # Never below what the Train page showed while the worker was starting.
    rep.tracker.fraction = round(min(status_line(rep.status)["fraction"], 0.95), 4)
    # Start-up is a measured stage: from the process start to the libraries imported (numpy and
    # pandas are by now; the model's modules and torch next), so loading measures loading only.
    rep.tracker.event("starting", {})
    rep.set(force=True, state="running", pid=os.getpid(), started=rep.tracker.t0, stage="starting",
            **rep.tracker.snapshot())
    rep.heartbeat()
    try:
        from .. import model  # noqa: F401  (numpy, torch: the rest of the start-up)

        if booted:
            # How long this machine takes to start a worker: the next run's plan and page use it.
            _record_machine(ws, seconds=round(time.time() - rep.tracker.t0, 2))
        # The page showed the start-up's share by its own rule while nothing was written: never
        # below it once the worker says more.
        with rep.lock:
            rep.tracker.fraction = max(rep.tracker.fraction, round(min(status_line(rep.status)["fraction"], 0.95), 4))
            rep.tracker.event("load", {})
            rep.set(force=True, stage="load", **rep.tracker.snapshot())
        if rep.cancelled():
            raise Cancelled()
        kind = cfg.get("kind", "fit")
        if kind == "fit":
            _do_fit(d, cfg, rep)
        elif kind == "predict":
            _do_predict(d, cfg, rep)
        else:
            raise ValueError(f"Unknown run kind {kind!r}.")
        if booted and kind == "fit":
            # This fit's measured seconds against its (speed-scaled) plan: the next plan's speed (a
            # prediction run's plan is the parent fit's seconds, not the cost model: it says nothing).
            _record_machine(ws, speed=round(float(machine.get("speed") or 1.0) * rep.tracker.calibration(), 3))
        rep.set(force=True, state="done", stage="done", step="finished", detail="", eta_s=0.0, progress=1.0,
                finished=time.time())
        return 0
    except Cancelled:
        rep.set(force=True, state="cancelled", stage="cancelled", step="cancelled", eta_s=None, finished=time.time())
        print("run cancelled", flush=True)
        return 1
    except Exception as exc:  # noqa: BLE001  every failure must reach the status file
        traceback.print_exc()
        msg = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        rep.set(force=True, state="failed", error=msg, step="failed", eta_s=None, finished=time.time())
        return 1
    finally:
        rep.close()


def _machine(ws: str) -> dict:
    """What earlier runs measured on this machine (``worker_start.json``): ``seconds`` (a worker's
    start-up) and ``speed`` (measured / predicted seconds of the cost model), each only when valid."""
    rec = read_json(os.path.join(ws, F.WORKER_START), {})
    rec = rec if isinstance(rec, dict) else {}
    return {k: float(rec[k]) for k in ("seconds", "speed") if _is_num(rec.get(k)) and rec[k] > 0}


def _record_machine(ws: str, **values: float) -> None:
    """Update ``worker_start.json`` with ``values`` (best effort: a read-only workspace keeps none)."""
    with contextlib.suppress(OSError, ValueError, TypeError):
        rec = _machine(ws)
        rec.update(values)
        write_json(os.path.join(ws, F.WORKER_START), rec)


_START_PROBED: set[str] = set()
#: The start-up probe's child: a worker's start-up as the worker counts it (from the first line of
#: its ``python -c``, where the status says "running", to the run's modules and the model's
#: imported: numpy, pandas, torch), printed; then it leaves without tearing the interpreter down.
_PROBE = r"""
import time
t0 = time.time()
import os, sys
sys.path.insert(0, sys.argv[1])
from hcl_explore.runs import run_worker  # noqa: F401
from hcl_explore import model, progress  # noqa: F401
print("%.3f" % (time.time() - t0), flush=True)
os._exit(0)
"""
#: Set (to anything) to skip :func:`measure_worker_start` (the test suite: every app test has a
#: fresh workspace, and each probe imports torch twice).
NO_START_PROBE_ENV = "HCL_EXPLORE_NO_START_PROBE"


def measure_worker_start(workspace: str, delay_s: float = 3.0) -> threading.Thread | None:
    """Measure a worker's start-up on this machine before the workspace's first run, in the
    background; None when one is measured already (or being measured by this process).

    The progress of a run counts its start-up (the process until the model's modules and torch
    are imported) as a stage predicted from the last start measured here. The first run of a new
    workspace had no measurement, and a 4 s default against 12-15 s of imports on a busy machine
    put its bar 0.28-0.30 off the true share. The app calls this after its first page: ``delay_s``
    later, a child process imports what a worker imports, twice (the first warms the page cache, as
    later workers find it), and the second's seconds are recorded unless a real run recorded its
    own meanwhile. The child times itself over what a worker counts as its start-up (from its
    first line to the model's modules imported) and exits without the interpreter's teardown: the
    wall time of the whole child (process creation, interpreter start and the teardown of torch,
    0.3-0.5 s here) made the probe read 3.3 s against a worker's 2.8 s.
    """
    ws = os.path.abspath(workspace)
    if ws in _START_PROBED or "seconds" in _machine(ws) or os.environ.get(NO_START_PROBE_ENV):
        return None
    _START_PROBED.add(ws)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cmd = [sys.executable, "-c", _PROBE, root]

    def probe() -> None:
        time.sleep(delay_s)
        seconds = None
        for _ in range(2):
            try:
                done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600,
                                      cwd=root)
                seconds = float(done.stdout.strip().splitlines()[-1])
            except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
                return
            if done.returncode != 0 or not math.isfinite(seconds) or seconds <= 0:
                return
        if seconds is not None and "seconds" not in _machine(ws):
            _record_machine(ws, seconds=round(seconds, 2))

    th = threading.Thread(target=probe, name="hcl-explore-start-probe", daemon=True)
    th.start()
    return th


def dask_problem(address: str | None) -> str | None:
    """Why a run cannot use the Dask scheduler at ``address`` (None: it can, or no address): Dask
    not installed here, or an address that is not one. Reachability is checked by the run."""
    if not address or not str(address).strip():
        return None
    import importlib.util

    missing = [m for m in ("dask", "distributed") if importlib.util.find_spec(m) is None]
    if missing:
        return (f"Dask is not installed in this Python ({' and '.join(missing)} missing), so a run cannot use the "
                "scheduler at " + str(address).strip() + ": install the extra (pip install hcl-explore[dask]) or "
                "leave the scheduler empty.")
    if any(c.isspace() for c in str(address).strip()):
        return f"Not a Dask scheduler address: {str(address).strip()!r} (expected e.g. tcp://host:8786)."
    return None


@contextlib.contextmanager
def _dask_client(address: str) -> Iterator[Any]:
    """A client of the scheduler at ``address`` for one run, closed when the run ends however it
    ends (done, failed, cancelled)."""
    from .. import dask_source as DS

    problem = dask_problem(address)
    if problem:
        raise ValueError(f"This run targets the Dask scheduler at {address}, but: {problem}")
    try:
        client = DS.connect(address)
    except ImportError as exc:
        raise ValueError(f"This run targets the Dask scheduler at {address}, but {exc}") from None
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):  # a lost scheduler: nothing more to close
            client.close(timeout=10)


def _follower(cfg: Mapping[str, Any]) -> int:
    """A non-zero rank of a multi-process run: the same fit, no files written."""
    from ..model import HCL

    if cfg.get("kind", "fit") != "fit":
        return 0
    data, _, _ = load_from_spec(cfg["dataset"])
    lat = RunConfig.from_dict(cfg).resolve_lattice(data.modalities)
    HCL(lattice=lat, ranks=cfg.get("ranks", "auto"), **dict(cfg.get("params") or {})).fit(data)
    return 0


def _do_fit(d: str, cfg: Mapping[str, Any], rep: _Reporter) -> None:
    from .. import datasets
    from ..lattice import node_label
    from ..model import HCL

    n_stab = _stability_request(cfg)
    params = dict(cfg.get("params") or {})
    check = n_stab is not None and params.get("estimator", "linear") == "linear"
    address = RunConfig.from_dict(cfg).dask
    if address and params.get("estimator", "linear") != "linear":
        raise ValueError(f"This run targets the Dask scheduler at {address}, which runs the linear estimator's "
                         "covariance pass; the contrastive estimator trains in the worker process (or under "
                         "torchrun). Leave the scheduler empty for it.")
    rep.event("load", {"message": "loading data"})
    # An uploaded dataset's spec carries its files' hashes: a file changed since upload is refused by name.
    datasets.verify(cfg["dataset"])
    data, outcomes, truth = load_from_spec(cfg["dataset"])
    write_json(os.path.join(d, F.DATA_REPORT), data.report)
    with contextlib.ExitStack() as stack:
        source = data
        if address:
            # The dataset is loaded and checked here as for any run; its covariance pass (the one
            # step that reads every row) runs on the cluster, partition by partition.
            from .. import dask_source as DS

            client = stack.enter_context(_dask_client(address))
            source = DS.from_data(data, client=client)
            # Cancelled or failed: the partitions still queued on the cluster are cancelled (then
            # the client is closed, by _dask_client).
            stack.callback(source.cancel)
            rep.event("load", {"message": f"Dask scheduler {address}: {source.npartitions} partitions"})
        rep.event("load", {"n_samples": data.n_samples})
        lat = RunConfig.from_dict(cfg).resolve_lattice(data.modalities)
        ranks = cfg.get("ranks", "auto")
        model = HCL(lattice=lat, ranks=ranks, **params)
        from .. import progress as P

        # The factors this data will have (the refinement's cost grows with them): from its spectrum.
        rep.set_plan(fit_plan(data.n_samples, data.dims, lat, params, n_stab if check else None, ranks,
                              factors=P.factors_prior(data)),
                     max_iter=model.max_iter, tol=model.tol)
        model.fit(source, callback=rep.event)
    rep.event("save", {})
    model.save(os.path.join(d, F.MODEL))
    from ..report import safe_csv  # names a spreadsheet would run as formulas are neutralized

    with open(os.path.join(d, F.SUMMARY), "w", encoding="utf-8", newline="") as fh:
        fh.write(safe_csv(model.summary()))
    Z = model.transform(data)
    arrays = {f"node_{i}": Z[n] for i, n in enumerate(model.nodes_)}
    tmp = _tmp_name(os.path.join(d, "scores"), ".tmp.npz")
    try:
        np.savez(tmp, ids=np.asarray(data.ids).astype(str), observed=data.observed, **arrays)
        os.replace(tmp, os.path.join(d, F.SCORES))
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    write_json(os.path.join(d, F.SCORES_NODES), [node_label(n) for n in model.nodes_])
    if outcomes is not None:
        aligned = outcomes.align(data)
        with open(os.path.join(d, F.OUTCOMES), "w", encoding="utf-8", newline="") as fh:
            fh.write(safe_csv(aligned.reset_index()))
        write_json(os.path.join(d, F.OUTCOME_KINDS), outcomes.kinds)
    if truth is not None:
        write_json(os.path.join(d, F.TRUTH), truth)
    rep.event("saved", {"objective": model.objective_, "n_iter": model.n_iter_})
    if check:
        _do_stability(d, model, data, n_stab, rep)
    elif n_stab is not None:
        rep.set(force=True, stability_skipped="the stability check refits the linear structure search; "
                                              "it is not available for the contrastive estimator")


def fit_plan(n_samples: int, dims: Mapping[str, int], lattice: Any, params: Mapping[str, Any],
             stability: int | None = None, ranks: Any = "auto", factors: float | None = None) -> Any:
    """The predicted stages of a fit run (:func:`hcl_explore.progress.plan_fit`) from its config's
    pieces: the Train page shows its total before launch, the worker tracks progress against it."""
    from .. import progress as P

    auto = ranks == "auto" or (isinstance(ranks, Mapping) and any(v in (None, "auto") for v in ranks.values()))
    hidden = params.get("hidden") or [128]
    return P.plan_fit(n_samples, dims, len(lattice.nodes), estimator=params.get("estimator", "linear"),
                      max_iter=int(params.get("max_iter") or 5000), max_epochs=int(params.get("max_epochs") or 100),
                      hidden=int(max(hidden)) if params.get("encoder") != "linear" else 1,
                      stability=stability, auto_ranks=auto, node_sizes=[len(n) for n in lattice.nodes],
                      factors=factors)


def _predict_steps(options: Mapping[str, Any]) -> int:
    """Steps a prediction run reports: the representation refit, the group lasso, one per baseline."""
    from .. import progress as P  # its baselines are predict.BASELINES (the page imports no predict)

    base = options.get("baselines", True)
    n_base = len(base) if isinstance(base, (list, tuple)) else (len(P.PREDICT_BASELINES) if base is True else 0)
    return 2 + n_base


def _do_stability(d: str, model: Any, data: Any, n_resamples: int, rep: _Reporter) -> None:
    """Refit the structure search on subsamples and write ``stability.json``. Runs after the model is
    saved: a cancel stops it (the run is cancelled, the model stays); data that cannot be subsampled
    (out-of-memory sources) skip it, and an error in it is logged, both with a note in the status
    (``stability_skipped`` / ``stability_error``), the run still done."""
    if not hasattr(data, "subset"):
        rep.set(force=True, stability_skipped="the data is not held in memory, so it cannot be subsampled")
        rep.event("stability", {"message": "skipped: data not in memory"})
        return
    rep.mark("stability", {"resample": 0, "of": n_resamples})
    try:
        frame = model.stability(data, n_resamples=n_resamples, random_state=0, callback=rep.event)
    except Cancelled:
        raise
    except Exception as exc:  # noqa: BLE001  the fit is saved and good: a failed check must not hide it
        traceback.print_exc()
        rep.set(force=True, stability_error=str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}")
        return
    write_json(os.path.join(d, F.STABILITY), _plain_records(frame))


def _plain_records(frame: pd.DataFrame) -> list[dict]:
    """A frame as plain-JSON records (numpy scalars as int/float/str/bool)."""
    out = []
    for rec in frame.to_dict(orient="records"):
        row = {}
        for k, v in rec.items():
            if isinstance(v, np.generic):
                v = v.item()
            row[str(k)] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
        out.append(row)
    return out


def read_stability(workspace: str, run_id: str) -> pd.DataFrame | None:
    """The run's stability check (columns ``node``, ``rank``, ``found``, ``same_rank``,
    ``resamples``), or None when it was not computed. A damaged file is logged and read as None."""
    path = os.path.join(run_path(workspace, run_id), F.STABILITY)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            recs = json.load(fh)
        if not isinstance(recs, list) or not all(isinstance(r, dict) for r in recs):
            raise ValueError("not a list of records")
        frame = pd.DataFrame(recs)
        if not {"node", "found"} <= set(frame.columns):
            raise ValueError("the records have no 'node' and 'found'")
        frame["node"] = frame["node"].astype(str)
        for c in ("found", "same_rank"):
            if c in frame:
                frame[c] = pd.to_numeric(frame[c], errors="raise").astype(float)
        if not frame["found"].between(0.0, 1.0).all():
            raise ValueError("'found' outside [0, 1]")
        return frame
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.warning("run %s: stability.json could not be read (%s); shown as not computed.", run_id, exc)
        return None


def summary_table(model: Any, stability: pd.DataFrame | None = None) -> pd.DataFrame:
    """``model.summary()`` with the run's stability check beside it: ``found in resamples`` and
    ``same rank in resamples`` (shares in 0..1) when ``stability`` is given."""
    summ = model.summary().drop(columns=["found", "same_rank"], errors="ignore")
    if stability is None:
        return summ
    cols = {"found": "found in resamples", "same_rank": "same rank in resamples"}
    keep = stability[["node"] + [c for c in cols if c in stability.columns]].rename(columns=cols)
    return summ.merge(keep, on="node", how="left")


def _in_resamples(share: float, n: int | None) -> str:
    return f"{int(round(float(share) * n))} of {n}" if n else f"{float(share):.0%} of the"


def stability_note(stability: pd.DataFrame | None, status: Mapping[str, Any] | None = None) -> str:
    """One line on a run's stability check for a caption: how many resamples, and the least stable
    node among those the fit found (or why there is no check, from the run's ``status``)."""
    status = status or {}
    if stability is None or not len(stability):
        why = status.get("stability_error") or status.get("stability_skipped")
        return ("Stability was not computed for this run" + (f" ({why})." if why else
                " (the Train page's stability check was off)."))
    n = int(stability["resamples"].max()) if "resamples" in stability.columns else None
    found = stability[stability["rank"] > 0] if "rank" in stability.columns else stability
    head = f"Stability: the structure search was refitted on {n or 'several'} random subsamples; "
    if not len(found):
        return head + "this fit found no node."
    worst = found.loc[found["found"].idxmin()]
    if float(worst["found"]) >= 1.0:
        return head + "every node this fit found was found in all of them."
    return head + f"least stable found node: {worst['node']}, found in {_in_resamples(worst['found'], n)} resamples."


def _do_predict(d: str, cfg: Mapping[str, Any], rep: _Reporter) -> None:
    from .. import datasets
    from ..model import HCL
    from ..predict import evaluate_prediction

    ws = os.path.dirname(os.path.dirname(d))
    parent = run_path(ws, cfg["parent"])
    model = HCL.load(os.path.join(parent, F.MODEL))
    pcfg = read_json(os.path.join(parent, F.CONFIG), {})
    from .. import progress as P

    fit_s = (getattr(model, "timings_", None) or {}).get("total")
    options = cfg.get("options") or {}
    dims = getattr(model, "dims_", None) or {}
    base = options.get("baselines", True)
    base = list(P.PREDICT_BASELINES) if base is True else (list(base) if isinstance(base, (list, tuple)) else [])
    # Until the outcome is read: its classes unknown (two).
    rep.set_plan(P.plan_predict(_predict_steps(options), fit_s, n_samples=getattr(model, "n_samples_", None),
                                n_features=sum(int(v) for v in dims.values()) or None, baselines=base))
    rep.event("load", {"message": "loading data"})
    datasets.verify(pcfg["dataset"])
    data, outcomes, _ = load_from_spec(pcfg["dataset"], preprocessing=model.preprocessing_) if model.preprocessing_ \
        else load_from_spec(pcfg["dataset"])
    if outcomes is None or cfg["outcome"] not in outcomes.columns:
        raise ValueError(f"The dataset has no outcome column {cfg['outcome']!r}.")
    y = pd.Series(outcomes.y(cfg["outcome"], data), name=cfg["outcome"])
    kind = (getattr(outcomes, "kinds", None) or {}).get(cfg["outcome"])
    if options.get("task") not in (None, "auto"):
        kind = options["task"]
    rep.set_plan(P.plan_predict(_predict_steps(options), fit_s, n_samples=data.n_samples,
                                n_features=sum(int(v) for v in data.dims.values()) or None,
                                n_classes=1 if kind == "continuous" else int(y.nunique(dropna=True)), baselines=base))
    report = evaluate_prediction(model, data, y, callback=lambda s, i: rep.event("predict", {"step": s}),
                                 **(cfg.get("options") or {}))
    out = dict(report.to_dict(), outcome=cfg["outcome"])
    write_json(os.path.join(d, F.PREDICTION), out)
    path = F.prediction_path(parent, cfg["outcome"])
    # A file from before outcomes had their own key may hold another outcome under this name
    # (``readmit 30d`` and ``readmit_30d`` both were ``prediction_readmit_30d.json``): move it to
    # its own outcome's file instead of overwriting it.
    old = read_json(path, None)
    if isinstance(old, dict) and old.get("outcome") not in (None, cfg["outcome"]):
        other = F.prediction_path(parent, str(old["outcome"]))
        if other != path and not os.path.exists(other):
            os.replace(path, other)
    write_json(path, out)


def _safe(name: str) -> str:
    """The key of an outcome's files (:func:`files.outcome_key`)."""
    return F.outcome_key(name)


def sanitize_filename(name: str) -> str:
    """A safe file name for an upload: no folders, no leading dots, only plain characters."""
    base = os.path.basename(str(name).replace("\\", "/"))
    base = re.sub(r"[^A-Za-z0-9_.\-]", "_", base).lstrip(".")
    return base[:120] or "upload"
