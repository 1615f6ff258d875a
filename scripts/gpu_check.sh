#!/usr/bin/env bash
# The day a GPU machine is lent: every CUDA path once (scripts/gpu_check.py; one line per stage, and
# $OUT/gpu_check.txt / .json when $OUT is set). Runs from the checkout as it is: nothing is installed when
# torch is there (a GPU node without a package index has torch and perhaps nothing else; the stages that
# need Ray, Optuna or MLflow then say SKIP). With WHEELHOUSE=<folder of wheels> (docs/operations.md,
# "Nodes without internet"), the project's runtime dependencies are installed from it first, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${WHEELHOUSE:-}" ]; then
    pip install -q --no-index --find-links "$WHEELHOUSE" --no-build-isolation -e .
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python scripts/gpu_check.py "$@"
