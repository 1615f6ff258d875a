#!/usr/bin/env python
"""Tabulate a search space: train a fixed, space-filling set of its configurations once and keep, per
configuration and seed, the validation score after every epoch, the time of every epoch and the final test
metrics (``search/blackbox.py`` describes the table). Searches are then replayed on the table
(``benchmarks/search_study.py``).

    python benchmarks/tabulate_space.py --out benchmarks/tables/sysu-quick              # the shipped table
    nice -n 19 python benchmarks/tabulate_space.py --out ... --shard 0/2 &              # two processes, one core
    nice -n 19 python benchmarks/tabulate_space.py --out ... --shard 1/2 &              #   each, one shared table
    python benchmarks/tabulate_space.py --out benchmarks/tables/sysu-quick --only 17:0  # regenerate one row

An interrupted tabulation resumes where it stopped: rows already in ``rows.jsonl`` are skipped. The first
call writes ``meta.json`` (configurations, seeds, base config, budget, command, commit); a later call with
other settings is refused (one line). ``--only C:S`` trains that row again and prints it beside the stored
one without writing anything.

The budget is the space's quick budget (the synthetic benchmark's search: ResNet-18 at 64x32, 6 epochs) with
an evaluation on the validation identities after every epoch, so any ASHA rung can be replayed; the test
metrics (SYSU all + indoor search, 10 gallery trials of the test identities) are for the study's analysis
only.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from aminet.cli import ArgumentParser, UsageError  # noqa: E402
from search import blackbox  # noqa: E402


def git_commit() -> str:
    """The checkout's commit (``tracking.reporting.git_commit``), marked ``+dirty`` when tracked files differ from it:
    a row must say whether its code was a commit's."""
    from tracking.reporting import git_commit as head

    sha = head()
    try:
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return sha
    return sha + ("+dirty" if dirty and sha != "unknown" else "")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class EpochClock:
    """The engine's reporter: the time of every epoch (the engine's own figure) and of every evaluation."""

    def __init__(self) -> None:
        self.epoch_seconds: list[float] = []
        self.eval_seconds: list[float] = []
        self.val: list[dict[str, float]] = []
        self._t = 0.0

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epoch_seconds.append(round(float(metrics["epoch_seconds"]), 4))
        self._t = time.perf_counter()

    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir) -> None:
        self.eval_seconds.append(round(time.perf_counter() - self._t, 4))
        self.val.append({"epoch": epoch, **{k: round(float(metrics[k]), 6) for k in ("score", "R1", "mAP", "mINP")}})


def table_base(space, overrides: list[str], data_root: str | None):
    """The base config every row trains: the space's quick budget, evaluated after every epoch."""
    from aminet.data import synthetic

    over = ["train.eval_every=1", *overrides]
    if data_root:
        over.append(f"data.root={Path(data_root).resolve()}")
    base = space.base(quick=True, overrides=over)
    if base.data.root is None:
        base = base.replace({"data.root": str(synthetic.ensure_default(space.dataset))})
    return base


def unpinned_fields(base_yaml: str, base) -> list[str]:
    """The config fields a table's stored base YAML does not set: a resumed tabulation would take today's
    defaults for them, which may differ from the code that made the table's rows."""
    import yaml

    stored = yaml.safe_load(base_yaml) or {}
    return sorted(k for k in base.flat() if k.split(".", 1)[1] not in (stored.get(k.split(".", 1)[0]) or {}))


COMMIT_AT_START = None  # the code a tabulating process runs is the code of the commit it started at


