"""Prediction: which nodes predict an outcome, against baselines, evaluated without leakage."""

import os

import pandas as pd
import streamlit as st

from hcl_explore import figures, report, runs
from hcl_explore.lattice import node_label
from hcl_explore.predict import PredictionReport
from hcl_explore.ui import common as ui

st.title("Prediction")
rid = ui.run_pick()
if rid is None:
    st.stop()
ws = ui.workspace()
d = runs.run_path(ws, rid)
kinds = runs.read_json(os.path.join(d, "outcome_kinds.json"), {}) or {}
usable = [c for c, k in kinds.items() if k in ("binary", "continuous")]
if not usable:
    st.info("This run's dataset has no binary or continuous outcome. Add an outcomes table on the Data page.")
    st.stop()
outcome = st.selectbox("Outcome", usable, format_func=lambda c: f"{c} ({kinds[c]})")
with st.expander("Evaluation settings"):
    test_size = st.slider("Held-out test share", 0.1, 0.5, 0.25, 0.05)
    cv = st.slider("Cross-validation folds (training part)", 3, 10, 5)
    bias = st.checkbox("Bias-corrected estimator (continuous outcomes)", value=False, disabled=kinds[outcome] != "continuous")
    nboot = st.select_slider("Bootstrap resamples", [0, 100, 200, 500, 1000], value=500)

if st.button("Evaluate", type="primary", icon=":material/play_arrow:"):
    pid = runs.create_run(ws, {"kind": "predict", "parent": rid, "outcome": outcome,
                               "dataset": {"name": f"prediction of {outcome}"},
                               "options": {"test_size": test_size, "cv": cv, "bias_correction": bias, "n_bootstrap": nboot}})
    runs.launch(ws, pid)
    st.session_state["predict_job"] = pid


@st.fragment(run_every=1.0)
def job_status() -> None:
    pid = st.session_state.get("predict_job")
    if not pid:
        return
    stt = runs.read_status(ws, pid)
    if stt.get("state") in ("queued", "running"):
        st.progress(float(stt.get("progress", 0.0)), text=f"evaluating ({stt.get('stage', '')}) ...")
    elif stt.get("state") == "failed":
        st.error(f"Evaluation failed: {ui.md(stt.get('error'))}")
    elif stt.get("state") == "done" and st.session_state.get("shown") != pid:
        st.session_state["shown"] = pid
        st.rerun(scope="app")


job_status()
# Found by the outcome stored in the file: two outcomes never share a result.
res = report.read_prediction(d, outcome)
if res is None:
    st.info("No evaluation of this outcome yet: press **Evaluate** (it runs in the background).")
    st.stop()
rep = PredictionReport.from_dict(res)
sel = ", ".join(node_label(n) for n in rep.selected_nodes) or "none"
st.success(f"Selected nodes for **{ui.md(outcome)}**: {sel}")
c = st.columns(len(rep.metrics))
for col, r in zip(c, rep.metrics.itertuples()):
    col.metric(r.metric.upper(), f"{r.value:.3f}", help=f"95 % bootstrap interval {r.ci_low:.3f} – {r.ci_high:.3f}")
st.plotly_chart(figures.curves_figure(rep), width="stretch", key="curves")
left, right = st.columns(2)
with left:
    model = ui.load_run_model(rid)
    st.plotly_chart(figures.model_hierarchy(model, highlight=rep.selected_nodes, title="Selected nodes (red outline)"),
                    width="stretch", key="selected")
with right:
    st.plotly_chart(figures.metrics_figure(rep), width="stretch", key="metrics")
st.markdown("**HCL vs baselines** (held-out test part)")
st.dataframe(rep.baselines, hide_index=True, width="stretch")
st.markdown("**Node importance**")
st.dataframe(rep.node_importance.assign(node=[node_label(n) for n in rep.node_importance.node]), hide_index=True)
for n in rep.notes:
    st.caption(n)
st.caption(", ".join(f"{k}: {v:,}" for k, v in rep.counts.items()))
