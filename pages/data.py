"""Data: choose a bundled dataset or upload modality tables; see what loading kept and dropped."""

import os
import time

import pandas as pd
import streamlit as st

from hcl_explore import datasets, io, report, runs
from hcl_explore.ui import common as ui



def _new_set(ws: str, did: str, batch: list[tuple], held: list, mine: set) -> bool:
    """Whether a batch of uploads starts a new dataset instead of joining dataset ``did`` (the
    files listed below the uploaders). They join it when it has no file yet, when one of them
    replaces one of its files (same file name), when this session is adding to it (the uploaders
    still hold files this session put into it), or when the batch is one file (adding a modality,
    or the outcomes, to the listed files after a reload). Otherwise - a new browser session, or
    uploaders emptied first, with two or more new files - they are another dataset: a second person
    uploading their own tables never adds them to someone else's."""
    try:
        man = datasets.read_manifest(ws, did)
    except ValueError:
        return True
    listed = {e["file"] for e in (man.get("modalities") or {}).values()}
    if not listed:
        return False
    if any(datasets.display_name(b[0]) in listed for b in batch if b[2] == "modality"):
        return False
    if any(f.file_id in mine for f in held):
        return False
    return len(batch) >= 2


def _no_common_sample(errors: dict, batch: list[tuple]) -> bool:
    """Every modality file of the batch was refused because it shares no sample with the listed files."""
    mods = [datasets.display_name(b[0]) for b in batch if b[2] == "modality"]
    return bool(mods) and all("no sample in common" in errors.get(m, "") for m in mods)


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
               "Each file is checked when it is uploaded and kept in the workspace only if it loads; "
               "a file that does not load changes nothing.")
    files = st.file_uploader("Modality tables", type=["csv", "tsv", "txt", "tab", "parquet", "pq", "gz"],
                             accept_multiple_files=True, key="modality_files")
    out_file = st.file_uploader("Outcomes table (optional)", type=["csv", "tsv", "txt", "parquet", "pq", "gz"],
                                key="outcome_file")
    ws = ui.workspace()
    did = state.get("upload_dataset")
    if not datasets.exists(ws, did):
        did = None
    if did is None and state.get("uploads"):
        # An upload list kept by an older version of the app: its files become a stored dataset.
        did, added, errors = datasets.import_uploads(ws, state["uploads"], state.get("upload_outcomes"),
                                                     state.get("upload_id_column") or None)
        st.session_state["upload_errors"] = errors
        state = ui.set_state(upload_dataset=did, uploads=None, upload_outcomes=None,
                             uploads_pending=bool(state.get("uploads_pending")) and bool(added) and not errors)
    # Each upload is handled once (a file removed below stays removed when more files are uploaded).
    seen = st.session_state.setdefault("upload_seen", set())
    batch = [(f.name, f.getvalue(), "modality") for f in files or [] if f.file_id not in seen]
    if out_file is not None and out_file.file_id not in seen:
        batch.append((out_file.name, out_file.getvalue(), "outcomes"))
    held = list(files or []) + ([out_file] if out_file is not None else [])
    seen.update(f.file_id for f in held)
    # The uploads of this session, by the dataset they went into: files join the listed dataset
    # only while this session is adding to it (see _new_set).
    into = st.session_state.setdefault("upload_into", {})
    if batch:
        fresh = None
        if did is not None and _new_set(ws, did, batch, held, into.get(did, set())):
            fresh, did = did, None
        if did is None:
            did = datasets.create_dataset(ws, id_column=None if fresh else state.get("upload_id_column") or None)
        added, errors = datasets.ingest(ws, did, batch)
        if fresh is None and errors and not added and _no_common_sample(errors, batch):
            # Files with no sample in common with the listed ones are another dataset: they start
            # a new one (the listed dataset stays as it was, under "Datasets saved").
            new_did = datasets.create_dataset(ws, id_column=None)
            added2, errors2 = datasets.ingest(ws, new_did, batch)
            if added2:
                fresh, did, added, errors = did, new_did, added2, errors2
            else:
                datasets.delete_dataset(ws, new_did)
        if fresh is not None:
            prev = datasets.read_manifest(ws, fresh) if datasets.exists(ws, fresh) else {}
            st.session_state["upload_new_set"] = (did, ", ".join(prev.get("modalities") or {}) or "no files")
        into.setdefault(did, set()).update(f.file_id for f in held)
        # Every bad file keeps its error until it is fixed or taken out of the uploader: files
        # uploaded one after another show all their errors at once, each by its name.
        shown = {datasets.display_name(f.name) for f in files or []} | (
            {datasets.display_name(out_file.name)} if out_file is not None else set())
        merged = {k: v for k, v in (st.session_state.get("upload_errors") or {}).items() if k in shown and k not in added}
        merged.update(errors)
        st.session_state["upload_errors"] = merged
        if added or did != state.get("upload_dataset"):
            # New files become the current dataset as soon as the whole batch loads.
            state = ui.set_state(upload_dataset=did, uploads_pending=bool(added) and not errors)

    man = datasets.read_manifest(ws, did) if did else None
    new_set = st.session_state.get("upload_new_set")
    if new_set and new_set[0] == did:
        st.caption(f"These files are a new dataset; the files listed before ({ui.md(new_set[1])}) stay as they were, "
                   "under *Datasets saved in this workspace*.")
    upload_errors: dict[str, str] = dict(st.session_state.get("upload_errors") or {})
    problems: dict[str, str] = {}
    if man and man["modalities"]:
        entries = man["modalities"]
        # The editor's rows are fixed while the same files are listed: every edit (rename, remove)
        # is a change against the same rows, applied one by one, so edits made while the page
        # reruns after the previous one are never dropped. Rows are matched to files, not names.
        sig = "|".join(sorted(e["file"] for e in entries.values()))
        ed_key = f"upload_table_{did}_{abs(hash(sig))}"
        if "_base_" + ed_key not in st.session_state:
            st.session_state["_base_" + ed_key] = pd.DataFrame(
                [{"file": e["file"], "modality": m, "remove": False} for m, e in entries.items()])
        edited = st.data_editor(st.session_state["_base_" + ed_key], disabled=["file"], hide_index=True, key=ed_key,
                                column_config={"file": st.column_config.TextColumn("file"),
                                               "modality": st.column_config.TextColumn(
                                                   "modality name", help="The name used in nodes and figures."),
                                               "remove": st.column_config.CheckboxColumn(
                                                   "remove", help="Take this file out of the dataset.")})
        id_col = st.text_input("Id column (blank = detect)", value=man.get("id_column") or "",
                               key=f"upload_id_{did}",
                               help="The column that names each sample (patient, mouse ...); the same in every file.")
        by_file = {e["file"]: m for m, e in entries.items()}
        drop = [by_file[r.file] for r in edited.itertuples() if r.remove and r.file in by_file]
        rename = {by_file[r.file]: str(r.modality).strip() for r in edited.itertuples()
                  if r.file in by_file and not r.remove and str(r.modality).strip()
                  and str(r.modality).strip() != by_file[r.file]}
        if drop or rename or (id_col.strip() or None) != man.get("id_column"):
            try:
                for m in drop:
                    datasets.remove_file(ws, did, m)
                datasets.update_dataset(ws, did, rename={m: n for m, n in rename.items() if m not in drop},
                                        id_column=id_col)
                st.session_state["upload_errors"] = {}
                ui.set_state(uploads_pending=True)
                st.rerun()
            except ValueError as exc:
                problems["_"] = str(exc)
        if man.get("outcomes"):
            oc = st.columns([4, 1])
            oc[0].caption(f"Outcomes: {ui.md(man['outcomes']['file'])}")
            if oc[1].button("Remove", key="remove_outcomes"):
                datasets.remove_file(ws, did, outcomes=True)
                ui.set_state(uploads_pending=True)
                st.rerun()
        cand = datasets.dataset_spec(ws, did)
        if not problems:
            try:
                ui.load_dataset(cand)
                if spec != cand and state.get("uploads_pending"):
                    ui.set_state(dataset=cand, uploads_pending=False)
                    st.rerun()
                elif spec != cand and st.button("Use these files", key="use_uploads"):
                    ui.set_state(dataset=cand, uploads_pending=False)
                    st.rerun()
            except ValueError as exc:
                msg = str(exc)
                hit = [e["file"] for e in entries.values() if msg.startswith(e["file"] + ":")]
                problems[hit[0] if hit else "_"] = msg
    elif man and man.get("outcomes"):
        st.caption(f"Outcomes: {ui.md(man['outcomes']['file'])}")
    for fname, msg in list(upload_errors.items()) + list(problems.items()):
        where = "" if fname == "_" else f"**{ui.md(fname)}** — "
        st.error(f"{where}{ui.md(msg)}", icon=":material/error:")
    if upload_errors:
        st.info("A file that does not load is not kept: the current dataset and the files saved before were not "
                "changed. Fix the file and upload it again.")
    if problems:
        st.info("The current dataset was not changed. Fix or remove the file above, or rename the modality.")
    if not (man and man["modalities"]):
        st.info("Upload two or more modality tables (they become the current dataset as soon as they load).")
    saved = [m for m in datasets.list_datasets(ws) if m["modalities"]]
    if saved:
        with st.expander("Datasets saved in this workspace"):
            ids = [m["id"] for m in saved]
            labels = {m["id"]: f"{m['display']} · {time.strftime('%Y-%m-%d %H:%M', time.localtime(m['created']))}" for m in saved}
            cur_id = spec.get("dataset_id") if spec.get("dataset_id") in ids else (did if did in ids else ids[0])
            pick = st.selectbox("Dataset", ids, index=ids.index(cur_id), format_func=lambda i: labels[i], key="saved_pick")
            b = st.columns(2)
            if b[0].button("Use this dataset", key="use_saved", disabled=spec.get("dataset_id") == pick and pick == did):
                ui.set_state(dataset=datasets.dataset_spec(ws, pick), upload_dataset=pick, uploads_pending=False)
                st.session_state["upload_errors"] = {}
                st.rerun()
            if b[1].button("Start a new dataset", key="new_upload_set",
                           help="Uploads go to a new dataset; the saved ones stay as they are."):
                ui.set_state(upload_dataset=None, uploads_pending=False)
                st.session_state["upload_errors"] = {}
                st.rerun()
            in_use = runs.runs_using_dataset(ws, pick)
            if in_use:
                st.warning(f"{len(in_use)} run(s) used this dataset: {ui.md(', '.join(in_use))}. Deleting it removes "
                           "it from this list only; those runs keep their results and their copy of the files.")
            sure = not in_use or st.checkbox("Delete it although runs used it", key=f"confirm_delete_{pick}")
            if st.button("Delete this dataset", key="delete_saved", disabled=not sure or pick == spec.get("dataset_id"),
                         help="The current dataset cannot be deleted; switch to another first. Nothing is erased: "
                              "the files stay in the workspace for the runs that used them."):
                datasets.delete_dataset(ws, pick, confirm_runs=in_use)
                st.rerun()

