"""What several training methods share: the BatchNorm mode of their inner attack.

A method that attacks during training must choose the mode its attack runs the model in
(``attack_bn``):

* ``"eval"`` (every method's default; what MMA's and TRADES' code do): every submodule in
  eval mode, so BatchNorm normalises with its running statistics and dropout is off; the
  modes (and the running statistics) are exactly as before once the attack returns.
* ``"train"``: the model stays in train mode: BatchNorm uses the current batch's statistics
  and updates its running statistics at every attack forward; dropout is active.

Parameters are frozen (``requires_grad=False``) during the attack in both modes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import Tensor, nn

from .._modes import eval_mode

__all__ = ["BN_MODES", "attack_forward", "frozen_parameters"]

#: the valid ``attack_bn`` values of the methods that attack during training.
BN_MODES: tuple[str, ...] = ("eval", "train")


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """``requires_grad=False`` on every parameter for the duration; restored after."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(False)
        yield
    finally:
        for p, req in saved:
            p.requires_grad_(req)


@contextmanager
def attack_forward(model: nn.Module, bn: str) -> Iterator[Callable[[Tensor], Tensor]]:
    """The forward function a training method's inner attack should call.

    ``bn="eval"``: every submodule in eval mode (BatchNorm running statistics, no dropout),
    parameters frozen; modes and ``requires_grad`` restored on exit. ``bn="train"``: the
    model stays in the mode it is in (train, during training), parameters frozen; the
    returned object is a plain callable, so :mod:`wideberth.attacks` does not switch its
    mode. In train mode, BatchNorm running statistics are updated by every forward.
    """
    if bn not in BN_MODES:
        raise ValueError(f"bn must be one of {', '.join(BN_MODES)}; got {bn!r}")
    with frozen_parameters(model):
        if bn == "eval":
            with eval_mode(model):
                yield model
        else:
            yield lambda t: model(t)
