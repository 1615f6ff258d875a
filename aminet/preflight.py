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
    if cfg.data.dataset == "sysu":
        check_listed_identities(root)
    return root


def check_listed_identities(root: Path) -> None:
    """Every identity a SYSU-MM01 split file lists has at least one image in some camera: the loaders skip an
    identity without images (real SYSU-MM01 has identities missing from some cameras), so a split file naming
    people who are not there would otherwise shrink a set silently or empty it late. Raises ``ValueError``
    naming the file and the first such identity."""
    from aminet.data import sysu

    cams = (*sysu.VISIBLE_CAMS, *sysu.INFRARED_CAMS)
    for split in ("train", "val", "test"):
        if not (root / "exp" / f"{split}_id.txt").is_file():
            continue  # a missing split file is reported by the loader that needs it
        missing = [pid for pid in sysu.read_ids(root, split) if not any(sysu.camera_images(root, c, pid) for c in cams)]
        if missing:
            raise ValueError(
                f"{root / 'exp' / f'{split}_id.txt'}: {len(missing)} listed identit{'y has' if len(missing) == 1 else 'ies have'} "
                f"no image in any camera (first: {missing[0]}, expected under {root}/cam*/{missing[0]:04d}/)"
            )


def check_test_protocols(sysu_root: Path | None, regdb_root: Path | None, sysu_modes=("all", "indoor")) -> None:
    """The test protocols a search's final evaluation runs after training (SYSU-MM01's query and every mode's
    gallery; RegDB's ten test trials, each index line's image), read before the search starts: a bad test
    split is one line now, not a failure after hours of searching."""
    from aminet.data import regdb, sysu

    if sysu_root is not None:
        sysu.query_set(sysu_root, "test")
        for mode in sysu_modes:
            sysu.gallery_set(sysu_root, mode, trial=0, split="test")
        check_listed_identities(Path(sysu_root))
    if regdb_root is not None:
        for t in regdb.TRIALS:
            regdb.split(regdb_root, t, "test")
