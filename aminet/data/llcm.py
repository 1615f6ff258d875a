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

The search's validation (``purpose="search"``): a share of the training identities (``data.llcm_val_share``, a
fixed draw) is held out of training and evaluated as the test protocol is, on their training images: every
image of the query modality a query, one image per identity and camera of the gallery modality drawn per
trial. A camera is read from the ``cam<N>`` folder of an image's path (0 where the path names none).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aminet.data.regdb import read_index
from aminet.data.registry import Benchmark, register
from aminet.data.sets import EvalSet, ImageList, Probe, TrainSet, as_list, held_out_ids, relabel
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
    "llcm_train",
    "llcm_eval",
    "BENCHMARK",
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


# ------------------------------------------------------------------------------------------------
# The training and evaluation sets, and the registry entry
# ------------------------------------------------------------------------------------------------

_CAM = re.compile(r"^cam(\d+)$")
_MODALITY = {"test_vis": "visible", "test_nir": "infrared"}


def _camera(path: str) -> int:
    for part in reversed(Path(path).parts[:-1]):
        m = _CAM.match(part)
        if m:
            return int(m.group(1))
    return 0


def _train_lists(root: Path) -> tuple[ImageList, ImageList]:
    out = []
    for modality in ("visible", "infrared"):
        paths, labels = read_train_list(root, modality)
        out.append(ImageList(paths, labels, np.array([_camera(p) for p in paths], dtype=np.int64)))
    return out[0], out[1]


def llcm_val_ids(labels: np.ndarray, share: float) -> np.ndarray:
    """The held-out validation identities of LLCM's training set: a fixed draw."""
    return held_out_ids(labels, [0, 20240611, 3], share, "LLCM training set")


def llcm_train(root: str | Path, purpose: str, val_share: float = 0.2) -> TrainSet:
    """The training lists (``final``), without the held-out validation identities (``search``)."""
    visible, infrared = _train_lists(Path(root))
    if purpose == "search":
        val = llcm_val_ids(visible.pids, val_share)
        visible = visible.without_ids(val)
        infrared = infrared.without_ids(val)
    elif purpose != "final":
        raise ValueError(f"purpose {purpose!r}: choose search or final")
    return relabel(f"llcm-{purpose}-train", visible, infrared)


def _draw_gallery(images: ImageList, trial: int) -> ImageList:
    """One image per identity and camera, identities ascending, cameras ascending, files sorted, drawn from
    ``random.Random(trial)`` as the test gallery is."""
    rng = random.Random(trial)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (pid, cam) in enumerate(zip(images.pids.tolist(), images.cams.tolist())):
        groups.setdefault((pid, cam), []).append(i)
    keep = [rng.choice(sorted(groups[key], key=lambda i: images.paths[i])) for key in sorted(groups)]
    return ImageList([images.paths[i] for i in keep], images.pids[keep], images.cams[keep])


def llcm_eval(
    root: str | Path,
    purpose: str,
    directions: Sequence[str] = ("ir2vis",),
    trials: Sequence[int] = TRIALS,
    val_share: float = 0.2,
) -> EvalSet:
    """Validation (search: the held-out training identities) or test (final) probes under the LLCM rules,
    for each direction and gallery trial."""
    directions, trials = list(directions), list(trials)
    for d in directions:
        if d not in DIRECTIONS:
            raise ValueError(f"LLCM direction {d!r}: choose one of {', '.join(DIRECTIONS)}")
    if not trials:
        raise ValueError("trials: at least one trial is needed")
    probes = []
    if purpose == "search":
        visible, infrared = _train_lists(Path(root))
        val = llcm_val_ids(visible.pids, val_share)
        lists = {
            "test_vis": visible.of_ids(val),
            "test_nir": infrared.of_ids(val),
        }
        for d in directions:
            q, g = DIRECTIONS[d]
            probes += [Probe(d, t, lists[q], _MODALITY[q], _draw_gallery(lists[g], t), _MODALITY[g]) for t in trials]
        return EvalSet("llcm", "llcm-val", probes)
    if purpose != "final":
        raise ValueError(f"purpose {purpose!r}: choose search or final")
    for d in directions:
        q, g = DIRECTIONS[d]
        query = as_list(query_set(root, d))
        probes += [Probe(d, t, query, _MODALITY[q], as_list(gallery_set(root, d, t)), _MODALITY[g]) for t in trials]
    return EvalSet("llcm", "llcm-test", probes)


def _check_test(root: Path, directions: Sequence[str]) -> None:
    for d in directions:
        query_set(root, d)
        gallery_set(root, d, 0)


def _image_folders(root: Path) -> list[Path]:
    """``test_vis/``, ``test_nir/`` and the top folders the training lists name (a root without
    ``idx/test_id.txt`` is not an LLCM layout)."""
    if not (root / "idx" / "test_id.txt").is_file():
        return []
    tops = {"test_vis", "test_nir"}
    for name in ("train_vis.txt", "train_nir.txt"):
        index = root / "idx" / name
        if index.is_file():
            tops |= {
                line.split()[0].split("/")[0] for line in index.read_text(encoding="utf-8").splitlines() if line.strip()
            }
    return [root / t for t in sorted(tops) if (root / t).is_dir()]


BENCHMARK = register(
    Benchmark(
        name="llcm",
        title="LLCM",
        settings=tuple(DIRECTIONS),
        settings_field="llcm_directions",
        test_trials=TRIALS,
        model_per_trial=False,
        cameras=True,
        rank_rules={"remove_same_camera": True, "dedup_cmc": True},
        image_folders=_image_folders,
        train_set=lambda root, data: llcm_train(root, data.purpose, data.llcm_val_share),
        eval_set=lambda root, purpose, settings, trials, data: llcm_eval(
            root, purpose, settings, trials, data.llcm_val_share
        ),
        config_trials=lambda cfg: list(range(cfg.eval.trials)),
        protocol_parts=lambda cfg: [
            f"val_share={cfg.data.llcm_val_share}",
            f"directions={','.join(cfg.eval.llcm_directions)}",
            f"gallery_trials={cfg.eval.trials}",
        ],
        check_test=_check_test,
    )
)
