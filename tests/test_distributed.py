"""Data-parallel contrastive training under torchrun: 2 CPU processes (gloo) follow the same loss
trajectory as one process with the same global batch."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = '''
import json, os, sys
import torch
torch.set_num_threads(1)
import hcl_explore as hx
ranks = {("a", "b", "c"): 1, ("a", "b"): 1, ("a",): 1, ("b",): 1, ("c",): 1}
data, truth = hx.simulate(n=600, dims={"a": 10, "b": 8, "c": 6}, ranks=ranks, noise=0.3, seed=0, link="nonlinear")
full = {n: 0 for n in hx.Lattice.full(["a", "b", "c"]).nodes}
full.update(ranks)
m = hx.HCL(estimator="contrastive", ranks=full, device="cpu", random_state=0, max_epochs=4, batch_size=64,
           lr=3e-3, val_fraction=0.1, patience=100, amp=False)
m.fit(data)
if int(os.environ.get("RANK", "0")) == 0:
    with open(sys.argv[1], "w") as fh:
        json.dump({"history": m.objective_history_, "world": int(os.environ.get("WORLD_SIZE", "1"))}, fh)
'''


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_process(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    r1 = subprocess.run([sys.executable, str(script), str(one)], env=env, capture_output=True, text=True, timeout=300)
    assert r1.returncode == 0, r1.stderr[-3000:]
    r2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--nnodes=1",
                         f"--master-port={_port()}", str(script), str(two)],
                        env=env, capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stderr[-3000:]
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert a["world"] == 1 and b["world"] == 2
    assert len(a["history"]) == len(b["history"]) == 4
    np.testing.assert_allclose(b["history"], a["history"], rtol=1e-4)
    print("1 process:", a["history"], "2 processes:", b["history"])
    assert a["history"][-1] < a["history"][0]
