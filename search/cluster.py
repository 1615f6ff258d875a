"""Ray: the cluster, the resources of a trial, and the tuners (the search and the re-seed trials)."""

from __future__ import annotations

import logging
import math
import os
import sys
import time

from search.context import DEADLINE_FILE, METRIC, Plan, Settings
from search.plan import UsageError

__all__ = [
    "quiet_libraries",
    "init_ray",
    "snapshot_period",
    "trial_resources",
    "make_searcher",
    "make_scheduler",
    "build_tuner",
    "fit_search",
    "reseed_tuner",
]


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
    for name in FULL_DISK_LOGGERS:
        log = logging.getLogger(name)
        if not any(isinstance(f, FullDiskTracebacks) for f in log.filters):
            log.addFilter(FullDiskTracebacks())


# how a full disk reads where no OSError carries its errno: the OS's words, and SQLite's (Optuna's study
# database under --storage, the default MLflow store), which Ray's TuneError passes on as text
FULL_DISK_TEXTS = ("No space left on device", "database or disk is full")
# the loggers that print a write's error with its traceback (a logger's filter sees only the records made by
# that logger itself, not its children's: each is named): Ray's "Error stopping trial" (the searcher's failed
# Optuna commit), its syncer's "Last sync command failed" and its experiment-state snapshot's failure (the
# last found by the CI drill, tests/test_full_disk.py)
FULL_DISK_LOGGERS = (
    "ray.tune.execution.tune_controller",
    "ray.train._internal.syncer",
    "ray.tune.execution.experiment_state",  # "Saving experiment state to storage ... failed with exception"
)


def full_disk_words(exc: BaseException | None) -> str | None:
    """The words that say ``exc`` (or an error in its chain) is a full disk, or None."""
    import errno

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return "No space left on device"
        said = next((w for w in FULL_DISK_TEXTS if w in str(exc)), None)
        if said:
            return said
        exc = exc.__cause__ or exc.__context__
    return None


