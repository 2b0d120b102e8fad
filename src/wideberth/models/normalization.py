"""Input normalisation layers. They live *inside* a model, so attacks, ε and clipping always
act on raw [0, 1] pixels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["Normalize", "PerImageStandardize"]


class PerImageStandardize(nn.Module):
    """Per-image standardisation as a layer, as in MMA's CIFAR-10 model (Ding et al., ICLR
    2020; the first layer of its code's WRN-28-4, after TensorFlow's
    ``per_image_standardization`` of Madry et al. 2018).

    For each image ``x`` (all ``N = C*H*W`` values together)::

        y = (x - mean(x)) / max(std(x), 1 / sqrt(N))

    With ``correction=1`` (default) ``std`` is the **unbiased** standard deviation (divide
    by N - 1), as in the MMA code (advertorch's ``PerImageStandardize``), so imported MMA
    weights give the same logits. ``correction=0`` gives TensorFlow's population standard
    deviation (divide by N); the two differ by the factor ``sqrt((N-1)/N)`` (1.6e-4
    relative for CIFAR, N=3072). The floor ``1/sqrt(N)`` keeps constant images finite (they
    map to 0), and is applied to the variance (``max(var, 1/N)``) so gradients stay finite
    there too.

    Input ``[B, C, H, W]`` (any ``[B, ...]``), output of the same shape. No parameters.
    """

    def __init__(self, correction: int = 1) -> None:
        super().__init__()
        if correction not in (0, 1):
            raise ValueError(f"correction must be 0 (population) or 1 (unbiased), got {correction!r}")
        self.correction = correction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` standardised per image; same shape as ``x``."""
        flat = x.flatten(1)
        n = flat.shape[1]
        mean = flat.mean(dim=1, keepdim=True)
        centered = flat - mean
        var = centered.pow(2).sum(dim=1, keepdim=True) / max(n - self.correction, 1)
        std = var.clamp_min(1.0 / n).sqrt()
        return (centered / std).view_as(x)

    def extra_repr(self) -> str:
        """The standard-deviation correction, for ``repr``."""
        return f"correction={self.correction}"


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std``, with ``mean`` and ``std`` stored as buffers.

    Args:
        mean: one value per channel.
        std: one positive value per channel.

    Input ``[B, C, H, W]``, output of the same shape. The buffers are saved in the state
    dict and follow ``.to(device)``.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.shape != std_t.shape:
            raise ValueError(f"mean and std differ in length: {len(mean_t)} vs {len(std_t)}")
        if not bool((std_t > 0).all()):
            raise ValueError("std must be positive")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` per channel; same shape as ``x``."""
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        """The channel means and standard deviations, for ``repr``."""
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
