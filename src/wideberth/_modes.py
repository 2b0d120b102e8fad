"""Context managers that switch a model's mode and restore exactly what they found."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from torch import nn

__all__ = ["eval_mode", "train_mode"]


@contextmanager
def _mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    saved = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield model
    finally:
        for m, was_training in saved:
            m.training = was_training


def eval_mode(model: nn.Module) -> AbstractContextManager[nn.Module]:
    """Put every submodule in eval mode; on exit restore each one's own previous flag
    (a model whose BatchNorm layers alone were frozen comes back exactly so)."""
    return _mode(model, False)


def train_mode(model: nn.Module) -> AbstractContextManager[nn.Module]:
    """Put every submodule in train mode; restore each one's previous flag on exit."""
    return _mode(model, True)
