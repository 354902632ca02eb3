"""hcl-explore: the Streamlit app. `streamlit run app.py` (after scripts/setup.sh)."""

import streamlit as st

from hcl_explore.ui import common as ui

st.set_page_config(page_title="hcl-explore", page_icon=":material/hub:", layout="wide")

pages = [
    st.Page("pages/data.py", title="Data", icon=":material/table:", default=True),
    st.Page("pages/lattice.py", title="Lattice", icon=":material/account_tree:"),
    st.Page("pages/train.py", title="Train", icon=":material/play_circle:"),
    st.Page("pages/structure.py", title="Structure", icon=":material/hub:"),
    st.Page("pages/prediction.py", title="Prediction", icon=":material/monitoring:"),
    st.Page("pages/export.py", title="Export", icon=":material/download:"),
]
nav = st.navigation(pages)

with st.sidebar:
    st.markdown("**hcl-explore** · which modalities share what")
    spec = ui.get_state().get("dataset") or ui.DEFAULT_DATASET
    # A dataset name is the user's text (file names): shown as written, never as markdown.
    st.caption(f"Dataset: {ui.md(spec.get('name', '?'))}")
    rid = ui.selected_run()
    if rid:
        st.caption(f"Run: {rid}")
    st.caption(f"Workspace: {ui.md(ui.workspace())}")

nav.run()
