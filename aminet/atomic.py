"""Writing folders atomically: build under a temporary name beside the target, then rename.

Readers either see the complete folder under its final name or nothing: an interrupted writer leaves
only a hidden temporary folder, which is removed when the failure is an exception.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_directory"]


@contextmanager
def atomic_directory(final: str | Path, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary folder; on success it becomes ``final``.

    ``replace=True``: an existing ``final`` is replaced. ``replace=False``: if ``final`` already exists
    when the rename happens (a concurrent writer finished first), the existing folder is kept and this
    writer's copy is discarded."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        if replace and final.exists():
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)
        except OSError:
            if replace or not final.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
