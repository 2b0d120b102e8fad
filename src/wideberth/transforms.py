"""Differentiable image transformations for the robust attack over transformations.

Wang et al., "Towards a unified min-max framework for adversarial exploration and
robustness", §2c, eq. (7): the attack minimises, over one perturbation δ,

    max_{w ∈ simplex}  Σ_i w_i E_{t ~ p_i}[ f(t(x0 + δ); y0, M) ] − γ/2 ‖w − 1/K‖²,

where every domain ``p_i`` is a family of data transformations. EOT (Athalye et al.) is
the special case ``w_i = 1/K``. This module provides the transformations ``t``: plain
torch ops on images ``x`` of shape ``[B, C, H, W]`` with values in [0, 1], differentiable
with respect to ``x`` (the attack back-propagates through them), with no torchvision.

Deterministic transforms (Table 3 / Table A6 of the paper):

* :class:`Identity` ("ori"), :class:`HFlip` ("flh"), :class:`VFlip` ("flv");
* :class:`Brightness` ("bri"): **additive** ``x + delta`` (the authors' code uses
  ``tf.image.adjust_brightness(delta=0.1)``), not clipped unless ``clip=True``;
* :class:`Gamma` ("gam"): ``x ** gamma`` (``tf.image.adjust_gamma(gamma=1.3)``);
* :class:`CenterCrop` ("crop"): the central ``scale × scale`` area resized back to
  ``H × W`` bilinearly, by default with TF ``crop_and_resize`` alignment;
* :class:`Rotate` ("rot"): rotation about the image centre (positive = counter-clockwise,
  as in TF and torchvision); the paper's "30° clockwise" is ``Rotate(-30)``.

Stochastic transforms (Table A5, App. C.3): :class:`RandomApply` (apply a transform with
probability ``p``), :class:`RandomCenterCrop` (side fraction uniform in
``[min_scale, max_scale]``), :class:`RandomRotate` (angle uniform in ``[-max_degrees,
max_degrees]``) and :class:`RandomChoice` (one of several transforms). Random draws are
**per example** by default (spec §2c [I]); ``per_example=False`` draws once per call and
shares the draw across the batch, as the authors' code does. Each call draws afresh, so the
expectation ``E_{t ~ p_i}`` of eq. (7) is estimated by averaging the loss over calls.

Every transform has a ``name`` (parseable by :func:`parse_transform`, e.g.
``"rotate:-30"``, ``"hflip@0.8"``, ``"hflip+gamma:1.3"``, ``"hflip|vflip"``) and a
``label`` (the paper's column name, e.g. ``"rot"``). :func:`paper_transforms` returns the
paper's CIFAR-10 domain sets.
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Transform",
    "Identity",
    "HFlip",
    "VFlip",
    "Brightness",
    "Gamma",
    "CenterCrop",
    "Rotate",
    "Compose",
    "RandomApply",
    "RandomCenterCrop",
    "RandomRotate",
    "RandomChoice",
    "TRANSFORMS",
    "parse_transform",
    "paper_transforms",
]


# --------------------------------------------------------------------------------------
# helpers


def _check_x(x: Tensor) -> None:
    """Raise unless ``x`` is a floating tensor of shape ``[B, C, H, W]`` (values unchecked)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"transforms take a tensor of shape [B, C, H, W]; got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"transforms take images of shape [B, C, H, W]; got shape {list(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"transforms take floating-point images in [0, 1]; got dtype {x.dtype}")


def _fmt(v: float) -> str:
    """Shortest exact text for a float: ``0.1``, ``-30``, ``1.3`` (round-trips through float)."""
    s = repr(float(v))
    return s[:-2] if s.endswith(".0") else s


def _finite(name: str, v: Any) -> float:
    """``v`` as a finite float, or ValueError naming the parameter."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{name} must be a number; got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite; got {v}")
    return v


def _uniform(n: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """``n`` draws from U[0, 1) as a tensor on ``like``'s device and dtype."""
    if generator is None:
        u = torch.rand(n, device=like.device)
    else:
        u = torch.rand(n, generator=generator, device=generator.device)
    return u.to(device=like.device, dtype=like.dtype)


def _affine(x: Tensor, theta: Tensor, *, mode: str, padding: str, align_corners: bool) -> Tensor:
    """Resample ``x`` [B, C, H, W] at ``affine_grid(theta)`` (theta [B, 2, 3], output→input)."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=align_corners)
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=align_corners)


def _rotation_theta(degrees: Tensor, h: int, w: int) -> Tensor:
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


def _tf_crop(x: Tensor, scale: Tensor) -> Tensor:
    """TF ``crop_and_resize`` of the central box ``[(1-s)/2, (1+s)/2]²`` to H×W, bilinear.

    TF samples output pixel ``i`` of the box ``[y1, y2]`` at input row
    ``y1·(H−1) + i·(y2−y1)·(H−1)/(H−1)`` — i.e. ``align_corners=True`` coordinates spanning
    the box — which is ``grid_sample`` on ``affine_grid(diag(s, s), align_corners=True)``.
    All sample points lie inside the image, so no padding is involved.
    """
    return _affine(x, _crop_theta(scale), mode="bilinear", padding="border", align_corners=True)


# --------------------------------------------------------------------------------------
# base class


class Transform:
    """Base class: a differentiable map from images ``[B, C, H, W]`` to images of that shape.

    Subclasses are frozen dataclasses (equality and ``repr`` from their parameters)
    implementing :meth:`_apply`. ``name`` is the canonical text accepted by
    :func:`parse_transform`; ``label`` is the paper's short column name (Wang et al. §2c,
    Tables 3, A5, A6); ``random`` says whether two calls on the same input can differ.
    """

    key: ClassVar[str] = ""
    short: ClassVar[str] = ""
    random: ClassVar[bool] = False

    def __call__(self, x: Tensor) -> Tensor:
        """Transform ``x`` [B, C, H, W] (values in [0, 1]); returns a tensor of the same shape."""
        _check_x(x)
        return self._apply(x)

    def _apply(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _args(self) -> list[str]:
        """The ``name`` arguments: every compared dataclass field, non-defaults as key=value."""
        out: list[str] = []
        positional = True
        for f in fields(self):  # type: ignore[arg-type]
            if not f.compare or not f.init or f.name == "per_example":
                continue
            v = getattr(self, f.name)
            if isinstance(v, bool) or isinstance(v, str):
                if v != f.default:
                    out.append(f"{f.name}={str(v).lower() if isinstance(v, bool) else v}")
                positional = False
            elif positional:
                out.append(_fmt(v))
        return out

    @property
    def name(self) -> str:
        """Canonical, parseable name, e.g. ``"rotate:-30"`` or ``"brightness:0.1,clip=true"``."""
        args = self._args()
        return self.key + (":" + ",".join(args) if args else "")

    @property
    def label(self) -> str:
        """The paper's short column name ("ori", "flh", "flv", "bri", "gam", "crop", "rot")."""
        return self.short

    def __str__(self) -> str:
        return self.name


