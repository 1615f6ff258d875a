#!/usr/bin/env python
"""Distributed hyperparameter search for AMINet: Ray Tune + Optuna (TPE) + ASHA, tracked in MLflow.

    python search/run.py --space sysu                       # synthetic benchmark, CPU-sized budget
    python search/run.py --space sysu --data-root /data/SYSU-MM01 --gpus-per-trial 0.5
    python search/run.py --space sysu --name s1 --resume    # continue an interrupted search

One Ray Tune trial = one training run of ``aminet.engine.train`` on the search split (validation
identities held out), reporting ``score = (R1 + mAP) / 2`` on them every ``eval_every`` epochs. Optuna's
multivariate TPE proposes configurations (warm-started from the paper's settings; the study lives in
SQLite next to the experiment); ASHA stops weak trials after at least a quarter of training and they are
told to Optuna as PRUNED. MLflow gets one parent run per search and one child run per trial, written by
this driver only. After the search, the best trial (on validation, at its last report) is evaluated with
the full test protocols of both benchmarks, logged, registered as ``champion``, and optionally
re-trained as fixed-config final runs (``--retrain-best``).

Bad input (space, data root, override, cluster address, GPU request) exits with status 2 and one line
before any trial or MLflow run starts.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # ``python search/run.py`` from a checkout that is not installed
    sys.path.insert(0, str(REPO))

from aminet.cli import ArgumentParser  # noqa: E402

STATE_FILE = "aminet_search.json"
DEADLINE_FILE = "deadline"  # the Unix time after which no new trial starts (--time-budget)
METRIC = "score"


class UsageError(Exception):
    """Bad input: reported as one line with exit status 2."""


# ------------------------------------------------------------------------------------------------
# Arguments and checks (nothing is written before these pass)
# ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(
        prog="python search/run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--space",
        default="sysu",
        help="search space: a shipped name (sysu, regdb: search/spaces/<name>.yaml) "
        "or the path of a space YAML file (default sysu)",
    )
    p.add_argument(
        "--sampler",
        choices=["tpe", "gp", "cmaes", "random"],
        default="tpe",
        help="Optuna sampler (default tpe: multivariate TPE)",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="no new trial starts after this many seconds of searching; running trials finish, then "
        "the search selects, re-seeds, evaluates and registers as usual",
    )
    p.add_argument(
        "--data-root",
        default=None,
        help="dataset root of the space's benchmark in the official layout (default: the synthetic benchmark)",
    )
    p.add_argument(
        "--sysu-root",
        default=None,
        help="SYSU-MM01 root for the final evaluation (default: "
        "--data-root for the sysu space, synthetic without data)",
    )
    p.add_argument("--regdb-root", default=None, help="RegDB root for the final evaluation (likewise)")
    p.add_argument(
        "--budget",
        choices=["auto", "quick", "full"],
        default="auto",
        help="quick: CPU-sized model and budget; full: the paper's; auto: quick on the synthetic "
        "benchmark, full on real data",
    )
    p.add_argument("--quick", action="store_const", const="quick", dest="budget", help="same as --budget quick")
    p.add_argument("--num-samples", type=int, default=None, help="trials (default: the space's budget)")
    p.add_argument(
        "--max-concurrent", type=int, default=None, help="trials at once (default: what the cluster's CPUs/GPUs hold)"
    )
    p.add_argument(
        "--gpus-per-trial",
        type=float,
        default=None,
        help="GPUs per trial: at most 1, fractions allowed (default: 1 with GPUs, else 0)",
    )
    p.add_argument(
        "--cpus-per-trial",
        type=float,
        default=None,
        help="CPUs per trial (default: 1 on CPU, CPUs/GPUs (max 8) with GPUs)",
    )
    p.add_argument("--address", default=None, help="join this Ray cluster (host:port or 'auto')")
    p.add_argument(
        "--storage",
        default=None,
        help="Ray experiment storage: an absolute path or a URI shared by the nodes (default: <cwd>/ray_results)",
    )
    p.add_argument("--mlflow-uri", default=None, help="tracking URI (default: sqlite:///<cwd>/mlruns/mlflow.db)")
    p.add_argument("--mlflow-experiment", default="aminet-search", help="MLflow experiment name")
    p.add_argument("--name", default=None, help="search name (default: <space>-<time>); re-running a name resumes it")
    p.add_argument("--resume", action="store_true", help="resume the search --name (error if there is none)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (trials use the config's train.seed)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override of the base config, repeatable (e.g. train.epochs=40)",
    )
    p.add_argument(
        "--grace-period",
        type=int,
        default=None,
        help="ASHA grace period in epochs (default: the space's, >= a quarter)",
    )
    p.add_argument("--max-failures", type=int, default=2, help="retries of a crashed trial from its checkpoint")
    p.add_argument(
        "--top-k",
        type=int,
        default=None,
        help="finished trials re-trained with more seeds before the champion is chosen (default 3; quick budget 2)",
    )
    p.add_argument(
        "--reseeds",
        type=int,
        default=None,
        help="extra seeds per re-trained configuration (default 2; "
        "quick budget 1; 0: choose on the search's seed alone)",
    )
    p.add_argument("--no-final-eval", action="store_true", help="skip the test-protocol evaluation of the best")
    p.add_argument("--no-register", action="store_true", help="do not log/register the best model in MLflow")
    p.add_argument(
        "--retrain-best",
        action="store_true",
        help="then train the best config as fixed-config final runs on both benchmarks (experiments/run.py)",
    )
    p.add_argument("--retrain-seeds", type=int, nargs="+", default=[0], help="seeds of --retrain-best")
    p.add_argument(
        "--retrain-trials",
        type=int,
        nargs="+",
        default=list(range(1, 11)),
        help="RegDB trials of --retrain-best (default 1..10: one model each)",
    )
    p.add_argument(
        "--dashboard",
        action="store_true",
        help="start Ray's dashboard (local Ray only; binds 127.0.0.1:8265, reach it through an SSH tunnel)",
    )
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2], help="Ray Tune console verbosity")
    args = p.parse_args(argv)
    args.explicit = explicit_flags(p, sys.argv[1:] if argv is None else argv)
    return args


# What makes a search the search it is: a resume uses the saved values, and refuses different ones.
IDENTITY = {
    "data_root": "--data-root",
    "sysu_root": "--sysu-root",
    "regdb_root": "--regdb-root",
    "budget": "--budget",
    "num_samples": "--num-samples",
    "overrides": "--set",
    "mlflow_uri": "--mlflow-uri",
    "mlflow_experiment": "--mlflow-experiment",
    "grace_period": "--grace-period",
    "seed": "--seed",
    "top_k": "--top-k",
    "reseeds": "--reseeds",
    "sampler": "--sampler",
    "time_budget": "--time-budget",
}


def explicit_flags(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The destinations of the options given on the command line (not left at their defaults)."""
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    return {action.dest for action in parser._actions if given & set(action.option_strings)}


