"""Every page of the app through streamlit.testing.v1.AppTest (no browser): data QC, uploads and
their errors, lattice edits, launching a tiny real run, results, prediction, export, failures."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import hcl_explore as hx
from hcl_explore import runs
from workspace_helpers import tree_hashes, wait_for_run

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


def _app(page=None, run=None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    if run:
        at.query_params["run"] = run
    at.run()
    if page:
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def _texts(at) -> str:
    parts = [e.value for e in at.markdown] + [e.value for e in at.caption] + [e.value for e in at.title]
    parts += [e.value for e in at.subheader] + [str(e.value) for e in at.error] + [str(e.value) for e in at.success]
    parts += [str(e.value) for e in at.info] + [str(e.value) for e in at.warning]
    return "\n".join(map(str, parts))


def _write_uploads(ws, n=600, bad=False):
    data, truth = hx.simulate(n=n, dims={"a": 10, "b": 8, "c": 6},
                              ranks={("a", "b", "c"): 1, ("a", "b"): 1, ("a",): 1, ("b",): 1, ("c",): 1}, noise=0.3, seed=1)
    up = os.path.join(ws, "uploads")
    os.makedirs(up, exist_ok=True)
    uploads = []
    for m in data.modalities:
        df = pd.DataFrame(data.X[m], columns=data.feature_names[m]).round(4)
        df.insert(0, "pid", [f"P{i}" for i in range(n)])
        p = os.path.join(up, f"{m}.csv")
        df.to_csv(p, index=False)
        uploads.append({"file": f"{m}.csv", "path": p, "modality": m})
    if bad:
        p = os.path.join(up, "broken.csv")
        Path(p).write_text("pid,x\n" + "".join(f"P{i},{i}\n" for i in range(20)) + "P999,1,2,3\n")
        uploads.append({"file": "broken.csv", "path": p, "modality": "broken"})
    out = pd.DataFrame({"pid": [f"P{i}" for i in range(n)], "event": (truth.Z[("a", "b")][:, 0] > 0.3).astype(int)})
    out.to_csv(os.path.join(up, "outcomes__out.csv"), index=False)
    runs.write_json(os.path.join(ws, "state.json"), {"dataset": {"bundled": "clinical", "name": "clinical"},
                                                     "uploads": uploads, "upload_outcomes": os.path.join(up, "outcomes__out.csv"),
                                                     "uploads_pending": True})
    return uploads


def test_data_page_opens_on_the_bundled_sample(ws):
    at = _app()
    assert at.title[0].value == "Data"
    assert "Current dataset: clinical" in _texts(at)
    samples = [m for m in at.metric if m.label == "Samples"][0]
    assert samples.value == "3,000"
    assert len(at.dataframe) >= 1  # the QC table
    qc = at.dataframe[0].value
    assert list(qc.modality) == ["diagnoses", "labs", "vitals", "notes"]
    # Which modalities the samples have: a table (one tick column per modality), no plotly on the
    # first page (its import, figure and browser bundle cost seconds on a cold start) until asked.
    pat = at.dataframe[1].value
    assert list(pat.columns) == ["diagnoses", "labs", "vitals", "notes", "samples", "share"]
    assert pat.samples.sum() == 3000 and pat.samples.is_monotonic_decreasing
    assert pat.iloc[0][["diagnoses", "labs", "vitals", "notes"]].all()
    assert not at.get("plotly_chart")
    at.toggle(key="overlap_chart").set_value(True).run()
    assert not at.exception and len(at.get("plotly_chart")) == 1


def test_uploaded_files_become_the_dataset_and_a_bad_file_shows_its_error(ws):
    _write_uploads(ws)
    at = _app()
    assert "Current dataset: uploaded: a, b, c" in _texts(at)
    # Choosing the bundled data again is not undone by the uploads still listed.
    at.selectbox(key="bundled_name").set_value("clinical").run()
    at.button(key="use_bundled").click().run()
    assert "Current dataset: clinical" in _texts(at)
    at.run()
    assert "Current dataset: clinical" in _texts(at)
    # A malformed file next to the good ones: a readable error naming it, the dataset unchanged.
    _write_uploads(ws, bad=True)
    runs.write_json(os.path.join(ws, "state.json"), dict(runs.read_json(os.path.join(ws, "state.json")),
                                                          dataset={"modalities": {"a": os.path.join(ws, "uploads", "a.csv"),
                                                                                  "b": os.path.join(ws, "uploads", "b.csv")},
                                                                   "name": "uploaded: a, b"}))
    at = _app()
    errors = [str(e.value) for e in at.error]
    assert any("broken.csv" in e and "line 22 has 4 fields" in e for e in errors), errors
    assert "Current dataset: uploaded: a, b" in _texts(at)


def test_lattice_page_presets_and_model_size(ws):
    at = _app("lattice")
    assert at.title[0].value == "Candidate lattice"
    nodes = [m for m in at.metric if m.label == "Candidate nodes"][0]
    assert nodes.value == "15 of 15"
    at.selectbox[0].set_value("shared_private").run()
    assert not at.exception
    st_ = runs.read_json(os.path.join(ws, "state.json"))
    assert st_["lattice"]["preset"] == "shared_private" and len(st_["lattice"]["nodes"]) == 5
    nodes = [m for m in at.metric if m.label == "Candidate nodes"][0]
    assert nodes.value == "5 of 15"
    assert len(at.get("plotly_chart")) == 1


def test_train_page_launches_a_real_run_and_shows_it_finish(ws):
    _write_uploads(ws)
    st_ = runs.read_json(os.path.join(ws, "state.json"))
    spec = {"modalities": {u["modality"]: u["path"] for u in st_["uploads"]}, "id_column": "pid",
            "outcomes": st_["upload_outcomes"], "name": "uploaded: a, b, c"}
    runs.write_json(os.path.join(ws, "state.json"), dict(st_, dataset=spec))
    at = _app("train")
    assert "CPU" in _texts(at) or "GPU" in _texts(at)
    # A small dataset: the stability check is on by default.
    assert at.checkbox(key="stability_linear").value and not at.checkbox(key="stability_linear").disabled
    at.button[0].click().run()  # Launch training
    assert not at.exception
    table = runs.list_runs(ws)
    assert len(table) == 1
    rid = table.run_id[0]
    assert at.query_params["run"] == rid
    assert runs.read_json(os.path.join(runs.run_path(ws, rid), "config.json"))["stability"] == {"n_resamples": 20}
    assert wait_for_run(ws, rid)["state"] == "done"
    at = _app("train", run=rid)
    assert "Run finished." in _texts(at)
    # Structure page of that run: the hierarchy, variance, loadings and scores figures.
    at = _app("structure", run=rid)
    assert len(at.get("plotly_chart")) >= 4
    assert [m for m in at.metric if m.label == "Nodes found"][0].value.endswith("of 7")
    # ... with the stability check: hover counts and the opacity caption in the hierarchy, a note, the table.
    hierarchy = json.loads(at.get("plotly_chart")[0].proto.spec)
    hover = " ".join(h for t in hierarchy["data"] for h in t.get("hovertext") or [])
    assert "found in 20 of 20 resamples" in hover and "same rank in" in hover
    assert any("Opacity = share of the 20 subsample refits" in a["text"] for a in hierarchy["layout"]["annotations"])
    assert "refitted on 20 random subsamples" in _texts(at) and "Paler circles" in _texts(at)
    summary = at.dataframe[-1].value
    assert {"found in resamples", "same rank in resamples"} <= set(summary.columns)
    assert summary["found in resamples"].between(0, 1).all()
    # Prediction page: evaluate in the background, then the results render.
    at = _app("prediction", run=rid)
    assert "No evaluation of this outcome yet" in _texts(at)
    pid = runs.create_run(ws, {"kind": "predict", "parent": rid, "outcome": "event", "dataset": {"name": "p"},
                               "options": {"n_bootstrap": 20}})
    runs.run_worker(runs.run_path(ws, pid))
    at = _app("prediction", run=rid)
    assert "Selected nodes for" in _texts(at)
    assert len(at.get("plotly_chart")) == 3
    # Export page: both downloads are offered.
    at = _app("export", run=rid)
    assert len(at.get("download_button")) == 2


def test_train_page_launches_a_contrastive_run_with_its_settings(ws):
    _write_uploads(ws, n=400)
    st_ = runs.read_json(os.path.join(ws, "state.json"))
    spec = {"modalities": {u["modality"]: u["path"] for u in st_["uploads"]}, "id_column": "pid", "name": "up"}
    runs.write_json(os.path.join(ws, "state.json"), dict(st_, dataset=spec))
    at = _app("train")
    at.selectbox(key="estimator").set_value("contrastive").run()
    assert at.checkbox(key="stability_contrastive").disabled and not at.checkbox(key="stability_contrastive").value
    at.number_input[0].set_value(3).run()  # max epochs
    at.number_input[1].set_value(16).run()  # hidden units
    at.button[0].click().run()
    assert not at.exception, at.exception
    rid = runs.list_runs(ws).run_id[0]
    cfg = runs.read_json(os.path.join(runs.run_path(ws, rid), "config.json"))
    assert cfg["params"] == {"estimator": "contrastive", "standardize": "auto", "device": "auto", "max_epochs": 3,
                             "loss": "infonce", "hidden": [16]}
    assert cfg["stability"] is False
    assert wait_for_run(ws, rid)["state"] == "done"
    epochs = [e for e in runs.read_metrics(ws, rid) if e.get("stage") == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    model = hx.HCL.load(os.path.join(runs.run_path(ws, rid), "model.npz"))
    assert model.estimator == "contrastive" and model.module_.spec.hidden == (16,)
    at = _app("structure", run=rid)
    assert len(at.get("plotly_chart")) >= 4


def test_structure_page_compares_with_the_truth_of_the_sample_data(ws):
    rid = runs.create_run(ws, {"kind": "fit", "dataset": {"bundled": "clinical", "name": "clinical"}, "lattice": "full"})
    assert runs.run_worker(runs.run_path(ws, rid)) == 0
    at = _app("structure", run=rid)
    assert "Truth vs recovered" in _texts(at)
    f1 = [m for m in at.metric if m.label == "Structure F1"][0]
    assert f1.value == "1.00"
    assert "Stability was not computed for this run" in _texts(at)
    assert "found in resamples" not in at.dataframe[-1].value.columns


def test_a_failed_run_shows_its_error(ws):
    bad = os.path.join(ws, "empty.csv")
    Path(bad).write_text("")
    rid = runs.create_run(ws, {"kind": "fit", "dataset": {"modalities": {"a": bad, "b": bad}, "name": "bad"}})
    runs.run_worker(runs.run_path(ws, rid))
    at = _app("train", run=rid)
    assert any("empty.csv: the file is empty" in str(e.value) for e in at.error)


def test_pages_without_runs_say_what_to_do(ws):
    for page in ("structure", "prediction", "export"):
        at = _app(page)
        assert "No finished run yet" in _texts(at)


def _table(n=80, seed=0, cols=3) -> bytes:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, cols)).round(4), columns=[f"x{j}" for j in range(cols)])
    df.insert(0, "pid", [f"P{i}" for i in range(n)])
    return df.to_csv(index=False).encode()


def test_a_bad_upload_with_a_good_files_name_leaves_the_dataset_loading(ws):
    at = _app()
    files = [("a.csv", _table(seed=1), "text/csv"), ("_b_.csv", _table(seed=2), "text/csv"),
             ("数据.csv", _table(seed=3), "text/csv")]
    at.file_uploader(key="modality_files").set_value(files).run()
    assert not at.exception, at.exception
    # The names are shown as written, not as markdown.
    assert "Current dataset: uploaded: a, \\_b\\_, 数据" in _texts(at)
    before = tree_hashes(ws)
    at.file_uploader(key="modality_files").set_value(("a.csv", b"\x00\x01\x02binary" * 40, "text/csv")).run()
    assert not at.exception, at.exception
    errors = [str(e.value) for e in at.error]
    assert any("a.csv" in e and "looks like a binary file" in e for e in errors), errors
    assert "the current dataset and the files saved before were not changed" in _texts(at)
    assert "Current dataset: uploaded: a, \\_b\\_, 数据" in _texts(at)
    assert tree_hashes(ws) == before  # no byte of the workspace changed
    # After a reload the same dataset loads from the same files.
    at = _app()
    assert "Current dataset: uploaded: a, \\_b\\_, 数据" in _texts(at)
    assert [m for m in at.metric if m.label == "Samples"][0].value == "80"
    spec = runs.read_json(os.path.join(ws, "state.json"))["dataset"]
    assert Path(spec["modalities"]["a"]).read_bytes() == files[0][1]
    # Another project's outcomes are refused by name; the current dataset keeps none.
    other = pd.DataFrame({"pid": [f"Q{i}" for i in range(80)], "y": [i % 2 for i in range(80)]}).to_csv(index=False).encode()
    at.file_uploader(key="outcome_file").set_value(("outcomes.csv", other, "text/csv")).run()
    assert any("outcomes.csv" in str(e.value) and "none of its 80 ids match" in str(e.value) for e in at.error)
    assert [m for m in at.metric if m.label == "Outcomes"][0].value == "0"
    assert tree_hashes(ws) == before


# ------------------------------------------------------------------------------ issue 15: the app a clinician sees
def test_a_lattice_with_every_node_off_cannot_launch(ws):
    runs.write_json(os.path.join(ws, "state.json"), {"dataset": {"bundled": "clinical", "name": "clinical"},
                                                     "lattice": {"modalities": ["diagnoses", "labs", "vitals", "notes"],
                                                                 "nodes": [], "ranks": {}, "preset": "custom"}})
    at = _app("train")
    launch = [b for b in at.button if b.label == "Launch training"][0]
    assert launch.disabled
    assert any("Every node of the lattice is switched off" in str(e.value) for e in at.error)
    assert [m for m in at.metric if m.label == "Candidate nodes"][0].value.startswith("0")
    at = _app("lattice")
    assert [m for m in at.metric if m.label == "Candidate nodes"][0].value == "0 of 15"
    assert any("Every node is switched off" in str(e.value) for e in at.error)


def test_train_page_says_how_long_and_passes_the_time_budget(ws):
    _write_uploads(ws, n=300)
    st_ = runs.read_json(os.path.join(ws, "state.json"))
    spec = {"modalities": {u["modality"]: u["path"] for u in st_["uploads"]}, "id_column": "pid", "name": "budget"}
    runs.write_json(os.path.join(ws, "state.json"), dict(st_, dataset=spec))
    at = _app("train")
    assert "7 candidate nodes × 24 features: expected about" in _texts(at)
    assert "**Dataset:** uploaded: a, b, c" in _texts(at)  # the whole name, not cut as a metric
    at.selectbox(key="estimator").set_value("contrastive").run()
    at.number_input(key="time_budget").set_value(2.0).run()
    at.number_input[0].set_value(2).run()
    at.button[0].click().run()
    assert not at.exception, at.exception
    rid = runs.list_runs(ws).run_id[0]
    cfg = runs.read_json(os.path.join(runs.run_path(ws, rid), "config.json"))
    assert cfg["params"]["max_time"] == 120.0 and cfg["planned_s"] > 0
    runs.cancel(ws, rid)
    wait_for_run(ws, rid)


def test_two_sessions_keep_their_own_dataset(ws):
    a = _app()
    assert "Current dataset: clinical" in _texts(a)
    b = _app()
    names = [o for o in b.selectbox(key="bundled_name").options]
    other = [n for n in names if n != "clinical"]
    if not other:
        pytest.skip("one bundled dataset only")
    b.selectbox(key="bundled_name").set_value(other[0]).run()
    b.button(key="use_bundled").click().run()
    assert f"Current dataset: {other[0]}" in _texts(b)
    a.run()  # the first session is not changed by the second one's choice
    assert "Current dataset: clinical" in _texts(a)
    a.switch_page("pages/train.py").run()
    assert "**Dataset:** clinical" in _texts(a)
    # A new session starts from the last choice saved in the workspace.
    assert f"Current dataset: {other[0]}" in _texts(_app())


def test_data_page_warns_when_features_outnumber_samples(ws):
    rng = np.random.default_rng(0)
    files = []
    for name, p in (("genes.csv", 120), ("lipids.csv", 10)):
        df = pd.DataFrame(rng.normal(size=(40, p)).round(3), columns=[f"{name[:1]}{j}" for j in range(p)])
        df.insert(0, "mouse", [f"M{i}" for i in range(40)])
        files.append((name, df.to_csv(index=False).encode(), "text/csv"))
    at = _app()
    at.file_uploader(key="modality_files").set_value(files).run()
    assert not at.exception, at.exception
    warns = " ".join(str(w.value) for w in at.warning)
    assert "genes: 120 features but only 40 samples" in warns and "lipids" not in warns


def _first_run(page=None, run=None, **state) -> AppTest:
    """A session's first script run on ``page`` (AppTest keeps the sidebar of first runs only)."""
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in state.items():
        at.session_state[k] = v
    if run:
        at.query_params["run"] = run
    if page:
        at.switch_page(f"pages/{page}.py")
    at.run()
    assert not at.exception, at.exception
    return at