# --------------------------------------------------------------------------------------
# deterministic transforms


@dataclass(frozen=True)
class Identity(Transform):
    """The identity ("ori"), which is one of the paper's domains (§2c). Returns ``x`` itself."""

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

    Wang et al. §2c / App. C.3 call it brightness "with a scale of 0.1"; the authors' code uses
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
        object.__setattr__(self, "delta", _finite("brightness delta", self.delta))
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
        g = _finite("gamma", self.gamma)
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

    Paper (§2c, App. C.3): central 0.8 × 0.8 crop resized to 32 × 32; the authors' code uses
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
        s = _finite("crop scale", self.scale)
        if not 0 < s <= 1:
            raise ValueError(f"crop scale must be in (0, 1]; got {s}")
        if self.align not in ("tf", "slice"):
            raise ValueError(f"crop align must be 'tf' or 'slice'; got {self.align!r}")
        object.__setattr__(self, "scale", s)

    def _apply(self, x: Tensor) -> Tensor:
        if self.align == "tf":
            return _tf_crop(
                x, torch.full((x.shape[0],), self.scale, dtype=x.dtype, device=x.device)
            )
        h, w = x.shape[-2:]
        top = int((h - h * self.scale) / 2)
        left = int((w - w * self.scale) / 2)
        crop = x[..., top : h - top, left : w - left]
        return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)


