#!/usr/bin/env bash
# Set up a virtual environment in .venv with everything mnemonix needs
# (CPU torch, the C++ extension built in place, test and demo extras).
# Safe to run again: it only installs what is missing and rebuilds the extension.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# Pin the CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
python -m pip install -q "torch==2.13.0"
python -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" ninja
python -m pip install -q --no-build-isolation -e ".[test,bench,demo]"
# memoria-pytorch is the parity oracle of the Memoria tests; its own pins are
# older than ours, so install it without dependencies (it needs only torch).
python -m pip install -q --no-deps "memoria-pytorch==1.1.0"
