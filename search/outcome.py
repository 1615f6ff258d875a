"""After the search: the champion chosen among finished trials (re-seeded on the cluster), its test
evaluation on every benchmark whose data is given (Ray tasks), and the fixed-config re-training of ``--retrain-best``."""

from __future__ import annotations

import sys
from pathlib import Path

from aminet.data import registry as benchmark_registry
from search.cluster import reseed_tuner
from search.context import Plan
from search.lineage import (
    SearchRecord,
    describe_parent,
    record_registration,
    record_replay_test,
    record_selection,
    record_test_evaluation,
    save_state,
)
from search.registry import register_champion

__all__ = ["select_champion", "final_evaluation", "retrain_best", "retrain_units"]

FINAL_EXPERIMENT = "aminet-final"  # the MLflow experiment of --retrain-best's fixed-config runs


def select_champion(rec: SearchRecord, plan: Plan, results, resources, concurrent):
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
        reseeded = _reseed(rec, top, seeds, plan, resources, concurrent)
    cands = champion.candidates_from(top, plan.base.train.seed, reseeded, b.epochs)
    seed = plan.base.train.seed  # the search's seed, on which the candidates were ranked top-k
    winner = champion.choose(cands, seed if champion.SELECT_ON_FRESH_SEEDS else None)
    chosen_on = champion.selection_seeds(cands, seed if champion.SELECT_ON_FRESH_SEEDS else None)
    fresh = [s for s in champion.selection_seeds(cands, seed) if s != seed]  # none without re-seeds
    cfg = apply_params(plan.base, winner.params)
    (plan.state_dir / "best_config.yaml").write_text(cfg.to_yaml())  # what --retrain-best trains
    record_selection(rec.client, rec.parent_id, rec.exp_id, cfg, cands, winner, chosen_on, fresh)
    print(
        f"\nselected: trial {winner.trial_id}, val score {100 * winner.mean:.2f} +- {100 * winner.std:.2f} over "
        f"seeds {winner.seeds} (finished trials only; top {len(cands)} re-seeded, compared on seeds {chosen_on}); "
        f"{winner.params}"
    )
    return winner


def _reseed(rec: SearchRecord, top, seeds, plan: Plan, resources, concurrent):
    """The top finished trials' parameters trained again with each of ``seeds``, as Ray trials logged under the
    search's parent run. The stage is saved first, so that --resume re-seeds instead of searching again."""
    from search.tuning import ProgressLines, ResolvedParams, TrialRunLogger
    from trainables.params import OPTUNA_TRIAL

    b = plan.budget
    points = [{k: v for k, v in r.config.items() if k != OPTUNA_TRIAL} for r in top]
    rec.state.update(stage="reseed", reseed_points=points)
    save_state(rec.state_path, rec.state)
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
    grid = reseed_tuner(plan, resources, concurrent, [logger, ProgressLines(b.epochs)], points, seeds).fit()
    from search.tuning import INTERRUPTED

    if INTERRUPTED.is_set() or grid.num_terminated + grid.num_errors < len(points) * len(seeds):
        raise KeyboardInterrupt  # stopped (Ctrl-C) before every re-seed ended
    return list(grid)