spec, data, outcomes, truth, err = ui.current_dataset()
st.divider()
st.subheader(f"Current dataset: {ui.md(spec.get('name', '?'))}")
if err:
    st.error(ui.md(err))
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
for w in report.data_warnings(data):
    st.warning(ui.md(w), icon=":material/warning:")
left, right = st.columns([3, 2])
with left:
    # A table, not a chart: the first page needs no plotly (its import and figure cost seconds on a
    # cold start, its browser bundle more); one column per modality reads the same at 10 modalities.
    st.markdown(f"**Which modalities the {data.n_samples:,} samples have** — one row per combination, "
                "most frequent first")
    pat = data.observation_patterns()
    # The ticks name each row; the pattern's name only tells the summed rare ones apart.
    st.dataframe(pat if "other patterns" in set(pat.pattern) else pat.drop(columns="pattern"), hide_index=True,
                 width="stretch",
                 column_config={**{c_: st.column_config.CheckboxColumn(c_, help=f"Samples of this row have {ui.md(c_)}.")
                                   for c_ in pat.columns[1:-2]},
                                "samples": st.column_config.NumberColumn("samples", format="%d"),
                                "share": st.column_config.ProgressColumn("share of samples", format="percent",
                                                                         min_value=0.0, max_value=1.0)})
    if st.toggle("Show as a chart", key="overlap_chart", help="The same counts as bars (also in the HTML report)."):
        from hcl_explore import figures

        st.plotly_chart(figures.overlap_figure(data.observed, data.modalities), width="stretch")