def _norm_path(value: str | None) -> str | None:
    return None if value is None else str(Path(value).expanduser().resolve())


def identity(args: argparse.Namespace) -> dict[str, Any]:
    """The identity flags, normalised (absolute paths and SQLite URIs)."""
    from aminet.reporting import absolute_tracking_uri

    out = {k: getattr(args, k) for k in IDENTITY}
    for k in ("data_root", "sysu_root", "regdb_root"):
        out[k] = _norm_path(out[k])
    out["mlflow_uri"] = absolute_tracking_uri(out["mlflow_uri"]) if out["mlflow_uri"] else None
    out["overrides"] = list(out["overrides"])
    return out


def adopt_saved_identity(args: argparse.Namespace, saved: dict[str, Any], name: str) -> None:
    """A resume runs the saved search: flags not given take the saved values; a given flag that differs is
    refused (one line naming it)."""
    given = identity(args)
    for key, flag in IDENTITY.items():
        if key in args.explicit and given[key] != saved.get(key):
            raise UsageError(
                f"--resume {name}: {flag} differs from the saved search ({given[key]!r} here, "
                f"{saved.get(key)!r} saved); a resumed search keeps its settings"
            )
        setattr(args, key, saved.get(key))


def _abs_dir(value: str | None, flag: str) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise UsageError(f"{flag}: folder not found: {path}")
    return path


def _is_uri(value: str) -> bool:
    return "://" in value


def check_address(address: str | None) -> None:
    """Fail fast (one line) when a Ray head cannot be reached, instead of ray.init's long retries."""
    if address in (None, "auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--address {address!r}: expected host:port (e.g. 10.0.0.1:6379), 'auto' or ray://...")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as exc:
        raise UsageError(f"--address {address}: cannot reach a Ray head there ({exc.strerror or exc})") from None


@dataclass
class Plan:
    space: Any
    base: Any  # aminet Config
    budget: Any
    quick: bool
    name: str
    storage: str
    experiment_path: str
    state_dir: Path
    resume: bool
    sysu_root: Path | None
    regdb_root: Path | None
    synthetic: bool  # no data root given: the search runs on the project's synthetic benchmark
    saved_state: dict | None = None

    @property
    def synthetic_data(self) -> bool:
        """The training data is a synthetic benchmark (the default one or one generated into a folder)."""
        return (Path(self.base.data.root) / "SYNTHETIC.json").is_file()


def plan_search(args: argparse.Namespace) -> Plan:
    from aminet.config import ConfigError
    from aminet.data import synthetic
    from aminet.reporting import check_tracking_uri
    from search.spaces import SpaceError, get_space

    try:
        space = get_space(args.space)
    except SpaceError as exc:
        raise UsageError(str(exc)) from None
    if args.time_budget is not None and args.time_budget <= 0:
        raise UsageError(f"--time-budget must be > 0 seconds, got {args.time_budget:g}")
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    if args.reseeds is not None and args.reseeds < 0:
        raise UsageError(f"--reseeds must be >= 0, got {args.reseeds}")
    storage = args.storage or str(Path.cwd() / "ray_results")
    if not _is_uri(storage):  # trials chdir into their own folders: only absolute paths mean the same there
        storage = str(Path(storage).expanduser().resolve())
    name = args.name or f"{space.name}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if "/" in name or name.startswith("."):
        raise UsageError(f"--name {name!r}: a plain folder name is needed")
    experiment_path = f"{storage.rstrip('/')}/{name}"
    state_dir = (Path(experiment_path) if not _is_uri(storage) else Path.cwd() / "search_state" / name).resolve()
    existing = (state_dir / STATE_FILE).is_file()
    if args.resume and not existing:
        raise UsageError(f"--resume: no search named {name!r} under {storage} (no {STATE_FILE})")
    saved_state = json.loads((state_dir / STATE_FILE).read_text()) if existing else None
    if saved_state is not None:
        if saved_state["space"] != space.name:
            raise UsageError(
                f"--name {name}: that search used --space {saved_state['space']}; a resumed search keeps its space"
            )
        if "args" in saved_state:
            adopt_saved_identity(args, saved_state["args"], name)
    check_address(args.address)  # before anything is built or written
    try:
        check_tracking_uri(args.mlflow_uri)
    except ConnectionError as exc:
        raise UsageError(str(exc)) from None
    data_root = _abs_dir(args.data_root, "--data-root")
    roots = {"sysu": _abs_dir(args.sysu_root, "--sysu-root"), "regdb": _abs_dir(args.regdb_root, "--regdb-root")}
    if data_root is not None:
        if roots[space.dataset] not in (None, data_root):
            raise UsageError(f"--data-root and --{space.dataset}-root name different folders")
        roots[space.dataset] = data_root
    synthetic_run = roots[space.dataset] is None
    quick = args.budget == "quick" or (args.budget == "auto" and synthetic_run)
    if args.top_k is None:
        args.top_k = 2 if quick else 3
    if args.reseeds is None:
        args.reseeds = 1 if quick else 2
    if args.num_samples is not None and args.num_samples < 1:
        raise UsageError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise UsageError(f"--max-concurrent must be >= 1, got {args.max_concurrent}")
    if args.gpus_per_trial is not None and args.gpus_per_trial < 0:
        raise UsageError(f"--gpus-per-trial must be >= 0, got {args.gpus_per_trial}")
    if args.gpus_per_trial is not None and args.gpus_per_trial > 1:
        raise UsageError(
            f"--gpus-per-trial {args.gpus_per_trial:g}: a trial trains on one device (no data-parallel "
            f"training per trial); use 1, or a fraction (0.5, 0.25) to share a GPU between trials"
        )
    if args.cpus_per_trial is not None and args.cpus_per_trial <= 0:
        raise UsageError(f"--cpus-per-trial must be > 0, got {args.cpus_per_trial}")
    bad = [t for t in args.retrain_trials if not 1 <= t <= 10]
    if bad:
        raise UsageError(f"--retrain-trials: RegDB trials are 1..10, got {bad}")
    if any(s < 0 for s in args.retrain_seeds):
        raise UsageError(f"--retrain-seeds: seeds must be >= 0, got {args.retrain_seeds}")
    if args.address is None and (args.gpus_per_trial or 0) > 0:
        import torch  # a local Ray instance has the GPUs this machine has

        if not torch.cuda.is_available():
            raise UsageError(
                f"--gpus-per-trial {args.gpus_per_trial:g}: this machine has no GPU (trials would wait forever)"
            )

    overrides = list(args.overrides)
    if roots[space.dataset] is not None:
        overrides.append(f"data.root={roots[space.dataset]}")
    try:
        base = space.base(quick=quick, overrides=overrides)
    except ConfigError as exc:
        raise UsageError(f"--set: {exc}") from None
    if base.data.root is None:  # the synthetic benchmark, generated once, passed to trials as an absolute path
        base = base.replace({"data.root": str(synthetic.ensure_default(space.dataset, quiet=False))})
    for d in ("sysu", "regdb"):
        if roots[d] is None and (synthetic_run or d == space.dataset):
            roots[d] = Path(base.data.root) if d == space.dataset else synthetic.ensure_default(d, quiet=False)
    if base.data.cache_dir is not None:
        base = base.replace({"data.cache_dir": str(Path(base.data.cache_dir).expanduser().resolve())})

    budget = space.budget_for(quick)
    epochs = base.train.epochs
    grace = (
        args.grace_period
        if args.grace_period is not None
        else (budget.grace_period if epochs == budget.epochs else max(1, math.ceil(epochs / 4)))
    )
    if not 1 <= grace <= epochs:
        raise UsageError(f"--grace-period {grace}: must be in 1..{epochs} (train.epochs)")
    if grace < epochs / 4:
        print(
            f"warning: ASHA grace period {grace} is under a quarter of {epochs} epochs: early stopping will "
            f"favour fast-decaying schedules",
            file=sys.stderr,
        )
    budget = type(budget)(
        epochs=epochs,
        eval_every=base.train.eval_every,
        grace_period=grace,
        num_samples=args.num_samples or budget.num_samples,
        reduction_factor=budget.reduction_factor,
    )

    return Plan(
        space,
        base,
        budget,
        quick,
        name,
        storage,
        experiment_path,
        state_dir,
        existing,
        roots["sysu"],
        roots["regdb"],
        synthetic_run,
        saved_state,
    )


