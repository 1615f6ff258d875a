"""Shared by the end-to-end tests: tiny synthetic data and configs, the search command, its MLflow and Optuna."""

import json
import os
import socket
import sys
from pathlib import Path

import yaml

from aminet.data import synthetic

REPO = Path(__file__).resolve().parents[1]
RUN = str(REPO / "search" / "run.py")
# The tiny training setting every end-to-end test starts from (one definition; each test adds its own
# schedule): 32x16 images, 2 identities x 2 images per modality and batch, 3 steps per epoch.
TINY_DATA = {
    "data.height": 32,
    "data.width": 16,
    "data.pad": 2,
    "data.ids_per_batch": 2,
    "data.instances": 2,
    "data.iters_per_epoch": 3,
}
# ... and for a fixed config (the search samples its own lr): a ResNet-18 from scratch with Adam.
TINY_MODEL = {"model.arch": "resnet18", "model.weights": "none", "model.last_stride": 2}
TINY_OPTIM = {"optim.optimizer": "adam", "optim.lr": 0.001, "optim.backbone_lr_mult": 1.0}


def overrides(settings: dict) -> list[str]:
    """``--set`` / ``load_config`` overrides (``key=value``) of a dotted-key mapping."""
    return [f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in settings.items()]


def nested(settings: dict) -> dict:
    """A config file's nested mapping of a dotted-key mapping."""
    out: dict = {}
    for key, value in settings.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


# A search small enough for CI: the tiny data, 4 epochs with validation every epoch.
TINY = overrides({**TINY_DATA, "train.epochs": 4, "train.eval_every": 1, "optim.milestones": [2, 3], "eval.trials": 1})
# A fixed-config experiment small enough for CI (experiments/run.py): 2 epochs, the test protocol.
TINY_EXPERIMENT_YAML = yaml.safe_dump(
    {
        "name": "tiny",
        **nested(
            {
                "data.dataset": "sysu",
                "data.purpose": "final",
                **TINY_DATA,
                **TINY_MODEL,
                **TINY_OPTIM,
                "optim.warmup_epochs": 0,
                "optim.milestones": [],
                "train.epochs": 2,
                "train.eval_every": 2,
                "eval.trials": 2,
            }
        ),
    },
    sort_keys=False,
)
# The engine's tests: the validation protocol, 3 epochs, a warm-up epoch and one lr step.
TINY_TRAIN = {
    "data.purpose": "search",
    **TINY_DATA,
    "data.upper_height": 16,
    **TINY_MODEL,
    **TINY_OPTIM,
    "optim.warmup_epochs": 1,
    "optim.milestones": [2],
    "train.epochs": 3,
    "train.eval_every": 2,
    "eval.trials": 2,
}


def tiny_sysu(folder: Path) -> Path:
    """A tiny synthetic SYSU-MM01 (10 identities, 2 images per camera) in the official layout."""
    return synthetic.generate("sysu", folder / "SYSU", ids=10, images=2, height=64, width=32, seed=0, workers=1)


def tiny_roots(tmp: Path) -> tuple[Path, Path, Path]:
    """(tmp, SYSU root, RegDB root): tiny synthetic benchmarks in the official layouts."""
    sysu = tiny_sysu(tmp)
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


def free_port() -> int:
    """A free local TCP port (for a server a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def all_runs(uri: str):
    """Every run of every experiment in the MLflow store ``uri``, as a pandas frame."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(search_all_experiments=True, output_format="pandas")


def search_runs(tmp, name, uri: str | None = None):
    """(client, [the search's parent run], [its trial runs]) from the search's MLflow store: ``uri``, or the
    SQLite database ``search_args`` points the search at."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri or f"sqlite:///{tmp / (name + '.db')}")
    exp = client.get_experiment_by_name("aminet-search")
    runs = client.search_runs([exp.experiment_id]) if exp else []
    return (
        client,
        [r for r in runs if r.data.tags.get("aminet.role") == "search"],
        [r for r in runs if r.data.tags.get("aminet.role") == "trial"],
    )


def search_study(tmp, name):
    import optuna  # here, not at the top: tests/test_gpu.py runs on GPU nodes that have torch and no Optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp / 'ray' / name / 'optuna.db'}")


def x_space(trial):  # module level: Ray checkpoints the searcher (and its space) with plain pickle
    trial.suggest_float("x", 0.0, 1.0)
