"""What a run reads, from its config: the dataset folder, the training split and the evaluation set.

``resolve_root`` finds ``data.root`` (or generates the synthetic benchmark of the layout once);
``build_training_data`` gives the training identities of ``data.purpose`` (train+val ids for ``final``,
train ids for ``search``), ``evaluation_set`` the validation (``search``) or test (``final``) probes of the
configured benchmark, each from the benchmark's entry in ``aminet.data.registry``. The trainer and both runners' checks before a run (``aminet.cli.preflight``) use
them, so a run and its preflight read the data the same way.
"""

from __future__ import annotations

from pathlib import Path

from aminet.config import Config
from aminet.data import registry, splits, synthetic

__all__ = ["resolve_root", "build_training_data", "evaluation_set"]


def resolve_root(cfg: Config, quiet: bool = False) -> Path:
    """``data.root`` (must exist) or the synthetic benchmark of the layout, generated once."""
    if cfg.data.root is None:
        return synthetic.ensure_default(cfg.data.dataset, quiet=quiet)
    root = Path(cfg.data.root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"data.root: dataset folder not found: {root}")
    return root


def build_training_data(cfg: Config, root: Path) -> splits.TrainSet:
    return registry.get(cfg.data.dataset).train_set(Path(root), cfg.data)


def evaluation_set(cfg: Config, root: Path, trials: int | None = None) -> splits.EvalSet:
    """Validation probes (search) or test probes (final) of the configured benchmark; ``trials`` (a count of
    gallery draws) replaces ``eval.trials`` on a benchmark whose trials are gallery draws."""
    bench = registry.get(cfg.data.dataset)
    if trials is not None and not bench.model_per_trial:
        return bench.run_eval_set(root, cfg, list(range(trials)))
    return bench.run_eval_set(root, cfg)
