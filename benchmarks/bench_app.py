"""App responsiveness: time to render each page of the app with the bundled sample data, through
streamlit's AppTest (the script run that a browser interaction triggers), cold and once cached.

A temporary workspace gets one finished fit of the clinical sample data and one readmission
evaluation (run by the worker in-process), then every page is rendered 1 + N times.

    PYTHONPATH=. python benchmarks/bench_app.py [--repeats 5] [--only pages,cold,queue,progress]

Also (issue 15): ``cold`` - a fresh ``streamlit run app.py`` and headless Chromium (the system
browser): seconds from the server's start, and from the first request, to the first page's text;
``queue`` - seconds from ``launch`` to the run leaving "queued"; ``progress`` - the progress a fit
reports every 0.2 s against the true share of its time (max deviation, monotone or not).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cold_first_page() -> None:
    import shutil
    import socket
    import subprocess
    import sys
    import urllib.request

    from playwright.sync_api import sync_playwright

    ws = tempfile.mkdtemp(prefix="bench_cold_")
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        port = so.getsockname()[1]
    env = dict(os.environ, HCL_EXPLORE_WORKSPACE=ws, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.1)
        t_up = time.perf_counter() - t0
        chromium = shutil.which("chromium") or "/usr/bin/chromium"
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=chromium, headless=True,
                                  args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                        "--disable-component-update", "--no-first-run"])
            page = b.new_page()
            t1 = time.perf_counter()
            page.goto(url)
            page.get_by_text("Current dataset").first.wait_for(timeout=120_000)
            t_page = time.perf_counter() - t1
            t2 = time.perf_counter()
            page.reload()
            page.get_by_text("Current dataset").first.wait_for(timeout=120_000)
            t_again = time.perf_counter() - t2
            b.close()
        print(f"cold: server up {t_up:.2f} s; first page (request -> 'Current dataset' shown) {t_page:.2f} s; "
              f"reload {t_again:.2f} s")
    finally:
        proc.terminate()
        proc.wait(10)


def _spec_files(ws: str, n: int, mods: list[str], d: int) -> dict:
    import pandas as pd

    import hcl_explore as hx

    ranks = {tuple(mods): 2, tuple(mods[:2]): 1, **{(m,): 1 for m in mods}}
    data, _ = hx.simulate(n=n, dims={m: d for m in mods}, ranks=ranks, noise=0.3, seed=0)
    paths = {}
    for m in mods:
        df = pd.DataFrame(data.X[m], columns=data.feature_names[m])
        df.insert(0, "sid", [f"S{i}" for i in range(n)])
        paths[m] = os.path.join(ws, f"{m}.csv")
        df.to_csv(paths[m], index=False)
    return {"modalities": paths, "id_column": "sid", "name": f"sim {len(mods)}x{d}"}


def queue_and_progress(which: set[str]) -> None:
    from hcl_explore import runs

    ws = tempfile.mkdtemp(prefix="bench_queue_")
    cases = [("clinical sample", {"bundled": "clinical", "name": "clinical"}, {}),
             ("sim 6 x 60, n 3000", _spec_files(ws, 3000, [f"m{j}" for j in range(6)], 60), {}),
             ("sim 2 x 300, n 2000", _spec_files(ws, 2000, ["genes", "lipids"], 300), {})]
    for name, spec, params in cases:
        from hcl_explore import progress as P
        from hcl_explore.lattice import Lattice

        data, _, _ = runs.load_from_spec(spec)
        plan = runs.fit_plan(data.n_samples, data.dims, Lattice(data.modalities), params)
        rid = runs.create_run(ws, {"kind": "fit", "dataset": spec, "lattice": "full", "lattice_name": "full",
                                   "params": params, "planned_s": round(plan.total, 1)})
        t0 = time.time()
        runs.launch(ws, rid)
        left = None
        samples = []
        while True:
            st = runs.read_status(ws, rid)
            now = time.time()
            if left is None and st["state"] != "queued":
                left = now - t0
            if st["state"] == "running":
                line = P.status_line(st, now)  # what the Train page shows
                samples.append((now, line["fraction"], line["eta_s"], line["step"]))
            if st["state"] in ("done", "failed", "cancelled"):
                break
            time.sleep(0.2)
        start = st.get("started") or t0
        total = (st.get("finished") or time.time()) - start
        if "queue" in which:
            print(f"queue: {name}: left 'queued' after {left:.2f} s (state {st['state']}, total {total:.1f} s)")
        if "progress" in which and samples:
            dev = [abs(p - (t - start) / total) for t, p, _, _ in samples if t - start > 0.1 * total]
            mono = all(b[1] >= a[1] for a, b in zip(samples, samples[1:]))
            eta_err = [abs(e - (start + total - t)) for t, _, e, _ in samples if e is not None]
            if "-v" in os.environ.get("BENCH_FLAGS", ""):
                for t, p_, e, s_ in samples:
                    print(f"   t={t - start:6.2f} true={(t - start) / total:.2f} shown={p_:.2f} eta={e} {s_}")
            print(f"progress: {name}: {len(samples)} checks, max |progress - true share| = "
                  f"{max(dev) if dev else float('nan'):.2f} (after the first tenth), monotone {mono}, "
                  f"median ETA error {sorted(eta_err)[len(eta_err) // 2] if eta_err else float('nan'):.1f} s, "
                  f"steps seen: {', '.join(dict.fromkeys(s for _, _, _, s in samples))}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default="pages,cold,queue,progress")
    args = ap.parse_args()
    which = set(args.only.split(","))
    if "cold" in which:
        cold_first_page()
    if which & {"queue", "progress"}:
        queue_and_progress(which)
    if "pages" not in which:
        return
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
