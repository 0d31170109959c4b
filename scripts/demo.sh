#!/usr/bin/env bash
# Set everything up from a fresh clone and run the main demo (no download).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
mnemonix demo "$@"
