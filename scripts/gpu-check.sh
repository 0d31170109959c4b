#!/usr/bin/env bash
# One command for an H100/H200 machine (no network there; torch, triton, pybind11,
# scikit-build-core, cmake, ninja, pytest and hypothesis preinstalled): install mnemonix,
# run the GPU tests and the GPU benchmark suite, and write the log and the JSON-lines
# history into OUT_DIR. Sized to finish in under 8 minutes.
#
#   bash scripts/gpu-check.sh OUT_DIR
#
# Triton's interpreter is not used here (Triton 3.6's interpreter fails with numpy >= 2.4);
# the CPU tests run it on the development machines and in CI.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash scripts/gpu-check.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
PY=${PYTHON:-python3}
{
  echo "== environment"
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total --format=csv || true
  "$PY" -c "import torch, triton, numpy; print('torch', torch.__version__, 'triton', triton.__version__, 'numpy', numpy.__version__, torch.cuda.get_device_name())"
  echo "== install (no build isolation, no dependencies)"
  start=$SECONDS
  "$PY" -m pip install -q --no-build-isolation --no-deps -e . || exit 3
  echo "installed in $((SECONDS - start)) s"
  echo "== pytest -m gpu"
  start=$SECONDS
  timeout 270 "$PY" -m pytest -m gpu -q -p no:cacheprovider -o addopts="" --junitxml="$out/gpu-tests.xml"
  echo "pytest exit $? in $((SECONDS - start)) s"
  echo "== mnemonix bench run --suite gpu"
  start=$SECONDS
  timeout 200 "$PY" -m mnemonix bench run --suite gpu --device cuda --history "$out/history.jsonl" --max-seconds 150
  echo "bench exit $? in $((SECONDS - start)) s"
} 2>&1 | tee "$out/gpu-check.log"
