"""Training: the loop, per-example state, checkpoints, learning-rate schedules and callbacks.

:func:`train` and :func:`resume` run a :class:`Trainer`; a :class:`Callback` passed as
``callbacks=[...]`` is told about every step, epoch, ``metrics.jsonl`` line and checkpoint
(:class:`MarginTracker` and :class:`TensorBoardCallback` are callbacks too).
"""

from ..example_state import ExampleState
from .callbacks import Callback, EpochInfo, StepInfo
from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint_meta, save_checkpoint
from .run_parts import derive_seed, resolve_device
from .schedule import lr_at
from .selection import VALIDATION_METRICS, ValidationMetric, register_validation_metric
from .tensorboard import TensorBoardCallback
from .tracking import MarginTracker
from .trainer import Trainer, TrainingError, TrainResult, resume, train

__all__ = [
    "Callback",
    "CheckpointError",
    "EpochInfo",
    "ExampleState",
    "MarginTracker",
    "StepInfo",
    "TensorBoardCallback",
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