class FullDiskTracebacks(logging.Filter):
    """A library error logged with its traceback because the disk is full (measured: a tmpfs under --storage
    filled mid-search, Ray's "Error stopping trial" printed three chained tracebacks, 130 lines, for Optuna's
    failed commit; its syncer's "Last sync command failed" a traceback in the message text) is shown as its one message line plus "the disk is full"; the search then ends with one
    line saying so (``search.run.failure_line``). Every other record passes untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        said = full_disk_words(exc)
        if said:
            record.msg, record.args = f"{record.getMessage()} (the disk is full: {said})", ()
            record.exc_info, record.exc_text = None, None
            return True
        text = record.getMessage()  # Ray's syncer puts the formatted traceback into the message itself
        said = next((w for w in FULL_DISK_TEXTS if w in text), None)
        if said and "Traceback (most recent call last)" in text:
            record.msg, record.args = f"{text.splitlines()[0]} (the disk is full: {said})", ()
        return True


def snapshot_period(num_samples: int) -> float:
    """Seconds between Ray's experiment-state snapshots: 2 s (instead of Ray's adaptive 10 s or more: after a
    hard kill of the driver, fewer finished trials look unfinished to the restore), longer for large searches,
    whose snapshot holds every trial: measured ~0.25 ms per trial per snapshot (docs/performance.md, "The search
    at cluster scale"), so N / 100 s keeps the snapshots near 2.5 % of the driver's core at any size, where a
    fixed 2 s would take all of it at about 8,000 trials."""
    return max(2.0, num_samples / 100.0)


def init_ray(settings: Settings, num_samples: int = 0) -> None:
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", f"{snapshot_period(num_samples):g}")
    # Trials report every epoch (training figures) and the search metric at evaluation epochs only; ASHA
    # and the searcher skip reports without it (trainables.aminet_trainable.TuneReporter).
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # The frequent snapshots above are chosen (a kill loses less); Ray's note that they are frequent is noise.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    quiet_libraries()
    import ray

    try:
        if settings.address:
            ray.init(address=settings.address, include_dashboard=False, log_to_driver=settings.verbose > 1)
        else:  # the dashboard is off unless asked for, and then only on this machine's loopback
            ray.init(
                address=local_address(),
                include_dashboard=settings.dashboard,
                dashboard_host="127.0.0.1",
                log_to_driver=settings.verbose > 1,
            )
    except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError: all one line
        raise UsageError(f"ray.init(address={settings.address!r}) failed: {' '.join(str(exc).split())[:300]}") from None


def local_address() -> str:
    """Where a search without ``--address`` runs: the cluster ``RAY_ADDRESS`` names (a Ray job's entrypoint,
    KubeRay) or else a new local instance ("local"). Not Ray's default for no address, which joins the newest
    cluster recorded in its temp folder: a ``ray start`` of another job on a shared node, or a cluster already
    killed whose record stayed behind (measured in CI: a search after a test that had killed its own ``ray
    start`` cluster tried to join it and failed after 60 s, "Failed to connect to GCS", or "node timed out
    during startup")."""
    return os.environ.get("RAY_ADDRESS") or "local"


def trial_resources(settings: Settings, num_samples: int) -> tuple[dict[str, float], int]:
    """Per-trial resources and concurrency from what the cluster has; never a GPU request without GPUs."""
    import ray

    total = ray.cluster_resources()
    cpus, gpus = float(total.get("CPU", 1)), float(total.get("GPU", 0))
    gpt = settings.gpus_per_trial if settings.gpus_per_trial is not None else (1.0 if gpus >= 1 else 0.0)
    if gpt > 0 and gpus == 0:
        raise UsageError(f"--gpus-per-trial {gpt}: the Ray cluster has no GPU (trials would wait forever)")
    if gpt > gpus:
        raise UsageError(f"--gpus-per-trial {gpt}: the cluster has {gpus:g} GPUs")
    if 0 < gpt < 1 and not math.isclose(1 / gpt, round(1 / gpt)):
        raise UsageError(f"--gpus-per-trial {gpt}: fractions must divide 1 (0.5, 0.25, ...)")
    if settings.cpus_per_trial is not None:
        cpt = settings.cpus_per_trial
    elif gpt > 0:
        cpt = float(max(1, min(8, int(cpus // max(1, round(gpus / gpt))))))
    else:
        cpt = 1.0
    if cpt > cpus:
        raise UsageError(f"--cpus-per-trial {cpt:g}: the cluster has {cpus:g} CPUs")
    fit = int(cpus // cpt)
    if gpt > 0:
        fit = min(fit, int(round(gpus / gpt, 6) // 1))
    concurrent = settings.max_concurrent or max(1, min(fit, num_samples))
    return {"cpu": cpt, "gpu": gpt}, concurrent


def make_searcher(space, base, budget, sampler: str, seed: int, *, study_name: str, storage=None, deadline_file=None):
    """The search algorithm of a search (and of ``benchmarks/search_study.py``'s simulator, which drives the same
    object without Ray): ``PrunedAwareOptunaSearch`` over the space's define-by-run function, warm-started from
    its points, with the ``--sampler`` sampler; ``storage`` None keeps the study in memory."""
    return build_searcher(
        space.define_by_run(base),
        space.warm_start(base),
        budget,
        sampler,
        seed,
        priors=space.priors(base),
        study_name=study_name,
        storage=storage,
        deadline_file=deadline_file,
    )


def build_searcher(
    define_by_run, points, budget, sampler: str, seed: int, *, priors=None, study_name: str, storage=None,
    deadline_file=None,
):  # fmt: skip
    """``make_searcher`` from its parts: a define-by-run function, warm-start points and priors (the study's
    external benchmarks build their searchers with it, so they get the driver's samplers exactly)."""
    from search.tuning import PrunedAwareOptunaSearch, make_sampler

    return PrunedAwareOptunaSearch(
        define_by_run,
        metric=METRIC,
        mode="max",
        points_to_evaluate=list(points) or None,
        sampler=make_sampler(sampler, seed, budget.num_samples, priors=priors),
        study_name=study_name,
        storage=storage,
        max_epochs=budget.epochs,
        deadline_file=deadline_file,
    )


def make_scheduler(budget):
    """The trial scheduler: ASHA on the epoch counter, from the budget's grace period and reduction factor."""
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="epoch",
        max_t=budget.epochs,
        grace_period=budget.grace_period,
        reduction_factor=budget.reduction_factor,
    )


def build_tuner(plan: Plan, callbacks: list, study_url: str):
    import optuna
    from ray import tune

    trainable = tune.with_resources(plan.backend.trial(plan), plan.resources)
    if plan.resume:
        from ray.tune import Tuner

        if not Tuner.can_restore(plan.experiment_path):
            raise UsageError(f"--name {plan.name}: {plan.experiment_path} holds no restorable Ray experiment")
        return Tuner.restore(plan.experiment_path, trainable=trainable, resume_errored=True)
    b = plan.budget
    searcher = make_searcher(
        plan.space,
        plan.base,
        b,
        plan.settings.sampler,
        plan.settings.seed,
        study_name=plan.name,
        storage=optuna.storages.RDBStorage(study_url),
        deadline_file=str(plan.state_dir / DEADLINE_FILE),
    )
    scheduler = make_scheduler(b) if plan.settings.scheduler == "asha" else None
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=b.num_samples,
            max_concurrent_trials=plan.concurrent,
            reuse_actors=plan.backend.reuse_workers,
        ),
        run_config=tune.RunConfig(
            name=plan.name,
            storage_path=plan.storage,
            callbacks=[*callbacks, _interrupt_watch()],
            verbose=plan.settings.verbose,
            failure_config=tune.FailureConfig(max_failures=plan.settings.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),  # the latest: what a retry resumes from
        ),
    )


def _interrupt_watch():
    from search.tuning import InterruptWatch

    return InterruptWatch()


def reseed_tuner(
    plan: Plan,
    callbacks: list,
    points: list[dict],
    seeds: list[int],
):
    """The re-seed trials: every (candidate, seed) pair trained to the full budget (no early stopping), with
    the search's trainable, resources and retries; restored when an interrupted re-seed is resumed."""
    from ray import tune

    trainable = tune.with_resources(plan.backend.reseed(plan, points), plan.resources)
    path = f"{plan.experiment_path}-reseed"
    if tune.Tuner.can_restore(path):
        return tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space={"candidate": tune.grid_search(list(range(len(points)))), "seed": tune.grid_search(seeds)},
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            num_samples=1,
            max_concurrent_trials=plan.concurrent,
            reuse_actors=plan.backend.reuse_workers,
        ),
        run_config=tune.RunConfig(
            name=f"{plan.name}-reseed",
            storage_path=plan.storage,
            callbacks=[*callbacks, _interrupt_watch()],
            verbose=plan.settings.verbose,
            failure_config=tune.FailureConfig(max_failures=plan.settings.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )


def fit_search(tuner, plan: Plan, record) -> object:
    """``tuner.fit()`` under the time budget (``search.lineage.SearchClock``: it survives a hard kill); an interrupted fit (Ray catches
    Ctrl-C, saves the experiment and returns early) raises ``KeyboardInterrupt``. Returns Ray's results."""
    from search.lineage import SearchClock
    from search.tuning import INTERRUPTED

    clock = SearchClock(plan.state_dir, plan.settings.time_budget, record.state, record.state_path)
    deadline = clock.start()
    try:
        results = tuner.fit()
    finally:
        clock.stop()
    timed_out = deadline is not None and time.time() >= deadline
    ended = results.num_terminated + results.num_errors
    if INTERRUPTED.is_set() or ended < len(results):  # Ctrl-C (Ray saved the experiment and returned early)
        raise KeyboardInterrupt
    if len(results) < plan.budget.num_samples and not timed_out:
        # not an interrupt (that would loop: every resume would end here again): Ray ran out of trials to
        # start. Say so and select among those that ran.
        print(
            f"\nRay ended the search after {len(results)} of {plan.budget.num_samples} trials without an interrupt; "
            "selecting among them",
            file=sys.stderr,
            flush=True,
        )
    if timed_out and len(results) < plan.budget.num_samples:
        n = f"{len(results)} of {plan.budget.num_samples}"
        print(
            f"\n--time-budget {plan.settings.time_budget:g} s reached: {n} trials ran; selecting among them",
            file=sys.stderr,
            flush=True,
        )
        record.record_time_budget(n)
    end_orphaned_trials(plan.name, record.study_url, list(results), plan.budget.epochs)
    return results


def end_orphaned_trials(name: str, study_url: str, results=(), max_epochs: int | None = None) -> None:
    """Every Ray trial has ended, so no Optuna trial should still be RUNNING. One that is either ran in Ray
    while the searcher's record of it was lost (its state file truncated by a full disk, then the search
    resumed: measured, issue 38) — it is told what Ray's result says: COMPLETE with its last score when it
    trained to the full budget, PRUNED when it stopped early with a score (marked ``diverged`` when it
    diverged), else FAIL — or it was asked for by a driver killed before Ray recorded the trial, so it never
    ran, and ends as FAIL (which no sampler learns from)."""
    import optuna

    from search.champion import reached_full_budget
    from search.tuning import DIVERGED

    by_id = {str((r.metrics or {}).get("trial_id")): r for r in results}
    study = optuna.load_study(study_name=name, storage=study_url)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        r = by_id.get(str(t.user_attrs.get("ray_trial_id")))
        m = (r.metrics or {}) if r is not None else {}
        if r is not None and max_epochs is not None and reached_full_budget(r, max_epochs):
            study.tell(t.number, float(m[METRIC]), state=optuna.trial.TrialState.COMPLETE)
        elif r is not None and r.error is None and m.get(METRIC) is not None:
            if m.get("diverged"):
                study._storage.set_trial_user_attr(t._trial_id, DIVERGED, True)
            study.tell(t.number, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
