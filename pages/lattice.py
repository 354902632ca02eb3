"""Lattice: which modality subsets may share factors, and how many factors each gets."""

import pandas as pd
import streamlit as st

from hcl_explore import figures
from hcl_explore.lattice import Lattice, node_label, node_level, parse_node_label
from hcl_explore.ui import common as ui

st.title("Candidate lattice")
spec, data, outcomes, truth, err = ui.current_dataset()
if err:
    st.error(f"The current dataset does not load: {err}")
    st.stop()
mods = list(data.modalities)
if len(mods) < 2:
    st.warning("One modality only: every factor is private. Add a modality on the Data page.")
full = Lattice.full(mods)
lat, ranks, preset = ui.lattice_choice(mods)

st.caption("Each node is a subset of modalities that may share factors: the global node (all modalities), "
           "partial nodes (some) and private nodes (one). Switch nodes off to forbid a kind of sharing; "
           "leave ranks on *auto* to let the fit decide how many factors each node has (0 = absent).")
presets = {"full": "Full (every subset)", "shared_private": "Shared–private (global + private)",
           "global_only": "Global-only (global + private noise)", "pairwise": "Pairwise (global, pairs, private)",
           "custom": "Custom"}
choice = st.selectbox("Preset", list(presets), index=list(presets).index(preset if preset in presets else "custom"),
                      format_func=presets.get)
if choice != preset and choice != "custom":
    lat, ranks = Lattice.preset(choice, mods), {}
    ui.set_state(lattice={"modalities": mods, "nodes": [list(n) for n in lat.nodes], "ranks": {}, "preset": choice})
    st.session_state["lattice_editor_version"] = st.session_state.get("lattice_editor_version", 0) + 1
    st.rerun()

# The editor's rows are fixed while its key lives: every edit is a change against the same rows, so
# edits made while the page reruns are applied one by one, never dropped. A preset or a click in the
# diagram starts a new editor (a new key) from the saved lattice.
version = st.session_state.setdefault("lattice_editor_version", 0)
ed_key = f"lattice_editor_{version}_{hash(tuple(mods))}"
base_key = "_base_" + ed_key
if base_key not in st.session_state:
    st.session_state[base_key] = pd.DataFrame(
        [{"node": node_label(n), "level": node_level(n, len(mods)), "on": lat is not None and n in lat,
          "rank": str(ranks.get(n, "auto"))} for n in full.nodes])
edited = st.data_editor(st.session_state[base_key], hide_index=True, disabled=["node", "level"], key=ed_key,
                        column_config={"node": st.column_config.TextColumn("node", help="The modalities that may share factors."),
                                       "level": st.column_config.TextColumn("level", help="global: all modalities; partial: some; private: one."),
                                       "on": st.column_config.CheckboxColumn("on", help="Off: this group of modalities may not share a factor."),
                                       "rank": st.column_config.TextColumn("factors (auto or a number)",
                                                                           help="auto: the fit chooses how many shared factors this node has (0 = absent).")},
                        width="stretch")
bad = []
new_nodes, new_ranks = [], {}
for r in edited.itertuples():
    if not r.on:
        continue
    node = parse_node_label(r.node)
    new_nodes.append(list(node))
    txt = str(r.rank).strip().lower()
    if txt in ("", "auto", "none"):
        continue
    if not txt.isdigit():
        bad.append(f"{r.node}: rank must be 'auto' or a whole number, got {r.rank!r}")
        continue
    new_ranks[r.node] = int(txt)
for b in bad:
    st.error(b)
if not new_nodes:
    st.error("Every node is switched off: switch at least one node on (training is disabled until then).")
    if (ui.get_state().get("lattice") or {}).get("nodes") != [] or ui.get_state().get("lattice", {}).get("modalities") != mods:
        ui.set_state(lattice={"modalities": mods, "nodes": [], "ranks": {}, "preset": "custom"})
    lat, ranks = None, {}
elif not bad:
    new_lat = Lattice(mods, [tuple(n) for n in new_nodes])
    cur = {"modalities": mods, "nodes": [list(n) for n in new_lat.nodes], "ranks": new_ranks,
           "preset": choice if (new_lat == Lattice.preset(choice, mods) if choice != "custom" else False) and not new_ranks else "custom"}
    if cur != ui.get_state().get("lattice"):
        ui.set_state(lattice=cur)
    lat, ranks = new_lat, {new_lat.node(parse_node_label(k)): v for k, v in new_ranks.items()}

dims = data.dims
lat_nodes = list(lat.nodes) if lat is not None else []
fixed = {n: r for n, r in ranks.items() if n in lat_nodes}
auto = [n for n in lat_nodes if n not in fixed]
params = sum(r * sum(dims[m] for m in n) for n, r in fixed.items())
c = st.columns(4)
c[0].metric("Candidate nodes", f"{len(lat_nodes)} of {len(full.nodes)}")
c[1].metric("Nodes on auto", len(auto))
c[2].metric("Fixed factors", sum(fixed.values()))
c[3].metric("Loadings (fixed nodes)", f"{params:,}")
st.caption(f"Model size: {len(lat_nodes)} candidate node(s); each factor of node S has one loading per feature of its "
           f"modalities ({', '.join(f'{m}: {d}' for m, d in dims.items())} features).")
st.caption("Click a node in the diagram to switch it on or off.")
event = st.plotly_chart(figures.lattice_figure(full, active=set(lat_nodes), ranks={n: ranks.get(n, "auto") for n in lat_nodes}),
                        width="stretch", on_select="rerun", selection_mode="points", key="lattice_click")
points = (event.selection.points if event is not None and hasattr(event, "selection") else []) or []
clicked = [p_.get("customdata") for p_ in points if isinstance(p_.get("customdata"), str)]
if clicked and st.session_state.get("last_click") != clicked:
    st.session_state["last_click"] = clicked
    node = parse_node_label(clicked[0])
    nodes = [n for n in lat_nodes if n != node] if node in lat_nodes else lat_nodes + [node]
    if nodes:
        toggled = Lattice(mods, nodes)
        ui.set_state(lattice={"modalities": mods, "nodes": [list(n) for n in toggled.nodes],
                              "ranks": {node_label(n): v for n, v in ranks.items() if n in toggled}, "preset": "custom"})
    else:
        ui.set_state(lattice={"modalities": mods, "nodes": [], "ranks": {}, "preset": "custom"})
    st.session_state["lattice_editor_version"] = st.session_state.get("lattice_editor_version", 0) + 1
    st.rerun()
st.page_link("pages/train.py", label="Next: train", icon=":material/arrow_forward:")
