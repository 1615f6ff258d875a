#!/usr/bin/env python
"""Distributed hyperparameter search for AMINet: Ray Tune + Optuna + ASHA, tracked in MLflow.

    python search/run.py --space sysu                       # synthetic benchmark, CPU-sized budget
    python search/run.py --space sysu --data-root /data/SYSU-MM01 --gpus-per-trial 0.5
    python search/run.py --space sysu --name s1 --resume    # continue an interrupted search
    python search/run.py --smoke-test                       # the quick budget (Ray Tune's examples' name)

One Ray Tune trial = one training run of ``aminet.engine.train`` on the search split (validation
identities held out), reporting ``score = (R1 + mAP) / 2`` on them every ``eval_every`` epochs. Optuna
proposes configurations from a space file (warm-started from the paper's settings; the study lives in
SQLite next to the experiment); ASHA stops weak trials after at least a quarter of training and they are
told to Optuna as PRUNED. MLflow gets one parent run per search and one child run per trial, written by
this driver only. After the search, the best finished trials are re-seeded, the best mean over seeds is
evaluated with the full test protocols of both benchmarks, registered (guarded ``champion`` alias), and
optionally re-trained as fixed-config final runs (``--retrain-best``).

This file is the command line's sequence; each step lives in a module with one job:
``search/plan.py`` (flags, checks, the plan), ``search/cluster.py`` (Ray, resources, tuners),
``search/lineage.py`` (MLflow runs, state file, summary), ``search/outcome.py`` (selection, test evaluation,
re-training), ``search/registry.py`` (the registered champion). Bad input exits with status 2 and one line
before any trial or MLflow run starts.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # ``python search/run.py`` from a checkout that is not installed
    sys.path.insert(0, str(REPO))

from search.plan import UsageError, parse_args, plan_search, preflight  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    try:
        plan = plan_search(parse_args(argv))  # the namespace goes no further: the plan is the search's context
        if plan.saved_state and plan.saved_state.stage == "finished":
            print(f"search {plan.name} has finished; its summary:", file=sys.stderr)
            print(plan.saved_state.summary or "(no summary saved)")
            return 0
        plan = preflight(plan)
        from search.cluster import init_ray, trial_resources

        init_ray(plan.settings, plan.budget.num_samples)
        resources, concurrent = trial_resources(plan.settings, plan.budget.num_samples)
        plan = replace(plan, resources=resources, concurrent=concurrent)  # set once, here, where Ray started
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, RuntimeError, OSError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2

    from search.cluster import build_tuner, fit_search
    from search.lineage import open_search
    from search.outcome import final_evaluation, retrain_best, select_champion
    from search.plan import resume_command
    from search.tuning import DropStoppedCheckpoints, ProgressLines, ResolvedParams, TrialRunLogger
    from tracking.reporting import runs_page
    from trainables.aminet_trainable import remove_orphaned_trial_folders

    st = plan.settings
    # SIGTERM (scancel, a Kubernetes pod's stop, `kill`) is a Ctrl-C: Ray saves the experiment, the runs end
    # KILLED and the resume hint is printed, instead of the process dying mid-write.
    signal.signal(signal.SIGTERM, lambda sig, frame: os.kill(os.getpid(), signal.SIGINT))
    rec = open_search(plan)
    logger = TrialRunLogger(
        rec.uri,
        rec.exp_id,
        rec.parent_id,
        plan.budget.epochs,
        tags=rec.run_tags,
        inputs=rec.inputs,
        params_of=ResolvedParams(plan.base.to_yaml()),
    )
    status = "FAILED"
    try:
        try:
            tuner = build_tuner(
                plan,
                [logger, ProgressLines(plan.budget.epochs), DropStoppedCheckpoints(plan.budget.epochs)],
                rec.study_url,
            )
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        b = plan.budget
        print(
            f"search {plan.name}: {b.num_samples} trials, {plan.concurrent} at once, {plan.resources} each; "
            f"{b.epochs} epochs, "
            f"eval every {b.eval_every}, "
            + (f"ASHA grace {b.grace_period}" if st.scheduler == "asha" else "no early stopping")
            + f"; then the top {st.top_k} finished trial(s) "
            f"re-seeded x{st.reseeds}; Ray experiment {plan.experiment_path}",
            file=sys.stderr,
            flush=True,
        )
        results = fit_search(tuner, plan, rec)
        rec.log_summary(plan, results)
        winner = select_champion(rec, plan, results)
        summary = (
            f"selected trial {winner.trial_id}: val score {100 * winner.mean:.2f} +- {100 * winner.std:.2f} "
            f"over seeds {winner.seeds}; {winner.params}"
        )
        if st.final_eval:
            summary += "\n" + final_evaluation(rec, plan, winner)
        else:
            rec.describe(plan, winner)
        status = "FINISHED"
        rec.state.stage, rec.state.summary = "finished", summary
        rec.save()
    except KeyboardInterrupt:
        status = "KILLED"
        print(f"\ninterrupted: resume with  {resume_command(plan)}", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, FAILED in MLflow, non-zero exit
        print(f"error: {failure_line(exc, plan)}", file=sys.stderr)
        return 1
    finally:
        rec.close(status)
        remove_orphaned_trial_folders()  # this machine's folders of trials whose process Ray ended (early stops)
    print(f"\nMLflow: mlflow ui --backend-store-uri {rec.uri}   (experiment '{st.mlflow_experiment}', run {plan.name})")
    print(f"  then open {runs_page(rec.exp_id)}")
    print(f"Optuna: optuna-dashboard {rec.study_url}")
    if st.retrain_best:
        return retrain_best(plan, rec.uri, rec.parent_id)
    return 0


def cli() -> None:
    """The console script (pyproject.toml's ``[project.scripts]``)."""
    sys.exit(main())


def failure_line(exc: BaseException, plan) -> str:
    """The one line a failed search ends with: a full disk is named as such (it surfaces as an ``OSError``, an
    SQLAlchemy or Optuna storage error, or a trial's error text, depending on which write found it)."""
    from search.cluster import full_disk_words

    said = full_disk_words(exc)
    if said:
        return (
            f"the disk is full ({said}) under --storage {plan.storage} or the MLflow store; "
            "free space, then resume the search"
        )
    free = _free_bytes(plan)
    if free is not None and free < FULL_DISK:  # the error surfaced elsewhere (a truncated file read back later)
        return (
            f"the disk under --storage {plan.storage} is full ({free / 2**20:.1f} MiB free; the search stopped with "
            f"{_one_line(exc, 200)}); free space, then resume the search"
        )
    return _one_line(exc, 500)


def _one_line(exc: BaseException, limit: int) -> str:
    """``Type: message`` on one line; an error whose text is a whole traceback (Ray's ``TuneError`` wraps the
    trial's or the searcher's) is given by the traceback's last line, the error it ended with."""
    text = str(exc)
    if "Traceback (most recent call last)" in text:
        last = [line for line in text.splitlines() if line.strip() and not line.startswith((" ", "\t"))]
        text = last[-1] if last else text
    return f"{type(exc).__name__}: {' '.join(text.split())[:limit]}"


FULL_DISK = 64 << 20  # below this much free space under --storage, a failed search is called a full disk


def _free_bytes(plan) -> int | None:
    """Free bytes under a local --storage (None for a remote store or when it cannot be read)."""
    import shutil

    storage = getattr(plan, "storage", None)
    if not storage or "://" in str(storage):
        return None
    try:
        return shutil.disk_usage(storage).free
    except OSError:
        return None


if __name__ == "__main__":
    cli()