def preflight(plan: Plan) -> str:
    """Readable layout, splits, weights and a built image cache; returns the dataset fingerprint (a digest of
    the folder's content listing: the same on every machine and in the model registry)."""
    from aminet.data.cache import ImageCache, dataset_fingerprint
    from aminet.engine.trainer import build_training_data, evaluation_set
    from aminet.model.aminet import check_weights

    root = Path(plan.base.data.root)
    build_training_data(plan.base, root)
    evaluation_set(plan.base, root)
    check_weights(plan.base.model.arch, plan.base.model.weights)
    ImageCache.open(root, plan.base.data.height, plan.base.data.width, plan.base.data.cache_dir, progress=True)
    return dataset_fingerprint(root)


# ------------------------------------------------------------------------------------------------
# Ray resources
# ------------------------------------------------------------------------------------------------


def quiet_libraries() -> None:
    """Keep the first screen for the search: library notices a user cannot act on go below the log level
    (Ray's note that its local instance uses token authentication, MLflow's table creation, Optuna's "study
    created"); warnings and errors still show."""
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name, level in (
        ("ray._private.authentication.authentication_token_setup", logging.ERROR),
        ("mlflow.store.db.utils", logging.WARNING),
        ("alembic", logging.WARNING),
    ):
        logging.getLogger(name).setLevel(level)


def init_ray(args: argparse.Namespace) -> None:
    # Snapshot the experiment state (trial states, searcher) at least every 2 s instead of Ray's adaptive
    # ~10 s+: after a hard kill of this driver, fewer finished trials look unfinished to the restore.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    # Trials report every epoch (training figures) and the search metric at evaluation epochs only; ASHA
    # and the searcher skip reports without it (trainables.aminet_trainable.TuneReporter).
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # The frequent snapshots above are chosen (a kill loses less); Ray's note that they are frequent is noise.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    quiet_libraries()
    import ray

    try:
        if args.address:
            ray.init(address=args.address, include_dashboard=False, log_to_driver=args.verbose > 1)
        else:  # the dashboard is off unless asked for, and then only on this machine's loopback
            ray.init(include_dashboard=args.dashboard, dashboard_host="127.0.0.1", log_to_driver=args.verbose > 1)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError: all one line
        raise UsageError(f"ray.init(address={args.address!r}) failed: {' '.join(str(exc).split())[:300]}") from None


