#!/usr/bin/env python
"""Fixed-config training runs for reporting, logged to MLflow.

    python experiments/run.py CONFIG [--data-root DIR] [--seeds 0 1 2] [--set key=value ...]
                                     [--preset M4 ...] [--mlflow-uri URI] [--experiment NAME]

CONFIG is a YAML file with the config sections (data, model, loss, optim, train, eval) and optional
keys: ``extends`` (a base YAML, relative to this file), ``presets`` (ablation rows, see
``aminet.presets``), ``sweep`` (a list of ``{dotted.key: value, label: name}`` points, each its own
configuration: the loss-weight grid, the upper-body sweep) and ``name``.

For every configuration: one MLflow parent run (the whole resolved config as params, the config YAML,
the per-trial results, the summary over seeds in the paper's layout) and one child run per seed (and
per RegDB trial: the protocol trains one model per trial) with per-epoch metrics, the final test
metrics, the model weights, and plots (CMC, t-SNE of visible vs infrared embeddings, intra/inter-class
distance histograms). Test numbers are those of the final epoch, averaged over the protocol's trials,
then mean +- std over seeds; nothing is selected on the test set.

Everything is checked before the first MLflow run starts: a bad config, data root, layout or weights
file exits with a one-line message and leaves no run behind.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from aminet.cli import ArgumentParser, UsageError, invoked_as
from aminet.config import Config, ConfigError, apply_overrides, read_yaml_tree, set_dotted
from aminet.engine.drills import Drill, DrillError
from aminet.preflight import check_inputs
from aminet.presets import preset_overrides
from tracking.reporting import check_tracking_uri

RESERVED = ("extends", "presets", "sweep", "name")


# ------------------------------------------------------------------------------------------------
# Experiment files
# ------------------------------------------------------------------------------------------------


def load_experiment(path: str | Path, overrides: list[str], presets: list[str]) -> list[tuple[str, Config]]:
    path = Path(path).resolve()
    raw = read_yaml_tree(path)
    name = str(raw.pop("name", path.stem))
    file_presets = raw.pop("presets", []) or []
    if not isinstance(file_presets, list):
        raise UsageError(f"{path}: 'presets' must be a list of preset names")
    sweep = raw.pop("sweep", None) or [{}]
    if not isinstance(sweep, list) or not all(isinstance(p, dict) for p in sweep):
        raise UsageError(f"{path}: 'sweep' must be a list of mappings of dotted keys to values")
    out = []
    for i, point in enumerate(sweep):
        point = dict(point)
        label = str(point.pop("label", f"{name}-{i}" if len(sweep) > 1 else name))
        d = copy.deepcopy(raw)
        try:
            for key, value in preset_overrides(file_presets + presets).items():
                set_dotted(d, key, value)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        for key, value in point.items():
            set_dotted(d, key, value)
        apply_overrides(d, overrides)
        try:
            cfg = Config.from_dict(d)
        except ConfigError as exc:
            raise UsageError(f"{path}{f' (sweep point {label})' if len(sweep) > 1 else ''}: {exc}") from None
        out.append((label, cfg))
    return out


# ------------------------------------------------------------------------------------------------
# Checks before anything is written
# ------------------------------------------------------------------------------------------------


def preflight(configs: list[tuple[str, Config]], trials: list[int], quiet: bool) -> None:
    from aminet.model.aminet import check_weights

    for _, cfg in configs:  # cheap checks first: a bad weights path fails before any data is generated
        check_weights(cfg.model.arch, cfg.model.weights)
    for _, cfg in configs:
        check_inputs(cfg, regdb_trials=trials, quiet=quiet)


# ------------------------------------------------------------------------------------------------
# MLflow
# ------------------------------------------------------------------------------------------------


def log_child_artifacts(result, cfg: Config, prefix: str) -> dict[str, float]:
    """Final metrics, tables, weights and plots of one trained model, on the active run."""
    import matplotlib.pyplot as plt
    import mlflow
    import torch

    from aminet.evaluation.protocol import extract_features, metrics_from_frame
    from tracking.reporting import cmc_figure, distance_figure, distance_gap, tsne_figure

    frame = result.frame
    final = metrics_from_frame(frame, cfg)
    mlflow.log_metrics({f"{prefix}{k}": v for k, v in final.items()})
    mlflow.log_text(frame.drop(columns=["cmc"]).to_csv(index=False), "results/per_trial.csv")
    mlflow.log_text(cfg.to_yaml(), "config.yaml")
    weights = Path(result.checkpoint) / "model.pt" if result.checkpoint else None
    if weights is not None:
        torch.save(result.model.state_dict(), weights)
        mlflow.log_artifact(str(weights), "checkpoint")
        mlflow.log_artifact(str(Path(result.checkpoint) / "config.yaml"), "checkpoint")
    fig = cmc_figure(frame, cfg.eval.feature)
    mlflow.log_figure(fig, "plots/cmc.png")
    plt.close(fig)
    probe = result.evalset.probes[0]
    device = next(result.model.parameters()).device
    q = (
        extract_features(result.model, result.cache.load(probe.query.paths), probe.query_modality, device=device)[
            cfg.eval.feature
        ]
        .cpu()
        .numpy()
    )
    g = (
        extract_features(result.model, result.cache.load(probe.gallery.paths), probe.gallery_modality, device=device)[
            cfg.eval.feature
        ]
        .cpu()
        .numpy()
    )
    gap = distance_gap(q, probe.query.pids, g, probe.gallery.pids)
    mlflow.log_metric(f"{prefix}distance_gap", gap["gap"])
    fig = distance_figure(gap)
    mlflow.log_figure(fig, "plots/distances.png")
    plt.close(fig)
    vis, vis_p = (g, probe.gallery.pids) if probe.gallery_modality == "visible" else (q, probe.query.pids)
    ir, ir_p = (q, probe.query.pids) if probe.query_modality == "infrared" else (g, probe.gallery.pids)
    fig = tsne_figure(vis, vis_p, ir, ir_p, seed=cfg.train.seed)
    mlflow.log_figure(fig, "plots/tsne.png")
    plt.close(fig)
    return final


def run_unit(
    label: str,
    cfg: Config,
    seed: int,
    trial: int | None,
    exp_id: str,
    run_root: Path,
    quiet: bool,
    tags: dict[str, str],
    parent_run_id: str | None = None,
    drill: Drill | None = None,
) -> pd.DataFrame:
    """One trained model (a seed, and a RegDB trial), as an MLflow child run of the active run or of
    ``parent_run_id``: per-epoch metrics, final test metrics, weights, plots. Returns its per-trial frame."""
    import mlflow

    from aminet.engine.trainer import device_summary, train
    from tracking.reporting import MLflowReporter, flatten_config

    prefix = "test/" if cfg.data.purpose == "final" else "val/"
    over = {"train.seed": seed} | ({"data.regdb_trial": trial} if trial is not None else {})
    c = cfg.replace(over)
    name = f"{label}-seed{seed}" + (f"-trial{trial}" if trial is not None else "")
    with mlflow.start_run(
        experiment_id=exp_id,
        run_name=name,
        nested=parent_run_id is None,
        parent_run_id=parent_run_id,
        tags={
            **tags,
            "aminet.role": "model",
            "aminet.label": label,
            "aminet.seed": str(seed),
            "aminet.trial": str(trial or "-"),
        },
    ):
        mlflow.log_params(flatten_config(c.flat()))
        mlflow.set_tag("aminet.device", device_summary(c))  # before training: a CPU fallback shows at once
        if not quiet:
            print(f"\n=== {name} ===", file=sys.stderr, flush=True)
        result = train(c, MLflowReporter(prefix), run_dir=run_root / name, quiet=quiet, drill=drill)
        mlflow.set_tag("aminet.dataset_fingerprint", result.cache.folder.name)
        result.frame = result.frame.assign(seed=seed, label=label)
        log_child_artifacts(result, c, prefix)
    return result.frame


@dataclass(frozen=True)
class RetrainUnit:
    """One model of a fixed configuration trained as a function call (the search's ``--retrain-best`` hands one
    to each Ray task): the config file, seed, trial (None: not a per-trial benchmark), the MLflow experiment, the
    checkpoints folder, the summary run it is a child of, and extra tags."""

    dataset: str
    config_file: str
    seed: int
    trial: int | None
    experiment: str
    run_dir: str
    parent_run_id: str
    tags: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.dataset} seed {self.seed}" + (f" trial {self.trial}" if self.trial is not None else "")


def train_model(unit: RetrainUnit, uri: str) -> pd.DataFrame:
    """Train and test one model of ``unit`` as a child of its summary run in the MLflow store ``uri``; returns its
    per-trial frame (what ``run_unit`` returns). What ``main`` does for one seed (and trial) with
    ``--parent-run-id``, as a function: the caller takes the results as returned."""
    import mlflow

    from tracking.reporting import mlflow_store

    ((label, cfg),) = load_experiment(unit.config_file, [], [])
    check_inputs(cfg, regdb_trials=[unit.trial] if unit.trial is not None else None, quiet=True)
    uri, exp_id = mlflow_store(uri, unit.experiment)
    mlflow.set_tracking_uri(uri)
    tags = run_tags(unit.config_file, [], "search/run.py --retrain-best", unit.tags)
    return run_unit(label, cfg, unit.seed, unit.trial, exp_id, Path(unit.run_dir), True, tags, unit.parent_run_id)


def run_tags(config_file: str, presets: list[str], source: str, extra: dict[str, str]) -> dict[str, str]:
    """The tags of every run a fixed-config run writes: the config file, the commit, the presets, where it was
    started from (``source``), and the caller's own tags."""
    from tracking.reporting import git_commit, source_tags

    return {
        "aminet.config_file": str(Path(config_file).resolve()),
        "aminet.git_commit": git_commit(),
        "aminet.presets": " ".join(presets),
        **source_tags(source),
        **extra,
    }


