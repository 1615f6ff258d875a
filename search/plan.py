"""The search's plan: the command line, its checks, and everything decided before anything starts.

``parse_args`` reads the flags; ``plan_search`` checks them (space file, data roots, overrides, budget,
resources asked for, tracking URI, cluster address; a resume adopts the saved search's settings and
refuses different ones) and returns the ``Plan``, the search's one typed, frozen context; ``preflight``
reads the data, splits and weights, builds the image cache and completes the plan with the data's
fingerprint. The argparse namespace never leaves this module. Bad input raises ``UsageError`` (one line, exit 2) before anything is written.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import socket
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aminet.cli import ArgumentParser, UsageError, invoked_as
from search.context import (  # noqa: F401
    DEADLINE_FILE,
    DEFAULT_TRANSFER,
    METRIC,
    STATE_FILE,
    Plan,
    SearchState,
    Settings,
)
from search.samplers import SAMPLERS, asha_refusal

if TYPE_CHECKING:
    from aminet.config import Config
    from aminet.engine.drills import Drill
    from search.spaces import Budget

__all__ = [
    "UsageError",
    "Plan",
    "Settings",
    "parse_args",
    "plan_search",
    "preflight",
    "identity",
    "IDENTITY",
    "STATE_FILE",
    "DEADLINE_FILE",
    "METRIC",
    "REPO",
]

REPO = Path(__file__).resolve().parents[1]
DESCRIPTION = """Distributed hyperparameter search for AMINet: Ray Tune + Optuna + ASHA, tracked in MLflow.

    python search/run.py --space sysu                       # synthetic benchmark, CPU-sized budget
    python search/run.py --space sysu --data-root /data/SYSU-MM01 --gpus-per-trial 0.5
    python search/run.py --space sysu --name s1 --resume    # continue an interrupted search
    python search/run.py --smoke-test                       # the quick budget (as Ray Tune's examples call it)
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(
        prog=invoked_as("search.run", "python search/run.py"),
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--space",
        default="sysu",
        help="search space: a shipped name (sysu, regdb: search/spaces/<name>.yaml) "
        "or the path of a space YAML file (default sysu)",
    )
    p.add_argument(
        "--sampler",
        choices=list(SAMPLERS),
        default="tpe",
        help="Optuna sampler (default tpe: multivariate TPE; pibo: TPE guided by the space's priors, search/pibo.py)",
    )
    p.add_argument(
        "--transfer-from",
        nargs="+",
        default=[],
        metavar="SOURCE",
        help="start from what earlier searches found: their names under --storage, their folders or optuna.db "
        "files, or tables (benchmarks/tables/...); search/transfer.py",
    )
    p.add_argument(
        "--transfer-method",
        choices=["box", "warm", "prior", "box+warm"],
        default=None,
        help="how: prior (default: the earlier top configurations become the prior of --sampler pibo, which "
        "--transfer-from then selects), box (shrink the space to them), warm (try them first), box+warm",
    )
    p.add_argument(
        "--scheduler",
        choices=["asha", "none"],
        default="asha",
        help="asha: stop weak trials early (ASHA from --grace-period); none: every trial trains the full budget "
        "(default asha)",
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
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="PATH: dataset root of the space's benchmark in the official layout (default: the synthetic "
        "benchmark); NAME=PATH (repeatable; NAME a registered benchmark: sysu, regdb, llcm): that benchmark's "
        "root, trained on when it is the space's and evaluated on at the end of the search",
    )
    p.add_argument(
        "--sysu-root",
        default=None,
        help="SYSU-MM01 root for the final evaluation (the same as --data-root sysu=PATH)",
    )
    p.add_argument("--regdb-root", default=None, help="RegDB root for the final evaluation (--data-root regdb=PATH)")
    p.add_argument(
        "--budget",
        choices=["auto", "quick", "full"],
        default="auto",
        help="quick: CPU-sized model and budget; full: the paper's; auto: quick on the synthetic "
        "benchmark, full on real data",
    )
    p.add_argument("--quick", action="store_const", const="quick", dest="budget", help="same as --budget quick")
    p.add_argument(
        "--smoke-test",
        action="store_const",
        const="quick",
        dest="budget",
        help="same as --budget quick (the name Ray Tune's examples use)",
    )
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
    p.add_argument(
        "--replay",
        default=None,
        metavar="TABLE",
        help="answer every trial from a tabulated benchmark of the space (a folder of benchmarks/tabulate_space.py, "
        "e.g. benchmarks/tables/sysu-quick) instead of training: the search itself runs unchanged",
    )
    p.add_argument(
        "--replay-model",
        choices=["nearest", "forest"],
        default="nearest",
        help="with --replay: answer a proposal from the table's nearest row (default) or from its random-forest "
        "surrogate (search/surrogate.py: the proposed configuration's predicted curve plus a measured seed "
        "deviation; a sampler that concentrates is not answered by the same few rows)",
    )
    p.add_argument(
        "--replay-time-scale",
        type=float,
        default=0.0,
        metavar="S",
        help="with --replay: each replayed epoch sleeps its recorded time x S (default 0: no sleep)",
    )
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2], help="Ray Tune console verbosity")
    p.add_argument(
        "--offline",
        action="store_true",
        help="never download (sets AMINET_OFFLINE=1 for every trial): missing ImageNet weights are refused in one line",
    )
    # fault drills for tests (aminet/engine/drills.py), handed to every trial explicitly
    p.add_argument("--drill", action="append", default=[], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.offline:
        from aminet.model.weights import OFFLINE_ENV

        os.environ[OFFLINE_ENV] = "1"  # before Ray starts: the local workers inherit it
    args.explicit = explicit_flags(p, sys.argv[1:] if argv is None else argv)
    _split_data_roots(args)
    return args


def _split_data_roots(args: argparse.Namespace) -> None:
    """``--data-root`` values into the plain one (``args.data_root``: the space's benchmark) and the named
    ones (``args.data_roots``: benchmark -> path); each is its own identity flag."""
    plain, named = [], {}
    for value in args.data_root:
        name, sep, path = value.partition("=")
        if sep and name and name.replace("_", "").replace("-", "").isalnum():
            named[name] = path  # likewise the last NAME=PATH of a name
        else:
            plain.append(value)
    args.data_root = plain[-1] if plain else None  # the last plain one wins, as with any repeated option
    args.data_roots = named
    if "data_root" in args.explicit:
        args.explicit.discard("data_root")
        if plain:
            args.explicit.add("data_root")
        if named:
            args.explicit.add("data_roots")


IDENTITY = {
    "data_root": "--data-root",
    "data_roots": "--data-root NAME=PATH",
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
    "scheduler": "--scheduler",
    "time_budget": "--time-budget",
    "replay": "--replay",
    "replay_model": "--replay-model",
    "transfer_from": "--transfer-from",
    "transfer_method": "--transfer-method",
}


def explicit_flags(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The destinations of the options given on the command line (not left at their defaults)."""
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    return {action.dest for action in parser._actions if given & set(action.option_strings)}


def _norm_path(value: str | None) -> str | None:
    return None if value is None else str(Path(value).expanduser().resolve())


def identity(args: argparse.Namespace) -> dict[str, Any]:
    """The identity flags, normalised (absolute paths and SQLite URIs)."""
    from tracking.reporting import absolute_tracking_uri

    out = {k: getattr(args, k) for k in IDENTITY}
    for k in ("data_root", "sysu_root", "regdb_root", "replay"):
        out[k] = _norm_path(out[k])
    out["mlflow_uri"] = absolute_tracking_uri(out["mlflow_uri"]) if out["mlflow_uri"] else None
    out["overrides"] = list(out["overrides"])
    out["data_roots"] = {k: _norm_path(v) for k, v in sorted((out["data_roots"] or {}).items())}
    out["transfer_from"] = [
        v if "/" not in v and not Path(v).exists() else _norm_path(v) for v in out["transfer_from"] or []
    ]
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
        if key in saved:  # a search saved before a flag existed keeps that flag's default
            setattr(args, key, saved[key])


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


def plan_search(args: argparse.Namespace) -> Plan:
    """The search's context from its command line: each step below checks its flags (``UsageError``, one
    line) in this order, before anything is built or written."""
    from search.spaces import SpaceError, get_space
    from tracking.reporting import check_tracking_uri

    try:
        space = get_space(args.space)
    except SpaceError as exc:
        raise UsageError(str(exc)) from None
    _check_search_flags(args)
    if args.sampler == "pibo" and not args.transfer_from:  # before anything is generated or written
        _check_priors(space)
    storage, name, experiment_path, state_dir, saved_state = _locate(args, space)
    check_address(args.address)  # before anything is built or written
    try:
        check_tracking_uri(args.mlflow_uri)
    except ConnectionError as exc:
        raise UsageError(str(exc)) from None
    roots = _data_roots(args, space)
    synthetic_run = roots[space.dataset] is None
    quick = args.budget == "quick" or (args.budget == "auto" and synthetic_run)
    if args.top_k is None:
        args.top_k = 2 if quick else 3
    if args.reseeds is None:
        args.reseeds = 1 if quick else 2
    _check_resource_flags(args)
    base = _base_config(args, space, quick, roots, synthetic_run)
    space = _transfer(args, space, base, storage)
    if args.sampler == "pibo":
        _check_priors(space)
    drill = _drill(args)
    if saved_state is not None and saved_state.space_params is not None:
        check_same_space(saved_state.space_params, space, name)
    if saved_state is not None and saved_state.base_config is not None:
        check_same_base(saved_state.base_config, base, name)
    replay = check_replay(args, space, base) if args.replay else None
    budget = _budget(args, space, base, quick)
    if saved_state is not None and saved_state.budget is not None:
        check_same_budget(saved_state.budget, budget, space, name)
    return Plan(
        space=space,
        base=base,
        budget=budget,
        quick=quick,
        name=name,
        storage=storage,
        experiment_path=experiment_path,
        state_dir=state_dir,
        roots=roots,
        settings=_settings(args),
        saved_state=saved_state,
        replay=replay,
        replay_time_scale=float(args.replay_time_scale),
        replay_model=args.replay_model,
        drill=drill,
    )


def _check_search_flags(args: argparse.Namespace) -> None:
    refusal = asha_refusal(args.sampler, args.scheduler)  # search/samplers.py says which and why
    if refusal:
        raise UsageError(refusal)
    if args.time_budget is not None and not (math.isfinite(args.time_budget) and args.time_budget > 0):
        raise UsageError(f"--time-budget must be > 0 seconds (a finite number), got {args.time_budget:g}")
    if args.top_k is not None and args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    if args.reseeds is not None and args.reseeds < 0:
        raise UsageError(f"--reseeds must be >= 0, got {args.reseeds}")


def _check_priors(space) -> None:
    if not any(p.prior is not None for p in space.params):
        raise UsageError(
            f"--sampler pibo: {space.path} gives no parameter a prior (prior: {{centre: ..., strength: ...}}; "
            f"search/spaces.py) and no --transfer-method prior makes one; use --sampler tpe, or add priors"
        )


def _transfer(args: argparse.Namespace, space, base, storage: str):
    """The space with what ``--transfer-from`` brings (``search/transfer.py``), or ``space`` itself."""
    if not args.transfer_from:
        if args.transfer_method is not None:
            raise UsageError("--transfer-method: give the earlier searches or tables with --transfer-from")
        return space
    from search.transfer import TransferError, apply, load_source

    method = args.transfer_method or DEFAULT_TRANSFER
    if method == "prior" and args.sampler != "pibo":
        if "sampler" in getattr(args, "explicit", set()) or args.transfer_method:
            raise UsageError(
                f"--transfer-method prior: the transferred prior is followed by --sampler pibo only (not "
                f"{args.sampler}); use --sampler pibo, or --transfer-method box, warm or box+warm"
            )
        args.sampler = "pibo"  # the default transfer: the sources' best as the prior of the prior-guided TPE
    try:
        sources = [load_source(spec, None if _is_uri(storage) else storage) for spec in args.transfer_from]
        return apply(space, base, sources, method)
    except TransferError as exc:
        raise UsageError(str(exc)) from None


def _locate(args: argparse.Namespace, space) -> tuple[str, str, str, Path, dict | None]:
    """Where the search is recorded (storage, name, Ray experiment path, state folder) and its saved state
    when it exists; a resume adopts the saved identity flags and refuses different ones."""
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
    try:
        saved_state = SearchState.read(state_dir / STATE_FILE) if existing else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if saved_state is not None:
        if saved_state.space != space.name:
            raise UsageError(
                f"--name {name}: that search used --space {saved_state.space}; a resumed search keeps its space"
            )
        if saved_state.args:
            adopt_saved_identity(args, saved_state.args, name)
    return storage, name, experiment_path, state_dir, saved_state


def _data_roots(args: argparse.Namespace, space) -> dict[str, Path | None]:
    """Every registered benchmark's root from ``--data-root [NAME=]PATH``, ``--sysu-root`` and ``--regdb-root``
    (None where none is given); two flags naming different folders for one benchmark are refused."""
    from aminet.data import registry

    roots: dict[str, Path | None] = dict.fromkeys(registry.names())
    given: dict[str, tuple[str, Path]] = {}

    def put(name: str, path: str | None, flag: str) -> None:
        folder = _abs_dir(path, flag)
        if folder is None:
            return
        if name in given and given[name][1] != folder:
            raise UsageError(f"{given[name][0]} and {flag} name different folders for {name}")
        given[name] = (flag, folder)
        roots[name] = folder

    put("sysu", args.sysu_root, "--sysu-root")
    put("regdb", args.regdb_root, "--regdb-root")
    for name, path in (getattr(args, "data_roots", None) or {}).items():
        if name not in roots:
            raise UsageError(f"--data-root {name}={path}: {name!r} is not a registered benchmark ({', '.join(roots)})")
        put(name, path, f"--data-root {name}=")
    put(space.dataset, args.data_root, "--data-root")
    return roots


def _check_resource_flags(args: argparse.Namespace) -> None:
    if args.num_samples is not None and args.num_samples < 1:
        raise UsageError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise UsageError(f"--max-concurrent must be >= 1, got {args.max_concurrent}")
    for flag, value in (("--gpus-per-trial", args.gpus_per_trial), ("--cpus-per-trial", args.cpus_per_trial)):
        if value is not None and not math.isfinite(value):
            raise UsageError(f"{flag} must be a finite number, got {value}")
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


def _base_config(args: argparse.Namespace, space, quick: bool, roots: dict, synthetic_run: bool) -> Config:
    """The base config every trial starts from; fills ``roots`` with the synthetic benchmarks a run uses."""
    from aminet.config import ConfigError
    from aminet.data import synthetic

    overrides = list(args.overrides)
    if roots[space.dataset] is not None:
        overrides.append(f"data.root={roots[space.dataset]}")
    try:
        base = space.base(quick=quick, overrides=overrides)
    except ConfigError as exc:
        raise UsageError(f"--set: {exc}") from None
    if base.data.root is None:  # the synthetic benchmark, generated once, passed to trials as an absolute path
        base = base.replace({"data.root": str(synthetic.ensure_default(space.dataset, quiet=False))})
    for d in roots:
        if roots[d] is None and (synthetic_run or d == space.dataset):
            roots[d] = Path(base.data.root) if d == space.dataset else synthetic.ensure_default(d, quiet=False)
    if base.data.cache_dir is not None:
        base = base.replace({"data.cache_dir": str(Path(base.data.cache_dir).expanduser().resolve())})
    return base


def _drill(args: argparse.Namespace) -> Drill | None:
    from aminet.engine.drills import Drill, DrillError

    try:
        return Drill.parse(args.drill) if args.drill else None
    except DrillError as exc:
        raise UsageError(str(exc)) from None


def _budget(args: argparse.Namespace, space, base, quick: bool) -> Budget:
    """The space's budget at the base config's training length, with --grace-period and --num-samples."""
    budget = space.budget_for(quick)
    epochs = base.train.epochs
    grace = (
        args.grace_period
        if args.grace_period is not None
        else (budget.grace_period if epochs == budget.epochs else max(1, math.ceil(epochs / 4)))
    )
    if not 1 <= grace <= epochs:
        raise UsageError(f"--grace-period {grace}: must be in 1..{epochs} (train.epochs)")
    if args.scheduler == "asha":
        for why in space.first_rung_conflicts(base, epochs, grace):
            print(f"warning: the first ASHA rung is not neutral between schedules: {why}", file=sys.stderr)
    return type(budget)(
        epochs=epochs,
        eval_every=base.train.eval_every,
        grace_period=grace,
        num_samples=args.num_samples or budget.num_samples,
        reduction_factor=budget.reduction_factor,
    )


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(
        sampler=args.sampler,
        scheduler=args.scheduler,
        seed=args.seed,
        top_k=args.top_k,
        reseeds=args.reseeds,
        time_budget=args.time_budget,
        max_failures=args.max_failures,
        verbose=args.verbose,
        address=args.address,
        storage_flag=args.storage,
        space_flag=args.space,
        mlflow_uri=args.mlflow_uri,
        mlflow_experiment=args.mlflow_experiment,
        gpus_per_trial=args.gpus_per_trial,
        cpus_per_trial=args.cpus_per_trial,
        max_concurrent=args.max_concurrent,
        dashboard=args.dashboard,
        final_eval=not args.no_final_eval,
        register=not args.no_register,
        retrain_best=args.retrain_best,
        retrain_seeds=tuple(args.retrain_seeds),
        retrain_trials=tuple(args.retrain_trials),
        identity=identity(args),
    )


def _first_difference(saved: dict, now: dict, keys) -> tuple[str, str] | None:
    """The first of ``keys`` whose value differs between ``saved`` and ``now``, and a note naming up to three
    more ("" when it is the only one); None when nothing differs."""
    differ = [k for k in keys if saved.get(k) != now.get(k)]
    if not differ:
        return None
    more = ""
    if len(differ) > 1:
        more = f", and {len(differ) - 1} more ({', '.join(differ[1:4])}{', ...' if len(differ) > 4 else ''})"
    return differ[0], more


def check_same_space(saved: dict[str, str], space, name: str) -> None:
    """A resumed search samples what it started with: refuse (one line naming the parameter) a space file
    whose parameters changed (a range, a choice, a condition, a name)."""
    now = space.signature()
    found = _first_difference(saved, now, [*saved, *(k for k in now if k not in saved)])
    if found:
        k, more = found
        raise UsageError(
            f"--resume {name}: the space's parameters differ from the saved search's ({k}: "
            f"{saved.get(k, 'absent')!r} saved, {now.get(k, 'absent')!r} now{more}); a resumed search keeps its "
            f"space: restore {space.path} or start a new --name"
        )


def check_same_budget(saved: dict, budget, space, name: str) -> None:
    """A resumed search runs the budget it started with: refuse (one line naming the field and the space file)
    a budget that changed since (the space file's trial count edited): Ray restores the saved number of trials
    and would never reach the new one, so every resume would end as if interrupted."""
    now = vars(budget)
    found = _first_difference(saved, now, [k for k in now if k in saved])
    if found:
        k, more = found
        raise UsageError(
            f"--resume {name}: the budget differs from the saved search's ({k}: {saved.get(k)!r} saved, "
            f"{now.get(k)!r} now{more}); a resumed search keeps its budget: restore {space.path} or start a new --name"
        )


def resume_command(plan: Plan) -> str:
    """The command that resumes ``plan``, as the user started it (``aminet-search``, ``python -m search.run`` or
    ``python <path>/run.py``) and with the space as they gave it (a name or a file's path)."""
    st = plan.settings
    cmd = f"{invoked_as('search.run', 'python search/run.py')} --space {st.space_flag} --name {plan.name} --resume"
    return cmd + (f" --storage {st.storage_flag}" if st.storage_flag else "")


def check_same_base(saved_yaml: str, base, name: str) -> None:
    """A resumed search trains what it started with: refuse (one line naming the fields) a base config that
    differs from the saved one (an edited experiment YAML, a changed default, another data folder)."""
    from aminet.config import Config

    saved, now = Config.from_yaml(saved_yaml, source=f"{name}/{STATE_FILE}").flat(), base.flat()
    found = _first_difference(saved, now, sorted(set(saved) | set(now)))
    if found:
        k, more = found
        raise UsageError(
            f"--resume {name}: the base config differs from the saved search's ({k}: {saved.get(k)!r} saved, "
            f"{now.get(k)!r} now{more}); a resumed search keeps its base config: restore it or start a new --name"
        )


def check_replay(args: argparse.Namespace, space, base) -> Path:
    """The --replay table folder, checked against the search: same space, same epochs and evaluation schedule
    reachable (the table evaluates every epoch), same base config apart from the evaluation interval."""
    from search.blackbox import Table, TableError

    if args.retrain_best:
        raise UsageError("--retrain-best trains real models; a --replay search has none to re-train")
    folder = Path(args.replay).expanduser().resolve()
    try:
        table = Table.load(folder)
    except TableError as exc:
        raise UsageError(f"--replay: {exc}") from None
    if args.replay_time_scale < 0:
        raise UsageError(f"--replay-time-scale must be >= 0, got {args.replay_time_scale:g}")
    if args.replay_model == "forest" and len(table.config_ids()) < 2:
        raise UsageError(f"--replay-model forest: {folder} holds fewer than 2 configurations to fit a surrogate to")
    if table.meta["space"] != space.name:
        raise UsageError(f"--replay {folder}: a table of space {table.meta['space']!r}, not {space.name!r}")
    try:
        table.check_names(space)
    except TableError as exc:
        raise UsageError(f"--replay: {exc}") from None
    if int(table.meta["budget"]["epochs"]) != base.train.epochs:
        raise UsageError(
            f"--replay {folder}: the table holds {table.meta['budget']['epochs']}-epoch runs; this search trains "
            f"{base.train.epochs} epochs (use the table's budget: --budget quick)"
        )
    return folder


def storage_need(plan: Plan, concurrent: int) -> tuple[int, str]:
    """(bytes, how they were counted) the search's checkpoints need under ``--storage`` at most: one kept per
    trial that trains to the full budget (all of them without early stopping; under ASHA at most the share
    that passes the first rung, as stopped trials' checkpoints are dropped), one more per running trial while
    it saves, and the re-seeded runs'."""
    from aminet.engine.checkpoint import checkpoint_bytes

    b, st = plan.budget, plan.settings
    one = checkpoint_bytes(plan.base)
    kept = b.num_samples if st.scheduler == "none" else math.ceil(b.num_samples / b.reduction_factor)
    reseeded = st.top_k * st.reseeds
    n = kept + concurrent + reseeded
    return n * one + (64 << 20), (
        f"{n} checkpoints of {one / 2**20:.0f} MiB: {kept} kept trials + {concurrent} saving + {reseeded} re-seeded"
    )


def check_storage(plan: Plan) -> None:
    """``--storage`` is writable and has room for the search's checkpoints (``storage_need``), checked before
    Ray starts: a read-only folder was an ``OSError`` traceback after Ray started, a full disk minutes of
    retries and thousands of lines. A remote store (``s3://``...) is left to Ray."""
    import shutil
    import tempfile

    if _is_uri(plan.storage):
        return
    storage = Path(plan.storage)
    created = not storage.exists()  # a refused search leaves no folder of its own behind
    try:
        storage.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=storage, prefix=".aminet-write-test-"):
            pass
    except OSError as exc:
        raise UsageError(f"--storage {storage}: cannot write there ({exc.strerror or exc})") from None
    import os

    # Ray has not started: the trials running at once are --max-concurrent or, at most, one per local core
    concurrent = plan.settings.max_concurrent or min(plan.budget.num_samples, os.cpu_count() or 1)
    need, how = storage_need(plan, concurrent)
    if plan.resume:  # what the search already wrote there counts towards its need
        done = sum(f.stat().st_size for f in Path(plan.experiment_path).rglob("*") if f.is_file())
        need, how = max(0, need - done), how + f", less {done / 2**20:.0f} MiB already written"
    free = shutil.disk_usage(storage).free
    if free < need:
        if created:
            storage.rmdir()
        raise UsageError(
            f"--storage {storage}: {free / 2**20:.0f} MiB free, the search needs about {need / 2**20:.0f} MiB "
            f"({how}); free space there or give another --storage"
        )


def preflight(plan: Plan) -> Plan:
    """Readable layout, splits, weights and a built image cache; returns the plan with its ``fingerprint`` (a
    digest of the data folder's content: file names and sizes, split lists and images by their bytes; the
    same on every machine and in the model registry)."""
    from aminet.data.cache import ImageCache, dataset_fingerprint
    from aminet.preflight import check_inputs

    replayed = plan.backend.replay_fingerprint(plan)  # a replay reads no data: the table's digest stands for it
    if replayed is not None:
        return replayed
    check_storage(plan)  # before the image cache or anything else is written
    root = check_inputs(plan.base)
    if plan.settings.final_eval:  # the test protocols the end of the search reads, read now
        from aminet.preflight import check_test_protocols

        check_test_protocols(plan.given_roots, {"sysu": plan.base.eval.sysu_modes})
    ImageCache.open(root, plan.base.data.height, plan.base.data.width, plan.base.data.cache_dir, progress=True)
    fingerprint = dataset_fingerprint(root, plan.base.data.cache_dir)
    saved = plan.saved_state.fingerprint if plan.saved_state is not None else None
    if saved is not None and saved != fingerprint:
        raise UsageError(
            f"--resume {plan.name}: the data folder {root} is not the data the search started on (content "
            f"fingerprint {saved} saved, {fingerprint} now); a resumed search keeps its data"
        )
    return replace(plan, fingerprint=fingerprint)
