"""Data: choose a bundled dataset or upload modality tables; see what loading kept and dropped."""

import os

import pandas as pd
import streamlit as st

from hcl_explore import figures, io, runs
from hcl_explore.ui import common as ui

st.title("Data")
state = ui.get_state()
spec = state.get("dataset") or ui.DEFAULT_DATASET

left_col, right_col = st.columns([1, 2])
with left_col:
    st.subheader("Bundled sample data")
    bundled = io.list_datasets()
    names = list(bundled)
    if not names:
        st.warning("No bundled datasets found (sample_data/ is missing from this installation).")
    else:
        cur = spec.get("bundled") if spec.get("bundled") in names else names[0]
        name = st.selectbox("Dataset", names, index=names.index(cur), key="bundled_name")
        man = runs.read_json(os.path.join(bundled[name], "dataset.json"), {}) or {}
        st.caption(man.get("description", ""))
        label = "In use" if spec.get("bundled") == name else "Use this dataset"
        if st.button(label, disabled=spec.get("bundled") == name, key="use_bundled"):
            ui.set_state(dataset={"bundled": name, "name": f"{name} (bundled sample)"})
            st.rerun()
with right_col:
    st.subheader("Your files")
    st.caption("One table per modality: rows = samples, one id column, feature columns. CSV, TSV or Parquet. "
               "Files are saved to the workspace as soon as they are uploaded.")
    files = st.file_uploader("Modality tables", type=["csv", "tsv", "txt", "tab", "parquet", "pq", "gz"],
                             accept_multiple_files=True, key="modality_files")
    up_dir = os.path.join(ui.workspace(), "uploads")
    os.makedirs(up_dir, exist_ok=True)
    uploads = list(state.get("uploads") or [])
    known = {u["path"]: u for u in uploads}
    changed = False
    for f in files or []:
        path = os.path.join(up_dir, runs.sanitize_filename(f.name))
        fresh = path not in known
        if fresh or not os.path.exists(path) or os.path.getsize(path) != f.size:
            with open(path + ".part", "wb") as fh:
                fh.write(f.getbuffer())
            os.replace(path + ".part", path)
            changed = True
        if fresh:
            stem = runs.sanitize_filename(f.name).split(".")[0] or "modality"
            uploads.append({"file": f.name, "path": path, "modality": stem})
            known[path] = uploads[-1]
    out_file = st.file_uploader("Outcomes table (optional)", type=["csv", "tsv", "txt", "parquet", "pq", "gz"],
                                key="outcome_file")
    outcomes_path = state.get("upload_outcomes")
    if out_file is not None:
        outcomes_path = os.path.join(up_dir, "outcomes__" + runs.sanitize_filename(out_file.name))
        with open(outcomes_path + ".part", "wb") as fh:
            fh.write(out_file.getbuffer())
        os.replace(outcomes_path + ".part", outcomes_path)
    if changed or uploads != state.get("uploads") or outcomes_path != state.get("upload_outcomes"):
        state = ui.set_state(uploads=uploads, upload_outcomes=outcomes_path, uploads_pending=True)

    if uploads:
        table = pd.DataFrame([{"file": u["file"], "modality": u["modality"], "remove": False} for u in uploads])
        edited = st.data_editor(table, disabled=["file"], hide_index=True, key="upload_table",
                                column_config={"modality": st.column_config.TextColumn("modality name"),
                                               "remove": st.column_config.CheckboxColumn("remove")})
        id_col = st.text_input("Id column (blank = detect)", value=state.get("upload_id_column") or "")
        new = [dict(u, modality=str(r.modality).strip() or u["modality"]) for u, r in zip(uploads, edited.itertuples()) if not r.remove]
        if new != uploads or id_col != (state.get("upload_id_column") or ""):
            state = ui.set_state(uploads=new, upload_id_column=id_col, uploads_pending=True)
            uploads = new
        if outcomes_path:
            st.caption(f"Outcomes: {os.path.basename(outcomes_path).removeprefix('outcomes__')}")
        names = [u["modality"] for u in uploads]
        problems = {}
        if len(set(names)) != len(names):
            problems["_"] = f"Two files have the same modality name ({', '.join(sorted({n for n in names if names.count(n) > 1}))}); rename one."
        cand = {"modalities": {u["modality"]: u["path"] for u in uploads}, "id_column": id_col or None,
                "outcomes": outcomes_path, "name": "uploaded: " + ", ".join(names)}
        if not problems and uploads:
            try:
                ui.load_dataset(cand)
                # New or edited uploads become the current dataset as soon as they load.
                if spec != cand and state.get("uploads_pending"):
                    ui.set_state(dataset=cand, uploads_pending=False)
                    st.rerun()
                elif spec != cand and st.button("Use these files", key="use_uploads"):
                    ui.set_state(dataset=cand, uploads_pending=False)
                    st.rerun()
            except ValueError as exc:
                msg = str(exc)
                hit = [u["file"] for u in uploads if msg.startswith(os.path.basename(u["path"]) + ":")]
                problems[hit[0] if hit else "_"] = msg
        for fname, msg in problems.items():
            where = "" if fname == "_" else f"**{fname}** — "
            st.error(f"{where}{msg}", icon=":material/error:")
        if problems:
            st.info("The current dataset was not changed. Fix or remove the file above, or rename the modality.")
    else:
        st.info("Upload two or more modality tables (they become the current dataset as soon as they load).")

