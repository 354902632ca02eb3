"""End to end: a real `streamlit run app.py` driven by headless Chromium (Playwright, the system
browser at /usr/bin/chromium; never `playwright install`)."""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hcl_explore as hx

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.e2e
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws")
    port = _free_port()
    env = dict(os.environ, HCL_EXPLORE_WORKSPACE=str(ws), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
                             "--server.port", str(port), "--browser.gatherUsageStats", "false",
                             "--server.fileWatcherType", "none"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=1).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("streamlit did not start: " + proc.stdout.read().decode()[-2000:])
    yield url, ws
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}; scripts/setup.sh --dev installs it (apt-get install chromium).")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def csvs(tmp_path_factory):
    d = tmp_path_factory.mktemp("csv")
    data, _ = hx.simulate(n=2000, dims={"labs": 30, "vitals": 20, "notes": 40},
                          ranks={("labs", "vitals", "notes"): 2, ("labs", "vitals"): 1, ("labs",): 2, ("vitals",): 1, ("notes",): 2},
                          noise=0.3, seed=0)
    paths = []
    for m in data.modalities:
        df = pd.DataFrame(data.X[m], columns=data.feature_names[m]).round(4)
        df.insert(0, "patient_id", [f"P{i:05d}" for i in range(data.n_samples)])
        p = d / f"{m}.csv"
        df.to_csv(p, index=False)
        paths.append(str(p))
    bad = d / "broken.csv"
    bad.write_text("patient_id,x,y\n" + "".join(f"P{i:05d},1,2\n" for i in range(30)) + "P99999,1,2,3,4\n")
    return paths, str(bad)


def _wait_text(page, text, timeout=60_000):
    page.get_by_text(text, exact=False).first.wait_for(timeout=timeout)


def test_upload_train_reload_structure_and_error(server, browser, csvs):
    url, ws = server
    paths, bad = csvs
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    _wait_text(page, "Current dataset")
    page.locator("input[type=file]").first.set_input_files(paths)
    _wait_text(page, "Current dataset: uploaded: labs, vitals, notes")
    _wait_text(page, "Quality control")

    page.get_by_role("link", name="Train").first.click()
    page.get_by_role("button", name="Launch training").click()
    _wait_text(page, "Run 2")  # run ids start with the year
    page.wait_for_function("() => location.search.includes('run=')", timeout=30_000)
    page.reload()
    page.get_by_text(re.compile(r"Now: |Finished\.")).first.wait_for(timeout=60_000)  # the run's progress, found again after the reload
    _wait_text(page, "Run finished.", timeout=120_000)

    page.get_by_role("link", name="Open the structure page").click()
    _wait_text(page, "Nodes found")
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    svg_text = page.locator(".js-plotly-plot").first.inner_text()
    for label in ("labs+vitals+notes", "labs+vitals", "notes"):
        assert label in svg_text
    page.screenshot(path=str(Path(ws) / "structure.png"))

    page.get_by_role("link", name="Data").first.click()
    _wait_text(page, "Current dataset")
    page.locator("input[type=file]").first.set_input_files(paths + [bad])
    _wait_text(page, "broken.csv")
    err = page.locator("[data-testid='stAlertContentError']").first
    err.wait_for(timeout=60_000)
    assert "broken.csv" in err.inner_text() and "fields" in err.inner_text()
    # The good dataset stays current.
    _wait_text(page, "Current dataset: uploaded: labs, vitals, notes")
    page.close()


