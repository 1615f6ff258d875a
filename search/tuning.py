"""Two small adapters between Ray Tune, Optuna and MLflow.

``PrunedAwareOptunaSearch``: Ray's ``OptunaSearch`` tells every trial that ends without an error as
COMPLETE, including trials that ASHA stopped after a fraction of the budget; their truncated scores then
look like finished ones to TPE and to the importance analysis. Here a trial that ends before the last
epoch is told as PRUNED, with its last score recorded as an intermediate value (Optuna then keeps it as
the pruned trial's value). Intermediate values are indexed by epoch, not by Ray's report counter. A trial
whose loss diverged (``diverged`` in its last result: the trainable reports it instead of crashing, so Ray
does not retry a deterministic failure) is told as PRUNED with the worst score at the epoch it diverged and
the user attribute ``diverged``; TPE's constraint (``diverged_violation``) makes it infeasible, so TPE ranks
it below every trial that did not diverge and samples that region less (a FAIL would be ignored; a plain
PRUNED trial is ranked by the epoch it reached first, so a late divergence would rank above every trial
ASHA stopped earlier).

A time budget (``deadline_file``: a file holding a Unix time, written by the driver): after it, ``suggest``
returns ``FINISHED``, so no new trial starts while running ones train to the end (Optuna's ``timeout``
semantics; Ray's ``time_budget_s`` would stop them half-trained, and a half-trained trial cannot be
selected). The deadline lives in a file, not in the pickled searcher, so a resumed search gets the time it
has left, not the deadline of the first run.

``make_sampler``: the Optuna sampler of ``--sampler``.

``TrialRunLogger``: one MLflow child run per trial, written from the driver only (a single writer, so
SQLite is safe). Unlike Ray's stock ``MLflowLoggerCallback`` it finds a trial's existing run after a
restore instead of opening a duplicate, logs only the project's metrics (not Ray's bookkeeping keys) at
step = epoch, tags each run with the parent search run and the trial's outcome, and leaves no run
RUNNING when a trial ends, fails or is stopped.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.logger import LoggerCallback
from ray.tune.search.optuna import OptunaSearch

from search.samplers import SAMPLER_TABLE, SAMPLERS  # the one sampler table (SAMPLERS re-exported)
from trainables.params import LABELS, OPTUNA_TRIAL, SEED

__all__ = [
    "PrunedAwareOptunaSearch",
    "TrialRunLogger",
    "ProgressLines",
    "DropStoppedCheckpoints",
    "mlflow_metrics",
    "run_name",
    "REPORTED_KEYS",
    "SAMPLERS",
    "DIVERGED",
    "diverged_violation",
    "make_sampler",
    "trial_error",
    "trial_run",
]

# Keys a trial reports (see trainables.aminet_trainable.TuneReporter) that go to MLflow as metrics.
_SKIP = {
    "diverged",
    "epoch",
    "training_iteration",
    "time_this_iter_s",
    "time_total_s",
    "timestamp",
    "pid",
    "time_since_restore",
    "iterations_since_restore",
    "done",
    "should_checkpoint",
    "date",
    "hostname",
    "node_ip",
    "trial_id",
    "experiment_tag",
    "checkpoint_dir_name",
}
REPORTED_KEYS = ("R1", "mAP", "mINP", "score")
DIVERGED = "diverged"  # the user attribute of an Optuna trial whose loss diverged


class PrunedAwareOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tells early-stopped trials as PRUNED (see the module doc)."""

    def __init__(
        self, *args: Any, max_epochs: int, time_attr: str = "epoch", deadline_file: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._max_epochs = int(max_epochs)
        self._time_attr = time_attr
        self._deadline_file = deadline_file
        self._reported: dict[str, set[int]] = {}  # steps already told, per trial (retries repeat them)

    def out_of_time(self) -> bool:
        """Whether the time budget (if any) is spent."""
        if not self._deadline_file or not os.path.isfile(self._deadline_file):
            return False
        try:
            return time.time() >= float(Path(self._deadline_file).read_text().strip())
        except ValueError:
            return False

    def suggest(self, trial_id: str):
        """The sampled values plus ``optuna_trial`` (the Optuna trial number: Ray's table, the MLflow run and
        Optuna's plots then name a trial alike); the Optuna trial gets the Ray trial id as a user attribute."""
        if self.out_of_time():
            return self.FINISHED
        config = super().suggest(trial_id)
        if isinstance(config, dict) and trial_id in self._ot_trials:
            ot_trial = self._ot_trials[trial_id]
            ot_trial.set_user_attr("ray_trial_id", trial_id)
            config = {**config, OPTUNA_TRIAL: ot_trial.number}
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        value = result.get(self.metric)
        step = result.get(self._time_attr)
        if value is None or step is None:
            return
        seen = self._reported.setdefault(trial_id, set())
        if int(step) in seen or not math.isfinite(float(value)) or self._finished_in_study(trial_id):
            return
        self._ot_trials[trial_id].report(float(value), int(step))
        seen.add(int(step))

    def _finished_in_study(self, trial_id: str) -> bool:
        """True when the study already holds a final state for this trial: after a driver was killed,
        Ray may restore a trial whose end it had not yet snapshotted, while Optuna's database has it."""
        ot_trial = self._ot_trials[trial_id]
        try:
            state = self._ot_study._storage.get_trial(ot_trial._trial_id).state
        except Exception:  # noqa: BLE001 - storage without the trial: treat as open
            return False
        return state.is_finished()

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if self._finished_in_study(trial_id):  # told before a driver kill; Ray re-ran its last stretch
            self._completed_trials.add(trial_id)
            return
        diverged = bool(not error and result and result.get("diverged"))
        stopped_early = diverged or (
            not error
            and result is not None
            and result.get(self.metric) is not None
            and int(result.get(self._time_attr, self._max_epochs)) < self._max_epochs
        )
        if result and not error:  # Ray hands the last result to on_trial_complete only
            self.on_trial_result(trial_id, result)
        from optuna.trial import TrialState

        value = (result or {}).get(self.metric)
        if not error and not stopped_early and value is not None and not math.isfinite(float(value)):
            # Optuna refuses a non-finite value (Ray's OptunaSearch would log it and leave the trial RUNNING
            # until the end-of-search sweep): the trial ends now, as FAIL, which no sampler learns from.
            self._ot_study.tell(self._ot_trials[trial_id], None, state=TrialState.FAIL)
            self._completed_trials.add(trial_id)
            return
        if not stopped_early:
            return super().on_trial_complete(trial_id, result, error)

        if diverged:
            self._ot_trials[trial_id].set_user_attr(DIVERGED, True)
        self._ot_study.tell(self._ot_trials[trial_id], None, state=TrialState.PRUNED)
        self._completed_trials.add(trial_id)


def diverged_violation(trial) -> tuple[float]:
    """TPE's constraint: a trial whose loss diverged violates it. TPE splits trials into good and bad as
    COMPLETE by value, then PRUNED by the step they reached (deepest first) and value, then infeasible ones
    last; so a diverged trial ranks below every trial that did not diverge, whatever epoch it reached."""
    return (1.0 if trial.user_attrs.get(DIVERGED) else 0.0,)


def make_sampler(kind: str, seed: int, num_samples: int, priors: dict | None = None):
    """The Optuna sampler of ``--sampler``: ``tpe`` (multivariate, grouped for the conditional milestones),
    ``pibo`` (that TPE guided by the space's priors, ``search.pibo.PriorTPESampler``: ``priors`` maps a
    parameter to its ``Prior``),
    ``gp`` (Gaussian process), ``cmaes`` (CMA-ES on the numeric parameters, the categorical ones sampled
    independently) or ``random``. The model-based ones start after a third of the trials (2..8) sampled at
    random, after the warm-start points.

    TPE's ``constant_liar=True`` is set explicitly rather than left to the installed Optuna's default: trials
    still running count as bad points, so trials asked for at the same time are spread out instead of
    near-duplicates (Optuna 5's default; Optuna 4's was False). GP and CMA-ES learn from COMPLETE trials
    only, and under ASHA most trials end PRUNED; ``search.plan`` refuses CMA-ES with ASHA and allows GP, which
    at 32 trials still beat random search under ASHA in the study (docs/search-study.md measures both). CMA-ES's ``consider_pruned_trials=True`` is no way out:
    with the conditional milestones its search space (from the COMPLETE trials) can hold a parameter that a
    PRUNED cosine trial lacks, and Optuna 5.1 then fails the ask (an assertion in its transform)."""
    import warnings

    import optuna

    startup = max(2, min(8, num_samples // 3))
    tpe_kwargs = dict(
        multivariate=True,
        group=True,
        seed=seed,
        n_startup_trials=startup,
        constant_liar=True,
        constraints_func=diverged_violation,
    )
    if kind not in SAMPLER_TABLE:
        raise ValueError(f"--sampler {kind!r}: choose one of {list(SAMPLERS)}")
    with warnings.catch_warnings():  # the samplers we chose knowingly: their "experimental" notes are noise
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SAMPLER_TABLE[kind].build(seed, startup, tpe_kwargs, priors, num_samples)


class TrialRunLogger(LoggerCallback):
    """MLflow child run per trial, logged from the driver (see the module doc).

    A run is named ``trial <optuna number>: <key values>`` and tagged with the Optuna trial number, the Ray
    trial id, the node that trained it and whether it resumed from a checkpoint; its params are the whole
    resolved config as fixed-config runs log it (a sampled value under its config field's name);
    every epoch logs ``train/<figure>`` (loss terms, lr, images/s, epoch seconds, step), every evaluation
    ``val/score`` and ``val/<setting>/<metric>`` at step = epoch; ``inputs`` (MLflow datasets) are attached
    once."""

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        max_epochs: int,
        tags: dict[str, str] | None = None,
        role: str = "trial",
        params_of: Callable[[dict], dict] | None = None,
        inputs: list | None = None,
    ) -> None:
        """``role``: the ``aminet.role`` tag of the runs (``trial``; ``reseed`` for re-seed trials).
        ``params_of``: a trial's config -> the params to log (default: the config itself).
        ``inputs``: MLflow ``DatasetInput`` objects logged on each new run."""
        self.role = role
        self.params_of = params_of
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.max_epochs = int(max_epochs)
        self.tags = dict(tags or {})
        self.inputs = list(inputs or [])
        self._client = None
        self._runs: dict[str, str] = {}
        self._tagged: dict[str, dict[str, str]] = {}
        self._pending: dict[str, tuple[list, list, float]] = {}  # per trial: metrics, tags, since when

    def __getstate__(self) -> dict:  # the client holds connections: rebuilt after unpickling
        state = self.__dict__.copy()
        state["_client"] = None
        state["_runs"] = {}
        state["_tagged"] = {}
        state["_pending"] = {}
        return state

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def run_id(self, trial) -> str:
        """The trial's run: found by tags (after a restore or retry) or created."""
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        found = trial_run(self.client, self.experiment_id, self.parent_run_id, trial.trial_id)
        if found is not None:
            run_id = found.info.run_id
            if found.info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
        else:
            config = dict(trial.config)
            number = config.get(OPTUNA_TRIAL)
            tags = {
                **self.tags,
                "mlflow.parentRunId": self.parent_run_id,
                "ray.trial_id": trial.trial_id,
                "ray.trial_name": str(trial),
                "aminet.role": self.role,
            }
            if number is not None:
                tags["optuna.trial_number"] = str(number)
            run_id = self.client.create_run(
                self.experiment_id, run_name=run_name(config, self.role, str(trial)), tags=tags
            ).info.run_id
            sampled = {k: v for k, v in config.items() if k != OPTUNA_TRIAL}
            self._log_params(run_id, self.params_of(sampled) if self.params_of else sampled)
            if self.inputs:
                self.client.log_inputs(run_id, datasets=self.inputs)
        self._runs[trial.trial_id] = run_id
        return run_id

    def _log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), "null" if v is None else str(v)) for k, v in sorted(_flat(params, sep=".").items())]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_trial_start(self, trial) -> None:
        self.run_id(trial)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        from mlflow.entities import Metric, RunTag

        if result.get("diverged"):  # the worst score stands in for Optuna only: no metric of a model
            return
        run_id = self.run_id(trial)
        step = int(result.get("epoch", iteration))
        now = int(time.time() * 1000)
        metrics = [Metric(name, value, now, step) for name, value in mlflow_metrics(result).items()]
        tags = {
            "ray.node_id": str(result.get("node_id", "")),
            "aminet.resumed_from": str(int(result.get("resumed_from", 0))),
            "aminet.device": str(result.get("device", "")),
        }
        seen = self._tagged.setdefault(trial.trial_id, {})
        new_tags = [RunTag(k, v) for k, v in tags.items() if v and seen.get(k) != v]
        seen.update(tags)
        pending = self._pending.setdefault(trial.trial_id, ([], [], time.monotonic()))
        pending[0].extend(metrics)
        pending[1].extend(new_tags)
        # One MLflow write per evaluation (and at the end, or after FLUSH_S), not one per epoch: at the full
        # budget a trial reports 80 epochs, and the per-epoch write was most of the driver's cost per result
        # (docs/performance.md, "The search at cluster scale").
        if "score" in result or time.monotonic() - pending[2] >= self.FLUSH_S:
            self._flush(trial.trial_id, run_id)

    FLUSH_S = 60.0  # the longest a trial's training figures wait for their MLflow write

    def _flush(self, trial_id: str, run_id: str) -> None:
        metrics, tags, _ = self._pending.pop(trial_id, ([], [], 0.0))
        for i in range(0, max(len(metrics), 1), 1000):  # MLflow takes at most 1000 metrics per batch
            chunk = metrics[i : i + 1000]
            if chunk or (tags and i == 0):
                self.client.log_batch(run_id, metrics=chunk, tags=tags if i == 0 else [])

    def log_trial_end(self, trial, failed: bool = False) -> None:
        run_id = self.run_id(trial)
        self._flush(trial.trial_id, run_id)
        last = trial.last_result or {}
        epoch = int(last.get("epoch", 0) or 0)
        diverged = bool(last.get("diverged")) and not failed
        outcome = (
            "failed"
            if failed
            else "diverged"
            if diverged
            else ("completed" if epoch >= self.max_epochs else "stopped_early")
        )
        self.client.set_tag(run_id, "aminet.outcome", outcome)
        if failed or diverged:
            reason = trial_error(trial) if failed else str(last.get("error", "non-finite loss"))
            self.client.set_tag(run_id, "aminet.error", reason[:4000])
        self.client.set_tag(run_id, "aminet.last_epoch", str(epoch))
        self.client.set_terminated(run_id, "FAILED" if failed or diverged else "FINISHED")
        self._runs.pop(trial.trial_id, None)
        self._tagged.pop(trial.trial_id, None)


