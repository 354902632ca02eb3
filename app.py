"""hcl-explore: the Streamlit app. `streamlit run app.py` (after scripts/setup.sh)."""

import importlib.util
import os
import sys

# The pages use the library's modules (data loading, figures, runs); the package's __init__ also
# imports the model and torch (seconds on a busy machine). Import the package without running its
# __init__ until something asks for one of its names: the first page renders without torch.
if "hcl_explore" not in sys.modules:
    _root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hcl_explore")
    _spec = importlib.util.spec_from_file_location("hcl_explore", os.path.join(_root, "__init__.py"),
                                                   submodule_search_locations=[_root])
    _pkg = importlib.util.module_from_spec(_spec)

    def _full(name, _pkg=_pkg, _spec=_spec):
        if name.startswith("__"):
            raise AttributeError(name)
        del _pkg.__getattr__
        _spec.loader.exec_module(_pkg)
        return getattr(_pkg, name)

    _pkg.__getattr__ = _full
    sys.modules["hcl_explore"] = _pkg

import streamlit as st  # noqa: E402

from hcl_explore.ui import common as ui  # noqa: E402

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
