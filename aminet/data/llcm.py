"""LLCM (Zhang and Wang, CVPR 2023: the low-light cross-modality benchmark, 1,064 identities, nine cameras) in
its official layout, read as the benchmark's public code reads it (ZYK100/LLCM, ``DEEN/data_manager.py``,
``DEEN/test.py``; written here from that description, no code taken):

    <root>/idx/train_vis.txt, idx/train_nir.txt     "<relative path> <label>" per line (the training set)
    <root>/idx/test_id.txt                          the test identities, comma-separated
    <root>/test_vis/cam1 .. cam9/<pid:04d>/<images> visible test images
    <root>/test_nir/cam1, cam2, cam4 .. cam9/<pid:04d>/<images>   near-infrared test images (no camera 3)

The test protocol, both directions, 10 trials:
* ``ir2vis`` (infrared to visible, the public code's default ``test_mode = [1, 2]``): every near-infrared
  image of the test identities is a query; the gallery holds one visible image per identity and camera,
  drawn per trial;
* ``vis2ir``: the other way round (every visible image a query, one near-infrared image per identity and
  camera in the gallery).
The draw: identities in ascending order, cameras in order, the sorted files of each folder, one
``random.choice`` each from a stream seeded with the trial number (Python's ``random.seed(trial)``). A
query's camera is its folder's number; the metric (``aminet.evaluation.metrics.llcm_metrics``) drops the
gallery entries of the query's identity from the query's own camera number.

Only the reader and the protocol's sets live here; the synthetic LLCM layout, configs and the search's use of
LLCM are not built yet (issue 40).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from aminet.data.regdb import read_index
from aminet.data.sysu import IMAGE_SUFFIXES, read_id_file

__all__ = [
    "VISIBLE_CAMS",
    "INFRARED_CAMS",
    "DIRECTIONS",
    "TRIALS",
    "read_test_ids",
    "read_train_list",
    "query_set",
    "gallery_set",
]

VISIBLE_CAMS = tuple(range(1, 10))
INFRARED_CAMS = (1, 2, 4, 5, 6, 7, 8, 9)
DIRECTIONS = {"ir2vis": ("test_nir", "test_vis"), "vis2ir": ("test_vis", "test_nir")}  # (query, gallery)
TRIALS = tuple(range(10))

Sample = tuple[list[str], np.ndarray, np.ndarray]


def _cams(folder: str) -> tuple[int, ...]:
    return VISIBLE_CAMS if folder == "test_vis" else INFRARED_CAMS


def read_test_ids(root: str | Path) -> list[int]:
    """Sorted identities of ``idx/test_id.txt`` (parsed as SYSU-MM01's id files are)."""
    return read_id_file(Path(root) / "idx" / "test_id.txt", "LLCM test id file")


def read_train_list(root: str | Path, modality: str) -> tuple[list[str], np.ndarray]:
    """Absolute paths and labels of ``idx/train_vis.txt`` (``modality="visible"``) or ``idx/train_nir.txt``
    (``"infrared"``), read as RegDB's index files are: every listed image must exist (file and line named)."""
    name = {"visible": "train_vis.txt", "infrared": "train_nir.txt"}.get(modality)
    if name is None:
        raise ValueError(f"LLCM modality {modality!r}: visible or infrared")
    return read_index(root, Path(root) / "idx" / name, "LLCM index file")


def _files(root: Path, folder: str, cam: int, pid: int) -> list[Path]:
    d = root / folder / f"cam{cam}" / f"{pid:04d}"
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _pack(entries: list[tuple[Path, int, int]], what: str, root: Path) -> Sample:
    if not entries:
        raise ValueError(f"LLCM {what} under {root} is empty: no images found for the test identities")
    return (
        [str(p) for p, _, _ in entries],
        np.array([pid for _, pid, _ in entries], dtype=np.int64),
        np.array([cam for _, _, cam in entries], dtype=np.int64),
    )


def _check(root: str | Path, direction: str) -> Path:
    if direction not in DIRECTIONS:
        raise ValueError(f"LLCM direction {direction!r}: choose one of {', '.join(DIRECTIONS)}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"LLCM root not found: {root}")
    return root


def query_set(root: str | Path, direction: str = "ir2vis") -> Sample:
    """Every test image of the query modality: ``(paths, pids, cams)``."""
    root = _check(root, direction)
    folder = DIRECTIONS[direction][0]
    entries = [
        (p, pid, cam) for pid in read_test_ids(root) for cam in _cams(folder) for p in _files(root, folder, cam, pid)
    ]
    return _pack(entries, f"{direction} query set ({folder})", root)


def gallery_set(root: str | Path, direction: str = "ir2vis", trial: int = 0) -> Sample:
    """One image of the gallery modality per test identity and camera, drawn for ``trial``."""
    root = _check(root, direction)
    if not isinstance(trial, int) or isinstance(trial, bool) or trial < 0:
        raise ValueError(f"LLCM trial {trial!r}: expected a non-negative integer")
    folder = DIRECTIONS[direction][1]
    rng = random.Random(trial)  # the stream of random.seed(trial), without touching the global state
    entries = []
    for pid in read_test_ids(root):
        for cam in _cams(folder):
            files = _files(root, folder, cam, pid)
            if files:
                entries.append((rng.choice(files), pid, cam))
    return _pack(entries, f"{direction} gallery ({folder}, trial {trial})", root)
