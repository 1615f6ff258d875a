"""Command-line helpers shared by the project's entry points."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from aminet.config import Config

__all__ = ["ArgumentParser", "UsageError", "check_inputs"]


class UsageError(Exception):
    """Bad input found after parsing (a folder, a value's range, a file's content): the entry points
    report it as one line, ``error: <message>``, with exit status 2, before anything is written."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` with bad arguments reported as one line (``prog: error: ...``), exit status 2.

    The usage text stays available with ``-h``; a wrong flag or value gets only the line that names it.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)  # "--gpus 2" must not silently mean --gpus-per-trial
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} -h)\n")
        sys.exit(2)


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
