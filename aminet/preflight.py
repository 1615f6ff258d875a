"""What both runners check before they write anything (``check_inputs``): the weights, the data folder,
the training split and the evaluation set. Its own module: it reads data and model, and ``aminet.cli`` (the
one-line argument errors every command uses, the data generator's included) stays a leaf."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aminet.config import Config

__all__ = ["check_inputs"]


def check_inputs(cfg: Config, regdb_trials: list[int] | None = None, quiet: bool = False) -> Path:
    """What both runners check before they write anything: the pretrained-weights file (nothing is
    downloaded), the dataset folder (the synthetic benchmark of the layout is generated when no root is
    configured), the training split and the evaluation set, for each RegDB trial in ``regdb_trials``
    (default: the config's). Raises ``FileNotFoundError`` / ``ValueError`` / ``RuntimeError`` with a
    message naming the file or value; returns the dataset folder."""
    from aminet.data.builders import build_training_data, evaluation_set, resolve_root
    from aminet.model.aminet import check_weights

    check_weights(cfg.model.arch, cfg.model.weights)
    root = resolve_root(cfg, quiet=quiet)
    trials = regdb_trials if (cfg.data.dataset == "regdb" and regdb_trials) else [cfg.data.regdb_trial]
    for t in trials:
        c = cfg.replace({"data.regdb_trial": t})
        build_training_data(c, root)
        evaluation_set(c, root)
    return root
