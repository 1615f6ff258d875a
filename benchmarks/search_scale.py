#!/usr/bin/env python
"""The search at cluster scale: what the driver costs as a search grows.

    python benchmarks/search_scale.py proposals                      # Optuna proposal latency vs study size
    python benchmarks/search_scale.py proposals --sizes 0 100 1000 --samplers tpe gp --storage sqlite memory
    python benchmarks/search_scale.py driver --trials 1000 --concurrency 16 --gpus 256   # the real driver, replayed

**proposals**: the sampler the driver builds (``search.tuning.make_sampler``, the shipped space's
define-by-run function) on a study already holding N finished trials (a third COMPLETE, the rest PRUNED
with their rung value, as ASHA leaves them) and ``--running`` trials in progress (the constant liar sees
them): the seconds one ``ask`` + sampling takes, median of ``--repeats``, in an in-memory study and in the
SQLite study the driver uses.

**driver**: ``search/run.py --replay`` (the replay trainable answers every trial from the table, sleeping
``--time-scale`` x the recorded epoch times) joined to a local Ray head started with ``ray start`` that
declares ``--gpus`` GPUs (no GPU is used: the replay trainable needs none), each trial holding one GPU and
one CPU, ``--concurrency`` at once; MLflow in SQLite or behind a tracking server. Measured from outside
the driver (its own CPU time and resident memory, every second): trials finished per minute, the driver's CPU share and memory;
from the driver's own files: Ray's experiment-state snapshot times and MLflow write latency (a timing
wrapper around the MLflow client calls of the trial logger, ``AMINET_TIMING_LOG``).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from aminet.cli import ArgumentParser  # noqa: E402


def _filled_study(sampler_kind: str, n: int, running: int, storage, seed: int = 0):
    """A study of the shipped sysu space (full budget) holding ``n`` finished trials and ``running`` open ones."""
    import random

    import optuna
    from optuna.trial import TrialState, create_trial

    from search.spaces import get_space
    from search.tuning import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = get_space("sysu")
    base = space.base(quick=False)
    fn = space.define_by_run(base)
    budget = space.budget_for(False)
    rng = random.Random(seed)
    source = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trials = []
    for i in range(n):
        t = source.ask()
        fn(t)
        value = (
            0.3
            + 0.4 * t.params["loss.mmd_inter_weight"]
            - 0.2 * abs(t.params["loss.mmd_intra_weight"] - 0.4)
            + rng.gauss(0, 0.02)
        )
        complete = i % 3 == 0
        steps = {budget.grace_period: value * 0.8}
        if complete:
            steps.update({60: value * 0.95, budget.epochs: value})
        trials.append(
            create_trial(
                params=t.params,
                distributions=t.distributions,
                value=value if complete else None,
                intermediate_values=steps,
                state=TrialState.COMPLETE if complete else TrialState.PRUNED,
            )
        )
    study = optuna.create_study(
        storage=storage,
        direction="maximize",
        sampler=make_sampler(sampler_kind, seed, max(n, budget.num_samples)),
        study_name=f"scale-{sampler_kind}-{n}",
    )
    study.add_trials(trials)
    for _ in range(running):
        t = study.ask()
        fn(t)
    return study, fn


def proposal_latency(sampler_kind: str, n: int, running: int, repeats: int, storage_kind: str, tmp: Path) -> dict:
    import optuna

    storage = None
    if storage_kind == "sqlite":
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp / f'{sampler_kind}-{n}.db'}")
    t0 = time.perf_counter()
    study, fn = _filled_study(sampler_kind, n, running, storage)
    fill_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t1 = time.perf_counter()
        trial = study.ask()
        fn(trial)
        times.append(time.perf_counter() - t1)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)  # keep the study's size (as a stopped trial)
    return {
        "sampler": sampler_kind,
        "trials": n,
        "running": running,
        "storage": storage_kind,
        "median_s": statistics.median(times),
        "max_s": max(times),
        "fill_s": fill_s,
    }


def mlflow_latency(uri: str, runs: int, epochs: int, marks: list[int]) -> list[dict]:
    """What the driver's trial logger writes per trial (``search.tuning.TrialRunLogger``: a run with tags, ~80
    params in batches of 100, one metrics batch per epoch, end tags and status), timed per call as the store
    grows; one summary per stretch of runs ending at each of ``marks``."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.create_experiment(f"scale-{time.time_ns()}")
    parent = client.create_run(exp, run_name="parent").info.run_id
    params = [Param(f"section{i // 10}.field{i}", str(i * 0.1)) for i in range(80)]
    out, calls = [], {"create": [], "params": [], "metrics": [], "end": []}
    for i in range(1, runs + 1):
        t = time.perf_counter()
        rid = client.create_run(exp, run_name=f"trial {i}", tags={"mlflow.parentRunId": parent}).info.run_id
        calls["create"].append(time.perf_counter() - t)
        t = time.perf_counter()
        client.log_batch(rid, params=params)
        calls["params"].append(time.perf_counter() - t)
        for e in range(1, epochs + 1):
            now = int(time.time() * 1000)
            metrics = [Metric(f"train/m{j}", 0.1 * j, now, e) for j in range(10)] + [Metric("val/score", 0.5, now, e)]
            t = time.perf_counter()
            client.log_batch(rid, metrics=metrics)
            calls["metrics"].append(time.perf_counter() - t)
        t = time.perf_counter()
        client.set_tag(rid, "aminet.outcome", "completed")
        client.set_terminated(rid, "FINISHED")
        calls["end"].append(time.perf_counter() - t)
        if i in marks:
            out.append(
                {
                    "runs": i,
                    **{f"{k}_ms": 1000 * statistics.median(v) for k, v in calls.items()},
                    "per_trial_ms": 1000
                    * sum(statistics.fmean(v) * (epochs if k == "metrics" else 1) for k, v in calls.items()),
                }
            )
            calls = {k: [] for k in calls}
    return out


