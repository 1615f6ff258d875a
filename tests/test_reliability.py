"""Faults injected for real into searches: a trial SIGKILLed mid-epoch, a trial whose loss turns NaN, the
driver SIGKILLed, a Ray worker node lost; and the project's safe defaults, checked in the source."""

import ast
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from e2e_helpers import search_args, search_env, search_runs, search_study, tiny_roots

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    return tiny_roots(tmp_path_factory.mktemp("faults"))


def _args(tmp, sysu, regdb, name, *extra):
    """A drill's search: no re-seeds, no test protocols, no registration (the end-to-end tests in
    test_search.py cover those); what is drilled is the search itself surviving the fault."""
    return search_args(tmp, sysu, regdb, name, "--no-register", "--reseeds", "0", "--no-final-eval", *extra)


def _results(tmp, name):
    out = {}
    for folder in (tmp / "ray" / name).glob("train_aminet_*"):
        f = folder / "result.json"
        out[folder.name.split("_")[2]] = [json.loads(line) for line in open(f)] if f.is_file() else []
    return out


def _wait_for(predicate, timeout, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            if predicate():
                return True
        except Exception:  # noqa: BLE001 - files and databases appear while we poll
            pass
        time.sleep(1)
    return False


@pytest.mark.slow
def test_killed_trial_resumes_and_a_nan_trial_fails_visibly(roots):
    """One trial SIGKILLs itself mid-epoch (retried from its checkpoint); the trial with mmd_intra=0.2 (a
    warm-start point) has a NaN loss: deterministic, so it is not retried, Optuna is told PRUNED at the worst
    score (TPE learns from it; a FAIL it would ignore), its MLflow run ends FAILED with the reason; the search
    goes on and finishes."""
    tmp, sysu, regdb = roots
    name = "faults"
    marker = tmp / "killed.marker"
    out = subprocess.run(
        _args(
            tmp,
            sysu,
            regdb,
            name,
            "--num-samples",
            "3",
            "--max-failures",
            "1",
            "--drill",
            f"kill-once={marker}:2:1",
            "--drill",
            "nan-if=loss.mmd_intra_weight=0.2:1",
        ),  # fmt: skip
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp,
        env=search_env(),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert marker.is_file(), "the SIGKILL was injected"
    assert "1 trial(s) DIVERGED" in out.stderr and "non-finite loss" in out.stderr

    _, parents, trials = search_runs(tmp, name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.metrics["trials/errored"] == 0 and parents[0].data.metrics["trials/diverged"] == 1
    assert len(trials) == 3 and len({r.data.tags["ray.trial_id"] for r in trials}) == 3
    assert "RUNNING" not in {r.info.status for r in trials}
    failed = [r for r in trials if r.info.status == "FAILED"]
    assert len(failed) == 1 and "non-finite loss" in failed[0].data.tags["aminet.error"]
    assert (
        failed[0].data.params["loss.mmd_intra_weight"] == "0.2" and failed[0].data.tags["aminet.outcome"] == "diverged"
    )
    assert "val/score" not in failed[0].data.metrics  # the stand-in worst score is Optuna's, not a model's
    nan_rows = _results(tmp, name)[failed[0].data.tags["ray.trial_id"]]
    assert len(nan_rows) == 1 and nan_rows[0]["diverged"] == 1.0  # one attempt: not retried

    # The killed trial: retried once, from its epoch-1 checkpoint, and its epochs are all there once.
    results = _results(tmp, name)
    resumed = {tid: rows for tid, rows in results.items() if any(r.get("resumed_from", 0) >= 1 for r in rows)}
    assert len(resumed) == 1
    rows = next(iter(resumed.values()))
    epochs = [r["epoch"] for r in rows]
    assert epochs == sorted(set(epochs)) and epochs[0] == 1
    study = search_study(tmp, name)
    assert len(study.trials) == 3 and sum(t.state.name == "FAIL" for t in study.trials) == 0
    nan_trial = [t for t in study.trials if t.params["loss.mmd_intra_weight"] == 0.2]
    assert len(nan_trial) == 1 and nan_trial[0].state.name == "PRUNED" and nan_trial[0].value == 0.0


@pytest.mark.slow
def test_driver_killed_then_resume_finishes_without_duplicates(roots):
    tmp, sysu, regdb = roots
    name = "driverkill"
    args = _args(tmp, sysu, regdb, name, "--num-samples", "3", "--max-concurrent", "1")
    err = tmp / f"{name}.stderr"
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=open(err, "w"), env=search_env(), cwd=tmp, start_new_session=True
    )

    def one_done():
        # the state file is written once the driver's MLflow store exists: reading the store earlier would race
        # the driver's creation of its tables
        if not (tmp / "ray" / name / "aminet_search.json").is_file():
            return False
        return any("aminet.outcome" in r.data.tags for r in search_runs(tmp, name)[2])

    assert _wait_for(one_done, 400, proc), f"no trial finished in time; the driver said: {err.read_text()[-2000:]}"
    time.sleep(6)  # the next trial is under way, and Ray has snapshotted the first one's end (every 2 s)
    os.kill(proc.pid, signal.SIGKILL)  # the driver, with no chance to clean up ...
    proc.wait(timeout=60)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # ... and the local Ray processes it had started
    except ProcessLookupError:
        pass
    time.sleep(2)
    _, parents, trials = search_runs(tmp, name)
    assert parents[0].info.status == "RUNNING"  # what a hard kill leaves behind
    done_before = {r.data.tags["ray.trial_id"] for r in trials if "aminet.outcome" in r.data.tags}
    lines_before = {tid: len(rows) for tid, rows in _results(tmp, name).items() if tid in done_before}

    out = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=900, env=search_env(), cwd=tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    _, parents, trials = search_runs(tmp, name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(trials) == 3 and len({r.data.tags["ray.trial_id"] for r in trials}) == 3
    assert {r.info.status for r in trials} == {"FINISHED"}
    after = _results(tmp, name)
    assert all(len(after[tid]) == n for tid, n in lines_before.items())  # finished trials were not re-run
    study = search_study(tmp, name)
    told = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(told) == 3 and not [t for t in study.trials if t.state.name == "RUNNING"]


def _alive_nodes(address: str, env: dict) -> dict[str, bool]:
    """{node id: whether it is the head} of the cluster's alive nodes ({} while it cannot be reached)."""
    code = (
        f"import json, ray; ray.init(address={address!r}, logging_level='ERROR'); print(json.dumps("
        "{n['NodeID']: 'node:__internal_head__' in n['Resources'] for n in ray.nodes() if n['Alive']}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {}


def _kill_raylet(node_id: str) -> bool:
    """SIGKILL the raylet of one Ray node on this machine (found by its --node_id argument in /proc)."""
    killed = False
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"raylet") and f"--node_id={node_id}".encode() in args:
            os.kill(int(proc.name), signal.SIGKILL)
            killed = True
    return killed


@pytest.mark.slow
def test_multi_node_drill_with_ray_start_processes(roots, tmp_path):
    """The README's multi-node steps for real: a head and a worker started as separate ``ray start``
    processes on this machine (two nodes, two node ids), the search joined with ``--address``; trials run on
    both nodes; the worker node is stopped mid-trial and the search still finishes, the interrupted trial
    retried from its checkpoint on the head, every MLflow run FINISHED. (It is also the test that trials are
    placed on a node other than the driver's, through Ray's own cluster.)"""
    tmp, sysu, regdb = roots
    name = "nodeloss"
    # Its own Ray temp folder (no other Ray instance on this machine is seen or joined), token auth as a
    # real cluster would use (the token file in ~/.ray is shared by the processes, as it is copied to nodes).
    # (A short folder under /tmp: Ray's socket paths inside it must stay under 108 bytes.)
    ray_tmp = tempfile.mkdtemp(prefix="aminet-ray-", dir="/tmp")
    # The GCS checks each raylet every second and calls a node dead after 3 failed checks (Ray's defaults:
    # every 3 s, 5 failures), so the lost node is noticed in ~3 s instead of ~15 s; a live raylet still has
    # Ray's 10 s per check to answer on a loaded machine.
    env = search_env(
        RAY_TMPDIR=ray_tmp,
        RAY_AUTH_MODE="token",
        RAY_health_check_period_ms="1000",
        RAY_health_check_failure_threshold="3",
    )
    ray_cli = str(Path(sys.executable).parent / "ray")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus", "1", "--disable-usage-stats", "--block"]
    logs = open(tmp_path / "ray_nodes.log", "w")
    head = subprocess.Popen(
        [ray_cli, "start", "--head", "--port", str(port), "--include-dashboard", "false", *common],
        env=env,
        stdout=logs,
        stderr=subprocess.STDOUT,
    )
    worker = None
    try:
        nodes: dict[str, bool] = {}

        def alive(count: int) -> bool:
            nodes.update(_alive_nodes(address, env))
            return len(nodes) == count

        assert _wait_for(lambda: alive(1), 180, head), "the head did not start"
        worker = subprocess.Popen(
            [ray_cli, "start", "--address", address, *common], env=env, stdout=logs, stderr=subprocess.STDOUT
        )
        assert _wait_for(lambda: alive(2), 180, worker), "the worker did not join"
        head_id = next(n for n, is_head in nodes.items() if is_head)
        worker_id = next(n for n, is_head in nodes.items() if not is_head)
        # Longer epochs and no early stopping (grace = all 4 epochs), so the node dies mid-trial.
        args = _args(
            tmp,
            sysu,
            regdb,
            name,
            "--num-samples",
            "2",
            "--max-concurrent",
            "2",
            "--address",
            address,
            "--max-failures",
            "2",
            "--grace-period",
            "4",
            "--set",
            "data.iters_per_epoch=20",  # epochs of a few seconds even on an idle machine: the kill lands mid-trial
        )
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp)

        def on_worker():
            return any(
                rows and rows[-1].get("node_id") == worker_id and 1 <= rows[-1]["epoch"] <= 2
                for rows in _results(tmp, name).values()
            )

        if not _wait_for(on_worker, 600, proc):
            ended = proc.poll() is not None
            said = proc.communicate(timeout=60)[1][-3000:] if ended else "(the search still runs)"
            pytest.fail(f"no trial reported from the worker node; the search: {said}")
        # The node is lost mid-trial: its raylet is SIGKILLed (its workers die with it). A SIGTERM to `ray start`
        # would drain the node first and let the trial finish there.
        assert _kill_raylet(worker_id), "the worker node's raylet was not found"
        worker.terminate()
        worker.wait(timeout=120)
        stdout, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, stderr[-3000:]
        results = _results(tmp, name)
        assert {r.get("node_id") for rows in results.values() for r in rows} == {head_id, worker_id}
        moved = [rows for rows in results.values() if {r.get("node_id") for r in rows} == {worker_id, head_id}]
        assert len(moved) == 1, "the interrupted trial finished on the head node"
        assert moved[0][-1]["resumed_from"] >= 1 and moved[0][-1]["epoch"] == 4  # from its checkpoint, to the end
        _, parents, trials = search_runs(tmp, name)
        assert parents[0].info.status == "FINISHED" and len(trials) == 2
        assert {r.info.status for r in trials} == {"FINISHED"}
    finally:
        for p in (worker, head):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(timeout=120)
        logs.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_trial_folder_whose_process_died_is_removed_by_the_next_trial(tmp_path, monkeypatch):
    """A trial process that Ray ends (an early-stopped trial) or that is SIGKILLed cannot remove its local
    checkpoint folder; the next trial on the machine removes every folder of a process that no longer runs,
    and nothing else."""
    from trainables.aminet_trainable import TRIAL_FOLDER_PREFIX, trial_folder

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    orphan = tmp_path / f"{TRIAL_FOLDER_PREFIX}{ended.pid}-a1"
    (orphan / "checkpoints" / "epoch-0002").mkdir(parents=True)
    running = tmp_path / f"{TRIAL_FOLDER_PREFIX}{os.getppid()}-b2"  # e.g. a trial still training
    running.mkdir()
    unnamed = tmp_path / f"{TRIAL_FOLDER_PREFIX}c3"  # not a trial folder of this code: left alone
    unnamed.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    mine = trial_folder()
    assert not orphan.exists() and running.is_dir() and unnamed.is_dir()
    assert mine.is_dir() and mine.parent == tmp_path and mine.name.startswith(f"{TRIAL_FOLDER_PREFIX}{os.getpid()}-")


# ------------------------------------------------------------------------------------------------
# Safe defaults, checked in the source
# ------------------------------------------------------------------------------------------------

SOURCES = [p for d in ("aminet", "trainables", "search", "experiments") for p in (REPO / d).rglob("*.py")]


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _name(func) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return ""  # a method of a computed object (model.to(d).eval()): not a module function
    parts.append(func.id)
    return ".".join(reversed(parts))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_unsafe_loading_or_shell(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for call in _calls(tree):
        name = _name(call.func)
        kw = {k.arg: k.value for k in call.keywords}
        where = f"{path.relative_to(REPO)}:{call.lineno}"
        assert name not in (
            "yaml.load",
            "yaml.unsafe_load",
            "pickle.load",
            "pickle.loads",
            "os.system",
            "eval",
            "exec",
        ), f"{where}: {name}"
        if name == "torch.load":
            assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, where
        if "shell" in kw:
            assert isinstance(kw["shell"], ast.Constant) and kw["shell"].value is False, f"{where}: shell=True"
        if name == "ray.init":
            dash = kw.get("include_dashboard")
            assert dash is not None, f"{where}: ray.init must say whether the dashboard runs"
            if not (isinstance(dash, ast.Constant) and dash.value is False):
                host = kw.get("dashboard_host")
                assert isinstance(host, ast.Constant) and host.value == "127.0.0.1", f"{where}: dashboard host"


def test_mlflow_ui_instructions_bind_to_localhost():
    text = (REPO / "README.md").read_text() + (REPO / "docs" / "operations.md").read_text()
    for line in re.findall(r"mlflow (?:ui|server)[^\n]*", text):
        if "0.0.0.0" in line:  # exposing is only shown together with its guards
            assert "--allowed-hosts" in line or "basic-auth" in line, line
    assert "127.0.0.1" in text and "ssh -L" in text