# Keys of a report that are the latest evaluation repeated for the console, or bookkeeping (tags).
_CONSOLE = {"val_score", "val_R1", "val_mAP", "mean_loss", "resumed_from", "node_id", "device", OPTUNA_TRIAL}
_EVAL = {"score", "R1", "mAP", "mINP"}


def mlflow_metrics(result: dict) -> dict[str, float]:
    """A trial's report as MLflow metrics: ``val/score`` and ``val/<setting>/<metric>`` from an evaluation (the
    unprefixed R1 / mAP / mINP repeat the primary setting's and are left out), ``train/<figure>`` otherwise."""
    out: dict[str, float] = {}
    for key, value in result.items():
        if (
            key in _SKIP
            or key.startswith("replay_test:")  # a surrogate replay's expected test figures: the end of the search's
            or key in _CONSOLE
            or key.startswith("config")
            or isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(float(value))
        ):
            continue
        if key == "score" or "/" in key:
            out[f"val/{key}"] = float(value)
        elif key not in _EVAL:
            out[f"train/{key}"] = float(value)
    return out


def run_name(config: dict, role: str, fallback: str) -> str:
    """``trial 7: intra 0.40 inter 0.60 bw paper5 ubp 0.50 lr 1.0e-03 step`` (the Optuna number and the values
    a reader compares first); a re-seed run: ``reseed top2 seed 1: ...``."""
    parts = []
    for key, label in LABELS.items():
        if key not in config:
            continue
        v = config[key]
        text = f"{v:.1e}" if key == "optim.lr" else f"{v:.2f}" if isinstance(v, float) else str(v)
        parts.append(f"{label} {text}".strip())
    if role == "reseed" and "candidate" in config:
        head = f"reseed top{int(config['candidate']) + 1} seed {config.get('seed')}"
    elif OPTUNA_TRIAL in config:
        head = f"trial {config[OPTUNA_TRIAL]}"
    else:
        head = fallback
    return f"{head}: {' '.join(parts)}" if parts else head


