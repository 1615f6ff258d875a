"""RegDB on disk: the per-trial index files of the common protocol.

Layout: ``Visible/<id>/<file>.bmp``, ``Thermal/<id>/<file>.bmp`` and
``idx/{train,test}_{visible,thermal}_{trial}.txt`` for trial 1..10, one ``<path relative to root>
<label>`` per line. 412 identities x (10 visible + 10 thermal); each trial trains on 206 ids and tests
on the other 206. One model per trial, tested on that trial's test files.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aminet.data.registry import Benchmark, register
from aminet.data.sets import EvalSet, ImageList, Probe, TrainSet, held_out_ids, relabel

__all__ = [
    "RegDBSplit",
    "split",
    "read_index",
    "TRIALS",
    "DIRECTIONS",
    "regdb_train",
    "regdb_eval",
    "regdb_val_ids",
    "BENCHMARK",
]

TRIALS = tuple(range(1, 11))
DIRECTIONS = {"v2t": ("visible", "thermal"), "t2v": ("thermal", "visible")}


@dataclass(frozen=True)
class RegDBSplit:
    """One part (train or test) of one trial. ``visible`` and ``thermal`` are ``(paths, pids)``."""

    trial: int
    part: str
    visible: tuple[list[str], np.ndarray]
    thermal: tuple[list[str], np.ndarray]

    def modality(self, name: str) -> tuple[list[str], np.ndarray]:
        if name not in ("visible", "thermal"):
            raise ValueError(f"RegDB modality {name!r}: choose visible or thermal")
        return self.visible if name == "visible" else self.thermal


def read_index(root: str | Path, path: str | Path, what: str = "RegDB index file") -> tuple[list[str], np.ndarray]:
    """Absolute image paths and integer labels of one ``<relative path> <label>`` index file (RegDB's, and
    LLCM's training lists); ``what`` names the file in the not-found message."""
    root, path = Path(root), Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    paths: list[str] = []
    labels: list[int] = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise ValueError(f"{path}:{line_no}: expected '<relative path> <label>', got {line.strip()!r}")
        rel, label = fields
        try:
            labels.append(int(label))
        except ValueError:
            raise ValueError(f"{path}:{line_no}: label {label!r} is not an integer") from None
        image = root / rel
        if not image.is_file():  # one stat per line (~2 us): a missing picture is named here, not mid-training
            raise FileNotFoundError(f"{path}:{line_no}: image not found: {image}")
        paths.append(str(image))
    if not paths:
        raise ValueError(f"{path}: the index file lists no images")
    return paths, np.asarray(labels, dtype=np.int64)


def split(root: str | Path, trial: int, part: str) -> RegDBSplit:
    """``idx/{part}_visible_{trial}.txt`` and ``idx/{part}_thermal_{trial}.txt`` read together."""
    if part not in ("train", "test"):
        raise ValueError(f"RegDB part {part!r}: choose train or test")
    if trial not in TRIALS or isinstance(trial, bool):
        raise ValueError(f"RegDB trial {trial!r}: expected an integer in 1..10")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"RegDB root not found: {root}")
    visible = read_index(root, root / "idx" / f"{part}_visible_{trial}.txt")
    thermal = read_index(root, root / "idx" / f"{part}_thermal_{trial}.txt")
    if set(visible[1].tolist()) != set(thermal[1].tolist()):
        raise ValueError(f"RegDB trial {trial} {part}: visible and thermal index files list different identities")
    return RegDBSplit(trial=trial, part=part, visible=visible, thermal=thermal)


# ------------------------------------------------------------------------------------------------
# The training and evaluation sets, and the registry entry
# ------------------------------------------------------------------------------------------------


def _regdb_lists(part: RegDBSplit) -> tuple[ImageList, ImageList]:
    v_paths, v_pids = part.visible
    t_paths, t_pids = part.thermal
    return (ImageList(v_paths, v_pids, np.ones_like(v_pids)), ImageList(t_paths, t_pids, np.full_like(t_pids, 2)))


