"""Checkpoints: written atomically, read safely, and the newest readable one found on resume.

A checkpoint is a folder ``epoch-NNNN/`` holding ``state.pt`` (``torch.save`` of plain containers and
tensors only, so ``torch.load(weights_only=True)`` reads it) and ``config.yaml``. The folder is written
under a temporary name and renamed; ``state.pt`` is fsynced first. On resume the newest folder whose
state loads is used, and a damaged one (truncated, unreadable) is reported and skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from aminet.atomic import atomic_directory

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "list_checkpoints",
    "CheckpointError",
    "checkpoint_bytes",
]

_NAME = re.compile(r"^epoch-(\d{4,})$")


class CheckpointError(RuntimeError):
    pass


def save_checkpoint(directory: str | Path, epoch: int, state: dict[str, Any], config_yaml: str, keep: int = 2) -> Path:
    directory = Path(directory)
    final = directory / f"epoch-{epoch:04d}"
    with atomic_directory(final) as tmp:
        with open(tmp / "state.pt", "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        (tmp / "config.yaml").write_text(config_yaml, encoding="utf-8")
        (tmp / "epoch.txt").write_text(f"{epoch}\n", encoding="ascii")  # readable without loading state.pt
    for old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint folders, oldest first (temporary folders are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    file = path / "state.pt" if path.is_dir() else path
    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {file}") from None
    except Exception as exc:  # truncated zip, bad pickle, wrong format
        raise CheckpointError(f"checkpoint {file} is unreadable: {' '.join(str(exc).split())[:200]}") from None


def latest_checkpoint(directory: str | Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict] | None:
    """The newest checkpoint that loads, with its state; damaged ones are reported and skipped."""
    for path in reversed(list_checkpoints(directory)):
        try:
            return path, load_checkpoint(path, map_location)
        except CheckpointError as exc:
            print(f"[aminet] skipping damaged checkpoint: {exc}", file=sys.stderr)
    return None


def checkpoint_bytes(cfg, num_classes: int = 400) -> int:
    """About how many bytes one training checkpoint of ``cfg`` takes: the model's parameters and buffers
    (built on the meta device: no memory, no weights file read) times the optimizer's state per parameter
    (SGD with momentum: one buffer; Adam: two), plus 10 % for the criterion's heads and the containers. For
    the disk check before a search, not an exact figure."""
    from aminet.model.aminet import build_model

    meta_cfg = cfg.replace({"model.weights": "none"})
    with torch.device("meta"):
        model = build_model(meta_cfg, num_classes)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    o = cfg.optim
    state = 2 if o.optimizer == "adam" else (1 if getattr(o, "momentum", 0) else 0)
    return int(1.1 * (params * (1 + state) + buffers))
