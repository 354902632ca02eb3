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