def train_row(base, config: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train one (configuration, seed) and return its row."""
    import torch

    from aminet.engine.trainer import NonFiniteLossError, train
    from aminet.evaluation.protocol import metrics_from_frame
    from aminet.evaluation.trained import evaluate_benchmarks
    from trainables.params import SEED, apply_params

    cfg = apply_params(base, {**config["params"], SEED: seed})
    clock = EpochClock()
    t0 = time.perf_counter()
    diverged, test, test_seconds = None, None, 0.0
    try:
        res = train(cfg, clock, run_dir=None, resume=False, quiet=True)
    except NonFiniteLossError as exc:
        diverged, res = max(1, exc.epoch), None
    if res is not None:
        t1 = time.perf_counter()
        sysu = cfg.data.dataset == "sysu"
        settings = ("all", "indoor") if sysu else ("v2t", "t2v")
        frame = evaluate_benchmarks(  # SYSU: all + indoor, 10 gallery trials; RegDB: the row's trial, both ways
            res.model.eval(),
            cfg,
            {cfg.data.dataset: cfg.data.root},
            settings={cfg.data.dataset: settings},
            device=res.extra["device"],
        )
        test_seconds = time.perf_counter() - t1
        summary = metrics_from_frame(
            frame,
            cfg.replace({"eval.sysu_modes": list(settings)} if sysu else {"eval.regdb_directions": list(settings)}),
        )
        test = {f"{s}/{m}": round(summary[f"{s}/{m}"], 6) for s in settings for m in ("R1", "R10", "mAP", "mINP")}
    return {
        "config": config["config"],
        "seed": seed,
        "kind": config["kind"],
        "params": config["params"],
        "val": clock.val,
        "epoch_seconds": clock.epoch_seconds,
        "eval_seconds": clock.eval_seconds,
        "test": test,
        "test_seconds": round(test_seconds, 3),
        "diverged": diverged,
        "seconds": round(time.perf_counter() - t0, 3),
        "commit": COMMIT_AT_START or git_commit(),
        "host": f"{platform.node()} ({cpu_name()})",
        "torch_threads": torch.get_num_threads(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def parse_args(argv):
    p = ArgumentParser(prog="python benchmarks/tabulate_space.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="table folder (created; an existing one is resumed)")
    p.add_argument("--space", default="sysu", help="search space name or file (default sysu)")
    p.add_argument("--configs", type=int, default=150, help="configurations (default 150)")
    p.add_argument("--multi-seed", type=int, default=20, help="configurations trained with --seeds seeds (default 20)")
    p.add_argument("--seeds", type=int, default=3, help="seeds of the multi-seed configurations (default 3)")
    p.add_argument("--sobol-seed", type=int, default=0, help="scrambling seed of the Sobol sample (default 0)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override of the base config (a test's tiny table)",
    )
    p.add_argument("--data-root", default=None, help="dataset root (default: the synthetic benchmark)")
    p.add_argument("--shard", default="0/1", help="K/N: train every N-th job from the K-th (default 0/1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--limit", type=int, default=None, help="stop after this many new rows")
    p.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="C:S",
        help="train these rows again and print them beside the stored ones (writes nothing)",
    )
    return p.parse_args(argv)


def _resume(meta_file: Path, settings: dict, space, args) -> tuple:
    """A table that exists: its base config, configurations and seeds, refused (one line) when it was made
    with other settings, names parameters the space lacks or leaves a config field unset."""
    from aminet.config import Config

    meta = json.loads(meta_file.read_text())
    try:
        blackbox.check_names(meta, space, meta_file)
    except blackbox.TableError as exc:
        raise UsageError(str(exc)) from None
    base = Config.from_yaml(meta["base"], source=str(meta_file))
    differ = [k for k, v in settings.items() if meta["settings"].get(k) != v]
    if differ and args.only is None:
        raise UsageError(
            f"{meta_file}: this table was made with other settings ({', '.join(differ)}: "
            f"{ {k: meta['settings'].get(k) for k in differ} }); use another --out or the same settings"
        )
    unset = unpinned_fields(meta["base"], base)
    if unset:
        raise UsageError(
            f"{meta_file}: the table's base config has no value for {', '.join(unset)} (added to the config "
            f"after the table was made; today's default may train another model): add each to meta.json's "
            f"base with the value that reproduces the table's rows"
        )
    if args.data_root:
        base = base.replace({"data.root": str(Path(args.data_root).resolve())})
    elif not Path(base.data.root).is_dir():  # another machine: the default synthetic benchmark is deterministic
        from aminet.data import synthetic

        base = base.replace({"data.root": str(synthetic.ensure_default(space.dataset))})
    configs = meta["configs"]
    seed_map = {int(k): v for k, v in meta["seeds"].items()}
    return base, configs, seed_map


def _create(meta_file: Path, settings: dict, space, args, argv) -> tuple:
    """A new table: its design written to ``meta.json`` (atomically) before any row is trained."""
    from aminet.config import ConfigError

    out = meta_file.parent
    if args.only is not None:
        raise UsageError(f"--only: {out} is not a table (no {blackbox.META})")
    if args.configs < 1 or args.seeds < 1 or not 0 <= args.multi_seed <= args.configs:
        raise UsageError("--configs and --seeds must be >= 1 and --multi-seed in 0..--configs")
    try:
        base = table_base(space, args.overrides, args.data_root)
    except ConfigError as exc:
        raise UsageError(f"--set: {exc}") from None
    configs, seed_map = blackbox.design(space, base, args.configs, args.multi_seed, args.seeds, args.sobol_seed)
    meta = {
        "space": space.name,
        "space_sha256": hashlib.sha256(space.text().encode()).hexdigest(),
        "settings": settings,
        "budget": {
            "epochs": base.train.epochs,
            "eval_every": 1,
            "search_eval_every": space.budget_for(True).eval_every,
            "grace": space.budget_for(True).grace_period,
            "reduction_factor": space.budget_for(True).reduction_factor,
            "trials_quick": space.budget_for(True).num_samples,
            "trials_full": space.budget_for(False).num_samples,
        },
        "base": base.to_yaml(),
        "configs": configs,
        "seeds": {str(k): v for k, v in seed_map.items()},
        "command": "python benchmarks/tabulate_space.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out.mkdir(parents=True, exist_ok=True)
    blackbox.write_atomic(meta_file, json.dumps(meta, indent=1) + "\n")
    return base, configs, seed_map


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    global COMMIT_AT_START
    COMMIT_AT_START = git_commit()
    import torch

    from search.spaces import SpaceError, get_space
    from search.surrogate import primary_setting

    torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    try:
        shard, shards = (int(x) for x in args.shard.split("/"))
        if not 0 <= shard < shards:
            raise ValueError
    except ValueError:
        raise UsageError(f"--shard {args.shard!r}: expected K/N with 0 <= K < N") from None
    try:
        space = get_space(args.space)
    except SpaceError as exc:
        raise UsageError(str(exc)) from None

    settings = {  # what makes a table; a resumed table must be asked for with the same
        "space": space.name,
        "configs": args.configs,
        "multi_seed": args.multi_seed,
        "seeds": args.seeds,
        "sobol_seed": args.sobol_seed,
        "overrides": args.overrides,
    }
    meta_file = out / blackbox.META
    if meta_file.is_file():  # resume: the table's own settings
        base, configs, seed_map = _resume(meta_file, settings, space, args)
    else:
        base, configs, seed_map = _create(meta_file, settings, space, args, argv)

    by_id = {c["config"]: c for c in configs}
    if args.only is not None:
        stored = {(r["config"], r["seed"]): r for r in blackbox.read_rows(out / blackbox.ROWS)}
        for spec in args.only:
            try:
                c, s = (int(x) for x in spec.split(":"))
                config = by_id[c]
            except (ValueError, KeyError):
                raise UsageError(f"--only {spec!r}: expected CONFIG:SEED with a configuration of {meta_file}") from None
            row = train_row(base, config, s)
            old = stored.get((c, s))
            print(json.dumps({"regenerated": row, "stored": old}, indent=1, sort_keys=True))
            if old is not None:
                new_v = [v["score"] for v in row["val"]]
                old_v = [v["score"] for v in old["val"]]
                print(f"config {c} seed {s}: val score stored {old_v}, now {new_v}", file=sys.stderr)
        return 0

    jobs = blackbox.job_order(seed_map, args.multi_seed)[shard::shards]
    written = 0
    for c, s in jobs:
        if (c, s) in blackbox.done_jobs(out):
            continue
        if args.limit is not None and written >= args.limit:
            break
        row = train_row(base, by_id[c], s)
        blackbox.append_row(out, row)
        written += 1
        score = row["val"][-1]["score"] if row["val"] else float("nan")
        if row["test"]:
            first = f"{primary_setting(row['test'])}/R1"
            test = f"test {first} {100 * row['test'][first]:.2f}"
        else:
            test = f"diverged at {row['diverged']}"
        print(
            f"[tabulate {shard}/{shards}] config {c} seed {s}: val score {100 * score:.2f}, {test}, "
            f"{row['seconds']:.0f} s",
            flush=True,
        )
    total = len(blackbox.done_jobs(out))
    print(f"[tabulate {shard}/{shards}] {written} new rows; {total} of {sum(map(len, seed_map.values()))} in {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UsageError as exc:
        print(f"tabulate: error: {exc}", file=sys.stderr)
        sys.exit(2)
