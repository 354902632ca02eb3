"""Browser check of issue 16: in the real app (``streamlit run app.py`` in headless Chromium), a failed
upload with the name of a file of the current dataset changes no byte of any dataset file, and the
current dataset still loads after a reload."""

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from test_e2e import browser, server  # noqa: F401  (the same real server and browser fixtures)

pytestmark = pytest.mark.e2e


def _dataset_bytes(ws) -> dict[str, str]:
    """{path: sha256} of every stored dataset file and manifest (``files/``, ``datasets/``)."""
    out = {}
    for sub in ("files", "datasets"):
        for dirpath, _, names in os.walk(os.path.join(ws, sub)):
            for f in names:
                if f.endswith(".lock"):
                    continue
                p = os.path.join(dirpath, f)
                out[os.path.relpath(p, ws)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def _wait_text(page, text, timeout=60_000):
    page.get_by_text(text, exact=False).first.wait_for(timeout=timeout)


def test_a_failed_upload_changes_no_dataset_byte_and_the_dataset_loads_after_a_reload(server, browser, tmp_path):  # noqa: F811
    url, ws = server
    rng = np.random.default_rng(0)
    good = []
    for m in ("fac", "labs"):
        df = pd.DataFrame(rng.normal(size=(120, 4)).round(4), columns=[f"{m}{j}" for j in range(4)])
        df.insert(0, "pid", [f"P{i:04d}" for i in range(120)])
        p = tmp_path / f"{m}.csv"
        df.to_csv(p, index=False)
        good.append(str(p))
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    _wait_text(page, "Current dataset")
    page.locator("input[type=file]").first.set_input_files(good)
    _wait_text(page, "Current dataset: uploaded: fac, labs")
    before = _dataset_bytes(ws)
    assert any(k.endswith("fac.csv") for k in before) and any(k.endswith("manifest.json") for k in before)
    stored_fac = [Path(ws, k) for k in before if k.endswith("fac.csv")]
    fac_bytes = Path(good[0]).read_bytes()
    assert [p.read_bytes() for p in stored_fac] == [fac_bytes]

    # A binary file uploaded under the good file's name: refused by name, nothing changed.
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = bad_dir / "fac.csv"
    bad.write_bytes(b"\x00\x01\x02\xff binary" * 512)
    page.locator("input[type=file]").first.set_input_files([str(bad)])
    err = page.locator("[data-testid='stAlertContentError']").first
    err.wait_for(timeout=60_000)
    assert "fac.csv" in err.inner_text()
    _wait_text(page, "Current dataset: uploaded: fac, labs")
    assert _dataset_bytes(ws) == before
    assert [p.read_bytes() for p in stored_fac] == [fac_bytes]

    # After a reload the same dataset loads, from the same bytes.
    page.reload()
    _wait_text(page, "Current dataset: uploaded: fac, labs")
    _wait_text(page, "Quality control")
    assert not page.locator("[data-testid='stException']").count()
    assert _dataset_bytes(ws) == before
    page.close()
