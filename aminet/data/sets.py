"""The sets a run reads, whatever the benchmark: an image list, one ranking problem (``Probe``), an
evaluation set (``EvalSet``: the probes of one benchmark's protocol) and a training set (``TrainSet``,
labels relabelled 0..C-1 from the sorted original identities, shared by both modalities). Each benchmark's
file (``aminet.data.sysu``, ``regdb``, ``llcm``) builds them from its layout; ``aminet.data.registry``
finds that file by the benchmark's name."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ImageList", "Probe", "EvalSet", "TrainSet", "relabel", "as_list", "held_out_ids"]


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

    def of_ids(self, ids: np.ndarray) -> ImageList:
        """The images of identities ``ids`` (a held-out validation split)."""
        return self.subset(np.isin(self.pids, ids))

    def without_ids(self, ids: np.ndarray) -> ImageList:
        """The images of every other identity (the training side of a held-out split)."""
        return self.subset(~np.isin(self.pids, ids))


@dataclass(frozen=True)
class Probe:
    """One ranking problem: a query set against a gallery, with the benchmark's rules."""

    setting: str  # "all" / "indoor" (SYSU), "v2t" / "t2v" (RegDB), "ir2vis" / "vis2ir" (LLCM)
    trial: int
    query: ImageList
    query_modality: str  # "visible" or "infrared"
    gallery: ImageList
    gallery_modality: str


@dataclass(frozen=True)
class EvalSet:
    benchmark: str  # a registered benchmark ("sysu", "regdb", "llcm"): whose rules the metrics follow
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


def relabel(name: str, visible: ImageList, infrared: ImageList) -> TrainSet:
    ids = sorted(set(visible.pids.tolist()) | set(infrared.pids.tolist()))
    both = set(visible.pids.tolist()) & set(infrared.pids.tolist())
    if len(both) < 2:
        raise ValueError(f"{name}: fewer than 2 identities have both visible and infrared images")
    lut = {pid: i for i, pid in enumerate(ids)}
    lv = np.array([lut[p] for p in visible.pids.tolist()], dtype=np.int64)
    li = np.array([lut[p] for p in infrared.pids.tolist()], dtype=np.int64)
    return TrainSet(visible, infrared, lv, li, len(ids), name)


def as_list(sample: tuple[list[str], np.ndarray, np.ndarray]) -> ImageList:
    return ImageList(*sample)


def held_out_ids(pids: np.ndarray, seed: list[int], share: float, what: str) -> np.ndarray:
    """A fixed draw of ``share`` of the identities in ``pids`` (at least 2, leaving at least 2): the validation
    identities of a benchmark without a validation split (RegDB, LLCM). ``seed`` fixes the draw."""
    ids = np.unique(pids)
    n_val = int(round(share * len(ids)))
    n_val = min(max(n_val, 2), len(ids) - 2)
    if n_val < 2:
        raise ValueError(f"{what}: {len(ids)} training ids are too few to hold out a validation set")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(ids, n_val, replace=False))