spec, data, outcomes, truth, err = ui.current_dataset()
st.divider()
st.subheader(f"Current dataset: {spec.get('name', '?')}")
if err:
    st.error(err)
    st.stop()
rep = data.report
c = st.columns(4)
c[0].metric("Samples", f"{data.n_samples:,}")
c[1].metric("Modalities", data.n_modalities)
c[2].metric("Features", f"{sum(data.dims.values()):,}")
c[3].metric("Outcomes", len(outcomes.columns) if outcomes is not None else 0)
qc = io.report_frame(rep)
if len(qc):
    miss = 1 - data.observed.mean(axis=0)
    qc.insert(3, "missing_share", [round(float(miss[data.modalities.index(m)]), 3) for m in qc.modality])
st.markdown("**Quality control** — per modality: samples with data, features kept, dropped columns and why, "
            "cells imputed, and samples shared with each other modality.")
st.dataframe(qc, hide_index=True, width="stretch")
left, right = st.columns([3, 2])
with left:
    st.plotly_chart(figures.overlap_figure(data.observed, data.modalities), width="stretch")
with right:
    for m, r in rep.get("modalities", {}).items():
        if r.get("dropped") or r.get("one_hot") or r.get("converted") or r.get("notes"):
            with st.expander(f"{m}: what loading changed"):
                for d in r.get("dropped", []):
                    st.markdown(f"- dropped `{d['column']}`: {d['reason']}")
                for d in r.get("one_hot", []):
                    st.markdown(f"- one-hot `{d['column']}`: {', '.join(d['levels'])} (reference {d['reference']})")
                for d in r.get("converted", []):
                    st.markdown(f"- converted `{d['column']}`: {'; '.join(d['notes'])}")
                for n in r.get("notes", []):
                    st.markdown(f"- {n}")
    for w in rep.get("warnings", []):
        st.warning(w)
    if outcomes is not None:
        rows = [{"outcome": c_, "kind": k, "labelled": outcomes.report["outcomes"][c_]["labelled"]} for c_, k in outcomes.kinds.items()]
        st.markdown("**Outcomes**")
        st.dataframe(pd.DataFrame(rows), hide_index=True)
        mt = outcomes.report.get("matching", {})
        if mt:
            st.caption(f"Matched to {mt['matched']:,} of {data.n_samples:,} samples; "
                       f"{mt['outcome_ids_not_in_data']} outcome id(s) not in the data.")
st.page_link("pages/lattice.py", label="Next: choose the candidate lattice", icon=":material/arrow_forward:")
