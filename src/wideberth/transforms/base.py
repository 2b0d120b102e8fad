"""The :class:`Transform` base class and the argument checks shared by all transforms."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any, ClassVar

from torch import Tensor

__all__ = ["Transform", "finite_number", "format_number"]


def _check_x(x: Tensor) -> None:
    """Raise unless ``x`` is a floating tensor of shape ``[B, C, H, W]`` (values unchecked)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"transforms take a tensor of shape [B, C, H, W]; got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"transforms take images of shape [B, C, H, W]; got shape {list(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"transforms take floating-point images in [0, 1]; got dtype {x.dtype}")


def format_number(v: float) -> str:
    """Shortest exact text for a float: ``0.1``, ``-30``, ``1.3`` (round-trips through float)."""
    s = repr(float(v))
    return s[:-2] if s.endswith(".0") else s


def finite_number(name: str, v: Any) -> float:
    """``v`` as a finite float, or ValueError naming the parameter."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{name} must be a number; got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite; got {v}")
    return v


class Transform:
    """Base class: a differentiable map from images ``[B, C, H, W]`` to images of that shape.

    Subclasses are frozen dataclasses (equality and ``repr`` from their parameters)
    implementing :meth:`_apply`. ``name`` is the canonical text accepted by
    :func:`parse_transform`; ``label`` is the paper's short column name (Wang et al. App. C.3,
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
                out.append(format_number(v))
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