def units(cfg: Config, seeds: list[int], trials: list[int]) -> list[tuple[int, int | None]]:
    """The models of a configuration: one per seed, and per trial on a benchmark whose protocol trains one model
    per trial (RegDB)."""
    from aminet.data import registry

    per_trial = registry.get(cfg.data.dataset).model_per_trial
    return [(s, t) for s in seeds for t in (trials if per_trial else [None])]


def run_configuration(
    label: str,
    cfg: Config,
    seeds: list[int],
    trials: list[int],
    exp_id: str,
    run_root: Path,
    quiet: bool,
    tags: dict[str, str],
    drill: Drill | None = None,
) -> pd.DataFrame:
    """A summary run with one child run per model (``run_unit``), then the mean +- std over seeds."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from tracking.reporting import log_seed_summary, log_summary_inputs

    with mlflow.start_run(
        experiment_id=exp_id, run_name=label, tags={**tags, "aminet.role": "summary", "aminet.label": label}
    ) as parent:
        client = MlflowClient()  # the tracking URI mlflow.start_run uses
        log_summary_inputs(client, parent.info.run_id, cfg, seeds, trials)
        frames = [
            run_unit(label, cfg, s, t, exp_id, run_root, quiet, tags, drill=drill) for s, t in units(cfg, seeds, trials)
        ]
        per_trial = pd.concat(frames, ignore_index=True)
        log_seed_summary(client, parent.info.run_id, per_trial, cfg)
    return per_trial


def _inputs(args: argparse.Namespace) -> tuple[Drill | None, list, list[int], dict[str, str]]:
    """The command line checked (``UsageError``, one line) and the configurations loaded and preflighted,
    before anything is generated, cached or trained: (drill, [(label, config)], seeds, extra tags)."""
    drill = Drill.parse(args.drill) if args.drill else None
    overrides = list(args.overrides)
    if args.data_root is not None:
        root = Path(args.data_root).expanduser().resolve()
        if not root.is_dir():
            raise UsageError(f"--data-root: folder not found: {root}")
        overrides.append(f"data.root={root}")
    if any(s < 0 for s in args.seeds or []):
        raise UsageError(f"--seeds: seeds must be >= 0, got {args.seeds}")
    bad = [t for t in args.trials if not 1 <= t <= 10]
    if bad:
        raise UsageError(f"--trials: RegDB trials are 1..10, got {bad}")
    extra_tags = {}
    for item in args.tag:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--tag {item!r}: expected KEY=VALUE")
        extra_tags[key.strip()] = value
    try:
        check_tracking_uri(args.mlflow_uri)
    except ConnectionError as exc:
        raise UsageError(str(exc)) from None
    configs = load_experiment(args.config, overrides, args.preset)
    seeds = args.seeds if args.seeds is not None else [configs[0][1].train.seed]
    if args.parent_run_id is not None and len(configs) != 1:
        raise UsageError(f"--parent-run-id: {args.config} has {len(configs)} configurations; give one")
    preflight(configs, args.trials, args.quiet)
    return drill, configs, seeds, extra_tags


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog=invoked_as("experiments.run", "python experiments/run.py"),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="experiment YAML (e.g. experiments/smoke.yaml)")
    parser.add_argument(
        "--data-root",
        default=None,
        help="dataset root in the official layout (default: the config's data.root, else the synthetic benchmark)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: the config's train.seed)")
    parser.add_argument(
        "--trials", type=int, nargs="+", default=list(range(1, 11)), help="RegDB trials, one model each (default 1..10)"
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable"
    )
    parser.add_argument("--preset", action="append", default=[], help="ablation preset (M0..M4, pesam_on/off)")
    parser.add_argument("--mlflow-uri", default=None, help="tracking URI (default: sqlite:///<cwd>/mlruns/mlflow.db)")
    parser.add_argument("--experiment", default=None, help="MLflow experiment name (default: the config's name)")
    parser.add_argument("--run-dir", default=None, help="checkpoints folder (default: <cwd>/runs/<experiment>)")
    parser.add_argument("--fresh", action="store_true", help="discard earlier checkpoints instead of resuming")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument(
        "--offline", action="store_true", help="never download (AMINET_OFFLINE=1): missing ImageNet weights are refused"
    )
    parser.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra MLflow tag on every run (e.g. the search parent run), repeatable",
    )
    parser.add_argument(
        "--parent-run-id",
        default=None,
        metavar="RUN_ID",
        help="log each model as a child of this existing run and write no summary run (the caller, e.g. the "
        "search's --retrain-best, trains the models as separate tasks and summarises them)",
    )
    # fault drills for tests (aminet/engine/drills.py), handed to the engine explicitly
    parser.add_argument("--drill", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.offline:
        from aminet.model.weights import OFFLINE_ENV

        os.environ[OFFLINE_ENV] = "1"

    try:
        drill, configs, seeds, extra_tags = _inputs(args)
    except (UsageError, ConfigError, DrillError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    experiment = args.experiment or Path(args.config).stem

    from tracking.reporting import paper_table, seed_summary

    run_root = Path(args.run_dir).resolve() if args.run_dir else (Path.cwd() / "runs" / experiment).resolve()
    if args.fresh and run_root.exists():
        shutil.rmtree(run_root)
    import mlflow

    from tracking.reporting import mlflow_store

    uri, exp_id = mlflow_store(args.mlflow_uri, experiment)
    mlflow.set_tracking_uri(uri)  # the runs below use MLflow's fluent API
    tags = run_tags(args.config, args.preset, "experiments/run.py", extra_tags)
    results = []
    try:
        for label, cfg in configs:
            if args.parent_run_id is not None:
                for seed, trial in units(cfg, seeds, args.trials):
                    unit = run_unit(
                        label, cfg, seed, trial, exp_id, run_root, args.quiet, tags, args.parent_run_id, drill
                    )
                    results.append(unit)
            else:
                results.append(
                    run_configuration(label, cfg, seeds, args.trials, exp_id, run_root, args.quiet, tags, drill)
                )
    except KeyboardInterrupt:
        print(
            "interrupted: the MLflow runs are marked FAILED; re-run the same command to resume from the "
            "last checkpoints",
            file=sys.stderr,
        )
        return 130
    except Exception as exc:  # the MLflow runs were ended as FAILED by their context managers
        print(f"error: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    per_trial = pd.concat(results, ignore_index=True)
    summary = seed_summary(per_trial, configs[0][1].eval.feature)
    purpose = configs[0][1].data.purpose
    print(
        f"\n{'TEST' if purpose == 'final' else 'VALIDATION'} results, {configs[0][1].eval.feature} feature, "
        f"final epoch, mean +- std over seeds {seeds} (each seed: mean over the protocol's trials)"
    )
    print(paper_table(summary))
    print(f"\nMLflow: {uri} (experiment '{experiment}'); browse with: mlflow ui --backend-store-uri {uri}")
    return 0


def cli() -> None:
    """The console script (pyproject.toml's ``[project.scripts]``)."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
