#!/usr/bin/env bash
# GPU check: on a machine with CUDA, run the GPU-marked tests and the GPU benchmarks (< 5 minutes).
#   bash benchmarks/gpu_check.sh          (after scripts/setup.sh --dev, or with PY=python of an env)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - <<'PYEOF'
import torch, sys
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device visible to torch " + torch.__version__)
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)
PYEOF
echo "== GPU tests"
timeout 150 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests
echo "== linear estimator: the same fit on CUDA and on CPU (one process)"
timeout 90 "$PY" - <<'PYEOF'
import time, numpy as np, hcl_explore as hx
data, truth = hx.simulate(n=200_000, dims=(300, 300, 300), ranks={("a", "b", "c"): 2, ("a", "b"): 3, ("c",): 2}, noise=0.5, seed=0)
t = {}
for dev in ("cuda", "cpu", "cuda"):
    s = time.perf_counter(); m = hx.HCL(device=dev).fit(data); t[dev] = time.perf_counter() - s
    print(f"{dev}: {t[dev]:.2f} s, found {sorted((hx.node_label(k), v) for k, v in m.ranks_.items() if v)}")
print(f"cpu / cuda = {t['cpu'] / t['cuda']:.2f}")
PYEOF
echo "== contrastive training on CUDA (n = 100,000, 3 x 200 features, 1 epoch) vs a plain autoencoder"
timeout 90 "$PY" benchmarks/bench_contrastive.py --device cuda --epochs 1 --batch-size 1024
echo "== recovery on nonlinear data with CUDA training (bfloat16 autocast): contrastive vs linear, one seed"
timeout 90 "$PY" benchmarks/probe_contrastive.py --seeds 11 --device cuda
