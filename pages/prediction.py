"""Prediction: which nodes predict an outcome, against baselines, evaluated without leakage."""

import pandas as pd
import streamlit as st

from hcl_explore import figures, progress, report, runs
from hcl_explore.runs import files as RF
from hcl_explore.lattice import node_label
from hcl_explore.outcomes import KINDS, canonical_kind
from hcl_explore.predict import PredictionReport, main_metrics
from hcl_explore.ui import common as ui

#: How metrics are named on this page (plain words; the help tooltip says more).
METRIC_NAMES = {"auroc": "AUROC", "auprc": "AUPRC", "f1": "F1", "f1_macro": "Macro-F1", "accuracy": "Accuracy",
                "brier": "Brier score", "r2": "R²", "mse": "MSE", "mae": "MAE"}
METRIC_HELP = {"auroc": "Chance that a random case scores above a random non-case (0.5 = chance, 1 = perfect); "
                        "multi-class: one class against the rest, averaged over classes.",
               "auprc": "Average precision over all thresholds (chance = the share of cases).",
               "f1": "Balance of precision and sensitivity at the threshold chosen on the training part.",
               "f1_macro": "F1 of each class, averaged over classes (every class counts the same).",
               "accuracy": "Share of test samples given the right class.",
               "brier": "Mean squared error of the predicted probabilities (lower is better).",
               "r2": "Share of the outcome's variance predicted (1 = perfect, 0 = no better than the mean).",
               "mse": "Mean squared error (lower is better).", "mae": "Mean absolute error (lower is better)."}

st.title("Prediction")
rid = ui.run_pick()
if rid is None:
    st.stop()
ws = ui.workspace()
d = runs.run_path(ws, rid)
raw_kinds = runs.read_json(RF.path(d, RF.OUTCOME_KINDS), {}) or {}
# Runs saved before the outcome rule named multi-class outcomes "categorical".
kinds = {c: canonical_kind(k) for c, k in raw_kinds.items() if k in KINDS or k == "categorical"}
usable = list(kinds)
if not usable:
    st.info("This run's dataset has no outcome to predict. Add an outcomes table on the Data page.")
    st.stop()
KIND_WORDS = {"binary": "two classes", "multiclass": "several classes", "continuous": "a number"}
outcome = st.selectbox("Outcome", usable, format_func=lambda c: f"{c} ({KIND_WORDS[kinds[c]]})", key="outcome",
                       help="Two levels: binary (which one is 'positive' is shown with the results); a few levels "
                            "or a few whole numbers such as digits 0-9: several classes; other numbers: continuous.")
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
        # As on the Train page: the step in words, the share done, elapsed time and time left.
        line = progress.status_line(stt)
        frac = min(max(float(line["fraction"]), 0.0), 1.0)
        now = (f"Waiting to start: {line['why']}." if line["state"] == "queued" else
               f"Evaluating: {line['step']}" + (f" ({line['detail']})" if line["detail"] else ""))
        st.progress(frac, text=f"{ui.md(now)} · {frac:.0%}")
        if line["state"] == "running":
            left = progress.duration(line["eta_s"]) if line["eta_s"] is not None else "estimating ..."
            st.caption(f"Elapsed {progress.duration(line['elapsed_s'] or 0.0)} · time left (estimate): {left}")
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
rep.outcome = rep.outcome or outcome
sel = ", ".join(node_label(n) for n in rep.selected_nodes) or "none"
st.success(f"Selected nodes for **{ui.md(outcome)}**: {sel}")
if rep.task == "binary" and rep.positive_label is not None:
    other = [c_ for c_ in rep.classes if c_ != rep.positive_label]
    st.markdown(f"Positive class: **{ui.md(outcome)} = {ui.md(rep.positive_label)}**"
                + (f" (against {ui.md(other[0])})" if other else "")
                + "; AUROC, AUPRC and F1 measure how well it is found.")
elif rep.task == "multiclass" and rep.classes:
    st.markdown(f"**{len(rep.classes)} classes** of {ui.md(outcome)}: " + ", ".join(ui.md(c_) for c_ in rep.classes))
for w in rep.warnings:
    st.warning(ui.md(w), icon=":material/warning:")
c = st.columns(max(len(rep.metrics), 1))
for col, r in zip(c, rep.metrics.itertuples()):
    ci = f"95 % bootstrap interval {r.ci_low:.3f} – {r.ci_high:.3f}" if pd.notna(r.ci_low) else "no bootstrap interval"
    col.metric(METRIC_NAMES.get(r.metric, r.metric), f"{r.value:.3f}", help=f"{METRIC_HELP.get(r.metric, '')} {ci}.")
if rep.task == "multiclass":
    st.plotly_chart(rep.plot_confusion(), width="stretch", key="curves")
else:
    st.plotly_chart(figures.curves_figure(rep), width="stretch", key="curves")
# One under the other, each the page's width: the selected nodes of 6+ modalities need the width
# (in half a 1280-px window the graph stacked one node per row).
model = ui.load_run_model(rid)
st.plotly_chart(figures.model_hierarchy(model, highlight=rep.selected_nodes, title="Selected nodes (red outline)",
                                        width=ui.FULL_PX), width="stretch", key="selected")
st.plotly_chart(figures.metrics_figure(rep, metrics=main_metrics(rep.task)), width="stretch", key="metrics")
stc = rep.structure or {}
if stc.get("kept") is False:
    st.warning("The prediction's structure differs from this run's (shown above): "
               + ui.md(stc.get("note", "")) + " Both are listed below.", icon=":material/account_tree:")
    names = sorted(set(stc.get("fitted") or {}) | set(stc.get("used") or {}))
    st.dataframe(pd.DataFrame({"node": names,
                               "factors in this run": [(stc.get("fitted") or {}).get(n, 0) for n in names],
                               "factors used for prediction": [(stc.get("used") or {}).get(n, 0) for n in names]}),
                 hide_index=True)
elif stc.get("kept"):
    st.caption(stc.get("note", ""))
if rep.confusion is not None and rep.task == "binary":
    with st.expander("Confusion matrix (test part)"):
        st.dataframe(rep.confusion.rename_axis(index=f"true {outcome}", columns=f"predicted {outcome}"), width="stretch")
st.markdown("**HCL vs baselines** (held-out test part)")
st.dataframe(rep.baselines.rename(columns=METRIC_NAMES), hide_index=True, width="stretch")
st.markdown("**Node importance**")
st.dataframe(rep.node_importance.assign(node=[node_label(n) for n in rep.node_importance.node]), hide_index=True)
for n in rep.notes:
    st.caption(n)
st.caption(", ".join(f"{k}: {v:,}" for k, v in rep.counts.items()))
