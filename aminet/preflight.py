"""What both runners check before they write anything (``check_inputs``): the weights, the data folder,
the training split and the evaluation set. Its own module: it reads data and model, and ``aminet.cli`` (the
one-line argument errors every command uses, the data generator's included) stays a leaf."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aminet.config import Config

__all__ = ["check_inputs", "check_listed_identities", "check_test_protocols"]


def check_inputs(cfg: Config, regdb_trials: list[int] | None = None, quiet: bool = False) -> Path:
    """What both runners check before they write anything: the pretrained-weights file (nothing is
    downloaded), the dataset folder (the synthetic benchmark of the layout is generated when no root is
    configured), the training split and the evaluation set, for each RegDB trial in ``regdb_trials``
    (default: the config's), and the layout's own checks (its registry entry's ``check_data``). Raises
    ``FileNotFoundError`` / ``ValueError`` / ``RuntimeError`` with a message naming the file or value; returns
    the dataset folder."""
    from aminet.data import registry
    from aminet.data.builders import build_training_data, evaluation_set, resolve_root
    from aminet.model.aminet import check_weights

    check_weights(cfg.model.arch, cfg.model.weights)
    root = resolve_root(cfg, quiet=quiet)
    bench = registry.get(cfg.data.dataset)
    trials = regdb_trials if (bench.model_per_trial and regdb_trials) else [cfg.data.regdb_trial]
    for t in trials:
        c = cfg.replace({"data.regdb_trial": t})
        build_training_data(c, root)
        evaluation_set(c, root)
    bench.check_data(root)
    return root


def check_listed_identities(root: Path) -> None:
    """SYSU-MM01's listed identities each have an image (``aminet.data.sysu.check_listed_identities``)."""
    from aminet.data.sysu import check_listed_identities as check

    check(root)


def check_test_protocols(roots: dict[str, Path | None], settings: dict[str, list[str]] | None = None) -> None:
    """The test protocols a search's final evaluation runs after training (each benchmark of ``roots`` whose
    root is given: SYSU-MM01's query and every mode's gallery; RegDB's ten test trials, each index line's
    image; LLCM's queries and galleries), read before the search starts: a bad test split is one line now,
    not a failure after hours of searching. ``settings``: the settings read per benchmark (default all)."""
    from aminet.data import registry

    for name, root in roots.items():
        if root is not None:
            bench = registry.get(name)
            bench.check_test(Path(root), (settings or {}).get(name, list(bench.settings)))
