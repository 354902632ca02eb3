#!/usr/bin/env bash
# GPU check (< 5 minutes): on a machine with CUDA, the GPU-marked tests, the linear estimator on
# CUDA vs CPU, the contrastive training speed against a plain autoencoder on CUDA (both with
# bfloat16 autocast), and the held-out recovery probe with CUDA training.
#   bash benchmarks/gpu_check.sh          (after scripts/setup.sh --dev, or with PY=python of an env)
# Without CUDA it says so and exits 0 (GPU_CHECK_STRICT=1: exits 1), so that it can run anywhere.
# Every step has its own timeout; the budgets add up to 280 s.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$SECONDS
if ! "$PY" - <<'PYEOF'
import sys
import torch
if not torch.cuda.is_available():
    print("gpu_check: skipped - no CUDA device visible to torch " + torch.__version__)
    sys.exit(3)
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| bf16", torch.cuda.is_bf16_supported())
PYEOF
then
    [ "${GPU_CHECK_STRICT:-0}" = "1" ] && exit 1
    exit 0
fi
echo "== GPU tests"
timeout 60 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests
echo "== linear estimator: the same fit on CUDA and on CPU (one process)"
timeout 60 "$PY" - <<'PYEOF'
import time, numpy as np, hcl_explore as hx
data, truth = hx.simulate(n=200_000, dims=(300, 300, 300), ranks={("a", "b", "c"): 2, ("a", "b"): 3, ("c",): 2}, noise=0.5, seed=0)
t = {}
for dev in ("cuda", "cpu", "cuda"):
    s = time.perf_counter(); m = hx.HCL(device=dev).fit(data); t[dev] = time.perf_counter() - s
    print(f"{dev}: {t[dev]:.2f} s, found {sorted((hx.node_label(k), v) for k, v in m.ranks_.items() if v)}")
print(f"cpu / cuda = {t['cpu'] / t['cuda']:.2f}")
PYEOF
echo "== contrastive training on CUDA, bf16 autocast (n = 100,000, 3 x 200 features) vs a plain autoencoder"
timeout 70 "$PY" benchmarks/bench_contrastive.py --device cuda --epochs 1 --batch-size 1024 --rounds 2
echo "== recovery on nonlinear data with CUDA training (bf16 autocast): contrastive vs linear, one seed"
timeout 90 "$PY" benchmarks/probe_contrastive.py --seeds 11 --device cuda
echo "== gpu_check done in $((SECONDS - start)) s"