def regdb_val_ids(pids: np.ndarray, trial: int, share: float) -> np.ndarray:
    """The held-out validation identities of a trial's training ids: a fixed draw per trial."""
    return held_out_ids(pids, [trial, 20240611], share, f"RegDB trial {trial}")


def regdb_train(root: str | Path, trial: int, purpose: str, val_share: float = 0.2) -> TrainSet:
    visible, thermal = _regdb_lists(split(root, trial, "train"))
    if purpose == "search":
        val = regdb_val_ids(visible.pids, trial, val_share)
        visible = visible.without_ids(val)
        thermal = thermal.without_ids(val)
    elif purpose != "final":
        raise ValueError(f"purpose {purpose!r}: choose search or final")
    return relabel(f"regdb-{trial}-{purpose}-train", visible, thermal)


def regdb_eval(
    root: str | Path, trial: int, purpose: str, directions: Iterable[str] = ("v2t",), val_share: float = 0.2
) -> EvalSet:
    if purpose == "search":
        visible, thermal = _regdb_lists(split(root, trial, "train"))
        val = regdb_val_ids(visible.pids, trial, val_share)
        visible = visible.of_ids(val)
        thermal = thermal.of_ids(val)
        name = f"regdb-val-{trial}"
    elif purpose == "final":
        visible, thermal = _regdb_lists(split(root, trial, "test"))
        name = f"regdb-test-{trial}"
    else:
        raise ValueError(f"purpose {purpose!r}: choose search or final")
    lists = {"visible": visible, "thermal": thermal}
    probes = []
    for d in directions:
        if d not in DIRECTIONS:
            raise ValueError(f"RegDB direction {d!r}: choose one of {', '.join(DIRECTIONS)}")
        q, g = DIRECTIONS[d]
        probes.append(
            Probe(
                d,
                trial,
                lists[q],
                "visible" if q == "visible" else "infrared",
                lists[g],
                "visible" if g == "visible" else "infrared",
            )
        )
    return EvalSet("regdb", name, probes)


def _eval_set(root: Path, purpose: str, directions: Sequence[str], trials: Sequence[int], data) -> EvalSet:
    """The probes of every trial in ``trials`` (each its own split) in one set; one trial is the normal case
    (a model is trained and evaluated per trial)."""
    sets = [regdb_eval(root, t, purpose, directions, data.regdb_val_share) for t in trials]
    if not sets:
        raise ValueError("trials: at least one RegDB trial is needed")
    if len(sets) == 1:
        return sets[0]
    return EvalSet(
        "regdb", f"{sets[0].name.rsplit('-', 1)[0]}-{'+'.join(map(str, trials))}", [p for s in sets for p in s.probes]
    )


def _check_test(root: Path, directions: Sequence[str]) -> None:
    for t in TRIALS:
        split(root, t, "test")


def _image_folders(root: Path) -> list[Path]:
    return [root / name for name in ("Thermal", "Visible") if (root / name).is_dir()]


BENCHMARK = register(
    Benchmark(
        name="regdb",
        title="RegDB",
        settings=tuple(DIRECTIONS),
        settings_field="regdb_directions",
        test_trials=TRIALS,
        model_per_trial=True,
        cameras=False,
        rank_rules={},
        image_folders=_image_folders,
        train_set=lambda root, data: regdb_train(root, data.regdb_trial, data.purpose, data.regdb_val_share),
        eval_set=_eval_set,
        config_trials=lambda cfg: [cfg.data.regdb_trial],
        protocol_parts=lambda cfg: [
            f"regdb_trial={cfg.data.regdb_trial}",
            f"val_share={cfg.data.regdb_val_share}",
            f"directions={','.join(cfg.eval.regdb_directions)}",
        ],
        check_test=_check_test,
    )
)