_PADDINGS = ("zeros", "border")
_MODES = ("bilinear", "nearest")


@dataclass(frozen=True)
class Rotate(Transform):
    """Rotation about the image centre by ``degrees`` (positive = counter-clockwise) ("rot").

    Paper (Table A6, §2c): a rotation by 30° *clockwise*, i.e. ``Rotate(-30)``. (The authors'
    code calls ``tf.contrib.image.rotate(+30°)``, counter-clockwise, with nearest
    interpolation; the spec follows the paper's text.) Implemented as ``affine_grid`` +
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
        object.__setattr__(self, "degrees", _finite("rotation degrees", self.degrees))
        if self.padding not in _PADDINGS:
            raise ValueError(f"rotate padding must be one of {_PADDINGS}; got {self.padding!r}")
        if self.mode not in _MODES:
            raise ValueError(f"rotate mode must be one of {_MODES}; got {self.mode!r}")

    def _apply(self, x: Tensor) -> Tensor:
        deg = torch.full((x.shape[0],), self.degrees, dtype=x.dtype, device=x.device)
        theta = _rotation_theta(deg, x.shape[-2], x.shape[-1])
        return _affine(x, theta, mode=self.mode, padding=self.padding, align_corners=False)


# --------------------------------------------------------------------------------------
# composition and stochastic transforms


def _wrap(t: Transform, *, inside: str) -> str:
    """``t.name`` parenthesised where needed inside a ``+`` (Compose), ``@`` or ``|`` name."""
    n = t.name
    needs = {
        "+": isinstance(t, RandomChoice),
        "@": isinstance(t, (Compose, RandomChoice)),
        "|": isinstance(t, RandomChoice),
    }[inside]
    return f"({n})" if needs else n


@dataclass(frozen=True)
class Compose(Transform):
    """Apply ``transforms`` left to right: ``Compose((a, b))(x) == b(a(x))``.

    Nested Compose objects are flattened, so names round-trip (``"hflip+gamma:1.3"``).

    Args:
        transforms: one or more transforms.
    """

    transforms: tuple[Transform, ...]

    key: ClassVar[str] = "compose"

    def __post_init__(self) -> None:
        ts = tuple(self.transforms)
        if not ts:
            raise ValueError("Compose needs at least one transform")
        flat: list[Transform] = []
        for t in ts:
            if not isinstance(t, Transform):
                raise ValueError(f"Compose takes Transform objects; got {t!r}")
            flat.extend(t.transforms if isinstance(t, Compose) else (t,))
        object.__setattr__(self, "transforms", tuple(flat))

    @property
    def random(self) -> bool:  # type: ignore[override]
        """True if any member transform is random."""
        return any(t.random for t in self.transforms)

    @property
    def name(self) -> str:
        """Canonical, parseable name (see :func:`parse_transform`)."""
        return "+".join(_wrap(t, inside="+") for t in self.transforms)

    @property
    def label(self) -> str:
        """The paper\'s short column name(s) of the member transform(s)."""
        return "+".join(t.label for t in self.transforms)

    def _apply(self, x: Tensor) -> Tensor:
        for t in self.transforms:
            x = t(x)
        return x


