"""Training and evaluation sets of SYSU-MM01 and RegDB for the two purposes of a run.

*search* (hyperparameter search; model selection happens here, so the test identities are never seen):
    SYSU-MM01: train on ``train_id`` only; validate on the ``val_id`` identities with the SYSU rules
    (infrared queries from cams 3/6, visible galleries drawn per trial as in the test protocol).
    RegDB: a share of the trial's training identities is held out (a fixed draw per trial) and
    evaluated with the RegDB rules; the rest is trained on.
*final* (published numbers): SYSU-MM01 trains on train + val, RegDB on the trial's training file, and
    both are evaluated with the full test protocol.

Labels are relabelled 0..C-1 from the sorted original identities, shared by both modalities.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aminet.data import regdb, sysu

__all__ = [
    "ImageList",
    "Probe",
    "EvalSet",
    "TrainSet",
    "sysu_train",
    "sysu_eval",
    "regdb_train",
    "regdb_eval",
    "regdb_val_ids",
]


@dataclass(frozen=True)
class ImageList:
    paths: list[str]
    pids: np.ndarray
    cams: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, mask: np.ndarray) -> ImageList:
        idx = np.flatnonzero(mask)
        return ImageList([self.paths[i] for i in idx], self.pids[idx], self.cams[idx])


@dataclass(frozen=True)
class Probe:
    """One ranking problem: a query set against a gallery, with the benchmark's rules."""

    setting: str  # "all" / "indoor" (SYSU) or "v2t" / "t2v" (RegDB)
    trial: int
    query: ImageList
    query_modality: str  # "visible" or "infrared"
    gallery: ImageList
    gallery_modality: str


@dataclass(frozen=True)
class EvalSet:
    benchmark: str  # "sysu" or "regdb": which rules the metrics follow
    name: str  # e.g. "sysu-val", "sysu-test", "regdb-test-3"
    probes: list[Probe] = field(default_factory=list)


@dataclass(frozen=True)
class TrainSet:
    visible: ImageList
    infrared: ImageList
    labels_visible: np.ndarray  # 0..C-1
    labels_infrared: np.ndarray
    num_classes: int
    name: str

    def describe(self) -> str:
        return (
            f"{self.name}: {self.num_classes} ids, {len(self.visible)} visible + {len(self.infrared)} infrared images"
        )


def _relabel(name: str, visible: ImageList, infrared: ImageList) -> TrainSet:
    ids = sorted(set(visible.pids.tolist()) | set(infrared.pids.tolist()))
    both = set(visible.pids.tolist()) & set(infrared.pids.tolist())
    if len(both) < 2:
        raise ValueError(f"{name}: fewer than 2 identities have both visible and infrared images")
    lut = {pid: i for i, pid in enumerate(ids)}
    lv = np.array([lut[p] for p in visible.pids.tolist()], dtype=np.int64)
    li = np.array([lut[p] for p in infrared.pids.tolist()], dtype=np.int64)
    return TrainSet(visible, infrared, lv, li, len(ids), name)


def _as_list(sample: tuple[list[str], np.ndarray, np.ndarray]) -> ImageList:
    return ImageList(*sample)


# ------------------------------------------------------------------------------------------------
# SYSU-MM01
# ------------------------------------------------------------------------------------------------


def sysu_train(root: str | Path, purpose: str) -> TrainSet:
    if purpose == "search":
        ids = sysu.read_ids(root, "train")
    elif purpose == "final":
        ids = sysu.read_ids(root, "train") + sysu.read_ids(root, "val")
    else:
        raise ValueError(f"purpose {purpose!r}: choose search or final")
    visible = _as_list(sysu.images_of(root, ids, sysu.VISIBLE_CAMS))
    infrared = _as_list(sysu.images_of(root, ids, sysu.INFRARED_CAMS))
    return _relabel(f"sysu-{purpose}-train", visible, infrared)


