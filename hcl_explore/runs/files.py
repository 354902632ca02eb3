"""The run folder's file names: the only place that spells them (docs/architecture.md, "The run
folder"). Everything else asks for ``path(run_dir, MODEL)`` and friends, or for the readers of
:mod:`hcl_explore.runs`.

```
<workspace>/runs/<run_id>/
    config.json     what to do (RunConfig.to_dict) - written once
    status.json     state, stage, progress, ETA, pid, times, error - rewritten atomically under a lock
    worker.json     the launched worker's pid
    metrics.jsonl   one JSON line per progress event
    log.txt         the worker's stdout/stderr
    model.npz, summary.csv, scores.npz (+ scores_nodes.json), data_report.json, outcomes.csv,
    outcome_kinds.json, truth.json, stability.json
    prediction_<key>.json   evaluations of outcomes (a predict run writes into its parent fit run)
```
"""

from __future__ import annotations

import hashlib
import json
import os
import re

CONFIG = "config.json"
STATUS = "status.json"
STATUS_LOCK = "status.lock"
CANCEL = "CANCEL"
WORKER = "worker.json"
METRICS = "metrics.jsonl"
LOG = "log.txt"
MODEL = "model.npz"
SUMMARY = "summary.csv"
SCORES = "scores.npz"
SCORES_NODES = "scores_nodes.json"
DATA_REPORT = "data_report.json"
OUTCOMES = "outcomes.csv"
OUTCOME_KINDS = "outcome_kinds.json"
TRUTH = "truth.json"
STABILITY = "stability.json"
#: A predict run's own copy of its result (the parent fit run files it as prediction_<key>.json).
PREDICTION = "prediction.json"
#: In the workspace (not a run): what the last launched worker measured on this machine - its
#: start-up's seconds and the speed of the cost model (measured / predicted) - for the next plan.
WORKER_START = "worker_start.json"
#: What the zip export copies as they are, when present.
EXPORTED = (CONFIG, DATA_REPORT, TRUTH)


def path(run_dir: str, name: str) -> str:
    """``<run_dir>/<name>`` for one of this module's names."""
    return os.path.join(run_dir, name)


def outcome_key(name: str) -> str:
    """The key of an outcome's files (``prediction_<key>.json``): distinct outcome names get distinct
    keys. A plain lower-case name (``[a-z0-9_]``, at most 64 characters) is its own key; any other
    name gets ``x-`` and 12 hex digits of its SHA-1, which no plain name can spell (so ``readmit 30d``
    and ``readmit_30d`` do not share a file, nor do ``Y`` and ``y`` on a case-insensitive disk).
    Readers match results by the outcome stored in the file, not by this key."""
    name = str(name)
    if re.fullmatch(r"[a-z0-9_]{1,64}", name):
        return name
    return "x-" + hashlib.sha1(name.encode("utf-8")).hexdigest()[:12]


def prediction_path(run_dir: str, outcome: str) -> str:
    """Where the evaluation of ``outcome`` is filed in a fit run's folder."""
    return os.path.join(run_dir, f"prediction_{outcome_key(outcome)}.json")


def prediction_files(run_dir: str) -> list[str]:
    """Every evaluation file of a fit run's folder, by name."""
    try:
        names = sorted(os.listdir(run_dir))
    except FileNotFoundError:
        return []
    return [os.path.join(run_dir, f) for f in names if f.startswith("prediction_") and f.endswith(".json")]


def _read(p: str):
    try:
        with open(p, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def read_predictions(run_dir: str) -> dict[str, dict]:
    """Every saved evaluation of a run, {outcome: report dict}, found by the outcome stored inside
    each file (never by its file name). Where two files hold the same outcome (an older file named
    after a sanitized outcome), the one at the outcome's own key wins, else the newest. A file that
    names no outcome is listed under its file name."""
    found: dict[str, tuple[bool, float, dict]] = {}
    for p in prediction_files(run_dir):
        rep = _read(p)
        if not isinstance(rep, dict) or "task" not in rep:
            continue
        key = rep.get("outcome")
        key = str(key) if key is not None else os.path.basename(p)
        rank = (p == prediction_path(run_dir, key), os.path.getmtime(p))
        if key not in found or rank > found[key][:2]:
            found[key] = (*rank, rep)
    return {k: v[2] for k, v in sorted(found.items())}


def read_prediction(run_dir: str, outcome: str) -> dict | None:
    """The saved evaluation of ``outcome`` in a run's folder, or None: the file at the outcome's key
    if it holds this outcome, else any other prediction file that does (older runs)."""
    rep = _read(prediction_path(run_dir, outcome))
    if isinstance(rep, dict) and rep.get("outcome") == outcome:
        return rep
    return read_predictions(run_dir).get(outcome)
