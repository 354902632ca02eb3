"""The tour notebook runs top to bottom on CPU (stored without outputs)."""

import shutil
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def test_tour_notebook_executes(tmp_path):
    src = ROOT / "examples" / "tour.ipynb"
    nb = nbformat.read(src, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "store the notebook without outputs"
    shutil.copy(src, tmp_path / "tour.ipynb")
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs if o.output_type in ("execute_result", "display_data"))
    assert "HCL (fitted)" in html and "PredictionReport" in html
    figs = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figs) >= 6
    assert (tmp_path / "tour_model.npz").exists()