def trial_resources(args: argparse.Namespace, num_samples: int) -> tuple[dict[str, float], int]:
    """Per-trial resources and concurrency from what the cluster has; never a GPU request without GPUs."""
    import ray

    total = ray.cluster_resources()
    cpus, gpus = float(total.get("CPU", 1)), float(total.get("GPU", 0))
    gpt = args.gpus_per_trial if args.gpus_per_trial is not None else (1.0 if gpus >= 1 else 0.0)
    if gpt > 0 and gpus == 0:
        raise UsageError(f"--gpus-per-trial {gpt}: the Ray cluster has no GPU (trials would wait forever)")
    if gpt > gpus:
        raise UsageError(f"--gpus-per-trial {gpt}: the cluster has {gpus:g} GPUs")
    if 0 < gpt < 1 and not math.isclose(1 / gpt, round(1 / gpt)):
        raise UsageError(f"--gpus-per-trial {gpt}: fractions must divide 1 (0.5, 0.25, ...)")
    if args.cpus_per_trial is not None:
        cpt = args.cpus_per_trial
    elif gpt > 0:
        cpt = float(max(1, min(8, int(cpus // max(1, round(gpus / gpt))))))
    else:
        cpt = 1.0
    if cpt > cpus:
        raise UsageError(f"--cpus-per-trial {cpt:g}: the cluster has {cpus:g} CPUs")
    fit = int(cpus // cpt)
    if gpt > 0:
        fit = min(fit, int(round(gpus / gpt, 6) // 1))
    concurrent = args.max_concurrent or max(1, min(fit, num_samples))
    return {"cpu": cpt, "gpu": gpt}, concurrent


# ------------------------------------------------------------------------------------------------
# MLflow
# ------------------------------------------------------------------------------------------------


def close_runs(client, exp_id: str, parent_id: str, status: str) -> None:
    """Mark the parent and any child still RUNNING as ended: nothing is left RUNNING."""
    try:
        for run in client.search_runs(
            [exp_id], f"tags.`mlflow.parentRunId` = '{parent_id}' and attributes.status = 'RUNNING'"
        ):
            client.set_terminated(run.info.run_id, "KILLED" if status != "FINISHED" else "FINISHED")
        client.set_terminated(parent_id, status)
    except Exception as exc:  # noqa: BLE001 - cleanup must not hide the original error
        print(f"warning: could not close MLflow runs: {exc}", file=sys.stderr)


# ------------------------------------------------------------------------------------------------
# The search
# ------------------------------------------------------------------------------------------------


def build_tuner(
    plan: Plan, args: argparse.Namespace, resources: dict[str, float], concurrent: int, callbacks: list, study_url: str
):
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from search.tuning import PrunedAwareOptunaSearch, make_sampler
    from trainables.aminet_trainable import train_aminet

    trainable = tune.with_resources(tune.with_parameters(train_aminet, base_yaml=plan.base.to_yaml()), resources)
    if plan.resume:
        from ray.tune import Tuner

        if not Tuner.can_restore(plan.experiment_path):
            raise UsageError(f"--name {plan.name}: {plan.experiment_path} holds no restorable Ray experiment")
        return Tuner.restore(plan.experiment_path, trainable=trainable, resume_errored=True)
    b = plan.budget
    searcher = PrunedAwareOptunaSearch(
        plan.space.define_by_run(plan.base),
        metric=METRIC,
        mode="max",
        points_to_evaluate=plan.space.warm_start(plan.base),
        sampler=make_sampler(args.sampler, args.seed, b.num_samples),
        study_name=plan.name,
        storage=optuna.storages.RDBStorage(study_url),
        max_epochs=b.epochs,
        deadline_file=str(plan.state_dir / DEADLINE_FILE),
    )
    scheduler = ASHAScheduler(
        time_attr="epoch", max_t=b.epochs, grace_period=b.grace_period, reduction_factor=b.reduction_factor
    )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=b.num_samples,
            max_concurrent_trials=concurrent,
            reuse_actors=False,
        ),
        run_config=tune.RunConfig(
            name=plan.name,
            storage_path=plan.storage,
            callbacks=callbacks,
            verbose=args.verbose,
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=3),
        ),
    )


def log_search_summary(client, parent_id: str, plan: Plan, results, study_url: str) -> None:
    """Trials table, trial states, failures, Optuna plots and importances on the parent run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    import pandas as pd

    frame = results.get_dataframe()
    keep = [
        c
        for c in frame.columns
        if c.startswith("config/")
        or c
        in (
            "trial_id",
            "epoch",
            "score",
            "R1",
            "mAP",
            "mINP",
            "diverged",
            "resumed_from",
            "training_iteration",
            "time_total_s",
        )
    ]
    client.log_text(parent_id, frame[keep].to_csv(index=False), "search/trials.csv")
    study = optuna.load_study(study_name=plan.name, storage=study_url)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        # Asked for by a driver that was killed before Ray recorded the trial: it never ran. Every Ray trial
        # has ended here, so a RUNNING Optuna trial can only be such an orphan.
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    sdf = study.trials_dataframe()
    client.log_text(parent_id, sdf.to_csv(index=False), "search/optuna_trials.csv")
    counts = sdf["state"].value_counts().to_dict() if len(sdf) else {}
    for state, n in counts.items():
        client.log_metric(parent_id, f"trials/{str(state).lower()}", float(n))

    failed = [r for r in results if r.error is not None]
    if failed:
        lines = []
        for r in failed:
            msg = " ".join(str(r.error).split())
            tail = msg.split("Traceback")[0][-300:] if "Traceback" in msg else msg[-300:]
            lines.append({"trial": Path(r.path).name, "error": tail})
        client.log_text(parent_id, pd.DataFrame(lines).to_csv(index=False), "search/failed_trials.csv")
        print(f"\n{len(failed)} trial(s) FAILED (the search went on):", file=sys.stderr)
        for row in lines:
            print(f"  {row['trial'][:40]}: {row['error'][-200:]}", file=sys.stderr)
    client.log_metric(parent_id, "trials/errored", float(len(failed)))
    diverged = [r for r in results if r.error is None and (r.metrics or {}).get("diverged")]
    client.log_metric(parent_id, "trials/diverged", float(len(diverged)))
    if diverged:
        print(
            f"\n{len(diverged)} trial(s) DIVERGED (non-finite loss; not retried, told to Optuna as PRUNED at the "
            f"worst score):",
            file=sys.stderr,
        )
        for r in diverged:
            print(f"  {Path(r.path).name[:40]}: {str(r.metrics.get('error', ''))[-200:]}", file=sys.stderr)

    import warnings

    from optuna.visualization import matplotlib as ovm

    plots = {
        "optimization_history": ovm.plot_optimization_history,
        "param_importances": ovm.plot_param_importances,
        "parallel_coordinate": ovm.plot_parallel_coordinate,
        "intermediate_values": ovm.plot_intermediate_values,
    }
    for name, fn in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = fn(study)
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            # Wide enough for one axis per parameter and full labels; cropped to what is drawn. The same plots,
            # interactive, are in optuna-dashboard (README).
            fig.set_size_inches(14 if name == "parallel_coordinate" else 10, 6)
            fig.tight_layout()
            client.log_figure(parent_id, fig, f"plots/{name}.png", save_kwargs={"bbox_inches": "tight", "dpi": 110})
            plt.close(fig)
        except Exception as exc:  # noqa: BLE001 - e.g. too few finished trials for importances
            client.set_tag(parent_id, f"plot.{name}", f"not drawn: {' '.join(str(exc).split())[:200]}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            imp = optuna.importance.get_param_importances(study)
        for k, v in imp.items():
            client.log_metric(parent_id, f"importance/{k}", float(v))
        client.log_dict(parent_id, {k: float(v) for k, v in imp.items()}, "search/importances.json")
    except Exception as exc:  # noqa: BLE001
        client.set_tag(parent_id, "importance", f"not computed: {' '.join(str(exc).split())[:200]}")


def _save_state(path: Path, state: dict) -> None:
    """Write the search's state file whole or not at all (a kill mid-write leaves the previous one)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(state, indent=1, default=str))
    tmp.replace(path)


def start_clock(plan: Plan, args: argparse.Namespace, state: dict, state_path: Path) -> float | None:
    """Write the deadline of --time-budget (the budget less the searching time of earlier runs of this search)
    for the searcher; None without a budget."""
    path = plan.state_dir / DEADLINE_FILE
    if args.time_budget is None:
        path.unlink(missing_ok=True)
        return None
    state["clock_started"] = time.time()
    deadline = state["clock_started"] + args.time_budget - float(state.get("search_seconds", 0.0))
    path.write_text(f"{deadline:.3f}\n")
    return deadline


def stop_clock(state: dict, state_path: Path, deadline: float | None) -> None:
    """Add this run's searching time to the state file (a resume gets the rest of the budget)."""
    if deadline is None:
        return
    state["search_seconds"] = float(state.get("search_seconds", 0.0)) + time.time() - state.pop("clock_started")
    _save_state(state_path, state)


def reseed_tuner(
    plan: Plan,
    args: argparse.Namespace,
    resources: dict[str, float],
    concurrent: int,
    callbacks: list,
    points: list[dict],
    seeds: list[int],
):
    """The re-seed trials: every (candidate, seed) pair trained to the full budget (no early stopping), with
    the search's trainable, resources and retries; restored when an interrupted re-seed is resumed."""
    from ray import tune

    from trainables.aminet_trainable import train_reseed

    trainable = tune.with_resources(
        tune.with_parameters(train_reseed, base_yaml=plan.base.to_yaml(), points=points), resources
    )
    path = f"{plan.experiment_path}-reseed"
    if tune.Tuner.can_restore(path):
        return tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space={"candidate": tune.grid_search(list(range(len(points)))), "seed": tune.grid_search(seeds)},
        tune_config=tune.TuneConfig(
            metric=METRIC, mode="max", num_samples=1, max_concurrent_trials=concurrent, reuse_actors=False
        ),
        run_config=tune.RunConfig(
            name=f"{plan.name}-reseed",
            storage_path=plan.storage,
            callbacks=callbacks,
            verbose=args.verbose,
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )


def select_champion(
    client,
    parent_id: str,
    plan: Plan,
    args,
    results,
    resources,
    concurrent,
    uri: str,
    exp_id: str,
    state: dict,
    state_path: Path,
    run_tags: dict,
    inputs: list,
):
    """Finished trials only, the top k re-seeded on the cluster, the best mean over seeds. Returns the winner."""
    import pandas as pd

    from search import champion
    from search.tuning import ProgressLines, ResolvedParams, TrialRunLogger, mlflow_metrics
    from trainables.params import OPTUNA_TRIAL, apply_params

    b = plan.budget
    top = champion.finished(results, b.epochs)
    if not top:
        raise RuntimeError(
            f"no trial trained to the full budget of {b.epochs} epochs without error or divergence: "
            f"nothing to select (see the trials above)"
        )
    top = top[: args.top_k]
    base_seed = plan.base.train.seed
    seeds = champion.reseed_seeds(base_seed, args.reseeds)
    points = [{k: v for k, v in r.config.items() if k != OPTUNA_TRIAL} for r in top]
    reseeded = []
    if seeds:
        state.update(stage="reseed", reseed_points=points)
        _save_state(state_path, state)
        print(
            f"\nre-seeding the top {len(points)} finished trial(s) with seeds {seeds} "
            f"({len(points) * len(seeds)} Ray trials)",
            file=sys.stderr,
            flush=True,
        )
        logger = TrialRunLogger(
            uri,
            exp_id,
            parent_id,
            b.epochs,
            role="reseed",
            tags=run_tags,
            inputs=inputs,
            params_of=ResolvedParams(plan.base.to_yaml(), points),
        )
        grid = reseed_tuner(plan, args, resources, concurrent, [logger, ProgressLines(b.epochs)], points, seeds).fit()
        if grid.num_terminated + grid.num_errors < len(points) * len(seeds):
            raise KeyboardInterrupt
        reseeded = list(grid)
    cands = champion.candidates_from(top, base_seed, reseeded, b.epochs)
    winner = champion.choose(cands)
    rows = [
        {
            "rank": i + 1,
            "trial_id": c.trial_id,
            "mean": c.mean,
            "std": c.std,
            "n": len(c.scores),
            "seeds": " ".join(map(str, c.seeds)),
            "scores": " ".join(f"{v:.4f}" for v in c.scores),
            **{f"param.{k}": v for k, v in c.params.items()},
        }
        for i, c in enumerate(cands)
    ]
    client.log_text(parent_id, pd.DataFrame(rows).to_csv(index=False), "search/reseeds.csv")
    for i, c in enumerate(cands):
        client.log_metric(parent_id, f"reseed/top{i + 1}/val_score_mean", c.mean)
        client.log_metric(parent_id, f"reseed/top{i + 1}/val_score_std", c.std)
        client.set_tag(
            parent_id, f"reseed.top{i + 1}", f"trial {c.trial_id}, seeds {c.seeds}, mean {c.mean:.4f} +- {c.std:.4f}"
        )
    cfg = apply_params(plan.base, winner.params)
    client.log_text(parent_id, cfg.to_yaml(), "best/config.yaml")
    client.log_dict(
        parent_id,
        {
            "params": winner.params,
            "trial_id": winner.trial_id,
            "seeds": winner.seeds,
            "val_scores": winner.scores,
            "val_score_mean": winner.mean,
            "val_score_std": winner.std,
        },
        "best/selection.json",
    )
    (plan.state_dir / "best_config.yaml").write_text(cfg.to_yaml())
    # The trials' objective name (val/score) on the parent too: the winner's mean over seeds, and its std.
    client.log_metric(parent_id, "val/score", winner.mean)
    client.log_metric(parent_id, "val/score_std", winner.std)
    per_seed = [mlflow_metrics(r.metrics) for r in winner.results if r is not None]
    for k in per_seed[0] if per_seed else []:
        if k.startswith("val/") and k != "val/score" and all(k in m for m in per_seed):
            client.log_metric(parent_id, k, sum(m[k] for m in per_seed) / len(per_seed))
    for k, v in winner.params.items():
        client.set_tag(parent_id, f"best.{k}", str(v))
    client.set_tag(parent_id, "aminet.best_trial", winner.trial_id)
    found = client.search_runs(
        [exp_id],
        f"tags.`mlflow.parentRunId` = '{parent_id}' and "
        f"tags.`ray.trial_id` = '{winner.trial_id}' and tags.`aminet.role` = 'trial'",
    )
    if found:  # the winning trial's run: tagged, and linked from the parent
        winner.run_id = found[0].info.run_id
        client.set_tag(winner.run_id, "aminet.winner", "true")
        client.set_tag(parent_id, "aminet.best_trial_run", winner.run_id)
    print(
        f"\nselected: trial {winner.trial_id}, val score {100 * winner.mean:.2f} +- {100 * winner.std:.2f} over "
        f"seeds {winner.seeds} (finished trials only; top {len(cands)} re-seeded); {winner.params}"
    )
    return winner


def final_evaluation(client, parent_id: str, plan: Plan, args, winner, uri: str, resources, exp_id: str) -> str:
    """The winner's seed models on both benchmarks' test protocols (Ray tasks), logged and printed; the best
    seed model (on validation) registered under the guarded champion rule. Returns the printed text."""
    import pandas as pd

    from aminet.reporting import paper_table, seed_summary
    from search import champion

    models = [(seed, r) for seed, r in zip(winner.seeds, winner.results) if r is not None and r.checkpoint]
    if not models:
        raise RuntimeError("the selected configuration left no checkpoint")
    frames = champion.evaluate_on_cluster(
        [r.checkpoint for _, r in models], plan.sysu_root, plan.regdb_root, resources, args.max_failures
    )
    from aminet.data.cache import dataset_fingerprint
    from aminet.reporting import dataset_input

    tests = [
        dataset_input(
            f"{d}-{'synthetic' if (Path(root) / 'SYNTHETIC.json').is_file() else 'real'}-test",
            dataset_fingerprint(root),
            root,
            "test",
        )
        for d, root in (("sysu", plan.sysu_root), ("regdb", plan.regdb_root))
        if root is not None
    ]
    client.log_inputs(parent_id, datasets=tests)
    frame = pd.concat([f.assign(seed=seed) for (seed, _), f in zip(models, frames)], ignore_index=True)
    feature = plan.base.eval.feature
    client.log_text(parent_id, frame.drop(columns=["cmc"]).to_csv(index=False), "best/test_per_trial.csv")
    tables = []
    for bench, g in frame.groupby("benchmark", sort=False):
        scope = str(g.scope.iloc[0])  # in-domain or cross-dataset: one per benchmark
        summary = seed_summary(g.drop(columns=["scope"]).assign(label=scope), feature)
        tables.append(paper_table(summary))
        for row in summary.itertuples():
            for m in ("R1", "R10", "R20", "mAP", "mINP"):
                client.log_metric(parent_id, f"test/{bench}/{row.setting}/{m}", float(getattr(row, f"{m}_mean")))
                client.log_metric(parent_id, f"test/{bench}/{row.setting}/{m}_std", float(getattr(row, f"{m}_std")))
            client.set_tag(
                parent_id,
                f"test.{bench}.{row.setting}.scope",
                f"{scope}, {g.trial.nunique()} trials, {row.seeds} seeds",
            )
    table = "\n\n".join(tables)
    client.log_text(parent_id, table + "\n", "best/test_table.txt")
    text = (
        f"\nTEST protocols of the selected configuration ({feature} feature; mean +- std over seeds "
        f"{[s for s, _ in models]}, each seed the mean over the protocol's trials; selected on validation ids "
        f"only):\n{table}"
    )
    print(text)
    if args.no_register:
        describe_parent(client, parent_id, plan, winner, exp_id, table)
        return text
    best = winner.best_model()
    version, line = register_champion(client, parent_id, plan, winner, best, uri, text)
    describe_parent(client, parent_id, plan, winner, exp_id, table, line)
    print("\n" + line)
    return text + "\n\n" + line


def register_champion(client, parent_id: str, plan: Plan, winner, best, uri: str, test_text: str):
    """Log the best seed model as a pyfunc model from code (weights as a state dict, no pickle) with a
    signature and an input example, in the MLflow run of the trial that trained it, register it, tag and
    describe the version, and move ``@champion`` only under the guarded rule. Returns (version, line)."""
    import mlflow
    import numpy as np

    from aminet.data.cache import ImageCache, dataset_fingerprint
    from aminet.engine.evaluate import load_trained
    from aminet.reporting import git_commit
    from aminet.serving import log_pyfunc_model
    from search import champion

    with best.checkpoint.as_directory() as folder:
        model, cfg = load_trained(folder, device="cpu")
    base = plan.base
    cache = ImageCache.open(base.data.root, base.data.height, base.data.width, base.data.cache_dir, progress=False)
    example = np.array(cache.images[:2])  # two training-set images at the model's size
    trial_id = str(best.metrics.get("trial_id", winner.trial_id))
    found = client.search_runs(
        [client.get_run(parent_id).info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`ray.trial_id` = '{trial_id}'",
    )
    source_run = found[0].info.run_id if found else parent_id
    data_fp = dataset_fingerprint(base.data.root)
    name = champion.registered_name(plan.space.dataset, plan.synthetic_data, data_fp)
    protocol = champion.validation_protocol(base)
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=source_run):  # the model's source is the run that trained it
        info = log_pyfunc_model(
            model,
            cfg,
            example,
            name="model",
            registered_model_name=name,
            pip_requirements=["torch", "torchvision", "numpy", "pyyaml", "aminet"],
            await_registration_for=60,
        )
    version = str(info.registered_model_version)
    tags = {
        "aminet.val_score": repr(winner.mean),
        "aminet.val_score_std": repr(winner.std),
        "aminet.protocol": protocol,
        "aminet.dataset_fingerprint": data_fp,
        "aminet.search": plan.name,
        "aminet.search_run": parent_id,
        "aminet.source_run": source_run,
        "aminet.seeds": " ".join(map(str, winner.seeds)),
        "aminet.synthetic": str(plan.synthetic_data).lower(),
        "aminet.trial_id": trial_id,
        "aminet.git_commit": git_commit(),
        "aminet.checkpoint": str(best.checkpoint.path),
    }
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)
    client.update_model_version(
        name,
        version,
        description=(
            f"AMINet selected by search `{plan.name}` on {plan.space.dataset} "
            f"({'synthetic' if plan.synthetic_data else 'real'} data, fingerprint `{data_fp}`), commit `{git_commit()[:12]}`.\n\n"
            f"Validation score (R1 + mAP) / 2: {100 * winner.mean:.2f} +- {100 * winner.std:.2f} % over seeds "
            f"{winner.seeds} (protocol `{protocol}`); this version is the seed model best on validation.\n\n"
            f"Input: uint8 images (N, {cfg.data.height}, {cfg.data.width}, 3); params modality, feature, flip; output: "
            f"L2-normalised features.\n\n```\n{test_text.strip()}\n```"
        ),
    )
    moved, line = champion.guard_champion(client, name, version, winner.mean, protocol)
    client.set_tag(parent_id, "aminet.registered_model", f"{name} v{version}" + (" @champion" if moved else ""))
    return version, line


def describe_parent(
    client, parent_id: str, plan: Plan, winner, exp_id: str, table: str | None = None, registered: str | None = None
) -> None:
    """The parent run's description (MLflow's markdown note): the winner, linked, its scores, the test table."""
    run = getattr(winner, "run_id", None)
    link = (
        f"[trial {winner.params.get('optuna_trial', winner.trial_id)}](#/experiments/{exp_id}/runs/{run})"
        if run
        else f"trial {winner.trial_id}"
    )
    params = "\n".join(f"| {k} | {v} |" for k, v in winner.params.items() if k != "optuna_trial")
    text = (
        f"## Search `{plan.name}` ({plan.space.name} space, {plan.budget.num_samples} trials, "
        f"{plan.budget.epochs} epochs)\n\nWinner: {link}, validation score (R1 + mAP) / 2 = "
        f"**{100 * winner.mean:.2f} +- {100 * winner.std:.2f} %** over seeds {winner.seeds} (chosen on "
        f"validation identities only, among trials that finished, by the mean over seeds).\n\n"
        f"| parameter | value |\n|---|---|\n{params}\n\n"
        f"Units: MLflow metrics are fractions (0-1); the tables below are in percent, mean +- std over seeds.\n"
    )
    if table:
        text += f"\n### Test protocols\n\n```\n{table.strip()}\n```\n"
    if registered:
        text += f"\n{registered}\n"
    client.set_tag(parent_id, "mlflow.note.content", text)


def retrain_best(plan: Plan, args, uri: str, parent_id: str, resources: dict[str, float]) -> int:
    """Fixed-config final runs of the best config on both benchmarks (experiments/run.py), as parallel Ray
    tasks, linked to the search's parent run."""
    import yaml

    from aminet.reporting import is_local_store
    from search import champion

    best = yaml.safe_load((plan.state_dir / "best_config.yaml").read_text())
    commands = []
    for dataset, root in (("sysu", plan.sysu_root), ("regdb", plan.regdb_root)):
        if root is None:
            print(f"--retrain-best: no {dataset} root: skipped (pass --{dataset}-root)", file=sys.stderr)
            continue
        cfg = dict(best)
        cfg["data"] = {**best["data"], "dataset": dataset, "purpose": "final", "root": str(root)}
        cfg["name"] = f"{plan.name}-best-{dataset}"
        path = plan.state_dir / f"final_{dataset}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        cmd = [
            sys.executable,
            str(REPO / "experiments" / "run.py"),
            str(path),
            "--mlflow-uri",
            uri,
            "--experiment",
            "aminet-final",
            "--seeds",
            *map(str, args.retrain_seeds),
            "--quiet",
            "--run-dir",
            str(plan.state_dir / "final_runs" / dataset),
            "--tag",
            f"aminet.search_parent={parent_id}",
            "--tag",
            f"aminet.search_name={plan.name}",
            "--trials",
            *map(str, args.retrain_trials),
        ]
        print(f"\n=== retrain best on {dataset} (Ray task): {' '.join(cmd[1:])}", flush=True)
        commands.append(cmd)
    outcomes = champion.retrain_on_cluster(commands, resources, args.max_failures, local_store=is_local_store(uri))
    status = 0
    for cmd, (code, stdout, stderr) in zip(commands, outcomes):
        print(stdout, end="", flush=True)
        if code:
            print(f"error: retrain run failed (exit {code}): {' '.join(cmd[1:3])}\n{stderr}", file=sys.stderr)
            status = status or code
    return status


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        plan = plan_search(args)
        if plan.saved_state and plan.saved_state.get("stage") == "finished":
            print(f"search {plan.name} has finished; its summary:", file=sys.stderr)
            print(plan.saved_state.get("summary", "(no summary saved)"))
            return 0
        fingerprint = preflight(plan)
        init_ray(args)
        resources, concurrent = trial_resources(args, plan.budget.num_samples)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2

    from mlflow.tracking import MlflowClient

    from aminet.reporting import dataset_input, mlflow_store, runs_page, source_tags
    from search.tuning import ProgressLines, ResolvedParams, TrialRunLogger

    plan.state_dir.mkdir(parents=True, exist_ok=True)
    study_url = f"sqlite:///{plan.state_dir / 'optuna.db'}"
    uri, exp_id = mlflow_store(args.mlflow_uri, args.mlflow_experiment)
    client = MlflowClient(uri)
    state_path = plan.state_dir / STATE_FILE
    if plan.resume:
        state = json.loads(state_path.read_text())
        parent_id = state["parent_run_id"]
        client.update_run(parent_id, status="RUNNING")
        client.set_tag(parent_id, "aminet.resumed_at", _dt.datetime.now().isoformat(timespec="seconds"))
        print(f"resuming search {plan.name} (MLflow parent run {parent_id})", file=sys.stderr)
    else:
        b = plan.budget
        tags = {
            "aminet.role": "search",
            "aminet.space": plan.space.name,
            **source_tags("search/run.py"),
            "aminet.dataset_fingerprint": fingerprint,
            "aminet.data_root": str(plan.base.data.root),
            "aminet.ray_experiment": plan.experiment_path,
            "aminet.optuna_study": f"{plan.name} @ {study_url}",
            "aminet.budget": "quick" if plan.quick else "full",
            "aminet.synthetic": str(plan.synthetic_data),
        }
        parent_id = client.create_run(exp_id, run_name=plan.name, tags=tags).info.run_id
        try:
            client.log_text(parent_id, plan.base.to_yaml(), "search/base_config.yaml")
            client.log_text(parent_id, plan.space.text(), "search/space.yaml")
            for k, v in {
                "space": plan.space.name,
                "num_samples": b.num_samples,
                "epochs": b.epochs,
                "eval_every": b.eval_every,
                "grace_period": b.grace_period,
                "reduction_factor": b.reduction_factor,
                "max_concurrent": concurrent,
                "cpus_per_trial": resources["cpu"],
                "gpus_per_trial": resources["gpu"],
                "sampler": args.sampler,
                "time_budget_s": args.time_budget,
                "seed": args.seed,
                "top_k": args.top_k,
                "space_file": str(plan.space.path),
                "reseeds": args.reseeds,
            }.items():
                client.log_param(parent_id, f"search.{k}", v)
            saved_args = {**identity(args), "mlflow_uri": uri}
            state = {
                "space": plan.space.name,
                "parent_run_id": parent_id,
                "mlflow_uri": uri,
                "experiment_id": exp_id,
                "study": study_url,
                "created": time.time(),
                "stage": "search",
                "args": saved_args,
                "base_config": plan.base.to_yaml(),
                "budget": vars(plan.budget),
                "roots": {"sysu": str(plan.sysu_root), "regdb": str(plan.regdb_root)},
            }
            _save_state(state_path, state)
        except BaseException:
            close_runs(client, exp_id, parent_id, "FAILED")
            raise
    data_name = f"{plan.space.dataset}-{'synthetic' if plan.synthetic_data else 'real'}"
    # One input per split (MLflow keeps one context per dataset name and digest): the training identities and
    # the held-out validation identities of the same folder (same content digest).
    inputs = [dataset_input(f"{data_name}-{c}", fingerprint, plan.base.data.root, c) for c in ("train", "validation")]
    run_tags = {"aminet.space": plan.space.name, "aminet.search": plan.name, **source_tags("search/run.py")}
    callbacks = [
        TrialRunLogger(
            uri,
            exp_id,
            parent_id,
            plan.budget.epochs,
            tags=run_tags,
            inputs=inputs,
            params_of=ResolvedParams(plan.base.to_yaml()),
        ),
        ProgressLines(plan.budget.epochs),
    ]
    status = "FAILED"
    summary = ""
    try:
        if not plan.resume:
            client.log_inputs(parent_id, datasets=inputs)
        try:
            tuner = build_tuner(plan, args, resources, concurrent, callbacks, study_url)
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(
            f"search {plan.name}: {plan.budget.num_samples} trials, {concurrent} at once, {resources} each; "
            f"{plan.budget.epochs} epochs, eval every {plan.budget.eval_every}, ASHA grace "
            f"{plan.budget.grace_period}; then the top {args.top_k} finished trial(s) re-seeded x{args.reseeds}; "
            f"Ray experiment {plan.experiment_path}",
            file=sys.stderr,
            flush=True,
        )
        deadline = start_clock(plan, args, state, state_path)
        try:
            results = tuner.fit()
        finally:
            stop_clock(state, state_path, deadline)
        timed_out = deadline is not None and time.time() >= deadline
        ended = results.num_terminated + results.num_errors
        if ended < len(results) or (ended < plan.budget.num_samples and not timed_out):
            # Ray catches Ctrl-C itself, saves the experiment and returns early: this is an interruption.
            raise KeyboardInterrupt
        if timed_out and len(results) < plan.budget.num_samples:
            print(
                f"\n--time-budget {args.time_budget:g} s reached: {len(results)} of {plan.budget.num_samples} "
                f"trials ran; selecting among them",
                file=sys.stderr,
                flush=True,
            )
            client.set_tag(
                parent_id, "aminet.time_budget_reached", f"{len(results)} of {plan.budget.num_samples} trials"
            )
        log_search_summary(client, parent_id, plan, results, study_url)
        winner = select_champion(
            client,
            parent_id,
            plan,
            args,
            results,
            resources,
            concurrent,
            uri,
            exp_id,
            state,
            state_path,
            run_tags,
            inputs,
        )
        summary = (
            f"selected trial {winner.trial_id}: val score {100 * winner.mean:.2f} +- {100 * winner.std:.2f} "
            f"over seeds {winner.seeds}; {winner.params}"
        )
        if not args.no_final_eval:
            summary += "\n" + final_evaluation(client, parent_id, plan, args, winner, uri, resources, exp_id)
        else:
            describe_parent(client, parent_id, plan, winner, exp_id)
        status = "FINISHED"
        state.update(stage="finished", summary=summary)
        _save_state(state_path, state)
    except KeyboardInterrupt:
        status = "KILLED"
        print(
            f"\ninterrupted: resume with  python search/run.py --space {plan.space.name} --name {plan.name} "
            f"--resume" + (f" --storage {args.storage}" if args.storage else ""),
            file=sys.stderr,
        )
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, FAILED in MLflow, non-zero exit
        print(f"error: {type(exc).__name__}: {' '.join(str(exc).split())[:500]}", file=sys.stderr)
        return 1
    finally:
        close_runs(client, exp_id, parent_id, status)
    print(f"\nMLflow: mlflow ui --backend-store-uri {uri}   (experiment '{args.mlflow_experiment}', run {plan.name})")
    print(f"  then open {runs_page(exp_id)}")
    print(f"Optuna: optuna-dashboard {study_url}")
    if args.retrain_best:
        return retrain_best(plan, args, uri, parent_id, resources)
    return 0


if __name__ == "__main__":
    sys.exit(main())
