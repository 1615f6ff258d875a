"""The full-disk drill (issue 38): a search whose --storage disk fills up mid-search ends in one line that says
so, leaves no MLflow run RUNNING, and a resume after space is freed finishes it with no Optuna trial left
RUNNING. The disk is a real one: a 40 MB tmpfs mounted for the test (skipped, with the reason, where this
process may not mount one), filled by the test once the first trial has reported, while the search runs.
A replayed search (``--replay``) stands in for training: the writes that hit the full disk are the search's
own (Ray's experiment state, Optuna's study database), not the trainable's."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "tests" / "data" / "toy-table"


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip() or 'mount failed'})")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _fill(disk: Path) -> None:
    with open(disk / "fill", "wb") as f:
        block = b"\0" * (1 << 20)
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError:
            pass


@pytest.mark.slow
def test_a_disk_that_fills_mid_search_ends_in_one_line_and_the_resume_finishes(tmp_path, small_disk):
    import mlflow
    import optuna
    from e2e_helpers import search_env, tiny_roots

    tmp, sysu, regdb = tiny_roots(tmp_path)
    name, uri = "full", f"sqlite:///{tmp / 'mlflow.db'}"
    cmd = [
        sys.executable, str(REPO / "search" / "run.py"), "--space", "sysu", "--budget", "quick",
        "--data-root", str(sysu), "--regdb-root", str(regdb), "--replay", str(TOY), "--replay-time-scale", "0.05",
        "--num-samples", "4", "--max-concurrent", "2", "--reseeds", "0", "--seed", "4", "--name", name,
        "--storage", str(small_disk / "ray"), "--mlflow-uri", uri, "--verbose", "0",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=search_env(), cwd=tmp)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while proc.poll() is None and not any((small_disk / "ray").rglob("result.json")):
        assert time.monotonic() < deadline, "no trial reported within 300 s"
        time.sleep(0.2)
    assert proc.poll() is None, "the search ended before the disk could be filled:\n" + "".join(lines[-20:])
    _fill(small_disk)
    filled = time.monotonic()
    rc = proc.wait(timeout=300)
    reader.join(timeout=30)
    ended = time.monotonic() - filled
    out = [line.rstrip("\n") for line in lines if line.strip()]
    assert rc != 0, "\n".join(out[-20:])
    # one line that names the full disk, quickly, without thousands of lines of retries or tracebacks
    assert out[-1].startswith("error: the disk") and "full" in out[-1] and str(small_disk / "ray") in out[-1], out[-1]
    assert "Traceback" not in out[-1]
    assert ended < 120 and len(out) < 200, (ended, len(out))
    assert not [line for line in out if "Traceback" in line], "\n".join(out)  # Ray's are one line each now
    client = mlflow.tracking.MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs and not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.status for r in parent] == ["FAILED"]

    # space freed: the resume finishes the search, and no Optuna trial is left RUNNING
    (small_disk / "fill").unlink()
    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=search_env(), cwd=tmp, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{small_disk / 'ray' / name / 'optuna.db'}")
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    assert "RUNNING" not in states and states.count("COMPLETE") >= 1, states
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    assert [r.info.status for r in runs if "mlflow.parentRunId" not in r.data.tags] == ["FINISHED"]
