"""App responsiveness: time to render each page of the app with the bundled sample data, through
streamlit's AppTest (the script run that a browser interaction triggers), cold and once cached.

A temporary workspace gets one finished fit of the clinical sample data and one readmission
evaluation (run by the worker in-process), then every page is rendered 1 + N times.

    PYTHONPATH=. python benchmarks/bench_app.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    ws = tempfile.mkdtemp(prefix="bench_app_")
    os.environ["HCL_EXPLORE_WORKSPACE"] = ws
    from streamlit.testing.v1 import AppTest

    from hcl_explore import runs

    t = time.perf_counter()
    rid = runs.create_run(ws, {"kind": "fit", "dataset": {"bundled": "clinical", "name": "clinical"}, "lattice": "full",
                               "lattice_name": "full"})
    runs.run_worker(runs.run_path(ws, rid))
    pid = runs.create_run(ws, {"kind": "predict", "parent": rid, "outcome": "readmit_30d", "dataset": {"name": "p"}})
    runs.run_worker(runs.run_path(ws, pid))
    print(f"setup (fit + readmission evaluation of the clinical sample): {time.perf_counter() - t:.1f} s")
    print(f"{'page':12s} {'cold (s)':>9s} {'cached median (s)':>18s} {'max (s)':>8s}")
    for page in ("data", "lattice", "train", "structure", "prediction", "export"):
        times = []
        for _ in range(1 + args.repeats):
            at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
            at.query_params["run"] = rid
            at.run()
            t = time.perf_counter()
            at.switch_page(f"pages/{page}.py").run()
            times.append(time.perf_counter() - t)
            assert not at.exception, at.exception
        warm = sorted(times[1:])
        print(f"{page:12s} {times[0]:9.3f} {warm[len(warm) // 2]:18.3f} {max(warm):8.3f}")


if __name__ == "__main__":
    main()