@dataclass(frozen=True)
class RandomApply(Transform):
    """Apply ``transform`` with probability ``p``, else the identity (Table A5: p = 0.8).

    Args:
        transform: the transform applied when the coin comes up.
        p: probability in [0, 1].
        per_example: one Bernoulli draw per example (default; spec §2c [I]) or one per call,
            shared by the batch (the authors' code).
        generator: optional :class:`torch.Generator` for the draws (not part of equality).

    ``transform`` is evaluated on the whole batch and selected per example with
    ``torch.where``, so gradients flow to ``x`` through whichever branch each example took.
    """

    transform: Transform
    p: float = 0.8
    per_example: bool = True
    generator: torch.Generator | None = field(default=None, compare=False, repr=False)

    short: ClassVar[str] = ""
    random: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not isinstance(self.transform, Transform):
            raise ValueError(f"RandomApply takes a Transform; got {self.transform!r}")
        p = _finite("probability p", self.p)
        if not 0 <= p <= 1:
            raise ValueError(f"probability p must be in [0, 1]; got {p}")
        object.__setattr__(self, "p", p)

    @property
    def name(self) -> str:
        """Canonical, parseable name (see :func:`parse_transform`)."""
        return f"{_wrap(self.transform, inside='@')}@{_fmt(self.p)}"

    @property
    def label(self) -> str:
        """The paper\'s short column name(s) of the member transform(s)."""
        return self.transform.label

    def _apply(self, x: Tensor) -> Tensor:
        n = x.shape[0] if self.per_example else 1
        hit = _uniform(n, self.generator, x) < self.p
        return torch.where(hit.view(-1, 1, 1, 1), self.transform(x), x)


@dataclass(frozen=True)
class RandomCenterCrop(Transform):
    """Central crop with side fraction ``s ~ U[min_scale, max_scale]``, resized to H×W.

    Table A5 / App. C.3: "a random central area" with fraction from 0.6 to 1.0 (uniform is
    the spec's [I] reading). Each draw is :class:`CenterCrop` (``align="tf"``) at scale ``s``.

    Args:
        min_scale, max_scale: bounds, ``0 < min_scale <= max_scale <= 1``.
        per_example: one draw per example (default) or one per call.
        generator: optional :class:`torch.Generator` (not part of equality).
    """

    min_scale: float = 0.6
    max_scale: float = 1.0
    per_example: bool = True
    generator: torch.Generator | None = field(default=None, compare=False, repr=False)

    key: ClassVar[str] = "random_crop"
    short: ClassVar[str] = "crop"
    random: ClassVar[bool] = True

    def __post_init__(self) -> None:
        lo = _finite("random crop min_scale", self.min_scale)
        hi = _finite("random crop max_scale", self.max_scale)
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"random crop needs 0 < min_scale <= max_scale <= 1; got {lo}, {hi}")
        object.__setattr__(self, "min_scale", lo)
        object.__setattr__(self, "max_scale", hi)

    def _apply(self, x: Tensor) -> Tensor:
        n = x.shape[0] if self.per_example else 1
        s = self.min_scale + (self.max_scale - self.min_scale) * _uniform(n, self.generator, x)
        return _tf_crop(x, s.expand(x.shape[0]))


@dataclass(frozen=True)
class RandomRotate(Transform):
    """Rotation by an angle uniform in ``[-max_degrees, max_degrees]`` (App. C.3: 10°).

    Args:
        max_degrees: half-width of the angle range, >= 0.
        padding, mode: as for :class:`Rotate`.
        per_example: one angle per example (default) or one per call.
        generator: optional :class:`torch.Generator` (not part of equality).
    """

    max_degrees: float = 10.0
    padding: str = "zeros"
    mode: str = "bilinear"
    per_example: bool = True
    generator: torch.Generator | None = field(default=None, compare=False, repr=False)

    key: ClassVar[str] = "random_rotate"
    short: ClassVar[str] = "rot"
    random: ClassVar[bool] = True

    def __post_init__(self) -> None:
        m = _finite("random rotate max_degrees", self.max_degrees)
        if m < 0:
            raise ValueError(f"random rotate max_degrees must be >= 0; got {m}")
        object.__setattr__(self, "max_degrees", m)
        if self.padding not in _PADDINGS:
            raise ValueError(f"rotate padding must be one of {_PADDINGS}; got {self.padding!r}")
        if self.mode not in _MODES:
            raise ValueError(f"rotate mode must be one of {_MODES}; got {self.mode!r}")

    def _apply(self, x: Tensor) -> Tensor:
        n = x.shape[0] if self.per_example else 1
        deg = self.max_degrees * (2 * _uniform(n, self.generator, x) - 1)
        theta = _rotation_theta(deg.expand(x.shape[0]), x.shape[-2], x.shape[-1])
        return _affine(x, theta, mode=self.mode, padding=self.padding, align_corners=False)


