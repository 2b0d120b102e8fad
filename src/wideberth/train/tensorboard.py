"""TensorBoard output as a trainer callback (needs the optional ``tensorboard`` package).

The trainer adds a :class:`TensorBoardCallback` writing to ``RUN/tensorboard`` whenever
margin tracking is on (``track.every > 0``) and TensorBoard is installed; every
``{"event": "margins"}`` line of ``metrics.jsonl`` then also becomes a histogram
``margins/<split>`` of its finite distances at its epoch. ``scalars=True`` additionally
writes every number of the epoch lines (``train_loss``, ``val_clean_accuracy``, ...) as a
scalar at its epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .callbacks import Callback

if TYPE_CHECKING:
    from .trainer import Trainer, TrainResult

__all__ = ["TensorBoardCallback", "tensorboard_callback"]


class TensorBoardCallback(Callback):
    """Write what the trainer logs to a TensorBoard folder ``log_dir``.

    Raises ``ImportError`` when TensorBoard is not installed (see
    :func:`tensorboard_callback` for the forgiving variant).
    """

    def __init__(self, log_dir: str | Path, *, scalars: bool = False) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer: Any = SummaryWriter(str(log_dir))
        self.scalars = scalars

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """Margin records become histograms; epoch records scalars when ``scalars``."""
        event = record.get("event")
        if event == "margins":
            finite = torch.tensor([v for v in record["distances"] if v is not None])
            if finite.numel():
                self.writer.add_histogram(f"margins/{record['split']}", finite, record["epoch"])
                self.writer.flush()
        elif event == "epoch" and self.scalars:
            for key, value in record.items():
                if key not in ("event", "epoch") and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["epoch"])
            self.writer.flush()

    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None:
        """Close the event file."""
        self.writer.close()


def tensorboard_callback(log_dir: str | Path, *, scalars: bool = False) -> TensorBoardCallback | None:
    """A :class:`TensorBoardCallback`, or ``None`` when TensorBoard is not installed."""
    try:
        return TensorBoardCallback(log_dir, scalars=scalars)
    except Exception:  # tensorboard not installed (or broken): metrics.jsonl only
        return None
