#!/usr/bin/env bash
# A wheelhouse for GPU nodes without a package index, built on a machine with one (docs/operations.md,
# "Nodes without internet"):
#
#   bash scripts/wheelhouse.sh wheelhouse/                 # aminet + its dependencies, for Python 3.12 x86-64 Linux
#   PYVER=3.11 WITH_TORCH=1 bash scripts/wheelhouse.sh wh/ # another Python; torch too (default: the node's own)
#   # copy wheelhouse/ to the node, then there:
#   pip install --no-index --find-links wheelhouse/ aminet          # or WHEELHOUSE=wheelhouse/ bash scripts/gpu_check.sh
#
# torch and torchvision are left out by default: a GPU node has a CUDA build matched to its driver, which
# a wheel built elsewhere would replace.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-wheelhouse}
pyver=${PYVER:-3.12}
mkdir -p "$out"
pip wheel --no-deps -w "$out" .   # aminet itself (pure Python)
mapfile -t reqs < <(python - <<'PY'
import os, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
skip = set() if os.environ.get("WITH_TORCH") == "1" else {"torch", "torchvision"}
for d in deps:
    name = d.split(";")[0].split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip()
    if name not in skip:
        print(d.split(";")[0].strip())
PY
)
pip download -d "$out" --only-binary=:all: --python-version "$pyver" --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 "${reqs[@]}"
echo "wheelhouse: $(ls "$out" | wc -l) files in $out"
