"""Structure: the recovered hierarchy of a finished run, how each modality's signal splits, the
loadings and scores of a node, and the truth beside it when the dataset has one."""

import os

import pandas as pd
import streamlit as st

from hcl_explore import figures, metrics, report, runs
from hcl_explore.runs import files as RF
from hcl_explore.io import truth_ranks
from hcl_explore.lattice import node_label
from hcl_explore.ui import common as ui

st.title("Structure")
rid = ui.run_pick()
if rid is None:
    st.stop()
ws = ui.workspace()
d = runs.run_path(ws, rid)
model = ui.load_run_model(rid)
present = [n for n in model.nodes_ if model.ranks_[n] > 0]
c = st.columns(4)
c[0].metric("Nodes found", f"{len(present)} of {len(model.lattice_.nodes)}")
c[1].metric("Factors", sum(model.ranks_.values()))
c[2].metric("Samples", f"{model.n_samples_:,}")
c[3].metric("Fit time", f"{model.timings_.get('total', float('nan')):.1f} s")
stab = runs.read_stability(ws, rid)
M = len(model.modalities_)
hier_help = ("Each circle is a group of modalities that share signal (a *node*); its size is the number of shared "
             "factors found, its colour the share of those modalities' variance it explains."
             + (" Paler circles were found in fewer of the subsample refits (hover for how many)." if stab is not None else ""))
views = ["Matrix (modality × node)", "Hierarchy diagram"] if M >= figures.MATRIX_FROM else \
    ["Hierarchy diagram", "Matrix (modality × node)"]
tabs = st.tabs(views)
for tab, view in zip(tabs, views):
    with tab:
        if view.startswith("Matrix"):
            st.caption("One column per node found: the filled dots are the modalities that share it, the bar its "
                       "number of factors. Hover a column for its full name and how much variance it explains.")
            st.plotly_chart(figures.model_matrix(model, stability=stab, width=ui.FULL_PX), width="stretch", key="matrix")
        else:
            st.caption(hier_help)
            st.plotly_chart(figures.model_hierarchy(model, stability=stab, width=ui.FULL_PX), width="stretch", key="hierarchy")
st.caption(ui.md(runs.stability_note(stab, runs.read_status(ws, rid))))
# More features than samples in a modality (p > n), then the nodes few subsample refits found.
for w in report.run_dims_warnings(d, model) + report.stability_warnings(stab, model):
    st.warning(ui.md(w), icon=":material/warning:")
st.plotly_chart(figures.variance_figure(model), width="stretch", key="variance")

st.subheader("A node up close")
if not present:
    st.info("No factor was found.")
else:
    node = st.selectbox("Node", present, format_func=lambda n: f"{node_label(n)} ({model.ranks_[n]} factor(s))")
    top = st.slider("Top features", 5, 40, 15)
    # One under the other, each the page's width: a heatmap of 20+ factors, or its caption, does
    # not fit half of a 1280-px window.
    st.plotly_chart(figures.loadings_figure(model, node, top=top), width="stretch", key="loadings")
    sc_path = RF.path(d, RF.SCORES)
    if os.path.exists(sc_path):
        S, sc_err = ui.run_scores(rid, node_label(node))
        if sc_err:
            st.error(ui.md(sc_err))
        color, cname = None, "outcome"
        oc_path = os.path.join(d, "outcomes.csv")
        if os.path.exists(oc_path):
            oc = pd.read_csv(oc_path)
            cols = [c_ for c_ in oc.columns[1:]]
            if cols:
                cname = st.selectbox("Colour by", cols)
                color = oc[cname].to_numpy()
        if S is not None:
            short = node_label(node) if len(node_label(node)) <= 36 else \
                figures.node_code(node, figures.modality_codes(model.modalities_))
            st.plotly_chart(figures.scores_figure(S, color=color, color_name=cname,
                                                  title=f"Factor scores of {short}"),
                            width="stretch", key="scores")

tr = runs.read_json(RF.path(d, RF.TRUTH), None)
if tr:
    st.subheader("Truth vs recovered")
    true = {model.lattice_.node(n): r for n, r in truth_ranks(tr).items() if n in model.lattice_}
    sc = metrics.structure_scores(true, model.ranks_)
    acc = metrics.rank_accuracy(true, model.ranks_)
    c = st.columns(4)
    c[0].metric("Structure F1", f"{sc['f1']:.2f}")
    c[1].metric("Precision", f"{sc['precision']:.2f}")
    c[2].metric("Recall", f"{sc['recall']:.2f}")
    c[3].metric("Rank accuracy", f"{acc:.2f}")
    st.plotly_chart(figures.true_vs_recovered(model.lattice_, true, model), width="stretch", key="truth")
with st.expander("Summary table"):
    table, helps = report.readable_columns(runs.summary_table(model, stab))
    pct = {c: st.column_config.NumberColumn(c, format="percent", help=helps.get(c)) for c in table.columns
           if c.endswith("share of variance") or c.endswith("share of signal")
           or c in ("found in resamples", "same rank in resamples")}
    pct.update({c: st.column_config.Column(c, help=h) for c, h in helps.items() if c in table.columns and c not in pct})
    st.dataframe(table, hide_index=True, column_config=pct)
