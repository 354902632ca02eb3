"""The workspace dataset store: uploads checked before they are kept, files stored by content,
removals that last, hashes that catch a changed file, and per-outcome results that never collide."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hcl_explore as hx
from hcl_explore import datasets, report, runs
from workspace_helpers import tree_hashes


def _csv(n=60, seed=0, prefix="P", cols=("x1", "x2", "x3"), id_col="pid") -> bytes:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, len(cols))).round(4), columns=list(cols))
    df.insert(0, id_col, [f"{prefix}{i}" for i in range(n)])
    return df.to_csv(index=False).encode()


@pytest.fixture
def ws(tmp_path):
    return runs.workspace_dir(str(tmp_path / "ws"))


def _dataset(ws, files: dict[str, bytes], outcomes: tuple[str, bytes] | None = None) -> str:
    staged = [datasets.stage_upload(ws, n, b) for n, b in files.items()]
    if outcomes:
        staged.append(datasets.stage_upload(ws, outcomes[0], outcomes[1], "outcomes"))
    return datasets.create_dataset(ws, staged)


def test_a_bad_upload_with_the_name_of_a_good_file_changes_no_byte(ws):
    out = pd.DataFrame({"pid": [f"P{i}" for i in range(60)], "event": [i % 2 for i in range(60)]}).to_csv(index=False).encode()
    did = _dataset(ws, {"fac.csv": _csv(seed=1), "lab.csv": _csv(seed=2)}, ("outcomes.csv", out))
    spec = datasets.dataset_spec(ws, did)
    before = tree_hashes(ws)
    # A binary file under the same name: refused when staged, naming the file.
    with pytest.raises(ValueError, match=r"fac\.csv: looks like a binary file"):
        datasets.stage_upload(ws, "fac.csv", b"\x00\x01\x02\x03binary" * 50)
    # A table that parses alone but shares no sample with the others: refused when added.
    staged = datasets.stage_upload(ws, "fac.csv", _csv(seed=3, prefix="Q"))
    with pytest.raises(ValueError, match=r"fac\.csv"):
        datasets.add_files(ws, did, [staged])
    # Another project's outcomes (no id in common): refused too.
    other = pd.DataFrame({"pid": [f"Z{i}" for i in range(60)], "event": [i % 3 == 0 for i in range(60)]}).to_csv(index=False).encode()
    added, errors = datasets.ingest(ws, did, [("outcomes.csv", other, "outcomes"), ("fac.csv", b"\x00" * 10, "modality")])
    assert added == [] and "none of its 60 ids match" in errors["outcomes.csv"] and "fac.csv" in errors
    assert tree_hashes(ws) == before  # every file byte-identical, nothing left in staging
    data, outcomes, _ = datasets.load(spec)  # the dataset still loads as it was
    assert data.modalities == ["fac", "lab"] and data.n_samples == 60 and outcomes.columns == ["event"]
    assert datasets.dataset_spec(ws, did) == spec


def test_names_that_sanitize_alike_keep_their_own_contents(ws):
    files = {"数据.csv": _csv(seed=1), "检查.csv": _csv(seed=2), "a b.csv": _csv(seed=3), "a_b.csv": _csv(seed=4)}
    assert runs.sanitize_filename("数据.csv") == runs.sanitize_filename("检查.csv")
    assert runs.sanitize_filename("a b.csv") == runs.sanitize_filename("a_b.csv")
    did = _dataset(ws, files)
    man = datasets.read_manifest(ws, did)
    assert [e["file"] for e in man["modalities"].values()] == list(files)
    assert list(man["modalities"]) == ["数据", "检查", "a b", "a_b"]
    spec = datasets.dataset_spec(ws, did)
    stored = [spec["modalities"][m] for m in man["modalities"]]
    assert len(set(stored)) == 4
    for path, (name, raw) in zip(stored, files.items()):
        assert Path(path).read_bytes() == raw, name
    data, _, _ = datasets.load(spec)
    assert data.modalities == ["数据", "检查", "a b", "a_b"]
    # The same bytes under two names are kept once per name, never overwritten.
    did2 = _dataset(ws, {"x.csv": _csv(seed=1), "y.csv": _csv(seed=2)})
    assert datasets.dataset_spec(ws, did2)["modalities"]["x"] != spec["modalities"]["数据"]
    assert Path(datasets.dataset_spec(ws, did2)["modalities"]["x"]).read_bytes() == files["数据.csv"]


def test_a_removed_file_stays_removed(ws):
    did = _dataset(ws, {"a.csv": _csv(seed=1), "b.csv": _csv(seed=2), "c.csv": _csv(seed=3)})
    datasets.remove_file(ws, did, "c")
    added, errors = datasets.ingest(ws, did, [("d.csv", _csv(seed=4), "modality")])
    assert added == ["d.csv"] and errors == {}
    man = datasets.read_manifest(ws, did)
    assert list(man["modalities"]) == ["a", "b", "d"]
    assert [r["file"] for r in man["removed"]] == ["c.csv"]
    assert list(datasets.dataset_spec(ws, did)["modalities"]) == ["a", "b", "d"]
    assert [m["modalities"].keys() for m in datasets.list_datasets(ws)][0] == {"a", "b", "d"}
    # A file uploaded again under a name already in the dataset replaces it (same modality).
    new_a = _csv(seed=9)
    datasets.ingest(ws, did, [("a.csv", new_a, "modality")])
    man = datasets.read_manifest(ws, did)
    assert list(man["modalities"]) == ["a", "b", "d"]
    assert Path(datasets.dataset_spec(ws, did)["modalities"]["a"]).read_bytes() == new_a


def test_verify_refuses_a_changed_or_missing_file_by_name(ws):
    did = _dataset(ws, {"genes.csv": _csv(seed=1), "labs.csv": _csv(seed=2)})
    spec = datasets.dataset_spec(ws, did)
    datasets.verify(spec)
    path = spec["modalities"]["genes"]
    Path(path).write_bytes(_csv(seed=5))
    with pytest.raises(ValueError, match=r"^genes\.csv: .*changed after it was uploaded"):
        datasets.verify(spec)
    with pytest.raises(ValueError, match=r"^genes\.csv"):
        datasets.load(spec)
    os.remove(path)
    with pytest.raises(ValueError, match=r"^genes\.csv: .*missing"):
        datasets.verify(spec)
    datasets.verify({"bundled": "clinical"})  # specs without hashes pass


def test_outcome_results_never_collide(tmp_path, ws):
    n = 300
    data, truth = hx.simulate(n=n, dims={"a": 6, "b": 5}, ranks={("a", "b"): 1, ("a",): 1, ("b",): 1}, noise=0.3, seed=0)
    mods = {}
    for m in data.modalities:
        df = pd.DataFrame(data.X[m], columns=data.feature_names[m]).round(4)
        df.insert(0, "sid", [f"S{i}" for i in range(n)])
        mods[m] = str(tmp_path / f"{m}.csv")
        df.to_csv(mods[m], index=False)
    z = truth.Z[("a", "b")][:, 0]
    pd.DataFrame({"sid": [f"S{i}" for i in range(n)], "readmit 30d": (z > 0).astype(int),
                  "readmit_30d": z + 0.1}).to_csv(tmp_path / "out.csv", index=False)
    spec = {"modalities": mods, "id_column": "sid", "outcomes": str(tmp_path / "out.csv"), "name": "t"}
    rid = runs.create_run(ws, {"kind": "fit", "dataset": spec, "lattice": "full"})
    assert runs.run_worker(runs.run_path(ws, rid)) == 0, runs.read_log(ws, rid)
    d = runs.run_path(ws, rid)
    # An older file under the sanitized name, holding the other outcome, is moved aside, not overwritten.
    assert runs._safe("readmit 30d") != runs._safe("readmit_30d")
    for outcome in ("readmit 30d", "readmit_30d"):
        pid = runs.create_run(ws, {"kind": "predict", "parent": rid, "outcome": outcome, "dataset": {"name": "p"},
                                   "options": {"n_bootstrap": 0, "baselines": ["raw"]}})
        assert runs.run_worker(runs.run_path(ws, pid)) == 0, runs.read_log(ws, pid)
    a, b = report.read_prediction(d, "readmit 30d"), report.read_prediction(d, "readmit_30d")
    assert a["outcome"] == "readmit 30d" and a["task"] == "binary"
    assert b["outcome"] == "readmit_30d" and b["task"] == "continuous"
    assert set(report.read_predictions(d)) == {"readmit 30d", "readmit_30d"}
    assert report.prediction_path(d, "readmit_30d") == os.path.join(d, "prediction_readmit_30d.json")
    # An old run: one file per sanitized name, read only for the outcome stored in it.
    old = str(tmp_path / "old")
    os.makedirs(old)
    with open(os.path.join(old, "prediction_readmit_30d.json"), "w") as fh:
        json.dump(a, fh)
    assert report.read_prediction(old, "readmit 30d")["task"] == "binary"
    assert report.read_prediction(old, "readmit_30d") is None
    # Evaluating the other outcome there moves the old file to its own key instead of overwriting it.
    os.replace(os.path.join(d, "prediction_readmit_30d.json"), os.path.join(str(tmp_path), "b.json"))
    os.replace(report.prediction_path(d, "readmit 30d"), os.path.join(d, "prediction_readmit_30d.json"))
    pid = runs.create_run(ws, {"kind": "predict", "parent": rid, "outcome": "readmit_30d", "dataset": {"name": "p"},
                               "options": {"n_bootstrap": 0, "baselines": ["raw"]}})
    assert runs.run_worker(runs.run_path(ws, pid)) == 0
    assert report.read_prediction(d, "readmit 30d")["task"] == "binary"
    assert report.read_prediction(d, "readmit_30d")["task"] == "continuous"
    assert set(report.run_metrics(d)["predictions"]) == {"readmit 30d", "readmit_30d"}


def test_display_names_and_modality_names():
    assert datasets.display_name("../../x/.hidden.csv") == "hidden.csv"
    assert datasets.display_name("C:\\data\\labs.tsv.gz") == "labs.tsv.gz"
    assert datasets.display_name("") == "upload"
    assert datasets.modality_name("labs.tsv.gz") == "labs"
    assert datasets.modality_name("a+b.csv") == "a_b"
    assert len(datasets.display_name("é" * 300 + ".csv").encode()) <= 200
    assert datasets.display_name("é" * 300 + ".csv").endswith(".csv")


def test_two_tabs_adding_files_at_once_keep_both(ws, monkeypatch):
    # Each writer reads the manifest, checks its upload (slow), then writes: without the
    # per-dataset lock the second write drops the first one's file.
    import threading
    import time as _time

    did = _dataset(ws, {"a.csv": _csv(seed=1)})
    slow = datasets._check

    def check(*args, **kwargs):
        _time.sleep(0.3)
        return slow(*args, **kwargs)

    monkeypatch.setattr(datasets, "_check", check)
    uploads = [datasets.stage_upload(ws, f"{k}.csv", _csv(seed=s)) for k, s in (("b", 2), ("c", 3))]
    errors = []

    def add(st):
        try:
            datasets.add_files(ws, did, [st])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(u,)) for u in uploads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(datasets.read_manifest(ws, did)["modalities"]) == ["a", "b", "c"]


def test_deleting_a_dataset_used_by_runs_warns_lists_them_and_loses_nothing(ws):
    did = _dataset(ws, {"a.csv": _csv(seed=1), "b.csv": _csv(seed=2)})
    spec = datasets.dataset_spec(ws, did)
    rid = runs.create_run(ws, {"kind": "fit", "dataset": spec, "lattice": "full"})
    other = _dataset(ws, {"c.csv": _csv(seed=3), "d.csv": _csv(seed=4)})
    assert runs.runs_using_dataset(ws, did) == [rid] and runs.runs_using_dataset(ws, other) == []
    before = {k: v for k, v in tree_hashes(ws).items() if k.startswith("files/")}
    with pytest.raises(datasets.DatasetInUse, match=rid) as info:
        datasets.delete_dataset(ws, did)
    assert info.value.run_ids == [rid] and datasets.exists(ws, did)
    moved = datasets.delete_dataset(ws, did, confirm_runs=[rid])
    assert not datasets.exists(ws, did) and os.path.isfile(os.path.join(moved, "manifest.json"))
    assert [m["id"] for m in datasets.list_datasets(ws)] == [other]
    # The run's own copy of the files is untouched: it still verifies and loads.
    assert {k: v for k, v in tree_hashes(ws).items() if k.startswith("files/")} == before
    datasets.verify(spec)
    data, _, _ = datasets.load(spec)
    assert data.modalities == ["a", "b"]
    datasets.delete_dataset(ws, other)  # unused: no confirmation needed
    assert datasets.list_datasets(ws) == []


def test_collect_garbage_removes_only_unreferenced_stored_files(ws):
    did = _dataset(ws, {"a.csv": _csv(seed=1), "b.csv": _csv(seed=2), "c.csv": _csv(seed=3)})
    man = datasets.read_manifest(ws, did)
    sha = {m: e["sha256"] for m, e in man["modalities"].items()}
    # a run pins a, b and c; then b is replaced and c removed: the run still refers to all three
    spec = datasets.dataset_spec(ws, did)
    rid = runs.create_run(ws, {"kind": "fit", "dataset": spec, "lattice": "full"})
    datasets.ingest(ws, did, [("b.csv", _csv(seed=4), "modality")])
    datasets.remove_file(ws, did, "c")
    # a deleted dataset's manifest keeps its files too
    other = _dataset(ws, {"d.csv": _csv(seed=5)})
    sha_d = datasets.read_manifest(ws, other)["modalities"]["d"]["sha256"]
    datasets.delete_dataset(ws, other)
    assert datasets.collect_garbage(ws, min_age_s=0) == []
    stored = lambda h: os.path.isdir(os.path.join(ws, datasets.FILES, h))  # noqa: E731
    assert all(stored(h) for h in [*sha.values(), sha_d])
    # once no run refers to them, the replaced b and the removed c go; a and the new b stay
    import shutil
    shutil.rmtree(runs.run_path(ws, rid))
    assert datasets.collect_garbage(ws, min_age_s=3600) == []  # too young: an upload may be under way
    gone = datasets.collect_garbage(ws, min_age_s=0)
    assert sorted(gone) == sorted(f"{datasets.FILES}/{sha[m]}" for m in ("b", "c"))
    assert not stored(sha["b"]) and not stored(sha["c"]) and stored(sha["a"]) and stored(sha_d)
    data, _, _ = datasets.load(datasets.dataset_spec(ws, did))
    assert set(data.modalities) == {"a", "b"}
    # the removed file does not come back with the next upload
    added, errors = datasets.ingest(ws, did, [("e.csv", _csv(seed=6), "modality")])
    assert added == ["e.csv"], errors
    assert set(datasets.read_manifest(ws, did)["modalities"]) == {"a", "b", "e"}
    for dirpath, _, names in os.walk(ws):
        assert not [f for f in names if f.endswith(".tmp")], (dirpath, names)


def test_a_damaged_manifest_hides_no_other_dataset(ws):
    good = _dataset(ws, {"a.csv": _csv(seed=1)})
    bad = []
    for k, content in enumerate([b"\x00\xff", b"[1]", b'{"id": "x"', b'{"modalities": [1, 2]}']):
        did = _dataset(ws, {f"b{k}.csv": _csv(seed=10 + k)})
        Path(ws, datasets.DATASETS, did, "manifest.json").write_bytes(content)
        bad.append(did)
    # an entry pointing outside files/ is refused, not followed
    did = _dataset(ws, {"z.csv": _csv(seed=20)})
    p = Path(ws, datasets.DATASETS, did, "manifest.json")
    man = json.loads(p.read_text())
    man["modalities"]["z"]["path"] = "../../../etc/passwd"
    p.write_text(json.dumps(man))
    bad.append(did)
    before = tree_hashes(ws)
    assert [m["id"] for m in datasets.list_datasets(ws)] == [good]
    assert set(datasets.broken_datasets(ws)) == set(bad)
    for did in bad:
        with pytest.raises(ValueError, match=did):
            datasets.dataset_spec(ws, did)
    datasets.load(datasets.dataset_spec(ws, good))
    assert tree_hashes(ws) == before


def test_export_and_report_refuse_a_run_whose_pinned_data_changed(ws):
    from hcl_explore.runs import files as RF

    did = _dataset(ws, {"a.csv": _csv(n=120, seed=1), "b.csv": _csv(n=120, seed=2)})
    rid = runs.create_run(ws, {"kind": "fit", "dataset": datasets.dataset_spec(ws, did), "lattice": "full"})
    assert runs.run_worker(runs.run_path(ws, rid)) == 0, runs.read_log(ws, rid)
    d = runs.run_path(ws, rid)
    report.run_zip(d)
    report.run_html(d)
    spec = runs.read_json(RF.path(d, RF.CONFIG))["dataset"]
    path = next(p for p, m in spec["files"].items() if m["file"] == "b.csv")
    Path(path).write_bytes(_csv(n=120, seed=9))
    for export in (report.run_zip, report.run_html):
        with pytest.raises(ValueError, match=r"b\.csv: .*changed after it was uploaded"):
            export(d)
    os.remove(path)
    with pytest.raises(ValueError, match=r"b\.csv: .*missing"):
        report.run_zip(d)