with right:
    for m, r in rep.get("modalities", {}).items():
        if r.get("dropped") or r.get("one_hot") or r.get("converted") or r.get("notes"):
            with st.expander(f"{ui.md(m)}: what loading changed"):
                for d in r.get("dropped", []):
                    st.markdown(f"- dropped {ui.code(d['column'])}: {ui.md(d['reason'])}")
                for d in r.get("one_hot", []):
                    st.markdown(f"- one-hot {ui.code(d['column'])}: {ui.md(', '.join(map(str, d['levels'])))} "
                                f"(reference {ui.md(d['reference'])})")
                for d in r.get("converted", []):
                    st.markdown(f"- converted {ui.code(d['column'])}: {ui.md('; '.join(d['notes']))}")
                for n in r.get("notes", []):
                    st.markdown(f"- {ui.md(n)}")
    for w in rep.get("warnings", []):
        st.warning(ui.md(w))
    if outcomes is not None:
        rows = [{"outcome": c_, "kind": k, "labelled": outcomes.report["outcomes"][c_]["labelled"]} for c_, k in outcomes.kinds.items()]
        st.markdown("**Outcomes**")
        st.dataframe(pd.DataFrame(rows), hide_index=True)
        mt = outcomes.report.get("matching", {})
        if mt:
            st.caption(f"Matched to {mt['matched']:,} of {data.n_samples:,} samples; "
                       f"{mt['outcome_ids_not_in_data']} outcome id(s) not in the data.")
st.page_link("pages/lattice.py", label="Next: choose the candidate lattice", icon=":material/arrow_forward:")