def sysu_eval(
    root: str | Path, purpose: str, modes: Iterable[str] = ("all",), trials: int | Iterable[int] = 10, shots: int = 1
) -> EvalSet:
    """Validation (search: ``val_id``) or test (final: ``test_id``) probes under the SYSU rules;
    ``trials`` is a count (0..n-1) or the trial numbers."""
    if purpose not in ("search", "final"):
        raise ValueError(f"purpose {purpose!r}: choose search or final")
    modes = list(modes)
    for mode in modes:
        if mode not in sysu.MODES:
            raise ValueError(f"SYSU-MM01 mode {mode!r}: choose one of {', '.join(sysu.MODES)}")
    trial_ids = list(range(trials)) if isinstance(trials, int) else list(trials)
    if not trial_ids:
        raise ValueError("trials: at least one trial is needed")
    split = "val" if purpose == "search" else "test"
    query = _as_list(sysu.query_set(root, split))
    probes = [
        Probe(
            mode, t, query, "infrared", _as_list(sysu.gallery_set(root, mode, t, shots=shots, split=split)), "visible"
        )
        for mode in modes
        for t in trial_ids
    ]
    return EvalSet("sysu", f"sysu-{'val' if purpose == 'search' else 'test'}", probes)


# ------------------------------------------------------------------------------------------------
# RegDB
# ------------------------------------------------------------------------------------------------


def _regdb_lists(part: regdb.RegDBSplit) -> tuple[ImageList, ImageList]:
    v_paths, v_pids = part.visible
    t_paths, t_pids = part.thermal
    return (ImageList(v_paths, v_pids, np.ones_like(v_pids)), ImageList(t_paths, t_pids, np.full_like(t_pids, 2)))


def regdb_val_ids(pids: np.ndarray, trial: int, share: float) -> np.ndarray:
    """The held-out validation identities of a trial's training ids: a fixed draw per trial."""
    ids = np.unique(pids)
    n_val = int(round(share * len(ids)))
    n_val = min(max(n_val, 2), len(ids) - 2)
    if n_val < 2:
        raise ValueError(f"RegDB trial {trial}: {len(ids)} training ids are too few to hold out a validation set")
    rng = np.random.default_rng([trial, 20240611])
    return np.sort(rng.choice(ids, n_val, replace=False))


def regdb_train(root: str | Path, trial: int, purpose: str, val_share: float = 0.2) -> TrainSet:
    visible, thermal = _regdb_lists(regdb.split(root, trial, "train"))
    if purpose == "search":
        val = regdb_val_ids(visible.pids, trial, val_share)
        visible = visible.subset(~np.isin(visible.pids, val))
        thermal = thermal.subset(~np.isin(thermal.pids, val))
    elif purpose != "final":
        raise ValueError(f"purpose {purpose!r}: choose search or final")
    return _relabel(f"regdb-{trial}-{purpose}-train", visible, thermal)


def regdb_eval(
    root: str | Path, trial: int, purpose: str, directions: Iterable[str] = ("v2t",), val_share: float = 0.2
) -> EvalSet:
    if purpose == "search":
        visible, thermal = _regdb_lists(regdb.split(root, trial, "train"))
        val = regdb_val_ids(visible.pids, trial, val_share)
        visible = visible.subset(np.isin(visible.pids, val))
        thermal = thermal.subset(np.isin(thermal.pids, val))
        name = f"regdb-val-{trial}"
    elif purpose == "final":
        visible, thermal = _regdb_lists(regdb.split(root, trial, "test"))
        name = f"regdb-test-{trial}"
    else:
        raise ValueError(f"purpose {purpose!r}: choose search or final")
    lists = {"visible": visible, "thermal": thermal}
    probes = []
    for d in directions:
        if d not in regdb.DIRECTIONS:
            raise ValueError(f"RegDB direction {d!r}: choose one of {', '.join(regdb.DIRECTIONS)}")
        q, g = regdb.DIRECTIONS[d]
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
