"""Fully connected nets: :class:`MLP` and, with ``hidden=()``, multiclass logistic regression."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .registry import InputShape, register_model

__all__ = ["MLP"]


class MLP(nn.Module):
    """Fully connected ReLU network: flatten → (Linear → ReLU) × len(hidden) → Linear K.

    Wu & Yu's MNIST-/CIFAR-MLP is ``hidden=(1024,)`` (the default); ``hidden=()`` is
    multiclass logistic regression (their MNIST-LR / CIFAR-LR). Works for any input shape,
    including toy2d points ``(1, 1, 2)``. No BatchNorm.

    Input ``[B, *input_shape]``; output logits ``[B, num_classes]``.
    """

    def __init__(
        self, input_shape: InputShape, num_classes: int, hidden: Sequence[int] = (1024,)
    ) -> None:
        super().__init__()
        dims = [math.prod(input_shape), *(int(h) for h in hidden)]
        layers: list[nn.Module] = [nn.Flatten()]
        for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(d_in, d_out), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` of images ``x`` ``[B, C, H, W]`` in [0, 1]."""
        return self.net(x)


@register_model(
    "mlp", "MLP: flatten -> ReLU hidden layers (default 1024) -> K; hidden=() is linear"
)
def _build_mlp(
    input_shape: InputShape, num_classes: int, hidden: Sequence[int] = (1024,)
) -> nn.Module:
    return MLP(input_shape, num_classes, hidden=tuple(hidden))
