"""The README's Python snippet runs unchanged and says what it claims."""

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_snippet_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## In Python\s+```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(block, "README.md", "exec"), ns)
    model, truth = ns["model"], ns["truth"]
    assert model.ranks_ == truth.ranks
    assert os.path.exists(tmp_path / "model.npz")


def test_readme_commands_match_ci():
    text = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/setup.sh --dev && .venv/bin/python -m pytest -q" in text
    assert "bash scripts/setup.sh --dev" in ci and ".venv/bin/python -m pytest -q" in ci


def test_readme_main_command_opens_the_app_without_prompts():
    text = (ROOT / "README.md").read_text()
    assert "scripts/setup.sh && .venv/bin/streamlit run app.py" in text
    cfg = (ROOT / ".streamlit" / "config.toml").read_text()
    assert "headless = true" in cfg  # no first-run e-mail prompt
    for shot in ("data", "lattice", "train", "structure", "prediction", "export"):
        assert f"docs/screenshots/{shot}.png" in text and (ROOT / "docs" / "screenshots" / f"{shot}.png").exists()


def test_readme_notebook_snippet_runs(tmp_path, monkeypatch, capsys):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## In a notebook.*?```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(block, "README.md", "exec"), ns)
    fig = ns["model"].plot_hierarchy()
    assert "diagnoses+labs" in str(fig.to_dict())
    assert "HCL fit" in capsys.readouterr().err
