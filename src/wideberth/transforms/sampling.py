"""Resampling an image batch through affine grids: rotations and TF-style centre crops.

``affine_grid`` maps *output* to *input* coordinates, normalised to [-1, 1] per axis, and
``grid_sample`` reads the input there, so every transform built on these helpers is
differentiable in ``x``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "MODES",
    "PADDINGS",
    "check_rotation_options",
    "resample_affine",
    "rotation_theta",
    "tf_center_crop",
]

PADDINGS = ("zeros", "border")
"""Padding modes a rotation accepts (``grid_sample``'s ``padding_mode``)."""
MODES = ("bilinear", "nearest")
"""Interpolation modes a rotation accepts (``grid_sample``'s ``mode``)."""


def check_rotation_options(padding: str, mode: str) -> None:
    """Raise ValueError unless ``padding`` is in :data:`PADDINGS` and ``mode`` in :data:`MODES`."""
    if padding not in PADDINGS:
        raise ValueError(f"rotate padding must be one of {PADDINGS}; got {padding!r}")
    if mode not in MODES:
        raise ValueError(f"rotate mode must be one of {MODES}; got {mode!r}")


def resample_affine(x: Tensor, theta: Tensor, *, mode: str, padding: str, align_corners: bool) -> Tensor:
    """Resample ``x`` [B, C, H, W] at ``affine_grid(theta)`` (theta [B, 2, 3], output→input)."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=align_corners)
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=align_corners)


def rotation_theta(degrees: Tensor, h: int, w: int) -> Tensor:
    """Affine matrices [B, 2, 3] rotating an H×W image counter-clockwise by ``degrees`` [B].

    ``affine_grid`` maps output to input coordinates, normalised to [-1, 1] per axis
    (``align_corners=False``: ±1 are the outer pixel edges), with y pointing down. A
    counter-clockwise rotation of the content by θ reads the input at
    ``(x', y') = (cos θ·x − sin θ·y, sin θ·x + cos θ·y)`` in pixel units about the centre;
    the ``h / w`` factors undo the per-axis normalisation for non-square images. Angles
    that are multiples of 90° get exact cos/sin, so those rotations are exact permutations
    on square images.
    """
    rad = torch.deg2rad(degrees)
    cos, sin = torch.cos(rad), torch.sin(rad)
    quarter = torch.remainder(degrees, 90.0) == 0
    if bool(quarter.any()):
        k = torch.remainder(torch.round(degrees / 90.0), 4)
        cos = torch.where(
            quarter,
            torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=cos.dtype, device=cos.device)[k.long()],
            cos,
        )
        sin = torch.where(
            quarter,
            torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=sin.dtype, device=sin.device)[k.long()],
            sin,
        )
    zero = torch.zeros_like(cos)
    row0 = torch.stack([cos, -sin * (h / w), zero], dim=-1)
    row1 = torch.stack([sin * (w / h), cos, zero], dim=-1)
    return torch.stack([row0, row1], dim=-2)


def _crop_theta(scale: Tensor) -> Tensor:
    """Affine matrices [B, 2, 3] sampling the central ``scale`` fraction (align_corners=True)."""
    zero = torch.zeros_like(scale)
    row0 = torch.stack([scale, zero, zero], dim=-1)
    row1 = torch.stack([zero, scale, zero], dim=-1)
    return torch.stack([row0, row1], dim=-2)


def tf_center_crop(x: Tensor, scale: Tensor) -> Tensor:
    """TF ``crop_and_resize`` of the central box ``[(1-s)/2, (1+s)/2]²`` to H×W, bilinear.

    TF samples output pixel ``i`` of the box ``[y1, y2]`` at input row
    ``y1·(H−1) + i·(y2−y1)·(H−1)/(H−1)`` — i.e. ``align_corners=True`` coordinates spanning
    the box — which is ``grid_sample`` on ``affine_grid(diag(s, s), align_corners=True)``.
    All sample points lie inside the image, so no padding is involved.
    """
    return resample_affine(x, _crop_theta(scale), mode="bilinear", padding="border", align_corners=True)
