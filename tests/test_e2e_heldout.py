"""Browser checks of issue 15's held-out flow on the vendored real data (benchmarks/data), written
out as the CSV tables a user would upload: nutrimouse (2 views, 40 mice, 120 genes > 40 samples,
string labels "wt"/"ppar") and a 200-digit subsample of mfeat (6 views, integer digit labels 0-9).
The real app (``streamlit run app.py``) in headless Chromium, two browser contexts (two people)."""

import os
import re
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from test_e2e import _TEXT_BOXES, browser, server  # noqa: F401  (the same real server and browser fixtures)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
pytestmark = pytest.mark.e2e
VIEWPORT = {"width": 1280, "height": 900}  # Playwright's default width: the narrowest the pages are laid out for


def _wait_text(page, text, timeout=60_000):
    page.get_by_text(text, exact=False).first.wait_for(timeout=timeout)


def _write(folder: Path, name: str, n: int | None, seed: int = 0) -> dict:
    """The vendored data set ``name`` as one CSV per view (an id column first) and an outcomes CSV;
    ``n``: a seeded subsample of the samples."""
    from real_data import load_real

    data, labels = load_real(name)
    idx = np.arange(data.n_samples)
    if n is not None:
        idx = np.sort(np.random.default_rng(seed).choice(data.n_samples, n, replace=False))
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"{name[:2]}{int(i):04d}" for i in data.ids[idx]]
    paths = []
    for m in data.modalities:
        df = pd.DataFrame(np.asarray(data.X[m])[idx], columns=data.feature_names[m]).round(5)
        df.insert(0, "sample_id", ids)
        paths.append(str(folder / f"{m}.csv"))
        df.to_csv(paths[-1], index=False)
    out = pd.DataFrame({"sample_id": ids, **{k: np.asarray(v)[idx] for k, v in labels.items()}})
    out.to_csv(folder / "outcomes.csv", index=False)
    return {"views": paths, "outcomes": str(folder / "outcomes.csv"), "modalities": list(data.modalities)}


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    d = tmp_path_factory.mktemp("real")
    return {"nutrimouse": _write(d / "nutrimouse", "nutrimouse", None), "mfeat": _write(d / "mfeat", "mfeat", 200)}


def _upload(page, url, t):
    page.goto(url)
    _wait_text(page, "Current dataset")
    page.locator("input[type=file]").nth(0).set_input_files(t["views"])
    _wait_text(page, "Current dataset: uploaded: " + ", ".join(t["modalities"]), timeout=120_000)
    page.locator("input[type=file]").nth(1).set_input_files(t["outcomes"])
    _wait_text(page, "Matched to", timeout=60_000)  # the outcomes table is matched to the samples
    assert not page.locator("[data-testid='stException'], [data-testid='stAlertContentError']").count()


def _train_dataset(page) -> str:
    _wait_text(page, "Launch training")
    return re.search(r"Dataset: ([^\n]+)", page.inner_text("[data-testid='stMain']")).group(1).strip()


def _no_overprint(page, where):
    plots = page.locator(".js-plotly-plot")
    n = 0
    for i in range(plots.count()):
        if not plots.nth(i).is_visible():
            continue
        plots.nth(i).scroll_into_view_if_needed()
        res = plots.nth(i).evaluate(_TEXT_BOXES)
        if res["bad"] and os.environ.get("HX_SHOT"):
            plots.nth(i).screenshot(path=os.environ["HX_SHOT"])
        assert not res["bad"], (where, i, res["bad"][:5])
        n += 1
    return n


