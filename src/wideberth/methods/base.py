"""The method interface: what a training objective must provide to plug into the trainer.

A *method* turns a batch into the scalar loss the optimiser minimises. It may run attacks
(PGD-AT, TRADES, MMA), and it may read and write per-example state keyed by dataset index
(MMA keeps each example's margin estimate ε there; it warm-starts the next epoch's search).

The trainer owns the model's train/eval mode: it calls :meth:`Method.loss` with the model in
train mode. A method that attacks must choose the BatchNorm mode of its attack on purpose
and document it (``wideberth.attacks`` runs in eval mode and restores the mode it found).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..params import Params, Scope, validate_params

__all__ = ["Batch", "StepContext", "Method", "MethodParams"]


@dataclass
class Batch:
    """One training batch: images ``x`` [B, C, H, W] in [0, 1], labels ``y`` [B] and the
    stable dataset ``index`` [B] (row in the full training split) of every example."""

    x: Tensor
    y: Tensor
    index: Tensor


@dataclass
class StepContext:
    """What a method may know about the step it is computing.

    ``state`` is the run's :class:`~wideberth.example_state.ExampleState`; ``generator`` is a
    ``torch.Generator`` on the batch's device, seeded from (run seed, global step), for any
    randomness the method needs (random starts of attacks), so that a resumed run repeats it.
    """

    epoch: int
    step: int
    total_steps: int
    steps_per_epoch: int
    state: Any
    generator: torch.Generator
    num_classes: int
    logs: dict[str, float] = field(default_factory=dict)


@dataclass
class MethodParams(Params):
    """Base class of a method's parameter dataclass.

    A subclass declares every parameter once, with :func:`wideberth.params.param` (type,
    default, bounds, choices, hint), sets ``method_name`` and puts rules that involve several
    fields in ``check()``. Construction validates (``MMAParams(d_max=2).d_max == 2.0``);
    :meth:`from_dict` also rejects unknown keys by name. Errors are
    :class:`~wideberth.config.ConfigError` naming ``method '<name>'``, the key, the bad value
    and what is valid.
    """

    method_name: ClassVar[str] = ""

    @classmethod
    def param_scope(cls) -> Scope:
        """Messages name a field ``params.<name>`` of ``method '<method_name>'``."""
        return Scope(
            where=f"method {cls.method_name!r}", prefix="params.", path="method.params",
            kind="parameter",
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any], method: str | None = None) -> MethodParams:
        """Validated parameters from a ``method.params`` mapping. (``method``, the registered
        name, is accepted for compatibility; messages use ``method_name``.)"""
        return validate_params(cls, data)


class Method:
    """Base class of every training objective.

    Subclasses set ``name``, ``Params`` (a :class:`MethodParams` dataclass) and implement
    :meth:`loss`. ``setup`` runs once before training (register per-example state there);
    ``epoch_logs`` adds method-specific numbers to each epoch's log line.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type[MethodParams]] = MethodParams

    def __init__(self, params: MethodParams) -> None:
        self.params = params

    def setup(self, model: nn.Module, state: Any, num_train: int) -> None:
        """Called once before the first step (also on resume, before the state is loaded)."""

    def bind_train_data(self, data: Any, batch_size: int = 512) -> None:
        """Called once before training with the (un-augmented) training split, for methods
        that need passes over the whole set (e.g. the average-margin DC solver); default:
        ignored."""

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> tuple[Tensor, Tensor]:
        """Return ``(loss, logits)``: the scalar to minimise and logits [B, K] of the batch
        the method trains on (the trainer reports their accuracy as ``train_accuracy``:
        clean for standard training, adversarial for PGD-AT; each method documents it)."""
        raise NotImplementedError

    def epoch_logs(self, state: Any, epoch: int) -> dict[str, Any]:
        """Extra per-epoch numbers for ``metrics.jsonl`` (default: none)."""
        return {}

    def state_dict(self) -> dict[str, Tensor]:
        """Method-level tensors that a checkpoint must carry for an exact resume (e.g. UAT's
        universal perturbation); per-example state belongs in the trainer's ``ExampleState``
        instead. Default: none."""
        return {}

    def load_state_dict(self, tensors: dict[str, Tensor]) -> None:
        """Restore what :meth:`state_dict` returned (called on resume, after :meth:`setup`)."""
        if tensors:
            raise ValueError(
                f"method {self.name!r} keeps no state, but the checkpoint holds method tensors "
                f"{sorted(tensors)}: it was written by another method"
            )
