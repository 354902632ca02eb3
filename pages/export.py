"""Export: a run as a zip of plain files, or as a self-contained offline HTML report."""

import os

import streamlit as st

from hcl_explore import report, runs
from hcl_explore.ui import common as ui

st.title("Export")
rid = ui.run_pick()
if rid is None:
    st.stop()
d = runs.run_path(ui.workspace(), rid)


@st.cache_data(show_spinner="Preparing the exports ...", max_entries=8)
def _exports(run_dir: str, stamp: float) -> tuple[bytes, str]:  # noqa: ARG001
    return report.run_zip(run_dir), report.run_html(run_dir)


stamp = max(os.path.getmtime(os.path.join(d, f)) for f in os.listdir(d))
zip_bytes, html_text = _exports(d, stamp)
st.caption("The zip holds the config, the summary table, loadings, factor scores and metrics (CSV/JSON, "
           "no pickles). The HTML report holds the figures and opens offline in any browser.")
c = st.columns(2)
c[0].download_button("Download run (zip)", data=zip_bytes, file_name=f"hcl_run_{rid}.zip",
                     mime="application/zip", icon=":material/folder_zip:")
c[1].download_button("Download HTML report", data=html_text, file_name=f"hcl_report_{rid}.html",
                     mime="text/html", icon=":material/description:")
