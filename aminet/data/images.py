"""Decoding images into fixed-size uint8 arrays (the one place that touches Pillow)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["ImageDecodeError", "load_image", "load_images", "IMAGENET_MEAN", "IMAGENET_STD"]

from aminet.imaging import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402 - re-exported where they used to live


class ImageDecodeError(ValueError):
    """An image file is missing, truncated or not an image. The message names the file."""


def load_image(path: str | Path, height: int, width: int) -> np.ndarray:
    """One image as (height, width, 3) uint8 RGB, resized with LANCZOS (infrared is stored as RGB)."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (width, height):
                img = img.resize((width, height), Image.Resampling.LANCZOS)
            return np.asarray(img, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise ImageDecodeError(f"image not found: {path}") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"cannot decode image {path}: {exc}") from None


def load_images(paths: Sequence[str | Path], height: int, width: int, workers: int | None = None) -> np.ndarray:
    """Many images as (N, height, width, 3) uint8, decoded by a thread pool (Pillow releases the GIL)."""
    out = np.empty((len(paths), height, width, 3), dtype=np.uint8)
    if not paths:
        return out
    workers = workers or min(8, os.cpu_count() or 1)

    def one(i: int) -> None:
        out[i] = load_image(paths[i], height, width)

    if workers <= 1 or len(paths) < 16:
        for i in range(len(paths)):
            one(i)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(one, range(len(paths))):
                pass
    return out