def test_two_people_upload_their_own_tables_and_each_keeps_their_own_current_dataset(server, browser, tables):  # noqa: F811
    """Person A uploads nutrimouse, person B (another browser) the six mfeat views: B's files start
    B's own dataset (they are never added to A's listed files), and each browser keeps its own
    current dataset on every page, also when a page is opened by its address (a new session)."""
    url, ws = server
    a = browser.new_context(viewport=VIEWPORT)
    b = browser.new_context(viewport=VIEWPORT)
    pa, pb = a.new_page(), b.new_page()
    _upload(pa, url, tables["nutrimouse"])
    _wait_text(pa, "more features than samples")  # 120 genes, 40 mice: p > n on the Data page
    _upload(pb, url, tables["mfeat"])
    names = {"a": "uploaded: gene, lipid", "b": "uploaded: " + ", ".join(tables["mfeat"]["modalities"])}
    for page, who in ((pa, "a"), (pb, "b")):
        page.get_by_role("link", name="Train").first.click()
        assert _train_dataset(page) == names[who]
    for page, who in ((pa, "a"), (pb, "b")):
        page.goto(url + "/train")  # a new session of the same browser
        assert _train_dataset(page) == names[who]
    a.close()
    b.close()


def _slider_home(page, label):
    """Move a slider (or select slider) to its first value with the keyboard."""
    page.get_by_role("slider", name=label).first.focus()
    page.keyboard.press("Home")
    page.wait_for_timeout(700)


def test_six_views_flow_upload_lattice_train_structure_prediction_export(server, browser, tables, tmp_path):  # noqa: F811
    """The whole flow on 200 mfeat digits (6 views; fac 216 and pix 240 features > 200 samples) in a
    1280-px window: no overprinted label in any figure, p > n warned on the Structure page, the
    integer digit outcome evaluated as 10 classes named 0-9, and both exports."""
    url, ws = server
    ctx = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    page = ctx.new_page()
    t = tables["mfeat"]
    _upload(page, url, t)
    page.get_by_role("link", name="Lattice").first.click()
    _wait_text(page, "Candidate lattice")
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    assert _no_overprint(page, "lattice") == 1

    page.get_by_role("link", name="Train").first.click()
    _wait_text(page, "Launch training")
    page.get_by_text("Check how stable the structure is").click()  # off: the test stays short
    page.wait_for_timeout(1000)
    page.get_by_role("button", name="Launch training").click()
    _wait_text(page, "Run finished.", timeout=300_000)
    page.get_by_role("link", name="Open the structure page").click()
    _wait_text(page, "Nodes found")
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    page.wait_for_timeout(1500)
    main = page.inner_text("[data-testid='stMain']")
    assert "fac: 216 features but only 200 samples" in main and "pix: 240 features" in main
    checked = _no_overprint(page, "structure")
    page.get_by_role("tab", name="Hierarchy diagram").click()
    page.wait_for_timeout(1500)
    checked += _no_overprint(page, "structure, hierarchy tab")
    assert checked >= 8

    page.get_by_role("link", name="Prediction").first.click()
    _wait_text(page, "Outcome")
    assert page.get_by_role("combobox", name="Outcome").input_value() == "digit (several classes)"
    page.get_by_text("Evaluation settings").click()
    _slider_home(page, "Cross-validation folds (training part)")
    _slider_home(page, "Bootstrap resamples")
    page.get_by_role("button", name="Evaluate").click()
    _wait_text(page, "10 classes", timeout=400_000)
    page.wait_for_timeout(2000)
    main = page.inner_text("[data-testid='stMain']")
    assert re.search(r"10 classes of digit: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9\b", main), main[:2000]
    assert "Macro-F1" in main and "Accuracy" in main
    assert _no_overprint(page, "prediction") == 3

    page.get_by_role("link", name="Export").first.click()
    _wait_text(page, "Download run (zip)", timeout=180_000)
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download run (zip)").click()
    dl.value.save_as(tmp_path / "run.zip")
    assert {"config.json", "summary.csv", "loadings.csv"} <= set(zipfile.ZipFile(tmp_path / "run.zip").namelist())
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download HTML report").click()
    dl.value.save_as(tmp_path / "report.html")
    html = (tmp_path / "report.html").read_text()
    assert "Prediction of digit (multiclass)" in html and "classes: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in html
    assert "fac: 216 features but only 200 samples" in html
    page.goto((tmp_path / "report.html").as_uri())
    page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
    assert _no_overprint(page, "HTML report") >= 5
    ctx.close()