def test_guided_demo_walks_through_the_sample(ws):
    rid = runs.create_run(ws, {"kind": "fit", "dataset": {"bundled": "clinical", "name": "clinical"}, "lattice": "full"})
    assert runs.run_worker(runs.run_path(ws, rid)) == 0
    at = _first_run()
    assert "Guided demo" in [t.label for t in at.toggle] and "1 · The question" not in _texts(at)
    at = _first_run(demo_mode=True)
    assert "1 · The question" in _texts(at) and "readmission within 30 days" in _texts(at)
    # The steps of the other pages, and what each node of the fit means (its top features).
    from hcl_explore.ui import demo

    assert [demo.STEPS[p][0][0] for p in ("Data", "Lattice", "Train", "Structure", "Prediction", "Export")] == list("123456")
    lines = demo.node_meanings(hx.HCL.load(os.path.join(runs.run_path(ws, rid), "model.npz")))
    assert lines and lines[0].startswith("**diagnoses+labs+vitals+notes** (") and lines[0].count("(") == 4
    # The sidebar names the run of the URL (written after the page ran).
    assert f"Run: {rid}" in _texts(_first_run(run=rid))


def test_a_dataset_switch_keeps_the_lattice_choice_when_it_fits(ws):
    clinical = ["diagnoses", "labs", "vitals", "notes"]
    # A preset chosen on other data applies to the new modalities.
    runs.write_json(os.path.join(ws, "state.json"), {"dataset": {"bundled": "clinical", "name": "clinical"},
                                                     "lattice": {"modalities": ["a", "b", "c"], "nodes": [["a"]],
                                                                 "ranks": {}, "preset": "pairwise"}})
    at = _app("lattice")
    assert [m for m in at.metric if m.label == "Candidate nodes"][0].value == "11 of 15"
    # A custom lattice over the same modalities in another order is kept.
    nodes = [["diagnoses", "labs"], ["labs"], ["notes"]]
    runs.write_json(os.path.join(ws, "state.json"), {"dataset": {"bundled": "clinical", "name": "clinical"},
                                                     "lattice": {"modalities": clinical[::-1], "nodes": nodes,
                                                                 "ranks": {"labs": 2}, "preset": "custom"}})
    at = _app("lattice")
    assert [m for m in at.metric if m.label == "Candidate nodes"][0].value == "3 of 15"
    assert [m for m in at.metric if m.label == "Fixed factors"][0].value == "2"


