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
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from aminet.data.registry import Benchmark, register
from aminet.data.sets import EvalSet, Probe, TrainSet, as_list, relabel

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
    "sysu_train",
    "sysu_eval",
    "check_listed_identities",
    "BENCHMARK",
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


# ------------------------------------------------------------------------------------------------
# The training and evaluation sets, and the registry entry
# ------------------------------------------------------------------------------------------------


def sysu_train(root: str | Path, purpose: str) -> TrainSet:
    if purpose == "search":
        ids = read_ids(root, "train")
    elif purpose == "final":
        ids = read_ids(root, "train") + read_ids(root, "val")
    else:
        raise ValueError(f"purpose {purpose!r}: choose search or final")
    visible = as_list(images_of(root, ids, VISIBLE_CAMS))
    infrared = as_list(images_of(root, ids, INFRARED_CAMS))
    return relabel(f"sysu-{purpose}-train", visible, infrared)


def sysu_eval(
    root: str | Path, purpose: str, modes: Iterable[str] = ("all",), trials: int | Iterable[int] = 10, shots: int = 1
) -> EvalSet:
    """Validation (search: ``val_id``) or test (final: ``test_id``) probes under the SYSU rules;
    ``trials`` is a count (0..n-1) or the trial numbers."""
    if purpose not in ("search", "final"):
        raise ValueError(f"purpose {purpose!r}: choose search or final")
    modes = list(modes)
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"SYSU-MM01 mode {mode!r}: choose one of {', '.join(MODES)}")
    trial_ids = list(range(trials)) if isinstance(trials, int) else list(trials)
    if not trial_ids:
        raise ValueError("trials: at least one trial is needed")
    split = "val" if purpose == "search" else "test"
    query = as_list(query_set(root, split))
    probes = [
        Probe(mode, t, query, "infrared", as_list(gallery_set(root, mode, t, shots=shots, split=split)), "visible")
        for mode in modes
        for t in trial_ids
    ]
    return EvalSet("sysu", f"sysu-{'val' if purpose == 'search' else 'test'}", probes)


def check_listed_identities(root: Path) -> None:
    """Every identity a SYSU-MM01 split file lists has at least one image in some camera: the loaders skip an
    identity without images (real SYSU-MM01 has identities missing from some cameras), so a split file naming
    people who are not there would otherwise shrink a set silently or empty it late. Raises ``ValueError``
    naming the file and the first such identity. A root that passed, with its split files unchanged, is not
    read again in this process (a search's preflight reaches it through the data check and the test check)."""
    root = Path(root)
    files = [root / "exp" / f"{split}_id.txt" for split in ("train", "val", "test")]
    key = (str(root.resolve()), tuple((f.stat().st_mtime_ns, f.stat().st_size) if f.is_file() else None for f in files))
    if key in _LISTED_OK:
        return
    cams = (*VISIBLE_CAMS, *INFRARED_CAMS)
    for split, file in zip(("train", "val", "test"), files):
        if not file.is_file():
            continue  # a missing split file is reported by the loader that needs it
        missing = [pid for pid in read_ids(root, split) if not any(camera_images(root, c, pid) for c in cams)]
        if missing:
            raise ValueError(
                f"{file}: {len(missing)} listed identit{'y has' if len(missing) == 1 else 'ies have'} "
                f"no image in any camera (first: {missing[0]}, expected under {root}/cam*/{missing[0]:04d}/)"
            )
    _LISTED_OK.add(key)


_LISTED_OK: set[tuple] = set()  # (root, its split files' mtimes and sizes) that passed check_listed_identities


def _check_test(root: Path, modes: Sequence[str]) -> None:
    query_set(root, "test")
    for mode in modes:
        gallery_set(root, mode, trial=0, split="test")
    check_listed_identities(root)


def _image_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return [p for p in sorted(root.iterdir()) if p.is_dir() and p.name.startswith("cam") and p.name[3:].isdigit()]


BENCHMARK = register(
    Benchmark(
        name="sysu",
        title="SYSU-MM01",
        settings=tuple(MODES),
        settings_field="sysu_modes",
        test_trials=tuple(range(10)),
        model_per_trial=False,
        cameras=True,
        rank_rules={"remove_cam2_for_cam3": True, "dedup_cmc": True},
        image_folders=_image_folders,
        train_set=lambda root, data: sysu_train(root, data.purpose),
        eval_set=lambda root, purpose, settings, trials, data: sysu_eval(root, purpose, settings, trials),
        config_trials=lambda cfg: list(range(cfg.eval.trials)),
        protocol_parts=lambda cfg: [f"modes={','.join(cfg.eval.sysu_modes)}", f"gallery_trials={cfg.eval.trials}"],
        check_data=check_listed_identities,
        check_test=_check_test,
    )
)
