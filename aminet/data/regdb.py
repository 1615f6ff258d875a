"""RegDB on disk: the per-trial index files of the common protocol.

Layout: ``Visible/<id>/<file>.bmp``, ``Thermal/<id>/<file>.bmp`` and
``idx/{train,test}_{visible,thermal}_{trial}.txt`` for trial 1..10, one ``<path relative to root>
<label>`` per line. 412 identities x (10 visible + 10 thermal); each trial trains on 206 ids and tests
on the other 206. One model per trial, tested on that trial's test files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["RegDBSplit", "split", "read_index", "TRIALS", "DIRECTIONS"]

TRIALS = tuple(range(1, 11))
DIRECTIONS = {"v2t": ("visible", "thermal"), "t2v": ("thermal", "visible")}


@dataclass(frozen=True)
class RegDBSplit:
    """One part (train or test) of one trial. ``visible`` and ``thermal`` are ``(paths, pids)``."""

    trial: int
    part: str
    visible: tuple[list[str], np.ndarray]
    thermal: tuple[list[str], np.ndarray]

    def modality(self, name: str) -> tuple[list[str], np.ndarray]:
        if name not in ("visible", "thermal"):
            raise ValueError(f"RegDB modality {name!r}: choose visible or thermal")
        return self.visible if name == "visible" else self.thermal


def read_index(root: str | Path, path: str | Path, what: str = "RegDB index file") -> tuple[list[str], np.ndarray]:
    """Absolute image paths and integer labels of one ``<relative path> <label>`` index file (RegDB's, and
    LLCM's training lists); ``what`` names the file in the not-found message."""
    root, path = Path(root), Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    paths: list[str] = []
    labels: list[int] = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise ValueError(f"{path}:{line_no}: expected '<relative path> <label>', got {line.strip()!r}")
        rel, label = fields
        try:
            labels.append(int(label))
        except ValueError:
            raise ValueError(f"{path}:{line_no}: label {label!r} is not an integer") from None
        image = root / rel
        if not image.is_file():  # one stat per line (~2 us): a missing picture is named here, not mid-training
            raise FileNotFoundError(f"{path}:{line_no}: image not found: {image}")
        paths.append(str(image))
    if not paths:
        raise ValueError(f"{path}: the index file lists no images")
    return paths, np.asarray(labels, dtype=np.int64)


def split(root: str | Path, trial: int, part: str) -> RegDBSplit:
    """``idx/{part}_visible_{trial}.txt`` and ``idx/{part}_thermal_{trial}.txt`` read together."""
    if part not in ("train", "test"):
        raise ValueError(f"RegDB part {part!r}: choose train or test")
    if trial not in TRIALS or isinstance(trial, bool):
        raise ValueError(f"RegDB trial {trial!r}: expected an integer in 1..10")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"RegDB root not found: {root}")
    visible = read_index(root, root / "idx" / f"{part}_visible_{trial}.txt")
    thermal = read_index(root, root / "idx" / f"{part}_thermal_{trial}.txt")
    if set(visible[1].tolist()) != set(thermal[1].tolist()):
        raise ValueError(f"RegDB trial {trial} {part}: visible and thermal index files list different identities")
    return RegDBSplit(trial=trial, part=part, visible=visible, thermal=thermal)
