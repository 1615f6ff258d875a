"""Training engine: the loop, checkpoints, schedules and the reporter protocol (no Ray, no MLflow)."""

from aminet.engine.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from aminet.engine.reporter import NullReporter, RecordingReporter, Reporter
from aminet.engine.trainer import NonFiniteLossError, TrainResult, train

__all__ = [
    "train",
    "TrainResult",
    "NonFiniteLossError",
    "Reporter",
    "NullReporter",
    "RecordingReporter",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "CheckpointError",
]