def _mlflow_server(backend: str, port: int, folder: Path):
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--default-artifact-root",
         str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    import urllib.request

    for _ in range(120):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the MLflow server did not start")


class Timers:
    """Wall-clock timings of chosen library methods in this process (a benchmark's instrument: each is wrapped
    for the run and restored after), with the number of finished trials when each call began."""

    def __init__(self) -> None:
        self.calls: dict[str, list[tuple[int, float]]] = {}
        self.finished = 0
        self.finish_times: list[float] = []
        self._undo: list = []

    def wrap(self, owner, name: str, label: str) -> None:
        import functools

        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                self.calls.setdefault(label, []).append((self.finished, time.perf_counter() - t))

        setattr(owner, name, timed)
        self._undo.append((owner, name, original))

    def restore(self) -> None:
        for owner, name, original in reversed(self._undo):
            setattr(owner, name, original)

    def summary(self, label: str, bins: list[int]) -> list[dict]:
        out = []
        calls = self.calls.get(label, [])
        for lo, hi in zip([0, *bins[:-1]], bins):
            xs = [s for n, s in calls if lo <= n < hi]
            if xs:
                xs.sort()
                out.append(
                    {
                        "finished": f"{lo}-{hi}",
                        "calls": len(xs),
                        "median_ms": 1000 * statistics.median(xs),
                        "p95_ms": 1000 * xs[int(0.95 * (len(xs) - 1))],
                        "total_s": sum(xs),
                    }
                )
        return out