def test_structure_page_shows_how_stable_each_node_is(server, browser, csvs):
    from hcl_explore import runs

    url, ws = server
    paths, _ = csvs
    spec = {"modalities": {Path(p).stem: p for p in paths}, "id_column": "patient_id", "name": "stability e2e"}
    rid = runs.create_run(str(ws), {"kind": "fit", "dataset": spec, "lattice": "full", "stability": {"n_resamples": 5}})
    assert runs.run_worker(runs.run_path(str(ws), rid)) == 0, runs.read_log(str(ws), rid)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}/structure?run={rid}")
    _wait_text(page, "Nodes found")
    _wait_text(page, "refitted on 5 random subsamples")
    plot = page.locator(".js-plotly-plot", has_text="Recovered hierarchy").first
    plot.wait_for(timeout=60_000)
    plot.scroll_into_view_if_needed()
    assert "Opacity = share of the 5 subsample refits that found the node" in plot.inner_text()
    # Hovering the global node shows in how many resamples it was found.
    labels = plot.locator("g.textpoint text")
    box = None
    for i in range(labels.count()):
        if (labels.nth(i).text_content() or "").startswith("labs+vitals+notes"):
            box = labels.nth(i).bounding_box()
    assert box is not None
    points = [p.bounding_box() for p in plot.locator("g.points path.point").all()]
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    marker = min((p for p in points if p), key=lambda p: (p["x"] + p["width"] / 2 - cx) ** 2 + (p["y"] + p["height"] / 2 - cy) ** 2)
    page.mouse.move(marker["x"] + marker["width"] / 2, marker["y"] + marker["height"] / 2)
    hover = plot.locator("g.hoverlayer")
    page.wait_for_function("el => el.textContent.includes('resamples')", arg=hover.element_handle(), timeout=10_000)
    text = hover.text_content()
    assert "labs+vitals+notes" in text and "found in 5 of 5 resamples" in text, text
    page.close()


_TEXT_BOXES = """(plot) => {
  const sel = '.textpoint text, .annotation-text, .gtitle, .legendtext, .xtick text, .ytick text, .g-xtitle text,'
    + ' .g-ytitle text, .bartext, .cbaxis text';
  const out = [];
  for (const el of plot.querySelectorAll(sel)) {
    const r = el.getBoundingClientRect();
    const t = (el.textContent || '').trim();
    if (t && r.width > 0 && r.height > 0) out.push({t, x0: r.left, y0: r.top, x1: r.right, y1: r.bottom});
  }
  const bad = [];
  for (let i = 0; i < out.length; i++) for (let j = i + 1; j < out.length; j++) {
    const a = out[i], b = out[j];
    if (Math.min(a.x1, b.x1) - Math.max(a.x0, b.x0) > 1 && Math.min(a.y1, b.y1) - Math.max(a.y0, b.y0) > 1)
      bad.push(a.t.slice(0, 30) + ' / ' + b.t.slice(0, 30));
  }
  return {n: out.length, bad};
}"""


def test_six_modalities_structure_and_lattice_pages_have_no_overprinted_labels(server, browser, tmp_path):
    from hcl_explore import runs

    url, ws = server
    mods = ["labs", "vitals", "notes", "imaging", "genomics", "meds"]
    ranks = {tuple(mods): 2, tuple(mods[:3]): 1, tuple(mods[2:5]): 1, **{(m,): 1 for m in mods}}
    data, _ = hx.simulate(n=500, dims={m: 10 for m in mods}, ranks=ranks, noise=0.3, seed=0)
    paths = {}
    for m in mods:
        df = pd.DataFrame(data.X[m], columns=data.feature_names[m]).round(4)
        df.insert(0, "pid", [f"P{i}" for i in range(data.n_samples)])
        paths[m] = str(tmp_path / f"{m}.csv")
        df.to_csv(paths[m], index=False)
    spec = {"modalities": paths, "id_column": "pid", "name": "six modalities"}
    rid = runs.create_run(str(ws), {"kind": "fit", "dataset": spec, "lattice": "full", "lattice_name": "full"})
    assert runs.run_worker(runs.run_path(str(ws), rid)) == 0, runs.read_log(str(ws), rid)
    runs.write_json(os.path.join(str(ws), "state.json"), {"dataset": spec})
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    for path, title in ((f"/structure?run={rid}", "Nodes found"), ("/lattice", "Candidate lattice")):
        page.goto(url + path)
        _wait_text(page, title)
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
        page.wait_for_timeout(1500)
        tabs = [None] + (["Hierarchy diagram"] if "structure" in path else [])
        checked = 0
        for tab in tabs:
            if tab:
                page.get_by_role("tab", name=tab).click()
                page.wait_for_timeout(1500)
            plots = page.locator(".js-plotly-plot")
            for i in range(plots.count()):
                if not plots.nth(i).is_visible():
                    continue  # the other tab's figure
                plots.nth(i).scroll_into_view_if_needed()
                res = plots.nth(i).evaluate(_TEXT_BOXES)
                assert res["n"] > 0 and not res["bad"], (path, tab, i, res["bad"][:5])
                checked += 1
        assert checked >= (4 if "structure" in path else 1)
    page.close()
