"""After the search: the champion chosen among finished trials (re-seeded on the cluster), its test
evaluation on every benchmark whose data is given (Ray tasks), and the fixed-config re-training of ``--retrain-best``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from aminet.data import registry as benchmark_registry
from search.cluster import reseed_tuner
from search.context import Plan
from search.lineage import SearchRecord
from search.registry import register_champion

__all__ = ["select_champion", "final_evaluation", "retrain_best", "retrain_units"]

if TYPE_CHECKING:
    from experiments.run import RetrainUnit

FINAL_EXPERIMENT = "aminet-final"  # the MLflow experiment of --retrain-best's fixed-config runs


def select_champion(rec: SearchRecord, plan: Plan, results):
    """Finished trials only, the top k re-seeded on the cluster, the best mean over seeds. Returns the winner."""
    from search import champion
    from trainables.params import apply_params

    b = plan.budget
    top = champion.finished(results, b.epochs)
    if not top:
        raise RuntimeError(
            f"no trial trained to the full budget of {b.epochs} epochs without error or divergence: "
            f"nothing to select (see the trials above)"
        )
    top = top[: plan.settings.top_k]
    seeds = champion.reseed_seeds(plan.base.train.seed, plan.settings.reseeds)
    reseeded = []
    if seeds:
        reseeded = _reseed(rec, top, seeds, plan)
    cands = champion.candidates_from(top, plan.base.train.seed, reseeded, b.epochs)
    seed = plan.base.train.seed  # the search's seed, on which the candidates were ranked top-k
    winner = champion.choose(cands, seed if champion.SELECT_ON_FRESH_SEEDS else None)
    chosen_on = champion.selection_seeds(cands, seed if champion.SELECT_ON_FRESH_SEEDS else None)
    fresh = [s for s in champion.selection_seeds(cands, seed) if s != seed]  # none without re-seeds
    cfg = apply_params(plan.base, winner.params)
    (plan.state_dir / "best_config.yaml").write_text(cfg.to_yaml())  # what --retrain-best trains
    rec.record_selection(cfg, cands, winner, chosen_on, fresh)
    print(
        f"\nselected: trial {winner.trial_id}, val score {100 * winner.mean:.2f} +- {100 * winner.std:.2f} over "
        f"seeds {winner.seeds} (finished trials only; top {len(cands)} re-seeded, compared on seeds {chosen_on}); "
        f"{winner.params}"
    )
    return winner


def _reseed(rec: SearchRecord, top, seeds, plan: Plan):
    """The top finished trials' parameters trained again with each of ``seeds``, as Ray trials logged under the
    search's parent run. The stage is saved first, so that --resume re-seeds instead of searching again."""
    from search.tuning import ProgressLines, ResolvedParams, TrialRunLogger
    from trainables.params import OPTUNA_TRIAL

    b = plan.budget
    points = [{k: v for k, v in r.config.items() if k != OPTUNA_TRIAL} for r in top]
    rec.state.stage = "reseed"
    rec.save()
    print(
        f"\nre-seeding the top {len(points)} finished trial(s) with seeds {seeds} "
        f"({len(points) * len(seeds)} Ray trials)",
        file=sys.stderr,
        flush=True,
    )
    logger = TrialRunLogger(
        rec.uri,
        rec.exp_id,
        rec.parent_id,
        b.epochs,
        role="reseed",
        tags=rec.run_tags,
        inputs=rec.inputs,
        params_of=ResolvedParams(plan.base.to_yaml(), points),
    )
    grid = reseed_tuner(plan, [logger, ProgressLines(b.epochs)], points, seeds).fit()
    from search.tuning import INTERRUPTED

    if INTERRUPTED.is_set() or grid.num_terminated + grid.num_errors < len(points) * len(seeds):
        raise KeyboardInterrupt  # stopped (Ctrl-C) before every re-seed ended
    return list(grid)


def final_evaluation(rec: SearchRecord, plan: Plan, winner) -> str:
    """The winner's test evaluation, as the plan's backend gives it (``search/backends.py``)."""
    return plan.backend.evaluate(rec, plan, winner)


