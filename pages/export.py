"""Export: a run as a zip of plain files, or as a self-contained offline HTML report."""

import os

import streamlit as st

from hcl_explore import report, runs
from hcl_explore.runs import files as RF
from hcl_explore.ui import common as ui

st.title("Export")
rid = ui.run_pick()
if rid is None:
    st.stop()
d = runs.run_path(ui.workspace(), rid)


@st.cache_data(show_spinner="Preparing the exports ...", max_entries=8)
def _exports(run_dir: str, stamp: float) -> tuple[bytes, str]:  # noqa: ARG001
    return report.run_zip(run_dir), report.run_html(run_dir)


def _stamp(run_dir: str) -> float:
    """Newest modification time in the run folder (a file removed meanwhile is skipped)."""
    out = 0.0
    try:
        names = os.listdir(run_dir)
    except OSError:
        return out
    for f in names:
        try:
            out = max(out, os.path.getmtime(os.path.join(run_dir, f)))
        except OSError:
            pass
    return out


model_path = RF.path(d, RF.MODEL)
try:
    if not os.path.exists(model_path):
        raise FileNotFoundError
    zip_bytes, html_text = _exports(d, _stamp(d))
except FileNotFoundError:
    st.error(ui.md(f"This run's model file is missing: {model_path}"), icon=":material/error:")
    st.stop()
except ValueError as exc:  # a damaged model or scores file, named by the safe reader
    what = "scores" if "scores file" in str(exc) else "model" if "model file" in str(exc) else None
    st.error(ui.md(f"This run's {what} file is damaged: {exc}" if what else f"This run cannot be exported: {exc}"),
             icon=":material/error:")
    st.stop()
except Exception as exc:  # noqa: BLE001  another damaged file of the run: a message, not a crash
    st.error(ui.md(f"This run cannot be exported ({type(exc).__name__}: {exc})"), icon=":material/error:")
    st.stop()
st.caption("The zip holds the config, the summary table, loadings, factor scores and metrics (CSV/JSON, "
           "no pickles; text cells that a spreadsheet would run as a formula start with '). The HTML report "
           "holds the figures and opens offline in any browser.")
c = st.columns(2)
c[0].download_button("Download run (zip)", data=zip_bytes, file_name=f"hcl_run_{rid}.zip",
                     mime="application/zip", icon=":material/folder_zip:")
c[1].download_button("Download HTML report", data=html_text, file_name=f"hcl_report_{rid}.html",
                     mime="text/html", icon=":material/description:")
