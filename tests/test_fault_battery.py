"""The fault battery of issue 16 (benchmarks/fault_battery.py) in the suite: every in-process case -
wide and damaged tables, inf outcomes, hostile model and scores files, formula and markup names,
colliding names, uploads, pinned data, damaged run folders, the status race - each hashing the
workspace before and after. The CLI, checkpoint and process cases (subprocesses, seconds each) are
guarded by tests/test_cli.py and tests/test_faults.py; the script runs them all."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "fault_battery.py"
_spec = importlib.util.spec_from_file_location("fault_battery", _PATH)
battery = importlib.util.module_from_spec(_spec)
sys.modules["fault_battery"] = battery
_spec.loader.exec_module(battery)

IN_PROCESS = [(cat, name, fn) for cat, name, fn in battery.CASES if cat not in ("cli", "checkpoints", "processes")]


@pytest.mark.parametrize("case", IN_PROCESS, ids=[f"{c}:{n}" for c, n, _ in IN_PROCESS])
def test_fault_case(case, tmp_path):
    _cat, _name, fn = case
    cwd = os.getcwd()
    try:
        fn(tmp_path)
    finally:
        os.chdir(cwd)


def test_the_battery_covers_every_category_of_the_issue():
    cats = {c for c, _, _ in battery.CASES}
    assert cats >= {"loaders", "outcomes", "model files", "checkpoints", "exports", "names", "collisions", "datasets",
                    "pinning", "run folders", "status", "processes", "cli", "api"}
    assert len(battery.CASES) >= 97