def test_evaluation(rec: SearchRecord, plan: Plan, winner) -> str:
    """The winner's seed models on the test protocols of every benchmark whose data is given (Ray tasks),
    logged and printed; the best seed model (on validation) registered under the guarded champion rule.
    Returns the printed text."""
    import pandas as pd

    from search import champion
    from tracking.reporting import paper_table, seed_summary

    models = [(seed, r) for seed, r in zip(winner.seeds, winner.results) if r is not None and r.checkpoint]
    if not models:
        raise RuntimeError("the selected configuration left no checkpoint")
    frames = champion.evaluate_on_cluster(
        [r.checkpoint for _, r in models], plan.given_roots, plan.resources, plan.settings.max_failures
    )
    from aminet.data.cache import dataset_fingerprint
    from aminet.data.synthetic import is_synthetic
    from tracking.reporting import dataset_input

    tests = [
        dataset_input(
            f"{d}-{'synthetic' if is_synthetic(root) else 'real'}-test",
            plan.fingerprint if Path(root) == Path(plan.base.data.root) else dataset_fingerprint(root),
            root,
            "test",
        )
        for d, root in plan.given_roots.items()
    ]
    frame = pd.concat([f.assign(seed=seed) for (seed, _), f in zip(models, frames)], ignore_index=True)
    feature = plan.base.eval.feature
    benchmarks = []
    for bench, g in frame.groupby("benchmark", sort=False):
        scope = str(g.scope.iloc[0])  # in-domain or cross-dataset: one per benchmark
        summary = seed_summary(g.drop(columns=["scope"]).assign(label=scope), feature)
        benchmarks.append((str(bench), scope, int(g.trial.nunique()), summary))
    table = "\n\n".join(paper_table(summary) for *_, summary in benchmarks)
    rec.record_test_evaluation(tests, frame, benchmarks, table)
    text = (
        f"\nTEST protocols of the selected configuration ({feature} feature; mean +- std over seeds "
        f"{[s for s, _ in models]}, each seed the mean over the protocol's trials; selected on validation ids "
        f"only):\n{table}"
    )
    print(text)
    if not plan.settings.register:
        rec.describe(plan, winner, table)
        return text
    best = winner.best_model()
    version, line, label = register_champion(rec.client, rec.parent_id, plan, winner, best, rec.uri, text)
    rec.record_registration(label)
    rec.describe(plan, winner, table, line)
    print("\n" + line)
    return text + "\n\n" + line


def replay_evaluation(rec: SearchRecord, plan: Plan, winner) -> str:
    """A replayed search's "test evaluation": the recorded test metrics of the table rows that answered the
    winner's seeds, or under ``--replay-model forest`` the surrogate's expected test metrics of its
    configuration (no model exists, so none is registered). Logged on the parent run as the real evaluation
    is, under ``test/sysu/<setting>/<metric>``, with the tag ``aminet.replay``."""
    import statistics
    from types import SimpleNamespace

    from search.blackbox import Table
    from search.replay import TEST_PREFIX

    table = Table.load(plan.replay)
    rows = []
    for seed, r in zip(winner.seeds, winner.results):
        m = (r.metrics or {}) if r is not None else {}
        if int(m.get("replay_config", 0)) == -1:  # the surrogate answered: its expected test metrics
            test = {k[len(TEST_PREFIX) :]: float(v) for k, v in m.items() if k.startswith(TEST_PREFIX)}
            rows.append(SimpleNamespace(config="forest", seed=int(m.get("replay_seed", seed)), test=test or None))
        elif "replay_config" in m:
            rows.append(table.row(int(m["replay_config"]), int(m.get("replay_seed", seed))))
    rows = [row for row in rows if row.test is not None]
    if not rows:
        raise RuntimeError("the selected configuration's table rows hold no test metrics")
    lines = [f"{'setting':8s} {'R1':>14s} {'mAP':>14s} {'mINP':>14s}"]
    figures: dict[str, float] = {}  # test/sysu/<setting>/<metric>[_std], fractions
    for setting in ("all", "indoor"):
        if not all(f"{setting}/R1" in row.test for row in rows):
            continue  # the surrogate predicts the primary setting only
        cells = []
        for metric in ("R1", "mAP", "mINP"):
            if not all(f"{setting}/{metric}" in row.test for row in rows):
                cells.append("-")
                continue
            values = [100 * float(row.test[f"{setting}/{metric}"]) for row in rows]
            mean = statistics.fmean(values)
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            figures[f"test/sysu/{setting}/{metric}"] = mean / 100
            figures[f"test/sysu/{setting}/{metric}_std"] = std / 100
            cells.append(f"{mean:6.2f} +- {std:5.2f}")
        lines.append(f"{setting:8s} " + " ".join(f"{c:>14s}" for c in cells))
    where = f"{plan.replay} (rows {[(row.config, row.seed) for row in rows]})"
    table_text = "\n".join(lines)
    rec.record_replay_test(figures, where, table_text)
    rec.describe(plan, winner, table_text)
    text = (
        f"\nREPLAYED test metrics of the selected configuration (SYSU-MM01 protocol as recorded in the table {where}; "
        f"mean +- std over its seeds; no model is registered in a replay):\n{table_text}"
    )
    print(text)
    return text


