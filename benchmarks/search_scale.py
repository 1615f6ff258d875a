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
the driver (``psutil`` every second): trials finished per minute, the driver's CPU share and memory;
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
        value = 0.3 + 0.4 * t.params["mmd_inter"] - 0.2 * abs(t.params["mmd_intra"] - 0.4) + rng.gauss(0, 0.02)
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
    args = p.parse_args(argv)
    import tempfile

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