class DropStoppedCheckpoints(Callback):
    """Delete the checkpoint of a trial that ended before the full budget (stopped by ASHA or diverged): it can
    never be selected (``search.champion``: finished trials only) and a terminated trial is never resumed,
    so under ASHA most of a search's checkpoints are dead weight (docs/design.md, "Checkpoints and disk").
    Works on any Ray storage (the checkpoint's own filesystem: a local folder, NFS, S3)."""

    def __init__(self, max_epochs: int) -> None:
        self.max_epochs = int(max_epochs)
        self.dropped = 0

    def on_trial_complete(self, iteration: int, trials, trial, **info) -> None:
        last = trial.last_result or {}
        if int(last.get("epoch", 0) or 0) >= self.max_epochs and not last.get("diverged"):
            return
        ckpt = trial.checkpoint
        if ckpt is None:
            return
        try:
            ckpt.filesystem.delete_dir(ckpt.path)
            self.dropped += 1
        except Exception:  # noqa: BLE001 - already gone, or a store that refuses: space, not correctness
            pass


# Set when Ray Tune's Ctrl-C handler fires during a fit (one driver per process, so one flag).
INTERRUPTED = threading.Event()


class InterruptWatch(Callback):
    """Tells the driver whether a fit ended because of Ctrl-C (SIGINT). Ray Tune installs its own SIGINT
    handler when a fit starts (it stops the loop, saves the experiment and returns normally), so counting
    ended trials is the only other sign, and a wrong one: an interrupt while every trial of the budget is
    training leaves as many trials as the budget asked for, all of them cut short. At ``setup`` (after Ray's
    handler is in place) this wraps that handler so the interrupt is recorded, then handled by Ray as before."""

    def setup(self, **info) -> None:
        INTERRUPTED.clear()
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers belong to the main thread; Ray installs none elsewhere either
        ray_handler = signal.getsignal(signal.SIGINT)

        def on_sigint(sig, frame):
            INTERRUPTED.set()
            if callable(ray_handler):
                ray_handler(sig, frame)
            else:
                raise KeyboardInterrupt

        signal.signal(signal.SIGINT, on_sigint)