def final_evaluation(client, parent_id: str, plan: Plan, winner, uri: str, resources, exp_id: str) -> str:
    """The winner's seed models on both benchmarks' test protocols (Ray tasks), logged and printed; the best
    seed model (on validation) registered under the guarded champion rule. Returns the printed text."""
    import pandas as pd

    from search import champion
    from tracking.reporting import paper_table, seed_summary

    if plan.replay is not None:
        return replay_evaluation(client, parent_id, plan, winner, exp_id)
    models = [(seed, r) for seed, r in zip(winner.seeds, winner.results) if r is not None and r.checkpoint]
    if not models:
        raise RuntimeError("the selected configuration left no checkpoint")
    frames = champion.evaluate_on_cluster(
        [r.checkpoint for _, r in models], plan.given_roots, resources, plan.settings.max_failures
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
    record_test_evaluation(client, parent_id, tests, frame, benchmarks, table)
    text = (
        f"\nTEST protocols of the selected configuration ({feature} feature; mean +- std over seeds "
        f"{[s for s, _ in models]}, each seed the mean over the protocol's trials; selected on validation ids "
        f"only):\n{table}"
    )
    print(text)
    if not plan.settings.register:
        describe_parent(client, parent_id, plan, winner, exp_id, table)
        return text
    best = winner.best_model()
    version, line, label = register_champion(client, parent_id, plan, winner, best, uri, text)
    record_registration(client, parent_id, label)
    describe_parent(client, parent_id, plan, winner, exp_id, table, line)
    print("\n" + line)
    return text + "\n\n" + line


def replay_evaluation(client, parent_id: str, plan: Plan, winner, exp_id: str) -> str:
    """A replayed search's "test evaluation": the recorded test metrics of the table rows that answered the
    winner's seeds (no model exists, so none is registered). Logged on the parent run as the real evaluation
    is, under ``test/sysu/<setting>/<metric>``, with the tag ``aminet.replay``."""
    import statistics

    from search.blackbox import Table

    table = Table.load(plan.replay)
    rows = []
    for seed, r in zip(winner.seeds, winner.results):
        m = (r.metrics or {}) if r is not None else {}
        if "replay_config" in m:
            rows.append(table.row(int(m["replay_config"]), int(m.get("replay_seed", seed))))
    rows = [row for row in rows if row.test is not None]
    if not rows:
        raise RuntimeError("the selected configuration's table rows hold no test metrics")
    lines = [f"{'setting':8s} {'R1':>14s} {'mAP':>14s} {'mINP':>14s}"]
    figures: dict[str, float] = {}  # test/sysu/<setting>/<metric>[_std], fractions
    for setting in ("all", "indoor"):
        cells = []
        for metric in ("R1", "mAP", "mINP"):
            values = [100 * float(row.test[f"{setting}/{metric}"]) for row in rows]
            mean = statistics.fmean(values)
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            figures[f"test/sysu/{setting}/{metric}"] = mean / 100
            figures[f"test/sysu/{setting}/{metric}_std"] = std / 100
            cells.append(f"{mean:6.2f} +- {std:5.2f}")
        lines.append(f"{setting:8s} " + " ".join(f"{c:>14s}" for c in cells))
    where = f"{plan.replay} (rows {[(row.config, row.seed) for row in rows]})"
    table_text = "\n".join(lines)
    record_replay_test(client, parent_id, figures, where, table_text)
    describe_parent(client, parent_id, plan, winner, exp_id, table_text)
    text = (
        f"\nREPLAYED test metrics of the selected configuration (SYSU-MM01 protocol as recorded in the table {where}; "
        f"mean +- std over its seeds; no model is registered in a replay):\n{table_text}"
    )
    print(text)
    return text


def retrain_units(plan: Plan, uri: str, summaries: dict[str, str], search_parent: str) -> list[tuple[str, list[str]]]:
    """The arguments of one fixed-config run (``experiments.run.main``) per model of ``--retrain-best``: per
    benchmark in ``summaries``
    (dataset -> its summary run), per seed of ``--retrain-seeds`` and, on RegDB, per trial of
    ``--retrain-trials``. Each logs its model as a child of the benchmark's summary run."""
    out = []
    for dataset, parent in summaries.items():
        path = plan.state_dir / f"final_{dataset}.yaml"
        trials = plan.settings.retrain_trials if benchmark_registry.get(dataset).model_per_trial else [None]
        for seed in plan.settings.retrain_seeds:
            for trial in trials:
                cmd = [
                    str(path),
                    "--mlflow-uri",
                    uri,
                    "--experiment",
                    FINAL_EXPERIMENT,
                    "--seeds",
                    str(seed),
                    "--quiet",
                    "--run-dir",
                    str(plan.state_dir / "final_runs" / dataset),
                    "--parent-run-id",
                    parent,
                    "--tag",
                    f"aminet.search_parent={search_parent}",
                    "--tag",
                    f"aminet.search_name={plan.name}",
                ]
                if trial is not None:
                    cmd += ["--trials", str(trial)]
                out.append((dataset, cmd))
    return out


def retrain_best(plan: Plan, uri: str, parent_id: str, resources: dict[str, float]) -> int:
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
    commands = retrain_units(plan, uri, summaries, parent_id)
    print(
        f"\n=== retrain best: {len(commands)} model(s) as Ray tasks "
        f"({', '.join(f'{d}: {sum(1 for x, _ in commands if x == d)}' for d in summaries)})",
        flush=True,
    )
    outcomes = champion.retrain_on_cluster(
        [cmd for _, cmd in commands], resources, plan.settings.max_failures, local_store=is_local_store(uri)
    )
    status = 0
    failed: set[str] = set()
    for (dataset, cmd), (code, stdout, stderr) in zip(commands, outcomes):
        if code:
            print(f"error: retrain run failed (exit {code}): {' '.join(cmd[1:])}\n{stderr}", file=sys.stderr)
            status = status or code
            failed.add(dataset)
    for dataset, run_id in summaries.items():
        if dataset in failed:
            client.set_terminated(run_id, "FAILED")
            continue
        children = client.search_runs(
            [exp_id], f"tags.`mlflow.parentRunId` = '{run_id}' and tags.`aminet.role` = 'model'"
        )
        frames = []
        for child in children:
            if child.info.status != "FINISHED":  # a task's attempt that was lost and retried by Ray
                continue
            local = client.download_artifacts(child.info.run_id, "results/per_trial.csv")
            frames.append(pd.read_csv(local))
        per_trial = pd.concat(frames, ignore_index=True)
        summary = log_seed_summary(client, run_id, per_trial, configs[dataset])
        client.set_terminated(run_id, "FINISHED")
        print(
            f"\nTEST results of the retrained best config on {dataset} ({configs[dataset].eval.feature} feature, "
            f"final epoch, mean +- std over seeds {list(plan.settings.retrain_seeds)}; each seed the mean over the protocol's "
            f"trials):\n{paper_table(summary)}",
            flush=True,
        )
    return status
