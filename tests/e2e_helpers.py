"""Shared by the end-to-end tests: tiny synthetic data and configs, the search command, its MLflow and Optuna."""

import os
import sys
from pathlib import Path

import optuna

from aminet.data import synthetic

REPO = Path(__file__).resolve().parents[1]
RUN = str(REPO / "search" / "run.py")
# A search small enough for CI: 32x16 images, 3 steps per epoch, 4 epochs with validation every epoch.
TINY = [
    "data.height=32",
    "data.width=16",
    "data.pad=2",
    "data.ids_per_batch=2",
    "data.instances=2",
    "data.iters_per_epoch=3",
    "train.epochs=4",
    "train.eval_every=1",
    "optim.milestones=[2,3]",
    "eval.trials=1",
]
# A fixed-config experiment small enough for CI (experiments/run.py).
TINY_EXPERIMENT_YAML = """
name: tiny
data: {dataset: sysu, purpose: final, height: 32, width: 16, pad: 2, ids_per_batch: 2,
       instances: 2, iters_per_epoch: 3}
model: {arch: resnet18, weights: none, last_stride: 2}
optim: {optimizer: adam, lr: 0.001, backbone_lr_mult: 1.0, warmup_epochs: 0, milestones: []}
train: {epochs: 2, eval_every: 2}
eval: {trials: 2}
"""


def tiny_roots(tmp: Path) -> tuple[Path, Path, Path]:
    """(tmp, SYSU root, RegDB root): tiny synthetic benchmarks in the official layouts."""
    sysu = synthetic.generate("sysu", tmp / "SYSU", ids=10, images=2, height=64, width=32, seed=0, workers=1)
    regdb = synthetic.generate("regdb", tmp / "RegDB", ids=10, images=2, height=64, width=32, seed=0, workers=1)
    return tmp, sysu, regdb


def search_args(tmp, sysu, regdb, name, *extra) -> list[str]:
    sets = [a for o in TINY + [f"data.cache_dir={tmp / 'cache'}"] for a in ("--set", o)]
    return [
        sys.executable,
        RUN,
        "--space",
        "sysu",
        "--quick",
        "--data-root",
        str(sysu),
        "--regdb-root",
        str(regdb),
        "--name",
        name,
        "--storage",
        str(tmp / "ray"),
        "--mlflow-uri",
        f"sqlite:///{tmp / (name + '.db')}",
        "--verbose",
        "0",
        *sets,
        *extra,
    ]


def search_env(**extra) -> dict[str, str]:
    return dict(os.environ, RAY_DISABLE_DOCKER_CPU_WARNING="1", PYTHONUNBUFFERED="1", **extra)


def search_runs(tmp, name):
    """(client, [the search's parent run], [its trial runs]) from the search's MLflow database."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp / (name + '.db')}")
    exp = client.get_experiment_by_name("aminet-search")
    runs = client.search_runs([exp.experiment_id]) if exp else []
    return (
        client,
        [r for r in runs if r.data.tags.get("aminet.role") == "search"],
        [r for r in runs if r.data.tags.get("aminet.role") == "trial"],
    )


def search_study(tmp, name) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp / 'ray' / name / 'optuna.db'}")
