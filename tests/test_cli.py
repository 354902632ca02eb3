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