class ProgressLines(Callback):
    """One console line per trial and epoch (the driver's view of every trial, whatever Ray's table shows):
    ``trial 3 | epoch 4/6 | step 120/180 | loss 2.315 | 312 img/s | val score 41.20 (epoch 4)``."""

    def __init__(self, max_epochs: int, stream=None) -> None:
        self.max_epochs = int(max_epochs)
        self.stream = stream
        self._last_eval: dict[str, tuple[float, int]] = {}

    def on_trial_result(self, iteration: int, trials, trial, result: dict, **info) -> None:
        import sys

        if result.get("diverged"):
            line = f"trial {_trial_label(trial)} | DIVERGED at epoch {result.get('epoch')}: {result.get('error', '')}"
        else:
            epoch = int(result.get("epoch", 0))
            if "score" in result:
                self._last_eval[trial.trial_id] = (float(result["score"]), epoch)
            step = result.get("step")
            steps = f" | step {int(step)}/{int(step) * self.max_epochs // max(epoch, 1)}" if step else ""
            loss = f" | loss {result['loss']:.3f}" if "loss" in result else ""
            speed = f" | {result['images_per_s']:.0f} img/s" if "images_per_s" in result else ""
            val = self._last_eval.get(trial.trial_id)
            score = f" | val score {100 * val[0]:.2f} (epoch {val[1]})" if val else ""
            line = f"trial {_trial_label(trial)} | epoch {epoch}/{self.max_epochs}{steps}{loss}{speed}{score}"
        print(line, file=self.stream or sys.stderr, flush=True)


