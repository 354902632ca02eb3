"""Take the README's screenshots: every page of the app on the bundled clinical sample, in headless
Chromium (the system browser; never `playwright install`).

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from playwright.sync_api import sync_playwright

    from hcl_explore import runs

    ws = tempfile.mkdtemp(prefix="hcl_shots_")
    rid = runs.create_run(ws, {"kind": "fit", "dataset": {"bundled": "clinical", "name": "clinical (bundled sample)"},
                               "lattice": "full", "lattice_name": "full"})
    runs.run_worker(runs.run_path(ws, rid))
    pid = runs.create_run(ws, {"kind": "predict", "parent": rid, "outcome": "readmit_30d", "dataset": {"name": "p"}})
    runs.run_worker(runs.run_path(ws, pid))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, HCL_EXPLORE_WORKSPACE=ws, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.headless", "true", "--server.fileWatcherType", "none"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        os.makedirs(args.out, exist_ok=True)
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = b.new_page(viewport={"width": 1440, "height": 1000})
            for name, path, wait_for in [("data", "", "Quality control"), ("lattice", "lattice", "Model size"),
                                         ("train", "train", "Run finished."), ("structure", "structure", "Truth vs recovered"),
                                         ("prediction", "prediction", "Selected nodes for"), ("export", "export", "Download")]:
                page.goto(f"{url}/{path}?run={rid}")
                page.get_by_text(wait_for).first.wait_for(timeout=60_000)
                time.sleep(2.0)  # let plotly finish drawing
                page.screenshot(path=os.path.join(args.out, f"{name}.png"), full_page=name in ("structure", "prediction"))
                print("wrote", os.path.join(args.out, f"{name}.png"))
            b.close()
    finally:
        proc.terminate()


if __name__ == "__main__":
    main()
