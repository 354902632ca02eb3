import subprocess
import sys

import numpy as np
import pandas as pd

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
