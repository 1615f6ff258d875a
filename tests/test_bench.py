import subprocess
import sys


def test_eval_bench_runs_tiny_and_prints_every_figure():
    out = subprocess.run([sys.executable, "-m", "aminet.bench", "eval", "--tiny", "--repeats", "1"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for figure in ("SYSU 10-trial ranking", "SYSU 10-trial distances + ranking", "RegDB one direction"):
        assert figure in out.stdout
    assert out.stdout.count(" s\n") == 3


def test_bench_rejects_bad_arguments():
    out = subprocess.run([sys.executable, "-m", "aminet.bench", "eval", "--repeats", "0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "--repeats must be >= 1" in out.stderr


def test_data_bench_runs_tiny():
    out = subprocess.run([sys.executable, "-m", "aminet.bench", "data", "--tiny", "--repeats", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "sampling+gather+augment" in out.stdout and "batches/s" in out.stdout
