"""Train: launch a fit in a background worker, watch it, cancel it; every run is kept on disk."""

import time

import streamlit as st

from hcl_explore import figures, progress, runs
from hcl_explore.lattice import node_label
from hcl_explore.ui import common as ui

st.title("Train")
ws = ui.workspace()
spec, data, outcomes, truth, err = ui.current_dataset()
if err:
    st.error(f"The current dataset does not load: {ui.md(str(err))}")
else:
    lat, ranks, preset = ui.lattice_choice(list(data.modalities))
    n_feat = sum(data.dims.values())
    # The dataset name is the user's text: shown whole (a metric would cut it), never as markdown.
    st.markdown(f"**Dataset:** {ui.md(spec.get('name', '?'))}")
    c = st.columns(3)
    c[0].metric("Samples", f"{data.n_samples:,}")
    c[1].metric("Modalities", data.n_modalities, help=f"{n_feat:,} features in all")
    c[2].metric("Candidate nodes", f"{len(lat.nodes) if lat is not None else 0} ({preset})",
                help="Groups of modalities that may share factors, chosen on the Lattice page.")
    st.caption(f"Compute device: {ui.device_label()}")
    with st.expander("Estimator settings"):
        from hcl_explore.estimators import names as estimator_names  # registered ones too (imports torch)

        est = st.selectbox("Estimator", estimator_names(), key="estimator",
                           help="linear: structured factor analysis with automatic ranks (fast, exact for linear data). "
                                "contrastive: neural encoders per (modality, node), started at the linear solution, "
                                "aligning each node's blocks only between the modalities it holds; for nonlinear "
                                "modalities. Auto ranks start from the linear estimator's and drop the directions "
                                "that are only squares or products of stronger factors.")
        neural = est == "contrastive"
        epochs = st.number_input("Contrastive: max epochs", 1, 1000, 100, disabled=not neural,
                                 help="Training stops earlier when the validation loss stops improving.")
        width = st.number_input("Contrastive: hidden units per encoder", 0, 4096, 128, step=32, disabled=not neural,
                                help="0: linear encoders.")
        loss = st.selectbox("Contrastive: loss", ["infonce", "paper"], disabled=not neural,
                            help="infonce: softmax over the batch with a temperature; paper: the linear-in-similarity "
                                 "form of the HCL paper.")
        budget = st.number_input("Contrastive: time budget (minutes, 0 = no limit)", 0.0, 10000.0, 0.0, step=5.0,
                                 disabled=not neural, key="time_budget",
                                 help="Training stops after this many minutes and keeps the best model so far.")
        std = st.selectbox("Standardize features", ["auto", "yes", "no"],
                           help="auto: scale features to unit variance when their scales differ (mixed units).")
        dev = st.selectbox("Device", ["auto", "cpu", "cuda"])
        max_iter = st.number_input("Max refinement steps", 10, 100000, 5000, step=500,
                                   help="The most steps the final fit of the loadings may take (it usually stops "
                                        "much earlier, when the fit stops improving).")
        dask_address = st.text_input(
            "Dask scheduler (optional)", value=runs.dask_default() or "", key="dask_scheduler",
            placeholder="tcp://scheduler-host:8786", disabled=neural,
            help=f"Run the covariance pass (the step that reads every row) on a Dask cluster: the scheduler's address, "
                 f"e.g. tcp://scheduler-host:8786. Empty: everything runs in the run's own worker process. The default "
                 f"comes from the {runs.DASK_ENV} environment variable. The workers need hcl-explore and its Dask extra "
                 "(pip install hcl-explore[dask]), and so does this app. Linear estimator only; the progress then "
                 "counts partitions done.").strip()
    fast = runs.stability_is_fast(data.n_samples, n_feat, est)
    stab = st.checkbox(
        f"Check how stable the structure is (refit on {runs.STABILITY_RESAMPLES} subsamples)",
        value=fast, disabled=neural, key=f"stability_{est}",
        help=f"After the fit, the structure search is refitted on {runs.STABILITY_RESAMPLES} random subsamples of 80% "
             "of the samples; the Structure page then shows how often each node was found (faint circles: unstable). "
             "Each refit costs about a fit without the refinement. On by default up to "
             f"{runs.STABILITY_FAST[0]:,} samples and {runs.STABILITY_FAST[1]:,} features; "
             "not available for the contrastive estimator.")
    params = runs.fit_params(est, std, dev, max_iter=max_iter, epochs=epochs, loss=loss, hidden=[width],
                             max_time=budget * 60 if neural and budget > 0 else None)
    why_not = None
    if lat is None:
        why_not = "Every node of the lattice is switched off: switch at least one on on the Lattice page."
    dask_address = "" if neural else dask_address
    if dask_address and lat is not None:
        why_not = runs.dask_problem(dask_address)
        if why_not:
            st.error(ui.md(why_not), icon=":material/block:")
    if lat is not None and not why_not:
        plan = runs.fit_plan(data.n_samples, data.dims, lat, params,
                             runs.STABILITY_RESAMPLES if stab and not neural else None, ranks or "auto")
        expected = progress.estimate_text(plan, len(lat.nodes), n_feat)
        if neural and budget > 0:
            expected += f" (at most {progress.duration(budget * 60)} of training)"
        if plan.total > progress.SLOW_SECONDS:
            st.warning(f"{expected}. That is long: fewer candidate nodes (Lattice page), the stability check off or "
                       "fewer features make it faster.", icon=":material/schedule:")
        else:
            st.caption(f"{expected}." + (f" The covariance pass runs on the Dask scheduler at {ui.md(dask_address)}."
                                         if dask_address else ""))
    elif lat is None:
        st.error(why_not, icon=":material/block:")
    if st.button("Launch training", type="primary", icon=":material/play_arrow:", disabled=bool(why_not),
                 help=why_not):
        cfg = runs.RunConfig.fit(spec, lat, {node_label(n): v for n, v in ranks.items()}, params,
                                 lattice_name=preset, stability=runs.stability_option(stab and not neural),
                                 planned_s=round(plan.total, 1), plan=plan, dask=dask_address)
        rid = runs.create_run(ws, cfg)
        runs.launch(ws, rid)
        ui.select_run(rid)
        st.toast(f"Launched run {rid}")


