"""App responsiveness: time to render each page of the app with the bundled sample data, through
streamlit's AppTest (the script run that a browser interaction triggers), cold and once cached.

A temporary workspace gets one finished fit of the clinical sample data and one readmission
evaluation (run by the worker in-process), then every page is rendered 1 + N times.

    PYTHONPATH=. python benchmarks/bench_app.py [--repeats 5] [--only pages,cold,queue,progress]

Also (issue 15): ``cold`` - fresh ``streamlit run app.py`` servers (``--cold-repeats``, median)
and headless Chromium (the system browser): seconds from the request to the first page's title,
to its whole text and to the end of its script run, next to ``python -c "import streamlit"`` in
the same session (the yardstick: ratios travel between machines and loads) and the load average;
then AppTest's first script run in a fresh process; ``queue`` - seconds from ``launch`` to the
run leaving "queued"; ``progress`` - the progress that fit and prediction runs show every 0.2 s
against the true share of their time (max deviation, monotone or not) on the clinical sample, two
simulated sets and two real ones (nutrimouse, mfeat: ``--cases``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2]


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _import_seconds(code: str, repeats: int = 3) -> float:
    """Median wall seconds of ``python -c code`` in a fresh interpreter (the same session's yardstick)."""
    import subprocess
    import sys

    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        out.append(time.perf_counter() - t)
    return _median(out)


def cold_first_page(repeats: int = 3) -> None:
    """A fresh ``streamlit run app.py`` per repeat (empty workspace: the bundled sample), headless
    Chromium: seconds from the request to the first page's title text ("Current dataset"), to its
    last element (the link to the next page) and to the end of the script run (the status widget
    gone), plus the server's start. Printed with the load average and as ratios to a bare
    ``python -c "import streamlit"`` measured in the same session (a slower or busier machine
    scales both). Also the first script run in a fresh process through AppTest (a proxy without a
    browser) and which heavy modules the first page imported."""
    import shutil
    import socket
    import subprocess
    import sys
    import urllib.request

    from playwright.sync_api import sync_playwright

    load0 = _load()
    t_imp = _import_seconds("import streamlit")
    rows = []
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as p:
        for _ in range(repeats):
            ws = tempfile.mkdtemp(prefix="bench_cold_")
            with socket.socket() as so:
                so.bind(("127.0.0.1", 0))
                port = so.getsockname()[1]
            env = dict(os.environ, HCL_EXPLORE_WORKSPACE=ws, PYTHONPATH=str(ROOT))
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port",
                                     str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            url = f"http://127.0.0.1:{port}"
            try:
                while True:
                    try:
                        if urllib.request.urlopen(url + "/_stcore/health", timeout=1).read() == b"ok":
                            break
                    except OSError:
                        time.sleep(0.05)
                t_up = time.perf_counter() - t0
                b = p.chromium.launch(executable_path=chromium, headless=True,
                                      args=["--headless", "--no-sandbox", "--disable-gpu",
                                            "--disable-background-networking", "--disable-component-update",
                                            "--no-first-run"])
                page = b.new_page()
                plotly = []
                page.on("request", lambda r: plotly.append(r.url) if "Plotly" in r.url else None)
                t1 = time.perf_counter()
                page.goto(url)
                page.get_by_text("Current dataset").first.wait_for(timeout=120_000)
                t_text = time.perf_counter() - t1
                page.get_by_text("Next: choose the candidate lattice").first.wait_for(timeout=120_000)
                t_end = time.perf_counter() - t1
                page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')",
                                       timeout=120_000)
                t_idle = time.perf_counter() - t1
                t2 = time.perf_counter()
                page.reload()
                page.get_by_text("Next: choose the candidate lattice").first.wait_for(timeout=120_000)
                t_again = time.perf_counter() - t2
                b.close()
            finally:
                proc.terminate()
                proc.wait(10)
            rows.append((t_up, t_text, t_end, t_idle, t_again, bool(plotly)))
    load1 = _load()
    med = [_median([r[i] for r in rows]) for i in range(5)]
    print(f"cold first page ({repeats} fresh servers; load average before {load0}, after {load1}):")
    print(f"  python -c 'import streamlit': {t_imp:.2f} s (the yardstick)")
    for name, v in zip(("server up (health ok)", "request -> 'Current dataset' shown", "request -> whole page shown",
                        "request -> script run finished", "reload, whole page"), med):
        print(f"  {name:38s} {v:6.2f} s  ({v / t_imp:4.1f}x import streamlit)")
    print("  per run (up / title / page / finished / reload): "
          + "; ".join(" / ".join(f"{x:.2f}" for x in r[:5]) for r in rows))
    print(f"  plotly's browser bundle requested by the first page: {any(r[5] for r in rows)}")
    # The same first script run without a browser, in a fresh process: AppTest's run (a proxy).
    code = ("import os, sys, time, tempfile; os.environ['HCL_EXPLORE_WORKSPACE'] = tempfile.mkdtemp(); "
            "from streamlit.testing.v1 import AppTest; at = AppTest.from_file(sys.argv[1], default_timeout=120); "
            "t = time.perf_counter(); at.run(); t1 = time.perf_counter() - t; t = time.perf_counter(); at.run(); "
            "print(f'{t1:.3f} {time.perf_counter() - t:.3f}', "
            "' '.join(m for m in ('torch', 'plotly', 'scipy', 'sklearn', 'networkx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "app.py")], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True).stdout.split()
    heavy = ", ".join(out[2:]) or "none of torch, plotly, scipy, sklearn, networkx"
    print(f"  AppTest, fresh process: first run {float(out[0]):.2f} s ({float(out[0]) / t_imp:.1f}x import streamlit), "
          f"second {float(out[1]):.2f} s; heavy modules loaded: {heavy}")


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


def _real_files(ws: str, name: str) -> dict:
    """A vendored real data set (benchmarks/real_data.py) as the CSV files a user would upload:
    one per view and one of its labels (the outcomes)."""
    import sys

    import pandas as pd

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from real_data import load_real

    data, labels = load_real(name)
    ids = [str(i) for i in data.ids]
    paths = {}
    for m in data.modalities:
        df = pd.DataFrame(data.X[m], columns=data.feature_names[m])
        df.insert(0, "sid", ids)
        paths[m] = os.path.join(ws, f"{name}_{m}.csv")
        df.to_csv(paths[m], index=False)
    out = pd.DataFrame({k: v for k, v in labels.items()})
    out.insert(0, "sid", ids)
    opath = os.path.join(ws, f"{name}_outcomes.csv")
    out.to_csv(opath, index=False)
    return {"modalities": paths, "id_column": "sid", "outcomes": opath, "name": name}


#: The progress section's runs: (name, dataset, outcome of a prediction run after the fit or None).
PROGRESS_CASES = ("clinical", "sim6", "sim2", "nutrimouse", "mfeat")


def _follow(ws: str, rid: str, name: str, which: set[str]) -> None:
    """Launch run ``rid`` and sample what the Train page shows every 0.2 s until it ends; print the
    seconds it waited in "queued" and its progress against the true share of its time."""
    from hcl_explore import progress as P
    from hcl_explore import runs

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
        print(f"progress: {name}: {len(samples)} checks over {total:.1f} s, max |progress - true share| = "
              f"{max(dev) if dev else float('nan'):.2f} (after the first tenth), monotone {mono}, "
              f"median ETA error {sorted(eta_err)[len(eta_err) // 2] if eta_err else float('nan'):.1f} s, "
              f"steps seen: {', '.join(dict.fromkeys(s for _, _, _, s in samples))}", flush=True)


def queue_and_progress(which: set[str], probe: bool = True, cases: Sequence[str] = PROGRESS_CASES,
                       no_prior: bool = False) -> None:
    """Fit runs of the clinical sample, two simulated sets and two real ones (nutrimouse: 2 views x
    40 mice, 120 genes > 40 samples; mfeat: 6 views x 2,000 digits), each launched as the Train page
    does, then a prediction run (the Prediction page's options) after the clinical sample
    (readmission), nutrimouse (genotype) and mfeat (digit, 10 classes). ``cases``: a subset of
    :data:`PROGRESS_CASES` or ``covid`` (COVID serology, 6 views x 438 sera: most of its fit is the
    silent rank confirmation on subsamples). ``no_prior``: the launch plan without the data's factor prior (the
    Train page's plan today)."""
    from hcl_explore import progress as P
    from hcl_explore import runs
    from hcl_explore.lattice import Lattice

    ws = tempfile.mkdtemp(prefix="bench_queue_")
    if probe:
        # What the app does after its first page in a new workspace: measure a worker's start-up
        # before the first run (--no-probe: the first run's plan starts from the 4 s default).
        th = runs.measure_worker_start(ws, delay_s=0.0)
        if th is not None:
            th.join()
        print(f"worker start-up measured before the first run: {runs._machine(ws).get('seconds')} s")
    specs = {"clinical": ("clinical sample", lambda: {"bundled": "clinical", "name": "clinical"}, "readmit_30d"),
             "sim6": ("sim 6 x 60, n 3000", lambda: _spec_files(ws, 3000, [f"m{j}" for j in range(6)], 60), None),
             "sim2": ("sim 2 x 300, n 2000", lambda: _spec_files(ws, 2000, ["genes", "lipids"], 300), None),
             "nutrimouse": ("nutrimouse 2 x 40", lambda: _real_files(ws, "nutrimouse"), "genotype"),
             "mfeat": ("mfeat 6 x 2000", lambda: _real_files(ws, "mfeat"), "digit"),
             "covid": ("COVID serology 6 x 438", lambda: _real_files(ws, "covid_serology"), "status")}
    for case in cases:
        key, _, only = case.partition(":")  # "mfeat:fit": the fit alone
        name, make, outcome = specs[key]
        outcome = None if only == "fit" else outcome
        spec = make()
        params: dict = {}
        data, _, _ = runs.load_from_spec(spec)
        # The plan shown at launch, with the factors the data's spectrum predicts (the worker makes
        # the same once it has loaded the data; without them the plan assumes a third of min(D, n)).
        plan = runs.fit_plan(data.n_samples, data.dims, Lattice(data.modalities), params,
                             factors=None if no_prior else P.factors_prior(data))
        rid = runs.create_run(ws, {"kind": "fit", "dataset": spec, "lattice": "full", "lattice_name": "full",
                                   "params": params, "planned_s": round(plan.total, 1), "plan": plan.to_dict()})
        _follow(ws, rid, f"{name} (fit)", which)
        if outcome and "progress" in which and runs.read_status(ws, rid)["state"] == "done":
            # As the Prediction page launches it.
            pid = runs.create_run(ws, {"kind": "predict", "parent": rid, "outcome": outcome,
                                       "dataset": {"name": f"prediction of {outcome}"},
                                       "options": {"test_size": 0.25, "cv": 5, "bias_correction": False,
                                                   "n_bootstrap": 500}})
            _follow(ws, pid, f"{name} (prediction of {outcome})", {"progress"})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default="pages,cold,queue,progress")
    ap.add_argument("--cold-repeats", type=int, default=3)
    ap.add_argument("--no-probe", action="store_true", help="progress: no start-up measurement before the first run")
    ap.add_argument("--no-prior", action="store_true",
                    help="progress: launch plans without the data's factor prior (as the Train page makes them)")
    ap.add_argument("--cases", default=",".join(PROGRESS_CASES),
                    help=f"queue/progress: which runs ({', '.join(PROGRESS_CASES)}; mfeat's prediction takes minutes: "
                         "'mfeat:fit' runs the fit alone)")
    args = ap.parse_args()
    which = set(args.only.split(","))
    if "cold" in which:
        cold_first_page(args.cold_repeats)
    if which & {"queue", "progress"}:
        queue_and_progress(which, probe=not args.no_probe, cases=[c for c in args.cases.split(",") if c],
                           no_prior=args.no_prior)
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
