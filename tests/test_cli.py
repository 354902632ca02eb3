import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import hcl_explore as hx
from hcl_explore.cli import main


def test_demo_prints_found_structure_and_recovery(capsys):
    assert main(["demo", "--n", "1500", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "Found structure:" in out and "labs+vitals+notes" in out
    assert "structure F1 1.00" in out


def test_fit_tables_save_and_summary(tmp_path, capsys):
    data, _ = hx.simulate(n=1200, dims=(8, 6), ranks={("a", "b"): 1, ("a",): 1, ("b",): 1}, noise=0.2, seed=2)
    for m in data.modalities:
        df = pd.DataFrame(data.X[m], columns=data.feature_names[m])
        df.insert(0, "pid", np.arange(1200))
        df.to_csv(tmp_path / f"{m}.csv", index=False)
    out = tmp_path / "m.npz"
    rc = main(["fit", "--modality", f"a={tmp_path / 'a.csv'}", "--modality", f"b={tmp_path / 'b.csv'}",
               "--id-column", "pid", "--out", str(out)])
    assert rc == 0 and out.exists()
    assert main(["summary", str(out)]) == 0
    text = capsys.readouterr().out
    assert "a+b" in text and "converged=True" in text


def test_module_entry_point_reports_errors_cleanly(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("pid,x\n" + "".join(f"{i},free text number {i}\n" for i in range(30)))
    r = subprocess.run([sys.executable, "-m", "hcl_explore", "fit", "--modality", f"a={bad}", "--id-column", "pid"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.startswith("error: bad.csv:") and "'x': free text" in r.stderr
    assert "Traceback" not in r.stderr


def test_fit_and_run_with_the_contrastive_estimator(tmp_path, capsys):
    data, _ = hx.simulate(n=800, dims=(8, 6), ranks={("a", "b"): 1, ("a",): 1, ("b",): 1}, noise=0.2, seed=2,
                          link="nonlinear")
    for m in data.modalities:
        df = pd.DataFrame(data.X[m], columns=data.feature_names[m])
        df.insert(0, "pid", np.arange(800))
        df.to_csv(tmp_path / f"{m}.csv", index=False)
    files = [f"a={tmp_path / 'a.csv'}", f"b={tmp_path / 'b.csv'}"]
    out = tmp_path / "c.npz"
    ck = tmp_path / "ck"
    rc = main(["fit", *files, "--id-column", "pid", "--estimator", "contrastive", "--epochs", "3", "--hidden", "16,8",
               "--loss", "paper", "--ranks", "1", "--device", "cpu", "--checkpoint-dir", str(ck), "--out", str(out)])
    assert rc == 0 and (ck / "checkpoint.pt").exists()
    model = hx.HCL.load(out)
    assert model.estimator == "contrastive" and model.loss == "paper" and model.n_epochs_ == 3
    assert model.module_.spec.hidden == (16, 8)
    # resume with more epochs continues from epoch 3
    rc = main(["fit", *files, "--id-column", "pid", "--estimator", "contrastive", "--epochs", "5", "--hidden", "16,8",
               "--loss", "paper", "--ranks", "1", "--device", "cpu", "--checkpoint-dir", str(ck), "--resume",
               "--out", str(out)])
    assert rc == 0 and hx.HCL.load(out).n_epochs_ == 5
    capsys.readouterr()
    assert main(["fit", *files, "--id-column", "pid", "--resume"]) == 2  # --resume alone is refused
    assert "--resume needs --checkpoint-dir" in capsys.readouterr().err
    ws = tmp_path / "ws"
    assert main(["run", *files, "--id-column", "pid", "--workspace", str(ws), "--estimator", "contrastive",
                 "--epochs", "2", "--hidden", "0", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "a+b" in text
    from hcl_explore import runs

    w = runs.workspace_dir(str(ws))
    rid = runs.list_runs(w).run_id[0]
    assert hx.HCL.load(f"{runs.run_path(w, rid)}/model.npz").encoder == "linear"


# ---------------------------------------------------------------------------------------------
# errors: one line on stderr, a nonzero exit, checked before the work; --debug shows the traceback


def _files(tmp_path, n=300):
    data, _ = hx.simulate(n=n, dims=(6, 5), ranks={("a", "b"): 1, ("a",): 1, ("b",): 1}, noise=0.2, seed=2)
    out = []
    for m in data.modalities:
        df = pd.DataFrame(data.X[m], columns=data.feature_names[m])
        df.insert(0, "pid", np.arange(n))
        df.to_csv(tmp_path / f"{m}.csv", index=False)
        out.append(f"{m}={tmp_path / f'{m}.csv'}")
    return out


def _one_error(capsys, start: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(start), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def no_fit(monkeypatch):
    """Any fit is a test failure: the error must come before the work."""
    def fail(*a, **k):
        raise AssertionError("the model was fitted before the output path was checked")

    monkeypatch.setattr(hx.HCL, "fit", fail)


def test_fit_out_into_a_missing_or_unusable_folder_fails_before_fitting(tmp_path, capsys, no_fit):
    files = _files(tmp_path)
    missing = tmp_path / "no" / "such" / "m.npz"
    assert main(["fit", *files, "--id-column", "pid", "--out", str(missing)]) == 2
    line = _one_error(capsys, f"error: --out {missing}: the folder ")
    assert "does not exist" in line
    (tmp_path / "afile").write_text("x")
    assert main(["fit", *files, "--id-column", "pid", "--out", str(tmp_path / "afile" / "m.npz")]) == 2
    assert "is not a folder" in _one_error(capsys, "error: --out ")
    assert main(["fit", *files, "--id-column", "pid", "--out", str(tmp_path)]) == 2
    assert "is a folder" in _one_error(capsys, "error: --out ")


def test_fit_out_into_an_unwritable_folder_fails_before_fitting(tmp_path, capsys, no_fit, monkeypatch):
    import tempfile

    files = _files(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: make the folder refuse new files instead
        real = tempfile.mkstemp

        def mkstemp(*a, dir=None, **k):
            if dir is not None and os.path.samefile(dir, ro):
                raise PermissionError(13, "Permission denied")
            return real(*a, dir=dir, **k)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    else:
        ro.chmod(0o500)
    try:
        assert main(["fit", *files, "--id-column", "pid", "--out", str(ro / "m.npz")]) == 2
    finally:
        ro.chmod(0o700)
    line = _one_error(capsys, f"error: --out {ro / 'm.npz'}: cannot write there")
    assert "Permission denied" in line


def test_predict_json_into_a_missing_folder_fails_before_loading(tmp_path, capsys):
    target = tmp_path / "gone" / "r.json"
    assert main(["predict", str(tmp_path / "model.npz"), "--json", str(target)]) == 2
    assert "does not exist" in _one_error(capsys, f"error: --json {target}: the folder ")


@pytest.mark.parametrize("damage", ["truncated", "empty", "flipped", "text", "missing"])
def test_a_damaged_model_file_is_one_line(tmp_path, capsys, damage):
    data, _ = hx.simulate(n=200, dims=(5, 4), ranks={("a", "b"): 1, ("a",): 1, ("b",): 1}, noise=0.2, seed=1)
    p = tmp_path / "m.npz"
    hx.HCL(random_state=0).fit(data).save(p)
    raw = p.read_bytes()
    if damage == "truncated":
        p.write_bytes(raw[: len(raw) // 2])
    elif damage == "empty":
        p.write_bytes(b"")
    elif damage == "flipped":
        import zipfile

        with zipfile.ZipFile(p) as zf:
            info = zf.getinfo("W.npy")
        b = bytearray(raw)
        b[info.header_offset + 30 + len(info.filename) + len(info.extra) + info.file_size - 5] ^= 0x08
        p.write_bytes(bytes(b))
    elif damage == "text":
        p.write_text("not a model\n")
    else:
        p.unlink()
    assert main(["summary", str(p)]) == 2
    _one_error(capsys, f"error: {p}: not a valid model file (")
    assert main(["predict", str(p), "--outcomes", str(tmp_path / "o.csv")]) == 2
    _one_error(capsys, f"error: {p}: not a valid model file (")


def test_a_damaged_checkpoint_on_resume_is_one_line(tmp_path, capsys):
    files = _files(tmp_path, n=200)
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "checkpoint.pt").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    args = ["fit", *files, "--id-column", "pid", "--estimator", "contrastive", "--epochs", "2", "--hidden", "8",
            "--ranks", "1", "--device", "cpu", "--checkpoint-dir", str(ck), "--resume"]
    assert main(args) == 2
    _one_error(capsys, f"error: {ck / 'checkpoint.pt'}: not a valid checkpoint (")
    (tmp_path / "f").write_text("x")
    assert main([*args[:-3], "--checkpoint-dir", str(tmp_path / "f" / "ck")]) == 2
    _one_error(capsys, "error: --checkpoint-dir ")


def test_a_pickled_checkpoint_on_resume_is_one_line_and_runs_nothing(tmp_path, capsys):
    """torch's warning about the pickle protocol is not printed before the error: stderr holds the
    one error line (warnings are shown after a command that succeeds)."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    files = _files(tmp_path, n=200)
    ck = tmp_path / "ck"
    ck.mkdir()
    with open(ck / "checkpoint.pt", "wb") as fh:
        pickle.dump({"signature": Evil()}, fh, protocol=4)
    args = ["fit", *files, "--id-column", "pid", "--estimator", "contrastive", "--epochs", "2", "--hidden", "8",
            "--ranks", "1", "--device", "cpu", "--checkpoint-dir", str(ck), "--resume"]
    assert main(args) == 2
    _one_error(capsys, f"error: {ck / 'checkpoint.pt'}: not a valid checkpoint (")
    assert not (tmp_path / "PWNED").exists()


def test_warnings_of_a_successful_command_are_shown_after_it(tmp_path, capsys):
    files = _files(tmp_path, n=200)
    out = pd.DataFrame({"pid": np.arange(200), "y": np.r_[np.inf, np.arange(199) % 2 * 1.5]})
    out.to_csv(tmp_path / "o.csv", index=False)
    assert main(["inspect", *files, "--id-column", "pid", "--outcomes", str(tmp_path / "o.csv")]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "infinite" in err, err


def test_a_bad_workspace_is_one_line(tmp_path, capsys):
    files = _files(tmp_path)
    (tmp_path / "wsfile").write_text("x")
    assert main(["run", *files, "--id-column", "pid", "--workspace", str(tmp_path / "wsfile")]) == 2
    _one_error(capsys, f"error: --workspace {tmp_path / 'wsfile'}: cannot be used as a workspace folder")


def test_a_failed_run_prints_one_line_and_keeps_the_traceback_in_its_log(tmp_path, capsys, monkeypatch):
    from hcl_explore import runs

    files = _files(tmp_path)

    def broken(self, *a, **k):
        raise RuntimeError("the solver broke\non two lines")

    monkeypatch.setattr(hx.HCL, "fit", broken)
    ws = tmp_path / "ws"
    assert main(["run", *files, "--id-column", "pid", "--workspace", str(ws)]) == 2
    line = _one_error(capsys, "error: run ")
    assert "failed: RuntimeError: the solver broke" in line and "log.txt" in line
    w = runs.workspace_dir(str(ws))
    rid = runs.list_runs(w).run_id[0]
    log = open(os.path.join(runs.run_path(w, rid), "log.txt"), encoding="utf-8").read()
    assert "Traceback" in log and "the solver broke" in log


def test_debug_shows_the_traceback_and_other_errors_are_one_line(tmp_path, capsys, monkeypatch):
    p = tmp_path / "m.npz"
    p.write_bytes(b"junk")
    for argv in (["--debug", "summary", str(p)], ["summary", str(p), "--debug"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" in err and err.strip().splitlines()[-1].startswith(f"error: {p}: not a valid model file")
    # an unexpected exception: its type and message on one line, exit 1
    from hcl_explore import cli

    def boom(args):
        raise RuntimeError("boom\nwith detail")

    monkeypatch.setattr(cli, "cmd_summary", boom)
    assert main(["summary", str(p)]) == 1
    assert _one_error(capsys, "error: RuntimeError: boom with detail") .endswith("(--debug shows the traceback)")
    assert main(["fit", "--ranks", "{bad json", str(p)]) == 2
    _one_error(capsys, "error: --ranks must be")


def test_module_entry_point_failed_run_has_no_traceback(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("")
    r = subprocess.run([sys.executable, "-m", "hcl_explore", "run", "--modality", f"a={bad}", "--modality", f"b={bad}",
                        "--workspace", str(tmp_path / "ws")], capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: run ") and "failed" in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_run_with_stability_writes_how_often_each_node_is_found(tmp_path, capsys):
    from hcl_explore import cli, runs

    data, _ = hx.simulate(n=600, dims=(8, 6, 5), ranks={("a", "b", "c"): 1, ("a",): 1}, noise=0.3, seed=0)
    paths = []
    for m in data.modalities:
        p = tmp_path / f"{m}.csv"
        pd.DataFrame(data.X[m], index=pd.Index(data.ids, name="id")).add_prefix(f"{m}_").to_csv(p)
        paths.append(f"{m}={p}")
    ws = tmp_path / "ws"
    assert cli.main(["run", *paths, "--workspace", str(ws), "--stability", "3"]) == 0
    rid = runs.list_runs(str(ws))["run_id"].iloc[0]
    st = runs.read_stability(str(ws), rid)
    assert st is not None and len(st) == 7 and st["found"].between(0, 1).all()
    assert int(st["resamples"].iloc[0]) == 3


def _score_inputs(tmp_path, n=500):
    """Two modality CSVs with a text column (one-hot) and a missing cell, a model fitted on them, and
    the same rows as one wide Parquet file in two row groups."""
    data, _ = hx.simulate(n=n, dims=(6, 5), ranks={("a", "b"): 2, ("a",): 1, ("b",): 1}, noise=0.3, seed=4)
    rng = np.random.default_rng(0)
    frames = {}
    for m in data.modalities:
        df = pd.DataFrame(data.X[m], columns=[f"{m}{k}" for k in range(data.dims[m])])
        df.insert(0, "pid", [f"p{i}" for i in range(n)])
        frames[m] = df
    frames["a"]["site"] = rng.choice(["north", "south", "east"], n)
    frames["a"].loc[3, "a1"] = np.nan  # imputed with the training mean
    for m, df in frames.items():
        df.to_csv(tmp_path / f"{m}.csv", index=False)
    model_path = tmp_path / "m.npz"
    assert main(["fit", f"a={tmp_path / 'a.csv'}", f"b={tmp_path / 'b.csv'}", "--out", str(model_path)]) == 0
    wide = frames["a"].merge(frames["b"], on="pid")
    wide.to_parquet(tmp_path / "wide.parquet", row_group_size=n // 2 + 7)
    return model_path, wide


def test_score_streams_a_wide_parquet_equal_to_transform_of_the_loaded_data(tmp_path, capsys):
    model_path, wide = _score_inputs(tmp_path)
    out = tmp_path / "scores.parquet"
    assert main(["score", str(model_path), str(tmp_path / "wide.parquet"), "--out", str(out), "--batch-size", "64"]) == 0
    assert "scored 500 rows" in capsys.readouterr().out
    got = pd.read_parquet(out)
    model = hx.HCL.load(model_path)
    # Reference: the tables loaded in memory with the model's preprocessing, then transform.
    data = hx.load_modalities({"a": str(tmp_path / "a.csv"), "b": str(tmp_path / "b.csv")},
                              preprocessing=model.preprocessing_)
    Z = model.transform(data)
    cols = [f"{hx.node_label(nd)}:{k + 1}" for nd in model.nodes_ for k in range(model.ranks_[nd])]
    assert list(got.columns) == ["pid"] + cols
    assert got["pid"].astype(str).tolist() == [str(i) for i in data.ids]
    np.testing.assert_allclose(got[cols].to_numpy(), np.hstack([Z[nd] for nd in model.nodes_]), rtol=1e-9, atol=1e-12)
    # Modality files go through the loader (in memory), scored chunk by chunk: the same scores.
    out2 = tmp_path / "scores2.parquet"
    assert main(["score", str(model_path), f"a={tmp_path / 'a.csv'}", f"b={tmp_path / 'b.csv'}", "--out", str(out2),
                 "--batch-size", "100"]) == 0
    got2 = pd.read_parquet(out2)
    assert list(got2.columns) == ["pid"] + cols
    np.testing.assert_allclose(got2[cols].to_numpy(), got[cols].to_numpy(), rtol=1e-9, atol=1e-12)


def test_score_a_parquet_dataset_folder_and_rows_missing_a_modality(tmp_path, capsys):
    model_path, wide = _score_inputs(tmp_path)
    folder = tmp_path / "ds"
    folder.mkdir()
    wide = wide.copy()
    wide.loc[10, [f"b{k}" for k in range(5)]] = np.nan  # lacks b: scored from a
    wide.loc[11, [c for c in wide.columns if c.startswith("a") or c == "site"]] = None  # lacks a
    wide.iloc[:200].to_parquet(folder / "part.0.parquet")
    wide.iloc[200:].to_parquet(folder / "part.1.parquet")
    out = tmp_path / "s.parquet"
    assert main(["score", str(model_path), str(folder), "--out", str(out), "--id-column", "pid"]) == 0
    got = pd.read_parquet(out)
    assert got["pid"].tolist() == wide["pid"].tolist()
    model = hx.HCL.load(model_path)
    rows = hx.load_modalities({"a": wide.iloc[[10, 11, 12]][["pid"] + [c for c in wide.columns if c.startswith("a") or c == "site"]],
                               "b": wide.iloc[[10, 11, 12]][["pid"] + [f"b{k}" for k in range(5)]]},
                              preprocessing=model.preprocessing_, min_samples=1)
    assert rows.observed.tolist() == [[True, False], [False, True], [True, True]]
    Z = model.transform(rows)
    np.testing.assert_allclose(got.iloc[[10, 11, 12], 1:].to_numpy(), np.hstack([Z[nd] for nd in model.nodes_]),
                               rtol=1e-9, atol=1e-12)


def test_score_errors_are_one_line(tmp_path, capsys):
    model_path, wide = _score_inputs(tmp_path, n=200)
    wide.drop(columns=["b2"]).to_parquet(tmp_path / "short.parquet")
    assert main(["score", str(model_path), str(tmp_path / "short.parquet"), "--out", str(tmp_path / "s.parquet")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "'b2'" in err and "\n" not in err
    assert not (tmp_path / "s.parquet").exists() and not (tmp_path / "s.parquet.partial").exists()
    assert main(["score", str(model_path), str(tmp_path / "wide.parquet"), "--out", str(tmp_path / "no" / "s.parquet")]) == 2
    assert "does not exist" in capsys.readouterr().err
