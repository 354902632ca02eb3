"""hcl-explore: the Streamlit app. `streamlit run app.py` (after scripts/setup.sh)."""

# `import hcl_explore` is light (its names load on first use, torch only with the model), so the
# first page renders without waiting for torch.
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
# The navigation is drawn here (config: client.showSidebarNavigation = false), so the sidebar never
# shows the raw list of page files while the app starts.
nav = st.navigation(pages, position="hidden")

with st.sidebar:
    st.markdown("**hcl-explore** · which modalities share what")
    for p in pages:
        st.page_link(p, label=p.title, icon=p.icon)
    st.divider()
    spec = ui.get_state().get("dataset") or ui.DEFAULT_DATASET
    # A dataset name is the user's text (file names): shown as written, never as markdown.
    st.caption(f"Dataset: {ui.md(spec.get('name', '?'))}")
    run_slot = st.empty()
    st.caption(f"Workspace: {ui.md(ui.workspace())}")
    demo_slot = st.container()

try:
    nav.run()
finally:
    # After the page: the run it selected (the URL's), not the one before it.
    rid = ui.selected_run()
    if rid:
        run_slot.caption(f"Run: {rid}")
    with demo_slot:
        from hcl_explore.ui import demo

        demo.show(nav.title, rid, ui.workspace(), ui.run_model)
    # Once per workspace, after the first page: how long a run's worker takes to start here, so
    # that the first run's progress is right too (in the background; nothing waits for it).
    ui.runs.measure_worker_start(ui.workspace())
