"""End-to-end: experiments/run.py and experiments/report.py with MLflow (SQLite in a temporary folder)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_helpers import TINY_EXPERIMENT_YAML, all_runs, tiny_sysu

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exp")
    root = tiny_sysu(tmp)
    (tmp / "tiny.yaml").write_text(TINY_EXPERIMENT_YAML)
    return tmp, root


def _run(tmp, *args, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, str(REPO / "experiments" / "run.py"), *args],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.mark.slow
def test_run_logs_everything_to_mlflow(setup):
    tmp, root = setup
    uri = f"sqlite:///{tmp / 'ok.db'}"
    out = _run(
        tmp,
        str(tmp / "tiny.yaml"),
        "--data-root",
        str(root),
        "--seeds",
        "0",
        "1",
        "--mlflow-uri",
        uri,
        "--quiet",
        "--set",
        f"data.cache_dir={tmp / 'cache'}",
        "--preset",
        "M4",
    )
    assert out.returncode == 0, out.stderr
    assert "All Search" in out.stdout and "Indoor Search" in out.stdout and "(n=2)" in out.stdout
    runs = all_runs(uri)
    assert set(runs.status) == {"FINISHED"} and len(runs) == 3  # parent + one child per seed
    parent = runs[runs["tags.aminet.role"] == "summary"].iloc[0]
    assert parent["params.loss.mmd_intra_weight"] == "0.4" and parent["params.model.arch"] == "resnet18"
    assert 0.0 <= parent["metrics.test/all/R1_mean"] <= 1.0 and "metrics.test/indoor/mINP_std" in runs.columns
    children = runs[runs["tags.aminet.role"] == "model"]
    assert sorted(children["tags.aminet.seed"]) == ["0", "1"]
    import mlflow

    client = mlflow.tracking.MlflowClient(uri)
    child = children.iloc[0]
    history = client.get_metric_history(child.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2]
    files = {f.path for f in client.list_artifacts(child.run_id)}
    assert {"config.yaml", "plots", "checkpoint", "results"} <= files
    plots = {f.path for f in client.list_artifacts(child.run_id, "plots")}
    assert plots == {"plots/cmc.png", "plots/tsne.png", "plots/distances.png"}
    assert {f.path for f in client.list_artifacts(child.run_id, "checkpoint")} >= {"checkpoint/model.pt"}
    assert {f.path for f in client.list_artifacts(parent.run_id, "results")} >= {"results/summary.txt"}

    rep = subprocess.run(
        [sys.executable, str(REPO / "experiments" / "report.py"), "--mlflow-uri", uri, "--out", str(tmp / "reports")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rep.returncode == 0, rep.stderr
    assert (tmp / "reports" / "results.csv").is_file() and "| tiny |" in (tmp / "reports" / "results.md").read_text()


@pytest.mark.slow
def test_nan_in_the_loss_fails_the_mlflow_run(setup):
    tmp, root = setup
    uri = f"sqlite:///{tmp / 'nan.db'}"
    out = _run(
        tmp,
        str(tmp / "tiny.yaml"),
        "--data-root",
        str(root),
        "--mlflow-uri",
        uri,
        "--quiet",
        "--run-dir",
        str(tmp / "nan-runs"),
        "--set",
        f"data.cache_dir={tmp / 'cache'}",
        "--drill",
        "nan-at-step=2",
    )
    assert out.returncode == 1
    assert "NonFiniteLossError: non-finite loss nan at epoch 1, step 3" in out.stderr
    assert "Traceback" not in out.stderr
    runs = all_runs(uri)
    assert len(runs) == 2 and set(runs.status) == {"FAILED"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["{tmp}/missing.yaml"], "config file not found"),
        (["{tmp}/tiny.yaml", "--set", "loss.mmd_intra_weight=-1"], "loss.mmd_intra_weight"),
        (["{tmp}/tiny.yaml", "--set", "model.nope=1"], "unknown key"),
        (["{tmp}/tiny.yaml", "--data-root", "{tmp}/nowhere"], "--data-root: folder not found"),
        (["{tmp}/tiny.yaml", "--data-root", "{tmp}"], "not found"),
        (["{tmp}/tiny.yaml", "--preset", "M7"], "unknown preset 'M7'"),
        (["{tmp}/tiny.yaml", "--set", "model.weights=/no/such/file.pth"], "model.weights: file not found"),
    ],
)
def test_bad_input_exits_cleanly_without_runs(setup, args, message, tmp_path):
    """Bad input: one line, exit 2, no MLflow store and nothing generated. The run gets an empty cache home
    of its own: the result must not depend on whether an earlier test (or an earlier session) already
    generated the default synthetic benchmark. (It once did: in a fresh environment the bad weights path
    was found only after the benchmark was generated, whose GENERATING line made a second stderr line.)"""
    tmp, root = setup
    uri = f"sqlite:///{tmp / 'bad.db'}"
    cache = tmp_path / "empty-cache-home"
    out = _run(
        tmp,
        *[a.format(tmp=tmp) for a in args],
        "--mlflow-uri",
        uri,
        "--quiet",
        timeout=300,
        env=dict(os.environ, AMINET_CACHE=str(cache)),
    )
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp / "bad.db").exists()
    assert not cache.exists() or not any(cache.rglob("*")), "bad input generated or cached data"
