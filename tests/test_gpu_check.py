"""The GPU day's script (scripts/gpu_check.py) in its dry mode: every stage on the CPU at toy size, so the
script cannot rot before a GPU machine is lent."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_check_runs_every_stage_dry_on_the_cpu(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--dry", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads((tmp_path / "gpu_check.json").read_text())
    stages = set(figures)
    assert {f"train bf16 {p}" for p in ("M0", "M1", "M2", "M3", "M4")} <= stages
    assert {"compile", "phase congruency", "test protocols", "search 2 trials", "experiments/run.py"} <= stages
    assert {"pytest test_gpu.py", "bench train", "train fp16 + scaler"} <= stages
    assert all(f["status"] in ("ok", "skip", "warn") for f in figures.values()), figures
    assert figures["train fp16 + scaler"]["status"] == "skip"  # a GPU path, said so on the CPU
    lines = (tmp_path / "gpu_check.txt").read_text().splitlines()
    assert len(lines) == len(figures) and all(line.split()[0] for line in lines)
