import os

import pytest
import torch

# Every app test has a fresh workspace: no background measurement of a worker's start-up in each
# (hcl_explore.runs.measure_worker_start; its own test clears this).
os.environ.setdefault("HCL_EXPLORE_NO_START_PROBE", "1")


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """A fresh workspace that the app (``HCL_EXPLORE_WORKSPACE``) uses too."""
    from hcl_explore import runs

    w = tmp_path / "ws"
    monkeypatch.setenv("HCL_EXPLORE_WORKSPACE", str(w))
    return runs.workspace_dir(str(w))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