def driver_at_scale(args) -> dict:
    """The real driver (``search.run.main``, in this process) on a local ``ray start`` head declaring ``--gpus``
    GPUs, trials answered by the table (see the module doc)."""
    import os
    import socket
    import subprocess
    import tempfile
    import threading

    ray_tmp = tempfile.mkdtemp(prefix="aminet-scale-", dir="/tmp")
    work = Path(tempfile.mkdtemp(prefix="aminet-scale-work-"))
    env = dict(os.environ, RAY_TMPDIR=ray_tmp, RAY_AUTH_MODE="token", RAY_DISABLE_DOCKER_CPU_WARNING="1")
    os.environ.update(RAY_TMPDIR=ray_tmp, RAY_AUTH_MODE="token")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ray_cli = str(Path(sys.executable).parent / "ray")
    head = subprocess.Popen(
        [ray_cli, "start", "--head", "--port", str(port), "--include-dashboard", "false", "--num-cpus",
         str(args.gpus), "--num-gpus", str(args.gpus), "--disable-usage-stats", "--block"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    server = None
    timers = Timers()
    try:
        time.sleep(8)
        uri = f"sqlite:///{work}/mlflow.db"
        if args.mlflow == "server":
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                mport = sock.getsockname()[1]
            server = _mlflow_server(uri, mport, work)
            uri = f"http://127.0.0.1:{mport}"
        from mlflow.tracking import MlflowClient
        from ray.tune.execution.tune_controller import TuneController
        from ray.tune.schedulers import AsyncHyperBandScheduler

        import search.run
        from search.tuning import PrunedAwareOptunaSearch

        timers.wrap(TuneController, "save_to_dir", "ray_snapshot")  # one experiment-state snapshot
        # one trial result handled end to end: scheduler, searcher, the MLflow logger and the console callbacks
        timers.wrap(TuneController, "_process_trial_result", "ray_result")
        timers.wrap(PrunedAwareOptunaSearch, "suggest", "optuna_suggest")
        timers.wrap(PrunedAwareOptunaSearch, "on_trial_result", "optuna_report")
        timers.wrap(AsyncHyperBandScheduler, "on_trial_result", "asha_decision")
        for m in ("create_run", "log_batch", "set_tag", "set_terminated"):
            timers.wrap(MlflowClient, m, f"mlflow_{m}")
        original_complete = PrunedAwareOptunaSearch.on_trial_complete

        def counting(self, *a, **k):
            out = original_complete(self, *a, **k)
            timers.finished += 1
            timers.finish_times.append(time.time())
            return out

        PrunedAwareOptunaSearch.on_trial_complete = counting

        def rss() -> int:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
            return 0

        samples: list[tuple[float, float, int, int]] = []  # (time, process cpu seconds, rss bytes, finished)
        stop = threading.Event()

        def monitor() -> None:
            while not stop.is_set():
                c = os.times()
                samples.append((time.time(), c.user + c.system, rss(), timers.finished))
                stop.wait(1.0)

        thread = threading.Thread(target=monitor, daemon=True)
        thread.start()
        argv = [
            "--space", "sysu", "--budget", "quick", "--replay", str(Path(args.table).resolve()),
            "--replay-time-scale", str(args.time_scale), "--num-samples", str(args.trials),
            "--max-concurrent", str(args.concurrency), "--gpus-per-trial", "1", "--cpus-per-trial", "1",
            "--address", f"127.0.0.1:{port}", "--storage", str(work / "ray"), "--mlflow-uri", uri,
            "--name", "scale", "--sampler", args.sampler, "--no-final-eval", "--reseeds", "0", "--verbose", "0",
        ]  # fmt: skip
        cwd = os.getcwd()
        os.chdir(work)
        t0 = time.time()
        try:
            rc = search.run.main(argv)
        finally:
            os.chdir(cwd)
            PrunedAwareOptunaSearch.on_trial_complete = original_complete
            stop.set()
            thread.join()
        wall = time.time() - t0
    finally:
        timers.restore()
        import ray

        ray.shutdown()
        if server is not None:
            server.terminate()
        subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True)
        head.terminate()
    bins = sorted({b for b in (100, 250, 500, 1000, 2000, args.trials + 1) if b <= args.trials + 1})
    fin = timers.finish_times
    per_minute = []
    for lo, hi in zip([0, *bins[:-1]], bins):
        window = fin[lo : min(hi, len(fin))]
        if len(window) >= 2:
            per_minute.append({"finished": f"{lo}-{hi}", "per_min": 60 * (len(window) - 1) / (window[-1] - window[0])})
    cpu = [(t, c) for t, c, _, _ in samples]
    return {
        "rc": rc,
        "trials": args.trials,
        "finished": timers.finished,
        "concurrency": args.concurrency,
        "time_scale": args.time_scale,
        "mlflow": args.mlflow,
        "sampler": args.sampler,
        "wall_s": wall,
        "driver_cpu_s": cpu[-1][1] - cpu[0][1] if len(cpu) > 1 else 0.0,
        "driver_cpu_share": (cpu[-1][1] - cpu[0][1]) / max(1e-9, cpu[-1][0] - cpu[0][0]) if len(cpu) > 1 else 0.0,
        "driver_rss_max_mb": max(r for _, _, r, _ in samples) / 2**20 if samples else 0.0,
        "finished_per_min": per_minute,
        "calls": {label: timers.summary(label, bins) for label in sorted(timers.calls)},
    }


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python benchmarks/search_scale.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    pp = sub.add_parser("proposals", help="Optuna proposal latency as the study grows")
    pp.add_argument("--sizes", nargs="+", type=int, default=[0, 100, 250, 500, 1000])
    pp.add_argument("--samplers", nargs="+", default=["tpe", "gp"], choices=["tpe", "gp", "cmaes", "random"])
    pp.add_argument("--storage", nargs="+", default=["memory", "sqlite"], choices=["memory", "sqlite"])
    pp.add_argument("--running", type=int, default=32, help="trials in progress (default 32)")
    pp.add_argument("--repeats", type=int, default=5)
    pp.add_argument("--json", action="store_true", help="one JSON object per line")
    pm = sub.add_parser("mlflow", help="MLflow write latency of the trial logger as the store grows")
    pm.add_argument("--runs", type=int, default=1000)
    pm.add_argument("--epochs", type=int, default=6, help="metric batches per run (default 6: the quick budget)")
    pm.add_argument("--stores", nargs="+", default=["sqlite", "server"], choices=["sqlite", "server"])
    pd = sub.add_parser("driver", help="the real driver on a local Ray head declaring many GPUs, trials replayed")
    pd.add_argument("--table", default=str(REPO / "benchmarks" / "tables" / "sysu-quick"))
    pd.add_argument("--trials", type=int, default=1000)
    pd.add_argument("--concurrency", type=int, default=16)
    pd.add_argument("--gpus", type=int, default=256, help="GPUs (and CPUs) the head declares (default 256)")
    pd.add_argument("--time-scale", type=float, default=0.05, help="replayed epochs sleep this x their time")
    pd.add_argument("--mlflow", choices=["sqlite", "server"], default="sqlite")
    pd.add_argument("--sampler", default="tpe", choices=["tpe", "random", "cmaes"])
    pd.add_argument("--out", default=None, help="write the figures as JSON here too")
    args = p.parse_args(argv)
    import tempfile

    if args.what == "driver":
        r = driver_at_scale(args)
        text = json.dumps(r, indent=1)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
        return 0 if r["rc"] == 0 else 1

    if args.what == "proposals":
        with tempfile.TemporaryDirectory() as tmp:
            for storage in args.storage:
                for sampler in args.samplers:
                    for n in args.sizes:
                        r = proposal_latency(sampler, n, args.running, args.repeats, storage, Path(tmp))
                        if args.json:
                            print(json.dumps(r), flush=True)
                        else:
                            print(
                                f"{storage:6s} {sampler:6s} {n:5d} trials (+{r['running']} running): ask "
                                f"{1000 * r['median_s']:8.1f} ms median, {1000 * r['max_s']:8.1f} ms max",
                                flush=True,
                            )
    if args.what == "mlflow":
        import socket

        marks = sorted({m for m in (10, 100, 250, 500, 1000, args.runs) if m <= args.runs})
        for store in args.stores:
            with tempfile.TemporaryDirectory() as tmp:
                db = f"sqlite:///{tmp}/mlflow.db"
                proc = None
                uri = db
                if store == "server":
                    with socket.socket() as sock:
                        sock.bind(("127.0.0.1", 0))
                        port = sock.getsockname()[1]
                    proc = _mlflow_server(db, port, Path(tmp))
                    uri = f"http://127.0.0.1:{port}"
                try:
                    for r in mlflow_latency(uri, args.runs, args.epochs, marks):
                        print(
                            f"{store:6s} at {r['runs']:5d} runs: create {r['create_ms']:.1f} ms, params "
                            f"{r['params_ms']:.1f} ms, metrics batch {r['metrics_ms']:.1f} ms, end "
                            f"{r['end_ms']:.1f} ms; {r['per_trial_ms']:.0f} ms per trial",
                            flush=True,
                        )
                finally:
                    if proc is not None:
                        proc.terminate()
                        proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
