"""Norm names and the threat-model lookup: :func:`normalize_norm`, :func:`get_threat`."""

from __future__ import annotations

import math
from numbers import Real

from .base import ThreatModel
from .l1 import L1Ball
from .l2 import L2Ball
from .linf import LinfBall

__all__ = ["NORMS", "get_threat", "normalize_norm"]

#: canonical norm names accepted by :func:`get_threat`.
NORMS: tuple[str, ...] = ("linf", "l2", "l1")

_NORM_ALIASES: dict[str, str] = {
    "linf": "linf",
    "l_inf": "linf",
    "l-inf": "linf",
    "inf": "linf",
    "infinity": "linf",
    "l∞": "linf",
    "∞": "linf",
    "l2": "l2",
    "l_2": "l2",
    "2": "l2",
    "l1": "l1",
    "l_1": "l1",
    "1": "l1",
}


_THREATS: dict[str, type[ThreatModel]] = {"linf": LinfBall, "l2": L2Ball, "l1": L1Ball}


def normalize_norm(norm: str | float | int | ThreatModel) -> str:
    """Canonical norm name ``"linf" | "l2" | "l1"``.

    Accepts (case-insensitively) ``"linf"``, ``"Linf"``, ``"inf"``, ``"l_inf"``, ``"l2"``,
    ``"2"``, ``"l1"``, ``"1"``, the numbers ``2``, ``1``, ``float("inf")``, or a
    :class:`ThreatModel`. Anything else raises :class:`ValueError` listing the valid norms.
    """
    if isinstance(norm, ThreatModel):
        return norm.name
    key: str | None = None
    if isinstance(norm, str):
        key = _NORM_ALIASES.get(norm.strip().lower().replace(" ", ""))
    elif isinstance(norm, Real) and not isinstance(norm, bool):
        v = float(norm)
        key = {math.inf: "linf", 2.0: "l2", 1.0: "l1"}.get(v)
    if key is None:
        raise ValueError(
            f"unknown norm {norm!r}; valid norms are {', '.join(NORMS)}"
            " (also accepted: 'inf', 'Linf', 2, 1, float('inf'))"
        )
    return key


def get_threat(norm: str | float | int | ThreatModel, **kwargs: object) -> ThreatModel:
    """Return the threat model for ``norm`` (see :func:`normalize_norm` for accepted names).

    ``kwargs`` go to the constructor, e.g. ``get_threat("l1", l1_sparsity=0.99)`` or
    ``get_threat("l1", iters=60)``. A :class:`ThreatModel` instance is returned unchanged
    (``kwargs`` must then be empty).
    """
    if isinstance(norm, ThreatModel):
        if kwargs:
            raise ValueError("cannot pass constructor options together with a ThreatModel")
        return norm
    return _THREATS[normalize_norm(norm)](**kwargs)