def retrain_units(plan: Plan, summaries: dict[str, str], search_parent: str) -> list[RetrainUnit]:
    """One model of ``--retrain-best`` per benchmark in ``summaries`` (dataset -> its summary run), per seed of
    ``--retrain-seeds`` and, on a benchmark that trains one model per trial (RegDB), per trial of
    ``--retrain-trials``. Each logs its model as a child of the benchmark's summary run."""
    from experiments.run import RetrainUnit

    out = []
    for dataset, parent in summaries.items():
        path = plan.state_dir / f"final_{dataset}.yaml"
        trials = plan.settings.retrain_trials if benchmark_registry.get(dataset).model_per_trial else [None]
        for seed in plan.settings.retrain_seeds:
            for trial in trials:
                out.append(
                    RetrainUnit(
                        dataset=dataset,
                        config_file=str(path),
                        seed=seed,
                        trial=trial,
                        experiment=FINAL_EXPERIMENT,
                        run_dir=str(plan.state_dir / "final_runs" / dataset),
                        parent_run_id=parent,
                        tags={"aminet.search_parent": search_parent, "aminet.search_name": plan.name},
                    )
                )
    return out


def retrain_best(plan: Plan, uri: str, parent_id: str) -> int:
    """Fixed-config final runs of the best config on both benchmarks: one summary run per benchmark, one
    Ray task per model (seed, and RegDB trial), in parallel where the tracking store allows, each model a
    child run of its benchmark's summary; then the mean +- std over seeds on each summary run."""
    import pandas as pd
    import yaml
    from mlflow.tracking import MlflowClient

    from aminet.config import Config
    from search import champion
    from tracking.reporting import (
        git_commit,
        is_local_store,
        log_seed_summary,
        log_summary_inputs,
        mlflow_store,
        paper_table,
        source_tags,
    )

    best = yaml.safe_load((plan.state_dir / "best_config.yaml").read_text())
    uri, exp_id = mlflow_store(uri, FINAL_EXPERIMENT)
    client = MlflowClient(uri)
    summaries: dict[str, str] = {}
    configs: dict[str, Config] = {}
    for dataset, root in plan.roots.items():
        if root is None:
            print(f"--retrain-best: no {dataset} root: skipped (pass --data-root {dataset}=PATH)", file=sys.stderr)
            continue
        raw = dict(best)
        raw["data"] = {**best["data"], "dataset": dataset, "purpose": "final", "root": str(root)}
        label = f"{plan.name}-best-{dataset}"
        (plan.state_dir / f"final_{dataset}.yaml").write_text(yaml.safe_dump({**raw, "name": label}, sort_keys=False))
        cfg = configs[dataset] = Config.from_dict(raw)
        run = client.create_run(
            exp_id,
            run_name=label,
            tags={
                "aminet.role": "summary",
                "aminet.label": label,
                "aminet.search_parent": parent_id,
                "aminet.search_name": plan.name,
                "aminet.git_commit": git_commit(),
                **source_tags("search/run.py --retrain-best"),
            },
        )
        summaries[dataset] = run.info.run_id
        log_summary_inputs(
            client, run.info.run_id, cfg, list(plan.settings.retrain_seeds), list(plan.settings.retrain_trials)
        )
    units = retrain_units(plan, summaries, parent_id)
    print(
        f"\n=== retrain best: {len(units)} model(s) as Ray tasks "
        f"({', '.join(f'{d}: {sum(1 for u in units if u.dataset == d)}' for d in summaries)})",
        flush=True,
    )
    # each task calls the fixed-config runner's function (experiments.run.train_model) and returns the model's
    # per-trial frame, or the one line its error left
    outcomes = champion.retrain_on_cluster(
        units, uri, plan.resources, plan.settings.max_failures, local_store=is_local_store(uri)
    )
    status = 0
    frames: dict[str, list] = {d: [] for d in summaries}
    failed: set[str] = set()
    for unit, outcome in zip(units, outcomes):
        if isinstance(outcome, str):
            print(f"error: retrain run failed: {unit.describe()}: {outcome}", file=sys.stderr)
            status = 1
            failed.add(unit.dataset)
        else:
            frames[unit.dataset].append(outcome)
    for dataset, run_id in summaries.items():
        if dataset in failed:
            client.set_terminated(run_id, "FAILED")
            continue
        per_trial = pd.concat(frames[dataset], ignore_index=True)
        summary = log_seed_summary(client, run_id, per_trial, configs[dataset])
        client.set_terminated(run_id, "FINISHED")
        print(
            f"\nTEST results of the retrained best config on {dataset} ({configs[dataset].eval.feature} feature, "
            f"final epoch, mean +- std over seeds {list(plan.settings.retrain_seeds)}; each seed the mean over the protocol's "
            f"trials):\n{paper_table(summary)}",
            flush=True,
        )
    return status