def _trial_label(trial) -> str:
    config = trial.config or {}
    if "candidate" in config and "seed" in config:
        return f"reseed top{int(config['candidate']) + 1} seed {config['seed']}"
    return str(config.get(OPTUNA_TRIAL, trial.trial_id))


class ResolvedParams:
    """A trial's MLflow params (picklable): the whole resolved config, as fixed-config runs log it (a sampled
    value is its field's value; the searched milestone items ``optim.milestone_shares.0`` / ``.1`` are added,
    and a bandwidth set shows as its multipliers). With ``points``: a re-seed trial, whose config is
    ``{candidate, seed}``; its candidate and seed are added."""

    def __init__(self, base_yaml: str, points: list[dict] | None = None) -> None:
        self.base_yaml = base_yaml
        self.points = points

    def __call__(self, config: dict) -> dict:
        from aminet.config import Config
        from trainables.params import apply_params

        base = Config.from_yaml(self.base_yaml, source="search base config")
        if self.points is None:
            sampled = dict(config)
            resolved = apply_params(base, sampled)
        else:
            sampled = dict(self.points[int(config["candidate"])])
            resolved = apply_params(base, {**sampled, SEED: int(config["seed"])})
            sampled.update(candidate=int(config["candidate"]), seed=int(config["seed"]))
        return {**sampled, **resolved.flat()}


def trial_run(client, experiment_id: str, parent_run_id: str, ray_trial_id: str):
    """The MLflow run of a Ray trial (search or re-seed) under the search's parent run, or None."""
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.`ray.trial_id` = '{ray_trial_id}'",
        max_results=1,
    )
    return found[0] if found else None


def trial_error(trial) -> str:
    """The last line of a failed trial's error (exception type and message), or a placeholder."""
    try:
        path = trial.error_file
        if path and os.path.isfile(path):
            lines = [line.strip() for line in open(path, encoding="utf-8", errors="replace") if line.strip()]
            reasons = [line for line in lines if "Error" in line.split(":")[0] or "Exception" in line.split(":")[0]]
            if reasons or lines:
                return (reasons or lines)[-1]
    except Exception:  # noqa: BLE001 - the reason is best effort; the FAILED status is what counts
        pass
    return "failed (no error file)"


def _flat(d: dict, prefix: str = "", sep: str = "/") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + sep, sep))
        else:
            out[key] = v
    return out