@dataclass(frozen=True)
class RandomChoice(Transform):
    """One of ``choices``, uniformly at random, drawn afresh on every call (name ``"a|b"``).

    Args:
        choices: two or more transforms.
        per_example: one choice per call shared by the batch (default ``False``: cheapest, only
            the chosen transform is evaluated) or one per example (every choice is evaluated
            on the whole batch and selected per example).
        generator: optional :class:`torch.Generator` (not part of equality).
    """

    choices: tuple[Transform, ...]
    per_example: bool = False
    generator: torch.Generator | None = field(default=None, compare=False, repr=False)

    random: ClassVar[bool] = True

    def __post_init__(self) -> None:
        cs = tuple(self.choices)
        if len(cs) < 2:
            raise ValueError(f"RandomChoice needs at least two transforms; got {len(cs)}")
        for t in cs:
            if not isinstance(t, Transform):
                raise ValueError(f"RandomChoice takes Transform objects; got {t!r}")
        object.__setattr__(self, "choices", cs)

    @property
    def name(self) -> str:
        """Canonical, parseable name (see :func:`parse_transform`)."""
        return "|".join(_wrap(t, inside="|") for t in self.choices)

    @property
    def label(self) -> str:
        """The paper\'s short column name(s) of the member transform(s)."""
        return "|".join(t.label for t in self.choices)

    def _apply(self, x: Tensor) -> Tensor:
        k = len(self.choices)
        if not self.per_example:
            i = min(int(float(_uniform(1, self.generator, x.detach())[0]) * k), k - 1)
            return self.choices[i](x)
        idx = (_uniform(x.shape[0], self.generator, x.detach()) * k).long().clamp_max(k - 1)
        out = torch.stack([t(x) for t in self.choices], dim=0)  # [K, B, C, H, W]
        pick = idx.view(1, -1, 1, 1, 1).expand(1, *x.shape)
        return out.gather(0, pick).squeeze(0)


# --------------------------------------------------------------------------------------
# registry and parser


TRANSFORMS: dict[str, type[Transform]] = {
    "identity": Identity,
    "ori": Identity,
    "hflip": HFlip,
    "flh": HFlip,
    "vflip": VFlip,
    "flv": VFlip,
    "brightness": Brightness,
    "bri": Brightness,
    "gamma": Gamma,
    "gam": Gamma,
    "crop": CenterCrop,
    "rotate": Rotate,
    "rot": Rotate,
    "random_crop": RandomCenterCrop,
    "random_rotate": RandomRotate,
}
"""Name (canonical or the paper's short label) → transform class, for :func:`parse_transform`.

Arguments follow a colon in the class's parameter order; options go as ``key=value``:
``"brightness:0.1,clip=true"``, ``"crop:0.8,align=slice"``, ``"rotate:-30,padding=border"``,
``"random_crop:0.6,1"``, ``"random_rotate:10"``.
"""

_TOKEN = re.compile(
    r"\s*(?:(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>[:,=@+|()]))"
)


def _signature(cls: type[Transform]) -> str:
    """``"rotate:degrees,padding='zeros',mode='bilinear'"``, for error messages."""
    params = [p for p in inspect.signature(cls).parameters.values() if p.name != "generator"]
    if not params:
        return f"{cls.key} (no arguments)"
    return f"{cls.key}:" + ",".join(
        p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
        for p in params
    )


def _known() -> str:
    return ", ".join(sorted(TRANSFORMS))