def _status_text(line: dict) -> str:
    state = line["state"]
    if state == "queued":
        return f"Waiting to start: {line['why']}."
    if state == "running":
        return f"Now: {line['step']}" + (f" ({line['detail']})" if line["detail"] else "")
    return {"done": "Finished.", "failed": "Failed.", "cancelled": "Cancelled.", "broken": "Damaged run folder."}.get(
        state, state)


@st.fragment(run_every=1.0)
def monitor() -> None:
    table = runs.list_runs(ws)
    fits = table[table.kind == "fit"] if len(table) else table
    if not len(fits):
        st.info("No runs yet.")
        return
    rid = ui.selected_run()
    if rid not in set(fits.run_id):
        rid = fits.run_id.iloc[0]  # the newest run
    st.subheader("Runs")
    sel = st.dataframe(fits, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
                       key="runs_table",
                       column_config={"run_id": st.column_config.TextColumn(
                           "run", help="Each run's name: the time it was created and a short random code.")})
    picked = sel.selection.rows if sel is not None and hasattr(sel, "selection") else []
    if picked:
        rid = fits.run_id.iloc[picked[0]]
    if rid != ui.selected_run():
        ui.select_run(rid)
    st.subheader(f"Run {rid}")
    stt = runs.read_status(ws, rid)
    state = stt.get("state", "?")
    line = progress.status_line(stt)
    prog = min(max(line["fraction"], 0.0), 1.0)
    st.progress(prog, text=f"{_status_text(line)} · {prog:.0%}")
    ev = runs.read_metrics(ws, rid)
    epochs = [e for e in ev if e.get("stage") == "epoch" and "loss" in e]
    hist = [e["loss"] for e in epochs] or [e["objective"] for e in ev if e.get("stage") == "refine" and "objective" in e]
    cols = st.columns([3, 1])
    with cols[1]:
        if line["elapsed_s"] is not None:
            st.metric("Elapsed" if state in ("queued", "running") else "Duration", progress.duration(line["elapsed_s"]))
        if state == "running":
            st.metric("Time left (estimate)", progress.duration(line["eta_s"]) if line["eta_s"] is not None
                      else "estimating ...", help="From the work done so far and the work left; it settles after "
                                                 "the first few steps of each stage.")
        if state in ("queued", "running"):
            if st.button("Cancel run", icon=":material/stop:", key=f"cancel_{rid}"):
                runs.cancel(ws, rid)
                st.toast("Cancel requested")
    with cols[0]:
        if hist:
            fig = (figures.objective_figure(hist, title="Training loss (lower is better)", x_label="epoch",
                                            validation=[e.get("val_loss", float("nan")) for e in epochs])
                   if epochs else figures.objective_figure(hist, title="Fit error of the loadings (lower is better)",
                                                           x_label="step"))
            st.plotly_chart(fig, width="stretch", key=f"obj_{rid}_{len(hist)}")
    if state == "failed":
        st.error(f"Run failed: {ui.md(str(stt.get('error', 'unknown error')))}")
    elif state == "broken":
        st.error(f"This run's folder is damaged: {ui.md(str(stt.get('error', 'unreadable status or config')))}")
        with st.expander("Worker log"):
            st.code(runs.read_log(ws, rid) or "(empty)")
    elif state == "cancelled":
        st.warning("Run cancelled.")
    elif state == "done":
        st.success("Run finished.")
        if stt.get("stability_error"):
            st.warning(f"The stability check failed (the fit is saved): {ui.md(stt['stability_error'])}")
        st.page_link("pages/structure.py", label="Open the structure page", icon=":material/hub:",
                     query_params={"run": rid})


monitor()
