"""The paper's deterministic transforms (Wang et al., Table 3 and Table A6; App. C.3):
ori, flh, flv, bri, gam, crop and rot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Transform, finite_number
from .sampling import check_rotation_options, resample_affine, rotation_theta, tf_center_crop

__all__ = ["Brightness", "CenterCrop", "Gamma", "HFlip", "Identity", "Rotate", "VFlip"]


@dataclass(frozen=True)
class Identity(Transform):
    """The identity ("ori"), which is one of the paper's domains (§4.1). Returns ``x`` itself."""

    key: ClassVar[str] = "identity"
    short: ClassVar[str] = "ori"

    def _apply(self, x: Tensor) -> Tensor:
        return x


@dataclass(frozen=True)
class HFlip(Transform):
    """Horizontal flip ("flh"): ``out[..., i, j] = x[..., i, W-1-j]``. An involution."""

    key: ClassVar[str] = "hflip"
    short: ClassVar[str] = "flh"

    def _apply(self, x: Tensor) -> Tensor:
        return torch.flip(x, dims=(-1,))


@dataclass(frozen=True)
class VFlip(Transform):
    """Vertical flip ("flv"): ``out[..., i, j] = x[..., H-1-i, j]``. An involution."""

    key: ClassVar[str] = "vflip"
    short: ClassVar[str] = "flv"

    def _apply(self, x: Tensor) -> Tensor:
        return torch.flip(x, dims=(-2,))


@dataclass(frozen=True)
class Brightness(Transform):
    """Additive brightness shift ("bri"): ``x + delta`` (paper: delta = 0.1).

    Wang et al. (App. C.3) call it brightness "with a scale of 0.1"; the authors' code uses
    ``tf.image.adjust_brightness(delta=0.1)``, which adds ``delta`` and does **not** clip, so
    by default neither does this (outputs may exceed 1). ``clip=True`` clamps to [0, 1]
    (gradient zero where the clamp is active).

    Args:
        delta: the additive shift (any finite number).
        clip: clamp the output to [0, 1].
    """

    delta: float = 0.1
    clip: bool = False

    key: ClassVar[str] = "brightness"
    short: ClassVar[str] = "bri"

    def __post_init__(self) -> None:
        object.__setattr__(self, "delta", finite_number("brightness delta", self.delta))
        if not isinstance(self.clip, bool):
            raise ValueError(f"brightness clip must be a bool; got {self.clip!r}")

    def _apply(self, x: Tensor) -> Tensor:
        out = x + self.delta
        return out.clamp(0.0, 1.0) if self.clip else out


@dataclass(frozen=True)
class Gamma(Transform):
    """Gamma correction ("gam"): ``x ** gamma`` (paper: gamma = 1.3; ``tf.image.adjust_gamma``).

    Maps [0, 1] into [0, 1], so no clamping is needed. Inputs ``<= 0`` give 0 with gradient 0
    (for ``gamma > 1`` that is the true derivative at 0; for ``gamma < 1``, where the
    derivative at 0 is infinite, it is a choice that keeps attack gradients finite).

    Args:
        gamma: the exponent, > 0.
    """

    gamma: float = 1.3

    key: ClassVar[str] = "gamma"
    short: ClassVar[str] = "gam"

    def __post_init__(self) -> None:
        g = finite_number("gamma", self.gamma)
        if g <= 0:
            raise ValueError(f"gamma must be > 0; got {g}")
        object.__setattr__(self, "gamma", g)

    def _apply(self, x: Tensor) -> Tensor:
        pos = x > 0
        safe = torch.where(pos, x, torch.ones_like(x))
        return torch.where(pos, safe.pow(self.gamma), torch.zeros_like(x))


@dataclass(frozen=True)
class CenterCrop(Transform):
    """Central crop of side fraction ``scale``, resized back to H×W bilinearly ("crop").

    Paper (App. C.3): central 0.8 × 0.8 crop resized to 32 × 32; the authors' code uses
    ``tf.image.crop_and_resize`` with box ``[0.1, 0.1, 0.9, 0.9]``.

    Args:
        scale: side fraction in (0, 1]; the box is ``[(1-scale)/2, (1+scale)/2]`` per axis.
        align: ``"tf"`` (default) reproduces ``crop_and_resize``: output pixel ``i`` samples
            the input at row ``(1-scale)/2·(H-1) + i·scale`` (align_corners=True coordinates
            spanning the continuous box; implemented with ``affine_grid`` + ``grid_sample``).
            ``"slice"`` crops whole pixels like ``tf.image.central_crop`` (start
            ``int((H - H·scale)/2)``, size ``H - 2·start``) and resizes with
            ``F.interpolate(mode="bilinear", align_corners=False)`` (half-pixel centres), so a
            4 × 4 image at scale 0.5 gives its centre 2 × 2 block upsampled.

    Both are linear in ``x`` and convex combinations of input pixels, so [0, 1] is preserved.
    """

    scale: float = 0.8
    align: str = "tf"

    key: ClassVar[str] = "crop"
    short: ClassVar[str] = "crop"

    def __post_init__(self) -> None:
        s = finite_number("crop scale", self.scale)
        if not 0 < s <= 1:
            raise ValueError(f"crop scale must be in (0, 1]; got {s}")
        if self.align not in ("tf", "slice"):
            raise ValueError(f"crop align must be 'tf' or 'slice'; got {self.align!r}")
        object.__setattr__(self, "scale", s)

    def _apply(self, x: Tensor) -> Tensor:
        if self.align == "tf":
            return tf_center_crop(
                x, torch.full((x.shape[0],), self.scale, dtype=x.dtype, device=x.device)
            )
        h, w = x.shape[-2:]
        top = int((h - h * self.scale) / 2)
        left = int((w - w * self.scale) / 2)
        crop = x[..., top : h - top, left : w - left]
        return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)



@dataclass(frozen=True)
class Rotate(Transform):
    """Rotation about the image centre by ``degrees`` (positive = counter-clockwise) ("rot").

    Paper (Table A6, App. C.3): a rotation by 30° *clockwise*, i.e. ``Rotate(-30)``. (The authors'
    code calls ``tf.contrib.image.rotate(+30°)``, counter-clockwise, with nearest
    interpolation; this library follows the paper's text.) Implemented as ``affine_grid`` +
    ``grid_sample`` with ``align_corners=False`` and aspect-ratio correction, so the rotation
    is rigid in pixel units on non-square images too; multiples of 90° are exact on square
    images (``Rotate(90)`` equals ``torch.rot90(x, 1, (-2, -1))``).

    Args:
        degrees: the angle (finite; any value, 360 is the identity).
        padding: ``"zeros"`` (default, like TF's constant-0 fill) or ``"border"``.
        mode: ``"bilinear"`` (default; smooth in the sample positions) or ``"nearest"`` (TF's
            default). Both are differentiable in ``x``.

    The output is a convex combination of input pixels and zeros, so [0, 1] is preserved.
    """

    degrees: float
    padding: str = "zeros"
    mode: str = "bilinear"

    key: ClassVar[str] = "rotate"
    short: ClassVar[str] = "rot"

    def __post_init__(self) -> None:
        object.__setattr__(self, "degrees", finite_number("rotation degrees", self.degrees))
        check_rotation_options(self.padding, self.mode)

    def _apply(self, x: Tensor) -> Tensor:
        deg = torch.full((x.shape[0],), self.degrees, dtype=x.dtype, device=x.device)
        theta = rotation_theta(deg, x.shape[-2], x.shape[-1])
        return resample_affine(x, theta, mode=self.mode, padding=self.padding, align_corners=False)
