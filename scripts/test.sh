#!/usr/bin/env bash
# Set everything up from a fresh clone and run the tests (CPU; Triton kernels
# run under TRITON_INTERPRET=1 on small shapes; GPU tests skip without CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check python kernels tests bench
python -m pytest -n 2 -q "$@"
