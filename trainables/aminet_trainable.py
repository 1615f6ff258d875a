"""The Ray Tune function trainable: one trial = one ``aminet.engine.train`` run.

    trainable = tune.with_parameters(train_aminet, base_yaml=cfg.to_yaml())
    tune.Tuner(tune.with_resources(trainable, {"cpu": 1, "gpu": 0}), ...)

The trial's ``config`` holds the sampled values (see ``trainables.params``); the base config arrives
through ``with_parameters`` with absolute data and cache paths, so every trial on a machine reads the
same memory-mapped image cache. Resuming: a retried or restored trial copies the checkpoint Ray hands
back (``tune.get_checkpoint()``) into a fresh local folder and the engine continues from it. That folder
(``<tmp>/aminet-trial-<pid>-*``) is removed when the trial returns; a trial process that cannot clean up
(an early-stopped trial whose actor Ray ends, a SIGKILL, a lost node) leaves it behind, so every trial
first removes the folders of trial processes on its machine that no longer run. Reporting:
``tune.report`` at every evaluation, with the checkpoint of that epoch and the search metric ``score``.
Progress lines are off under Ray (``quiet``): Tune's own table shows the trials.

Divergence: a non-finite loss is deterministic for a config and seed, so it is not raised to Ray (which
would retry it): the trial reports ``diverged=1`` with the worst score (0) at the epoch it diverged in,
and ends. The searcher tells Optuna PRUNED (TPE learns the region is bad), the MLflow run ends FAILED with
the reason, and selection never considers it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from aminet.config import Config
from aminet.engine.checkpoint import load_checkpoint
from aminet.engine.drills import Drill
from aminet.engine.trainer import NonFiniteLossError, device_summary, evaluates, train
from trainables.params import OPTUNA_TRIAL, SEED, apply_params

__all__ = [
    "train_aminet",
    "train_reseed",
    "TuneReporter",
    "trial_device",
    "DIVERGED",
    "trial_folder",
    "remove_orphaned_trial_folders",
]

# Result key of a trial whose loss became non-finite (1.0); its reason is under "error".
DIVERGED = "diverged"
# A trial's local folder (its engine checkpoints): <tmp>/aminet-trial-<pid of the trial process>-<random>.
TRIAL_FOLDER_PREFIX = "aminet-trial-"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: running
        return True
    return True


def remove_orphaned_trial_folders(tmp: str | Path | None = None) -> list[Path]:
    """Remove the trial folders under ``tmp`` (default: the temp folder) whose trial process no longer runs;
    returns them. A folder whose name carries no process id is left alone."""
    removed = []
    for folder in Path(tmp or tempfile.gettempdir()).glob(f"{TRIAL_FOLDER_PREFIX}*"):
        pid = folder.name[len(TRIAL_FOLDER_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def trial_folder() -> Path:
    """A new local folder for this trial process, after removing the folders orphaned by dead ones."""
    remove_orphaned_trial_folders()
    return Path(tempfile.mkdtemp(prefix=f"{TRIAL_FOLDER_PREFIX}{os.getpid()}-"))


class TuneReporter:
    """The engine's reporter protocol over ``tune.report``: one report per epoch.

    Every epoch reports its training figures (``loss`` and its terms, ``lr``, ``images_per_s``,
    ``epoch_seconds``, the optimizer ``step`` so far); an evaluation epoch adds ``score``, ``R1``, ``mAP``, ``mINP``
    and the per-setting metrics, with the checkpoint. The search metric ``score`` is only in evaluation
    reports (ASHA and Optuna skip the others), so nothing acts on a stale value; ``val_score``, ``val_R1``
    and ``val_mAP`` carry the latest evaluation on every report for the console table, whose first
    columns Ray takes from the first keys of a report (so their order here is the table's)."""

    def __init__(self, resumed_from: int, cfg: Config, device: str = "", drill: Drill | None = None) -> None:
        import ray

        self.drill = drill or Drill()
        self.resumed_from = resumed_from
        self.device = device  # what the trial trains on (the MLflow tag aminet.device)
        self.node_id = ray.get_runtime_context().get_node_id()
        self.cfg = cfg
        self.latest = {"val_score": float("nan"), "val_R1": float("nan"), "val_mAP": float("nan")}
        self._epoch: dict[str, float] = {}

    def _values(self, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        values: dict[str, Any] = {**self.latest, "epoch": epoch}
        if "loss" in self._epoch:
            values["mean_loss"] = self._epoch["loss"]  # Ray's console shows it as "loss"
        values.update(self._epoch)
        values.update({k: float(v) for k, v in metrics.items()})
        values["resumed_from"] = self.resumed_from  # > 0: this attempt continued from a checkpoint
        values["node_id"] = self.node_id  # provenance: which Ray node trained this
        if self.device:
            values["device"] = self.device
        return values

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self._epoch = {k: float(v) for k, v in metrics.items()}
        if not evaluates(self.cfg, epoch):  # an evaluation epoch reports once, with its evaluation
            tune.report(self._values(epoch, {}))

    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        self.latest = {
            "val_score": float(metrics["score"]),
            "val_R1": float(metrics["R1"]),
            "val_mAP": float(metrics["mAP"]),
        }
        values = self._values(epoch, {k: v for k, v in metrics.items() if k != "epoch"})
        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(values, checkpoint=checkpoint)
        if checkpoint_dir:  # Ray has persisted its copy (what a retry resumes from): the local one is a duplicate
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
        self.drill.after_report(epoch)


def trial_device(cfg: Config, gpu_ids: list | None = None) -> Config:
    """A trial that holds GPUs trains on its own (Ray makes it the only visible one): ``train.device=cuda``,
    whatever the base config says (``cuda:1`` would not exist in the trial), so a torch that cannot see it
    fails the trial with the cause instead of training on the CPU without a word. ``cpu`` stays ``cpu``."""
    if gpu_ids is None:
        import ray

        gpu_ids = ray.get_gpu_ids()
    if gpu_ids and cfg.train.device != "cpu":
        return cfg.replace({"train.device": "cuda"})
    return cfg


def train_aminet(config: dict[str, Any], base_yaml: str, drill: Drill | None = None) -> None:
    """Ray Tune function trainable (see the module doc)."""
    config = {k: v for k, v in config.items() if k != OPTUNA_TRIAL}  # bookkeeping, not a sampled value
    cfg = trial_device(apply_params(Config.from_yaml(base_yaml, source="search base config"), config))
    # Disk: a trial checkpoints at its evaluations only, the ones it reports to Ray (which keeps the copy a
    # retry resumes from); TuneReporter deletes the local copy once reported (docs/design.md, "Checkpoints
    # and disk").
    cfg = cfg.replace({"train.checkpoint_every": cfg.train.epochs})
    device = device_summary(cfg)
    drill = (drill or Drill()).for_trial(config)
    run_dir = trial_folder()
    try:
        resumed_from = 0
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as src:
                src = Path(src)
                if (src / "epoch.txt").is_file():
                    resumed_from = int((src / "epoch.txt").read_text().strip())
                else:
                    resumed_from = int(load_checkpoint(src, map_location="cpu")["epoch"])
                shutil.copytree(src, run_dir / "checkpoints" / f"epoch-{resumed_from:04d}")
        reporter = TuneReporter(resumed_from, cfg, device, drill)
        try:
            train(cfg, reporter, run_dir=run_dir, resume=True, quiet=True, drill=drill)
        except NonFiniteLossError as exc:  # deterministic: report it as the trial's outcome, never retry it
            tune.report(
                {
                    "score": 0.0,
                    "R1": 0.0,
                    "mAP": 0.0,
                    "mINP": 0.0,
                    "epoch": max(1, exc.epoch),
                    DIVERGED: 1.0,
                    "error": f"NonFiniteLossError: {exc}",
                    "resumed_from": resumed_from,
                    "node_id": reporter.node_id,
                }
            )
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def train_reseed(
    config: dict[str, Any], base_yaml: str, points: list[dict[str, Any]], drill: Drill | None = None
) -> None:
    """A re-seed trial: ``points[config["candidate"]]`` (a finished trial's sampled values) trained with
    ``train.seed = config["seed"]``; everything else as ``train_aminet``."""
    params = {**points[int(config["candidate"])], SEED: int(config["seed"])}
    train_aminet(params, base_yaml, drill)
