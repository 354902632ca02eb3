#!/usr/bin/env bash
# Create .venv with what hcl-explore needs. `--dev` adds the test tools, the `dask` extra (its tests
# run on a distributed.LocalCluster) and the system Chromium (apt) for the browser tests.
# Torch: the CPU wheel (torch==2.13.0) is installed first where no torch is present, so that the
# requirement range never pulls a multi-GB CUDA build on a machine without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  "$VPY" -m pip install -q --disable-pip-version-check "torch==2.13.0"
fi
"$VPY" -m pip install -q --disable-pip-version-check -r requirements.txt
if [ "${1:-}" = "--dev" ]; then
  "$VPY" -m pip install -q --disable-pip-version-check -r requirements-dev.txt
  # The end-to-end tests drive the system Chromium (never `playwright install`, whose downloads fail).
  if ! command -v chromium >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
  fi
fi
"$VPY" -m pip install -q --disable-pip-version-check --no-deps -e .
if [ "${1:-}" = "--dev" ]; then
  # The optional Dask extra (torch is already there, so its requirement range pulls nothing).
  "$VPY" -m pip install -q --disable-pip-version-check -e ".[dask]"
fi
echo "setup done: $("$VPY" -c 'import torch, hcl_explore; print("hcl_explore", hcl_explore.__version__, "torch", torch.__version__)')"
