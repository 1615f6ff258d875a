"""Tiny SYSU-MM01 and RegDB layouts written by the tests. Each identity's images are a flat colour
that encodes the identity, so a colour-mean extractor is a perfect (and known) oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def identity_colour(pid: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(pid)
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _write(path: Path, pid: int, size=(16, 32), fmt="JPEG", noise_seed=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size[1], size[0], 3), np.uint8) + np.array(identity_colour(pid), np.uint8)
    if noise_seed is not None:
        arr = np.clip(arr.astype(int) + np.random.default_rng(noise_seed).integers(-3, 4, arr.shape), 0, 255)
    Image.fromarray(arr.astype(np.uint8)).save(path, fmt)


def write_sysu(root: Path, train=(1, 2, 3), val=(4,), test=(5, 6, 7, 8), images_per_cam=3, missing=()) -> Path:
    """cam1..cam6/<pid>/<nnnn>.jpg plus exp/*.txt. ``missing`` is a set of (pid, cam) left out."""
    (root / "exp").mkdir(parents=True, exist_ok=True)
    for name, ids in (("train", train), ("val", val), ("test", test)):
        (root / "exp" / f"{name}_id.txt").write_text(",".join(str(i) for i in ids) + "\n")
    for pid in (*train, *val, *test):
        for cam in range(1, 7):
            if (pid, cam) in missing:
                continue
            n = images_per_cam + (pid + cam) % 2  # uneven counts
            for k in range(1, n + 1):
                _write(root / f"cam{cam}" / f"{pid:04d}" / f"{k:04d}.jpg", pid)
    return root


def write_regdb(root: Path, n_ids=8, per_id=3, trials=(1, 2)) -> Path:
    """Visible/<id>/..bmp, Thermal/<id>/..bmp and idx/{train,test}_{visible,thermal}_{t}.txt."""
    for pid in range(n_ids):
        for k in range(per_id):
            _write(root / "Visible" / str(pid) / f"v_{pid}_{k}.bmp", pid, fmt="BMP")
            _write(root / "Thermal" / str(pid) / f"t_{pid}_{k}.bmp", pid, fmt="BMP")
    (root / "idx").mkdir(parents=True, exist_ok=True)
    for t in trials:
        ids = np.random.default_rng(t).permutation(n_ids)
        parts = {"train": sorted(ids[: n_ids // 2]), "test": sorted(ids[n_ids // 2 :])}
        for part, chosen in parts.items():
            for mod, folder, prefix in (("visible", "Visible", "v"), ("thermal", "Thermal", "t")):
                lines = [f"{folder}/{pid}/{prefix}_{pid}_{k}.bmp {pid}" for pid in chosen for k in range(per_id)]
                (root / "idx" / f"{part}_{mod}_{t}.txt").write_text("\n".join(lines) + "\n")
    return root
