#!/usr/bin/env bash
# The day a GPU machine is lent: install the project as the README says, then run every CUDA path once
# (scripts/gpu_check.py; one line per stage, and $OUT/gpu_check.txt / .json when $OUT is set).
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q -e ".[dev]"
exec python scripts/gpu_check.py "$@"