class _Parser:
    """Recursive descent over ``choice := seq ('|' seq)*; seq := term ('+' term)*;
    term := primary ('@' number)?; primary := '(' choice ')' | word (':' args)?``."""

    def __init__(self, text: str, generator: torch.Generator | None, per_example: bool):
        self.text = text
        self.generator = generator
        self.per_example = per_example
        self.toks: list[tuple[str, str]] = []
        pos = 0
        stripped = text.rstrip()
        while pos < len(stripped):
            m = _TOKEN.match(stripped, pos)
            if m is None or m.end() == pos:
                raise self._err(f"unexpected character {stripped[pos:].lstrip()[:1]!r}")
            kind = m.lastgroup or ""
            self.toks.append((kind, m.group(kind)))
            pos = m.end()
        self.i = 0

    def _err(self, msg: str) -> ValueError:
        return ValueError(
            f"bad transform spec {self.text!r}: {msg}. Expected e.g. 'rotate:-30', 'hflip@0.8',"
            f" 'hflip+gamma:1.3' or 'hflip|vflip'; known names: {_known()}"
        )

    def _peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _take(self, value: str | None = None, kind: str | None = None) -> str:
        t = self._peek()
        if t is None or (value is not None and t[1] != value) or (kind and t[0] != kind):
            want = repr(value) if value is not None else {"num": "a number", "word": "a name"}[kind]
            got = "end of text" if t is None else repr(t[1])
            raise self._err(f"expected {want}, got {got}")
        self.i += 1
        return t[1]

    def parse(self) -> Transform:
        if not self.toks:
            raise self._err("empty")
        t = self._choice()
        if self._peek() is not None:
            raise self._err(f"unexpected {self._peek()[1]!r}")  # type: ignore[index]
        return t

    def _choice(self) -> Transform:
        items = [self._seq()]
        while self._peek() == ("op", "|"):
            self.i += 1
            items.append(self._seq())
        if len(items) == 1:
            return items[0]
        return RandomChoice(tuple(items), generator=self.generator)

    def _seq(self) -> Transform:
        items = [self._term()]
        while self._peek() == ("op", "+"):
            self.i += 1
            items.append(self._term())
        return items[0] if len(items) == 1 else Compose(tuple(items))

    def _term(self) -> Transform:
        t = self._primary()
        if self._peek() == ("op", "@"):
            self.i += 1
            p = float(self._take(kind="num"))
            try:
                t = RandomApply(t, p, per_example=self.per_example, generator=self.generator)
            except ValueError as e:
                raise self._err(str(e)) from None
        return t

    def _primary(self) -> Transform:
        if self._peek() == ("op", "("):
            self.i += 1
            t = self._choice()
            self._take(")")
            return t
        word = self._take(kind="word")
        cls = TRANSFORMS.get(word.lower())
        if cls is None:
            raise self._err(f"unknown transform {word!r}")
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        if self._peek() == ("op", ":"):
            self.i += 1
            while True:
                tok = self._peek()
                if tok is None or tok[0] == "op":
                    raise self._err(f"missing argument after {word!r}")
                self.i += 1
                if self._peek() == ("op", "=") and tok[0] == "word":
                    self.i += 1
                    v = self._peek()
                    if v is None or v[0] == "op":
                        raise self._err(f"missing value for {tok[1]!r}")
                    self.i += 1
                    kwargs[tok[1]] = _value(v)
                else:
                    if kwargs:
                        raise self._err("positional argument after key=value")
                    if tok[0] != "num":
                        raise self._err(f"argument {tok[1]!r} of {word!r} is not a number")
                    args.append(float(tok[1]))
                if self._peek() != ("op", ","):
                    break
                self.i += 1
        if cls.random:
            kwargs.setdefault("per_example", self.per_example)
            kwargs["generator"] = self.generator
        try:
            return cls(*args, **kwargs)
        except TypeError as e:
            raise self._err(
                f"wrong arguments for {word!r} (signature {_signature(cls)}): {e}"
            ) from None
        except ValueError as e:
            raise self._err(str(e)) from None


