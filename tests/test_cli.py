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
