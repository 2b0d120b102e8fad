"""Training: the loop, per-example state, checkpoints and learning-rate schedules."""

from ..example_state import ExampleState
from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint_meta, save_checkpoint
from .schedule import lr_at
from .selection import VALIDATION_METRICS, ValidationMetric, register_validation_metric
from .trainer import (
    Trainer,
    TrainingError,
    TrainResult,
    derive_seed,
    resolve_device,
    resume,
    train,
)

__all__ = [
    "CheckpointError",
    "ExampleState",
    "Trainer",
    "TrainResult",
    "TrainingError",
    "ValidationMetric",
    "VALIDATION_METRICS",
    "derive_seed",
    "load_checkpoint",
    "lr_at",
    "read_checkpoint_meta",
    "register_validation_metric",
    "resolve_device",
    "resume",
    "save_checkpoint",
    "train",
]