def _value(tok: tuple[str, str]) -> Any:
    kind, text = tok
    if kind == "num":
        return float(text)
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    return text


def parse_transform(
    spec: str | Transform,
    *,
    generator: torch.Generator | None = None,
    per_example: bool = True,
) -> Transform:
    """Build a transform from its name, e.g. ``parse_transform("rotate:15") == Rotate(15)``.

    Grammar (``|`` binds loosest, then ``+``, then ``@``; parentheses group)::

        spec    := seq ('|' seq)*              # RandomChoice
        seq     := term ('+' term)*            # Compose, applied left to right
        term    := primary ('@' p)?            # RandomApply with probability p
        primary := '(' spec ')' | NAME (':' args)?
        args    := number (',' number)* (',' key=value)*

    ``NAME`` is a key of :data:`TRANSFORMS` (canonical names and the paper's labels ori, flh,
    flv, bri, gam, crop, rot). ``parse_transform(t.name) == t`` for every transform ``t``
    built with default ``per_example`` (a single-element :class:`Compose` comes back as its
    element). A :class:`Transform` is returned unchanged.

    Args:
        spec: the text (or a transform).
        generator: given to every random transform built.
        per_example: for every random transform (except ``|``, which draws once per call).

    Raises:
        ValueError: unknown name, bad syntax, wrong arguments or invalid parameter values;
            the message quotes the spec and lists the known names.
    """
    if isinstance(spec, Transform):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"transform spec must be a string; got {type(spec).__name__}")
    return _Parser(spec, generator, per_example).parse()


# --------------------------------------------------------------------------------------
# the paper's domain sets


_SETTINGS: dict[str, str] = {
    "table3": "table3",
    "deterministic": "table3",
    "tablea5": "tableA5",
    "stochastic": "tableA5",
    "tablea6": "tableA6",
    "rotation": "tableA6",
}


def paper_transforms(
    setting: str = "table3",
    *,
    generator: torch.Generator | None = None,
    per_example: bool = True,
) -> list[Transform]:
    """The paper's CIFAR-10 transformation domains (Wang et al. §2c, App. C.3; spec §6.5).

    * ``"table3"`` / ``"deterministic"`` (K = 6): ori, flh, flv, bri (+0.1, unclipped),
      gam (1.3), crop (central 0.8, TF alignment).
    * ``"tableA6"`` / ``"rotation"`` (K = 7): the Table 3 set plus rot (30° clockwise =
      ``Rotate(-30)``, bilinear, zero padding).
    * ``"tableA5"`` / ``"stochastic"`` (K = 5): ori, flh@0.8, flv@0.8, bri@0.8, and a random
      central crop with fraction U[0.6, 1.0]. ``generator`` and ``per_example`` go to the
      random transforms.

    Attack everywhere (spec §2c): 20-step ℓ∞ APGDA, ε = 0.03, γ = 10, on 32×32 images
    (the transforms themselves work at any size).

    Returns:
        A new list of transforms in the paper's column order; ``[t.label for t in ...]`` are
        the table's column names.
    """
    key = _SETTINGS.get(setting.lower().replace(" ", ""))
    if key is None:
        raise ValueError(
            f"unknown paper transformation setting {setting!r}; expected one of"
            f" {sorted(set(_SETTINGS))}"
        )
    if key == "tableA5":
        kw: dict[str, Any] = {"per_example": per_example, "generator": generator}
        return [
            Identity(),
            RandomApply(HFlip(), 0.8, **kw),
            RandomApply(VFlip(), 0.8, **kw),
            RandomApply(Brightness(0.1), 0.8, **kw),
            RandomCenterCrop(0.6, 1.0, **kw),
        ]
    ts: list[Transform] = [
        Identity(),
        HFlip(),
        VFlip(),
        Brightness(0.1),
        Gamma(1.3),
        CenterCrop(0.8),
    ]
    if key == "tableA6":
        ts.append(Rotate(-30.0))
    return ts
