"""SYSU-MM01 on disk: identity files, and the test query / gallery sets of the common protocol.

Layout (the official release): ``cam1 .. cam6/<pid:04d>/<img>.jpg`` and ``exp/{train,val,test}_id.txt``
(comma-separated integer ids). Visible cameras 1, 2 (indoor), 4, 5 (outdoor); infrared 3 (indoor) and 6.

Order (as the public code that most papers report with builds it):
    * identities sorted;
    * query: for each identity, cameras [3, 6], every image of an existing folder, files sorted;
    * gallery of trial t: ``random.seed(t)``, then for each identity and each camera of the mode
      (all: [1, 2, 4, 5]; indoor: [1, 2]) with an existing, non-empty folder, one ``random.choice``
      over the sorted files (``shots=10``: one ``random.sample`` of up to 10 files instead).

Identity and camera are read from the path components (``.../cam3/0012/0007.jpg``), never from
character offsets.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

__all__ = [
    "VISIBLE_CAMS",
    "INFRARED_CAMS",
    "MODES",
    "IMAGE_SUFFIXES",
    "read_ids",
    "query_set",
    "gallery_set",
    "parse_path",
    "camera_images",
    "images_of",
]

VISIBLE_CAMS = (1, 2, 4, 5)
INFRARED_CAMS = (3, 6)
MODES = {"all": (1, 2, 4, 5), "indoor": (1, 2)}
QUERY_CAMS = (3, 6)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

Sample = tuple[list[str], np.ndarray, np.ndarray]


def read_ids(root: str | Path, split: str) -> list[int]:
    """Sorted identities of ``exp/{split}_id.txt`` (split in train / val / test)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"SYSU-MM01 split {split!r}: choose train, val or test")
    return read_id_file(Path(root) / "exp" / f"{split}_id.txt", "SYSU-MM01 id file")


def read_id_file(path: Path, what: str) -> list[int]:
    """Sorted identities of a comma- or space-separated id file (SYSU-MM01's and LLCM's); ``what`` names the
    file in the not-found message. Non-integers, duplicates and an empty file are errors naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    ids: list[int] = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        for token in line.replace(",", " ").split():
            try:
                ids.append(int(token))
            except ValueError:
                raise ValueError(f"{path}:{line_no}: {token!r} is not an integer identity") from None
    if not ids:
        raise ValueError(f"{path}: no identities listed")
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"{path}: identities listed twice: {dup}")
    return sorted(ids)


def camera_images(root: str | Path, cam: int, pid: int) -> list[Path] | None:
    """Sorted image files of ``cam<cam>/<pid:04d>``; None if that folder does not exist."""
    folder = Path(root) / f"cam{cam}" / f"{pid:04d}"
    if not folder.is_dir():
        return None
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def parse_path(path: str | Path) -> tuple[int, int]:
    """(pid, cam) from ``.../cam<c>/<pid>/<file>``."""
    p = Path(path)
    cam_dir, pid_dir = p.parent.parent.name, p.parent.name
    if not (cam_dir.startswith("cam") and cam_dir[3:].isdigit() and pid_dir.isdigit()):
        raise ValueError(f"{path}: not a SYSU-MM01 image path (expected .../cam<N>/<pid>/<file>)")
    return int(pid_dir), int(cam_dir[3:])


def _check_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"SYSU-MM01 root not found: {root}")
    return root


def _pack(paths: list[Path], what: str, root: Path) -> Sample:
    if not paths:
        raise ValueError(f"SYSU-MM01 {what} under {root} is empty: no images found for the listed ids")
    parsed = [parse_path(p) for p in paths]
    pids = np.array([pid for pid, _ in parsed], dtype=np.int64)
    cams = np.array([cam for _, cam in parsed], dtype=np.int64)
    return [str(p) for p in paths], pids, cams


def query_set(root: str | Path, split: str = "test") -> Sample:
    """Infrared queries of the ``split`` identities (test; val for validation): ``(paths, pids, cams)``."""
    root = _check_root(root)
    paths: list[Path] = []
    for pid in read_ids(root, split):
        for cam in QUERY_CAMS:
            files = camera_images(root, cam, pid)
            if files:
                paths.extend(files)
    return _pack(paths, f"query set ({split} ids)", root)


def gallery_set(root: str | Path, mode: str = "all", trial: int = 0, shots: int = 1, split: str = "test") -> Sample:
    """Visible gallery of the ``split`` identities for one trial: ``(paths, pids, cams)``."""
    if mode not in MODES:
        raise ValueError(f"SYSU-MM01 mode {mode!r}: choose one of {', '.join(MODES)}")
    if not isinstance(trial, int) or isinstance(trial, bool) or trial < 0:
        raise ValueError(f"SYSU-MM01 trial {trial!r}: expected a non-negative integer")
    if shots not in (1, 10):
        raise ValueError(f"SYSU-MM01 shots {shots!r}: 1 (single-shot) or 10 (multi-shot)")
    root = _check_root(root)
    rng = random.Random(trial)  # same stream as random.seed(trial), without touching global state
    paths: list[Path] = []
    for pid in read_ids(root, split):
        for cam in MODES[mode]:
            files = camera_images(root, cam, pid)
            if not files:
                continue
            if shots == 1:
                paths.append(rng.choice(files))
            else:
                paths.extend(rng.sample(files, min(shots, len(files))))
    return _pack(paths, f"{mode}-search gallery (trial {trial}, {split} ids)", root)


def images_of(root: str | Path, ids: list[int], cams: tuple[int, ...]) -> Sample:
    """Every image of ``ids`` in ``cams``: ids sorted, cameras in order, files sorted."""
    root = _check_root(root)
    paths: list[Path] = []
    for pid in sorted(ids):
        for cam in cams:
            paths.extend(camera_images(root, cam, pid) or [])
    return _pack(paths, f"image set of {len(ids)} ids in cams {list(cams)}", root)
