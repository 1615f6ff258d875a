"""How the engine tells the outside world about progress, without knowing who listens.

The engine calls ``report(epoch, metrics, checkpoint_dir)`` at every evaluation (the metrics then hold
R1, mAP, mINP and score), and ``log_epoch(epoch, metrics)`` after every epoch (loss terms, lr,
images/s). ``NullReporter`` ignores both (tests); the MLflow reporter lives with the experiments
runner and the Ray one in ``trainables/``: ``aminet`` imports neither MLflow nor Ray here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = ["Reporter", "NullReporter", "RecordingReporter"]


@runtime_checkable
class Reporter(Protocol):
    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path | None) -> None: ...

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...


class NullReporter:
    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        pass

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        pass


class RecordingReporter(NullReporter):
    """Keeps everything it is told (for tests and notebooks)."""

    def __init__(self) -> None:
        self.reports: list[tuple[int, dict[str, Any], Path | None]] = []
        self.epochs: list[tuple[int, dict[str, Any]]] = []

    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        self.reports.append((epoch, dict(metrics), checkpoint_dir))

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs.append((epoch, dict(metrics)))
