"""Composition and the stochastic transforms (Wang et al., Table A5; App. C.3).

:class:`Compose` chains transforms; :class:`RandomApply`, :class:`RandomCenterCrop`,
:class:`RandomRotate` and :class:`RandomChoice` draw afresh on every call, so the
expectation ``E_{t ~ p_i}`` of eq. (7) is estimated by averaging the loss over calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from .base import Transform, finite_number, format_number
from .sampling import check_rotation_options, resample_affine, rotation_theta, tf_center_crop

__all__ = ["Compose", "RandomApply", "RandomCenterCrop", "RandomChoice", "RandomRotate"]


def _uniform(n: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """``n`` draws from U[0, 1) as a tensor on ``like``'s device and dtype."""
    if generator is None:
        u = torch.rand(n, device=like.device)
    else:
        u = torch.rand(n, generator=generator, device=generator.device)
    return u.to(device=like.device, dtype=like.dtype)


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
        per_example: one Bernoulli draw per example (default; the paper does not say) or one per call,
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
        p = finite_number("probability p", self.p)
        if not 0 <= p <= 1:
            raise ValueError(f"probability p must be in [0, 1]; got {p}")
        object.__setattr__(self, "p", p)

    @property
    def name(self) -> str:
        """Canonical, parseable name (see :func:`parse_transform`)."""
        return f"{_wrap(self.transform, inside='@')}@{format_number(self.p)}"

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

    Table A5 / App. C.3: "cropping images in the center randomly (from 0.6 to 1.0)"; the
    paper does not name the distribution, uniform is this library's reading. Each draw is :class:`CenterCrop` (``align="tf"``) at scale ``s``.

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
        lo = finite_number("random crop min_scale", self.min_scale)
        hi = finite_number("random crop max_scale", self.max_scale)
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"random crop needs 0 < min_scale <= max_scale <= 1; got {lo}, {hi}")
        object.__setattr__(self, "min_scale", lo)
        object.__setattr__(self, "max_scale", hi)

    def _apply(self, x: Tensor) -> Tensor:
        n = x.shape[0] if self.per_example else 1
        s = self.min_scale + (self.max_scale - self.min_scale) * _uniform(n, self.generator, x)
        return tf_center_crop(x, s.expand(x.shape[0]))


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
        m = finite_number("random rotate max_degrees", self.max_degrees)
        if m < 0:
            raise ValueError(f"random rotate max_degrees must be >= 0; got {m}")
        object.__setattr__(self, "max_degrees", m)
        check_rotation_options(self.padding, self.mode)

    def _apply(self, x: Tensor) -> Tensor:
        n = x.shape[0] if self.per_example else 1
        deg = self.max_degrees * (2 * _uniform(n, self.generator, x) - 1)
        theta = rotation_theta(deg.expand(x.shape[0]), x.shape[-2], x.shape[-1])
        return resample_affine(x, theta, mode=self.mode, padding=self.padding, align_corners=False)


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
