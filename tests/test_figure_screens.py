"""Every hierarchy-type figure at M = 3, 6 and 10 modalities, drawn by plotly.js in headless
Chromium (the system browser; never `playwright install`): no two text boxes on the page overlap
(node labels, layer names, captions, titles, axis ticks, legend entries), and nothing is drawn
outside the figure. With ``HCL_WRITE_SCREENSHOTS=1`` the screenshots go to docs/screenshots/
(figures_M<M>_<name>.png, referenced from docs/app.md); otherwise to a temporary folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import hcl_explore as hx
from hcl_explore import figures as F
from hcl_explore.lattice import Lattice

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"]
MODS = {3: ["labs", "vitals", "notes"],
        6: ["labs", "vitals", "notes", "imaging", "genomics", "meds"],
        10: [f"mod{j}" for j in range(10)]}

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="no Chromium at /usr/bin/chromium")


def _fit(M: int):
    mods = MODS[M]
    ranks = {tuple(mods): 2, tuple(mods[:2]): 1}
    if M >= 6:
        ranks.update({tuple(mods[:3]): 1, tuple(mods[2:5]): 1, tuple(mods[4:6]): 1})
    ranks.update({(m,): 1 for m in mods})
    data, truth = hx.simulate(n=600, dims={m: 10 for m in mods}, ranks=ranks, noise=0.3, seed=0)
    return data, truth, hx.HCL(device="cpu").fit(data)


def _figures(M: int) -> dict[str, tuple]:
    """name -> (figure, width px it is drawn at)."""
    data, truth, model = _fit(M)
    node = max((n for n in model.nodes_), key=len)
    w = F.REF_WIDTH
    lat = model.lattice_
    pairwise = Lattice.preset("pairwise", MODS[M])
    return {
        "hierarchy": (F.model_hierarchy(model, highlight=[node]), w),
        "hierarchy_wide": (F.model_hierarchy(model), 1100),
        "matrix": (F.model_matrix(model, highlight=[node]), w),
        "lattice": (F.lattice_figure(lat if M < 10 else pairwise, ranks={n: 2 for n in lat.nodes[:2]}), w),
        "variance": (F.variance_figure(model), 900),
        "truth": (F.true_vs_recovered(truth.lattice, truth.ranks, model), 900),
        "loadings": (F.loadings_figure(model, node, top=15), w),
        "overlap": (F.overlap_figure(data.observed, data.modalities), 900),
    }


_JS = """() => {
  const sel = '.textpoint text, .annotation-text, .gtitle, .legendtext, .legendtitletext, .xtick text, .ytick text,'
    + ' .g-xtitle text, .g-ytitle text, .g-x2title text, .bartext, .cbtitle text, .cbaxis text';
  const out = [];
  for (const el of document.querySelectorAll(sel)) {
    const r = el.getBoundingClientRect();
    const t = (el.textContent || '').trim();
    if (!t || r.width === 0 || r.height === 0) continue;
    if (getComputedStyle(el).opacity === '0' || el.closest('[visibility=hidden]')) continue;
    out.push({t, cls: el.getAttribute('class') || el.parentNode.getAttribute('class') || '', x0: r.left, y0: r.top,
              x1: r.right, y1: r.bottom});
  }
  const root = document.querySelector('.main-svg').getBoundingClientRect();
  return {boxes: out, w: root.width, h: root.height};
}"""


def _overlaps(boxes: list[dict], tol: float = 1.0) -> list[tuple[str, str]]:
    bad = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if (min(a["x1"], b["x1"]) - max(a["x0"], b["x0"]) > tol and
                    min(a["y1"], b["y1"]) - max(a["y0"], b["y0"]) > tol):
                bad.append((a["t"][:40], b["t"][:40]))
    return bad


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        pg = b.new_page(viewport={"width": 1200, "height": 900})
        yield pg
        b.close()


@pytest.fixture(scope="module")
def plotly_js(tmp_path_factory) -> Path:
    import plotly

    src = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    dst = tmp_path_factory.mktemp("js") / "plotly.min.js"
    shutil.copy(src, dst)
    return dst


@pytest.mark.parametrize("M", [3, 6, 10])
def test_figures_have_no_overlapping_text(M, page, plotly_js, tmp_path):
    out = ROOT / "docs" / "screenshots" if os.environ.get("HCL_WRITE_SCREENSHOTS") == "1" else tmp_path
    problems = {}
    for name, (fig, width) in _figures(M).items():
        fig = fig.update_layout(width=width)
        html = fig.to_html(full_html=True, include_plotlyjs=False, config={"staticPlot": True})
        html = html.replace("<head>", f"<head><script src='file://{plotly_js}'></script>", 1)
        f = tmp_path / f"{name}.html"
        f.write_text(html)
        page.goto(f"file://{f}")
        page.wait_for_selector(".main-svg")
        page.wait_for_timeout(150)
        res = page.evaluate(_JS)
        boxes = res["boxes"]
        assert boxes, name
        bad = _overlaps(boxes)
        outside = [b["t"][:40] for b in boxes if b["x0"] < -1 or b["x1"] > res["w"] + 1 or b["y0"] < -1
                   or b["y1"] > res["h"] + 1]
        if bad or outside:
            problems[name] = {"overlap": bad[:6], "outside": outside[:6]}
        if name != "hierarchy_wide":
            page.locator(".main-svg").first.screenshot(path=str(out / f"figures_M{M}_{name}.png"))
    assert not problems, problems
