"""A decoded, resized image cache per dataset, memory-mapped by every process on a machine.

Every image of a dataset root (SYSU-MM01: ``cam*/<pid>/*``; RegDB: ``Visible/**``, ``Thermal/**``) is
decoded once, resized with LANCZOS to the configured size and stored as one uint8 array
``images.npy`` (N, H, W, 3) next to ``index.json`` (relative paths, sizes, the key). Processes open it
with ``np.load(mmap_mode="r")``: the pages live once in the OS page cache and are shared by all trials,
however many run on the machine.

The cache folder name carries a key over the source files (relative names, byte sizes, mtimes) and the
resize settings, so a changed dataset or size gets a new cache. It is built in a temporary folder and
renamed into place: an interrupted build leaves nothing that looks valid. Opening checks the array's
shape and file size against the index, and a truncated or damaged cache is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aminet.atomic import atomic_directory
from aminet.data.images import load_image
from aminet.data.sysu import IMAGE_SUFFIXES

__all__ = [
    "ImageCache",
    "dataset_files",
    "cache_key",
    "CACHE_VERSION",
    "CacheError",
    "dataset_fingerprint",
    "image_content_digest",
]

CACHE_VERSION = 1
RESAMPLE = "LANCZOS"


class CacheError(RuntimeError):
    """A cache could not be built or read; the message names the folder or file."""


def dataset_files(root: str | Path) -> list[Path]:
    """Every image file of a root in a registered benchmark's layout (SYSU-MM01, RegDB, LLCM: the folders its
    registry entry names), sorted by relative path."""
    from aminet.data import registry

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root not found: {root}")
    found = registry.layout(root)  # one listing: LLCM's reads its index files to find its folders
    tops = found[1] if found is not None else []
    if not tops:
        raise ValueError(
            f"{root}: neither a SYSU-MM01 layout (cam1..cam6/) nor a RegDB layout (Visible/, Thermal/) nor an LLCM "
            f"layout (idx/test_id.txt, test_vis/, test_nir/)"
        )
    files = [p for top in tops for p in top.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise ValueError(f"{root}: no images found under {', '.join(t.name for t in tops)}")
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def cache_key(root: Path, files: Sequence[Path], height: int, width: int) -> str:
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION} {height}x{width} {RESAMPLE}\n".encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(root).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


@dataclass
class ImageCache:
    root: Path
    folder: Path
    images: np.ndarray  # (N, H, W, 3) uint8, memory-mapped read-only
    rel_paths: list[str]

    def __post_init__(self) -> None:
        self._index = {p: i for i, p in enumerate(self.rel_paths)}

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    def __len__(self) -> int:
        return len(self.rel_paths)

    def indices(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Row of each path (absolute, or relative to the root) in the cache."""
        out = np.empty(len(paths), dtype=np.int64)
        for i, p in enumerate(paths):
            p = Path(p)
            rel = p.relative_to(self.root).as_posix() if p.is_absolute() else p.as_posix()
            try:
                out[i] = self._index[rel]
            except KeyError:
                raise KeyError(f"{p} is not in the image cache of {self.root}") from None
        return out

    def load(self, paths: Sequence[str | Path]) -> np.ndarray:
        """A copy of the cached images of ``paths`` (N, H, W, 3) uint8."""
        return self.take(self.indices(paths))

    def take(self, idx: np.ndarray) -> np.ndarray:
        """A copy of rows ``idx`` as a plain in-memory array."""
        return np.asarray(self.images[np.asarray(idx, dtype=np.int64)])

    # --------------------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        root: str | Path,
        height: int,
        width: int,
        cache_dir: str | Path | None = None,
        workers: int | None = None,
        progress: bool = True,
    ) -> ImageCache:
        """Open the cache of ``root`` at ``height x width``, building it first if needed."""
        root = Path(root).resolve()
        files = dataset_files(root)
        key = cache_key(root, files, height, width)
        base = Path(cache_dir).expanduser().resolve() if cache_dir else _default_cache_dir()
        folder = base / f"{root.name}-{height}x{width}-{key}"
        if folder.is_dir():
            try:
                return cls._read(root, folder, len(files), height, width)
            except CacheError as exc:
                print(f"[aminet] image cache {folder} is damaged ({exc}); rebuilding it", file=sys.stderr)
                _remove(folder)
        _build(root, folder, files, height, width, key, workers, progress)
        return cls._read(root, folder, len(files), height, width)

    @classmethod
    def _read(cls, root: Path, folder: Path, n: int, height: int, width: int) -> ImageCache:
        index_path, array_path = folder / "index.json", folder / "images.npy"
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
            paths = index["paths"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CacheError(f"unreadable index {index_path}: {exc}") from None
        try:
            images = np.load(array_path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise CacheError(f"unreadable array {array_path}: {exc}") from None
        expected = (n, height, width, 3)
        if images.shape != expected or images.dtype != np.uint8 or len(paths) != n:
            raise CacheError(f"{array_path} holds {images.shape} {images.dtype}, expected {expected} uint8")
        if images.offset + images.nbytes > array_path.stat().st_size:  # defensive: numpy checks this too
            raise CacheError(f"{array_path} is truncated")
        return cls(root, folder, images, paths)


# Non-image files up to this size (split and index lists, a few KB each) enter the fingerprint by content.
SMALL_FILE = 64 << 20


def dataset_fingerprint(root: str | Path, cache_dir: str | Path | None = None) -> str:
    """A digest of a dataset folder's content: every file's relative path and size, the bytes of its split and
    index lists (moving an identity from ``train_id.txt`` to ``val_id.txt`` keeps the byte sizes) and the
    bytes of its images (``image_content_digest``: a replaced picture of the same size). Modification times do
    not enter, so two copies of one dataset agree. Names the data a model was selected on."""
    root = Path(root).resolve()
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            size = p.stat().st_size
            line = f"{p.relative_to(root).as_posix()}\t{size}"
            if p.suffix.lower() not in IMAGE_SUFFIXES and size <= SMALL_FILE:
                line += "\t" + hashlib.sha256(p.read_bytes()).hexdigest()
            entries.append(line + "\n")
    h = hashlib.sha256()
    for line in sorted(entries):
        h.update(line.encode())
    try:
        images = image_content_digest(root, cache_dir=cache_dir)
    except ValueError:  # not a registered benchmark's layout: the listing is all there is
        images = "none"
    h.update(f"images\t{images}\n".encode())
    return h.hexdigest()[:16]


def image_content_digest(root: str | Path, cache_dir: str | Path | None = None, workers: int | None = None) -> str:
    """A digest of the bytes of every image of a dataset root, in path order. Hashing reads every image
    (measured on this project's 2-core machine, page cache warm: 19 us per 12 KB file, about 6 s for
    SYSU-MM01's ~300 k images; a cold disk reads them at its own speed), so it is done once per machine and
    data: the result is kept beside the image caches under a key of the files' names, sizes and modification
    times (the image cache's own staleness test), and every later call costs one ``stat`` per file."""
    root = Path(root).resolve()
    files = dataset_files(root)
    listing = hashlib.sha256()
    for p in files:
        st = p.stat()
        listing.update(f"{p.relative_to(root).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    base = Path(cache_dir).expanduser().resolve() if cache_dir else _default_cache_dir()
    memo = base / "content" / f"{root.name}-{listing.hexdigest()[:20]}.txt"
    try:
        known = memo.read_text(encoding="utf-8").strip()
        if len(known) == 64:
            return known
    except OSError:
        pass

    def one(p: Path) -> str:
        try:
            return hashlib.sha256(p.read_bytes()).hexdigest()
        except OSError as exc:
            raise CacheError(f"cannot read image {p}: {exc.strerror or exc}") from None

    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        digests = list(pool.map(one, files))
    h = hashlib.sha256()
    for p, d in zip(files, digests):
        h.update(f"{p.relative_to(root).as_posix()}\t{d}\n".encode())
    digest = h.hexdigest()
    try:  # a memo, not a record: a read-only cache folder only means hashing again next time
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".{memo.name}.{os.getpid()}-{threading.get_ident()}")
        tmp.write_text(digest + "\n", encoding="utf-8")
        os.replace(tmp, memo)
    except OSError:
        pass
    return digest


def _default_cache_dir() -> Path:
    from aminet.data.synthetic import cache_home

    return cache_home() / "images"


def _remove(folder: Path) -> None:
    # Move aside first so no other process sees a half-deleted cache under the valid name.
    trash = folder.with_name(f".{folder.name}.trash-{os.getpid()}-{threading.get_ident()}")
    try:
        os.replace(folder, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _build(
    root: Path, folder: Path, files: list[Path], height: int, width: int, key: str, workers: int | None, progress: bool
) -> None:
    # replace=False: if a concurrent builder finished first, its (identical) cache is kept.
    with atomic_directory(folder, replace=False) as tmp:
        arr = np.lib.format.open_memmap(
            tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(len(files), height, width, 3)
        )
        workers = workers or min(8, os.cpu_count() or 1)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(
                total=len(files),
                desc=f"caching {root.name} at {height}x{width}",
                unit="img",
                file=sys.stderr,
                mininterval=1.0,
            )

        def one(i: int) -> None:
            arr[i] = load_image(files[i], height, width)  # ImageDecodeError names the file

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(one, range(len(files))):
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        arr.flush()
        index = {
            "version": CACHE_VERSION,
            "key": key,
            "root": str(root),
            "height": height,
            "width": width,
            "resample": RESAMPLE,
            "paths": [p.relative_to(root).as_posix() for p in files],
        }
        (tmp / "index.json").write_text(json.dumps(index), encoding="utf-8")
