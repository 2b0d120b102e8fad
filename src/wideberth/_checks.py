"""Input validation shared by every attack, threat model and evaluation entry point.

The checks here are meant to run once at the public entry of an attack (they read values
back from the device, which synchronises a GPU), not inside the iteration loop. The cheap,
shape-only helpers used on every step live in :mod:`wideberth.threat`
(:func:`wideberth.threat.as_batch_eps`).

All problems with *values* raise :class:`ValueError`; an argument of the wrong Python type
(for example ``x`` that is not a tensor) raises :class:`TypeError`.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor

__all__ = ["check_eps", "check_inputs"]


def check_eps(eps: float | Tensor, batch_size: int | None = None, *, name: str = "eps") -> None:
    """Validate a perturbation budget.

    Args:
        eps: a Python number, a 0-dim tensor, or a per-example tensor of shape ``[B]``.
        batch_size: if given, a per-example tensor must have exactly ``batch_size`` entries.
        name: the argument name used in error messages (e.g. ``"step_size"``).

    Raises:
        TypeError: ``eps`` is neither a real number nor a tensor (``bool`` is rejected too).
        ValueError: ``eps`` is negative, NaN or infinite, or a tensor of the wrong shape.
    """
    if isinstance(eps, bool) or not isinstance(eps, (Real, Tensor)):
        raise TypeError(
            f"{name} must be a float or a per-example tensor of shape [B]; got {type(eps).__name__}"
        )
    if isinstance(eps, Tensor):
        if eps.dim() > 1:
            raise ValueError(
                f"per-example {name} must have shape [B]"
                + (f" = [{batch_size}]" if batch_size is not None else "")
                + f"; got shape {list(eps.shape)}"
            )
        if eps.dim() == 1 and batch_size is not None and eps.shape[0] != batch_size:
            raise ValueError(
                f"per-example {name} must have shape [B] = [{batch_size}] (one value per example);"
                f" got shape {list(eps.shape)}"
            )
        if eps.is_complex() or eps.dtype == torch.bool:
            raise ValueError(f"{name} must be a real tensor; got dtype {eps.dtype}")
        if eps.numel() == 0:
            return
        e = eps.detach()
        if not bool(torch.isfinite(e).all()):
            raise ValueError(f"{name} must be finite (no NaN or inf); got {e.tolist()!r:.200}")
        lo = float(e.min())
        if lo < 0:
            raise ValueError(f"{name} must be >= 0; found minimum {lo:.6g}")
    else:
        v = float(eps)
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite (no NaN or inf); got {v}")
        if v < 0:
            raise ValueError(f"{name} must be >= 0; got {v:.6g}")


def check_inputs(
    x: Tensor,
    y: Tensor | None = None,
    eps: float | Tensor | None = None,
    num_classes: int | None = None,
    *,
    tol: float = 1e-6,
) -> None:
    """Validate a batch before attacking or evaluating it.

    Checks, each with its own clear :class:`ValueError`:

    * ``x`` is a floating-point tensor with a batch dimension, free of NaN/inf, and inside the
      box ``[0, 1]`` (up to ``tol``). wideberth attacks act in pixel space; input
      normalisation (mean/std) belongs inside the model as a layer.
    * ``y`` (if given) is an integer tensor of shape ``[B]`` matching ``x.shape[0]``, with
      every label in ``[0, num_classes)`` (the upper bound only if ``num_classes`` is given).
    * ``eps`` (if given) is a finite, non-negative float or a per-example tensor of shape
      ``[B]`` (see :func:`check_eps`).

    Args:
        x: inputs, shape ``[B, ...]``.
        y: labels, shape ``[B]``, integer dtype.
        eps: perturbation budget, float or ``[B]``.
        num_classes: number of classes ``K``; enables the upper range check on ``y``.
        tol: slack allowed outside ``[0, 1]`` for float rounding.

    Returns:
        None. Raises on the first problem found.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor; got {type(x).__name__}")
    if num_classes is not None and (isinstance(num_classes, bool) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive integer; got {num_classes!r}")
    if not x.is_floating_point():
        raise ValueError(
            f"x must be a floating-point tensor with values in [0, 1]; got dtype {x.dtype}"
            " (convert images with x.float() / 255)"
        )
    if x.dim() < 1:
        raise ValueError("x must have a batch dimension: shape [B, ...]; got a 0-dim tensor")
    batch = x.shape[0]
    if x.numel() > 0:
        xd = x.detach()
        if not bool(torch.isfinite(xd).all()):
            n_bad = int((~torch.isfinite(xd)).sum())
            raise ValueError(f"x contains {n_bad} NaN or infinite value(s)")
        lo, hi = float(xd.min()), float(xd.max())
        if lo < -tol or hi > 1.0 + tol:
            raise ValueError(
                f"x must lie in the box [0, 1]; found values in [{lo:.6g}, {hi:.6g}]. "
                "wideberth attacks, eps and clipping act in pixel space: put input "
                "normalisation (mean/std standardisation) inside the model as a layer."
            )
    if y is not None:
        if not isinstance(y, Tensor):
            raise TypeError(f"y must be a torch.Tensor of integer labels; got {type(y).__name__}")
        if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
            raise ValueError(
                f"y must hold integer class labels (e.g. torch.long); got dtype {y.dtype}"
            )
        if y.dim() != 1:
            raise ValueError(
                f"y must have shape [B] (one label per example); got shape {list(y.shape)}"
                + (" (one-hot labels are not accepted: use y.argmax(1))" if y.dim() == 2 else "")
            )
        if y.shape[0] != batch:
            raise ValueError(
                f"y has {y.shape[0]} labels but x has batch size {batch}; they must match"
            )
        if y.numel() > 0:
            ymin, ymax = int(y.min()), int(y.max())
            if ymin < 0:
                raise ValueError(f"labels must be >= 0; found minimum label {ymin}")
            if num_classes is not None and ymax >= num_classes:
                raise ValueError(
                    f"labels must be in [0, {num_classes}) for a {num_classes}-class model;"
                    f" found maximum label {ymax}"
                )
    if eps is not None:
        check_eps(eps, batch)
