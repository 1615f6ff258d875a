import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


def test_eval_bench_runs_tiny_and_prints_every_figure():
    out = subprocess.run(
        [sys.executable, str(BENCH), "eval", "--tiny", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    for figure in ("SYSU 10-trial ranking", "SYSU 10-trial distances + ranking", "RegDB one direction"):
        assert figure in out.stdout
    assert out.stdout.count(" s\n") == 3


def test_bench_rejects_bad_arguments():
    out = subprocess.run(
        [sys.executable, str(BENCH), "eval", "--repeats", "0"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0 and "--repeats must be >= 1" in out.stderr


def test_data_bench_runs_tiny():
    out = subprocess.run(
        [sys.executable, str(BENCH), "data", "--tiny", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "sampling+gather+augment" in out.stdout and "batches/s" in out.stdout
    lines = out.stdout.splitlines()
    host = [l for l in lines if l.startswith("host side of a device-augmented batch")]
    base = [l for l in lines if l.startswith("baseline per-sample CPU augmentation")]
    assert len(host) == 1 and len(base) >= 1 and "main process" in base[0]
    assert all(float(l.split()[-2]) > 0 for l in host + base)


def test_model_bench_runs_tiny():
    out = subprocess.run(
        [sys.executable, str(BENCH), "model", "--tiny", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    for preset in ("M0 ", "M1 ", "M2 ", "M3 ", "M4 ", "M4+pesam_off"):
        assert preset in out.stdout
    assert "PESAM share" in out.stdout and "AMK-MMD" in out.stdout


def test_model_summary_cli():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "aminet.model",
            "--set",
            "model.arch=resnet18",
            "--set",
            "data.height=64",
            "--set",
            "data.width=32",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    rows = [l for l in out.stdout.splitlines() if l.startswith("M")]
    assert [r.split()[0] for r in rows] == ["M0", "M1", "M2", "M3", "M4"]
    assert "GFLOPs" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "aminet.model", "--set", "model.upper_body_ratio=2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0 and "model.upper_body_ratio" in bad.stderr and "Traceback" not in bad.stderr


def _bench(*args, timeout=600):
    out = subprocess.run(
        [sys.executable, str(BENCH), *args, "--tiny", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _value(line):
    return float(line.split()[-2])


def test_extract_and_phase_bench_run_tiny():
    out = _bench("extract")
    assert "feature extraction" in out and "SYSU-MM01 test set" in out and "RegDB one trial" in out
    out = _bench("phase")
    assert "phase congruency" in out and "ms/batch" in out and "AMK-MMD" in out and "ms/step" in out


def test_train_bench_compares_both_pipelines_on_both_presets():
    out = _bench("train")
    lines = out.splitlines()
    for preset in ("M0", "M4"):
        base = [l for l in lines if l.startswith(f"train {preset}") and "baseline" in l]
        fast = [l for l in lines if l.startswith(f"train {preset}") and "aminet (fp32)" in l]
        half = [l for l in lines if l.startswith(f"train {preset}") and "aminet (bf16, channels-last)" in l]
        assert len(base) == len(fast) == len(half) == 1
        assert all(_value(l) > 0 for l in base + fast + half)
    ratios = [l for l in lines if "speed-up over baseline" in l]
    assert len(ratios) == 4 and all(l.rstrip().endswith("x") for l in ratios)
    assert sum("train.precision=bf16" in l for l in ratios) == 2


@pytest.mark.slow
def test_search_bench_runs_tiny():
    out = _bench("search")
    for figure in ("ray.init", "overhead per trial", "memory per extra concurrent trial", "image cache mapped"):
        assert figure in out, figure
    per_trial = [l for l in out.splitlines() if "overhead per trial" in l][0]
    assert 0 < _value(per_trial) < 60
