import os

import pytest
import torch

# Every app test has a fresh workspace: no background measurement of a worker's start-up in each
# (hcl_explore.runs.measure_worker_start; its own test clears this).
os.environ.setdefault("HCL_EXPLORE_NO_START_PROBE", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
