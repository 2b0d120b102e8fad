"""The trainer's public callback hook.

A :class:`Callback` is told about a run as it happens: after every optimiser step, after
every epoch (once the epoch's line is in ``metrics.jsonl``, before the epoch's checkpoints),
after every line written to ``metrics.jsonl``, after every checkpoint, and at the start and
the end of :meth:`Trainer.fit <wideberth.train.Trainer.fit>`. Subclass it and override only
the hooks you need; each gets the running :class:`~wideberth.train.Trainer`, whose
``model``, ``optimizer``, ``method``, ``state``, ``splits``, ``cfg``, ``epoch``, ``step``
and ``best`` it may read. Pass callbacks as ``Trainer(..., callbacks=[...])``,
``wideberth.train.train(..., callbacks=[...])`` or ``wideberth.train.resume(...,
callbacks=[...])``.

Example — print the loss every 100 steps and the validation metrics of every epoch::

    from wideberth.train import Callback, train

    class PrintProgress(Callback):
        def on_step_end(self, trainer, info):
            if info.step % 100 == 0:
                print(f"step {info.step}: loss {info.loss:.4f}")

        def on_epoch_end(self, trainer, info):
            print(f"epoch {info.epoch}: {info.val}")

    train(cfg, "runs/r1", callbacks=[PrintProgress()])

A callback must not change the model, optimiser or per-example state if the run is to stay
reproducible (a resumed run calls the callbacks again from its checkpoint on). Exceptions a
callback raises end the run; the checkpoints already written stay resumable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .trainer import Trainer, TrainResult

__all__ = ["Callback", "EpochInfo", "StepInfo"]


@dataclass(frozen=True)
class StepInfo:
    """One optimiser step just taken.

    ``epoch`` is the 0-based epoch the step belongs to, ``step`` the number of steps taken
    so far (1 after the first), ``batch_in_epoch`` the batches done in this epoch; ``loss``
    is the step's training loss, ``correct`` how many of its ``batch_size`` examples the
    model classified correctly, and ``lr`` the learning rate the step used.
    """

    epoch: int
    step: int
    batch_in_epoch: int
    loss: float
    correct: int
    batch_size: int
    lr: float


@dataclass(frozen=True)
class EpochInfo:
    """One epoch just finished.

    ``epoch`` is the 1-based number of the finished epoch, ``step`` the steps taken so far,
    ``is_last`` whether the run's budget is spent; ``record`` is the epoch's
    ``metrics.jsonl`` line (training loss and accuracy, learning rate, the method's logs,
    validation metrics as ``val_*``) and ``val`` the validation metrics (empty when the
    epoch was not validated).
    """

    epoch: int
    step: int
    is_last: bool
    record: dict[str, Any]
    val: dict[str, float]


class Callback:
    """Base class of trainer callbacks: every hook does nothing until overridden.

    See the module docstring for when each hook runs and an example.
    """

    def on_fit_start(self, trainer: Trainer) -> None:
        """The run is set up (and restored, when resuming); no step of it has run yet."""

    def on_step_end(self, trainer: Trainer, info: StepInfo) -> None:
        """An optimiser step has been taken."""

    def on_epoch_end(self, trainer: Trainer, info: EpochInfo) -> None:
        """An epoch is over and logged; its checkpoints come next.

        Records given to ``trainer.log_metrics`` here are written to ``metrics.jsonl``
        before the epoch's checkpoints, so a resumed run keeps them.
        """

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """``record`` has just been appended to ``metrics.jsonl`` (do not log from here)."""

    def on_checkpoint(self, trainer: Trainer, name: str, path: Path, meta: dict[str, Any]) -> None:
        """Checkpoint ``name`` (``last`` or ``best``) has been written to ``path``.

        ``meta`` is its metadata; ``meta["position"]`` holds the ``epoch`` (epochs done),
        ``batch_in_epoch`` and ``step`` a resumed run continues from.
        """

    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None:
        """The run is over: the selected weights are tested and ``results.json`` written."""