def test_deleting_a_saved_dataset_used_by_a_run_asks_first(ws):
    from hcl_explore import datasets

    def csv(seed):
        rng = np.random.default_rng(seed)
        df = pd.DataFrame(rng.normal(size=(30, 3)).round(3), columns=["x1", "x2", "x3"])
        df.insert(0, "pid", [f"P{i}" for i in range(30)])
        return df.to_csv(index=False).encode()

    used = datasets.create_dataset(ws, [datasets.stage_upload(ws, f"{m}.csv", csv(i)) for i, m in enumerate("ab")])
    rid = runs.create_run(ws, {"kind": "fit", "dataset": datasets.dataset_spec(ws, used), "lattice": "full"})
    at = _app()  # the current dataset is the bundled sample, so the saved one may be deleted
    at.selectbox(key="saved_pick").set_value(used).run()
    assert rid in " ".join(str(w.value) for w in at.warning).replace("\\", "")  # shown as text (escaped markdown)
    assert at.button(key="delete_saved").disabled  # not before the checkbox
    at.checkbox(key=f"confirm_delete_{used}").check().run()
    at.button(key="delete_saved").click().run()
    assert not at.exception, at.exception
    assert not datasets.exists(ws, used) and runs.runs_using_dataset(ws, used) == [rid]
