"""Attacks from outside the registry in a suite: a function, a torchattacks-style object, a factory.

:meth:`wideberth.evaluation.AttackSpec.external` wraps one of

* ``style="function"``: a callable ``fn(model, x, y, eps) -> x_adv``;
* ``style="object"``: an object called as ``atk(x, y) -> x_adv`` with the model bound at
  construction (torchattacks' style, e.g. ``torchattacks.PGD(model, eps=8/255, alpha=2/255,
  steps=10)``). Before every call its ``eps`` attribute (``eps_attribute``) is set to the
  evaluated ε and restored afterwards, so one object serves a whole ε grid; note that
  torchattacks' step size ``alpha`` is absolute and does not follow ε (use a factory for
  that). An object without the attribute runs at its own budget and only the outputs
  inside the evaluated ball count;
* ``style="factory"``: a callable ``make(eps) -> atk`` built per ε and called ``atk(x, y)``
  (e.g. ``lambda eps: torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=20)``).

``style="auto"`` picks ``object`` for anything with a ``model`` attribute (torchattacks'
``Attack``), else ``function`` for a callable of 4 positional parameters and ``factory`` for
one of 1.

What :func:`wideberth.evaluate` guarantees for an external attack, as for its own: the
inputs are images in [0, 1] on the model's device, the model is in eval mode with frozen
parameters (input gradients work; torchattacks puts the model in eval mode itself and calls
``model(x)`` with input gradients), and every output is **re-checked**: it must have the
shape of ``x`` and no NaN, and lie in the ε-ball and the [0, 1] box
(:meth:`wideberth.threat.ThreatModel.contains`); an output that does not is not counted
(and, for a ``fixed-eps`` attack, flagged as a broken attack); the prediction is made by a
fresh forward pass. Do not call torchattacks' ``set_normalization_used`` for wideberth models:
their normalisation lives inside the model, which takes [0, 1] images.

Randomness: torch's global generator is forked and seeded from the suite seed, the attack's
position, the batch index and the ε index for every call (:func:`external_seed`), so the
same data in the same batches give bitwise the same result, and the caller's random state
is untouched.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["EXTERNAL_STYLES", "ExternalAttack", "external_seed"]

#: the calling conventions of :class:`ExternalAttack`
EXTERNAL_STYLES = ("auto", "function", "object", "factory")


def external_seed(seed: int, batch: int, eps_index: int) -> int:
    """The torch seed of one external-attack call: a fixed mix of the attack's suite seed,
    the batch index and the ε index (a 63-bit non-negative integer)."""
    return (seed * 1_000_003 + batch * 7_919 + eps_index * 104_729) & ((1 << 63) - 1)


def _positional_count(fn: Callable[..., Any]) -> int | None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in kinds and p.default is p.empty for p in sig.parameters.values())


def resolve_style(fn: Any, style: str) -> str:
    """The calling convention of ``fn`` (``style`` checked, ``"auto"`` resolved)."""
    if style not in EXTERNAL_STYLES:
        raise ValueError(f"style must be one of {', '.join(EXTERNAL_STYLES)}; got {style!r}")
    if not callable(fn):
        raise ValueError(f"an external attack must be callable; got {type(fn).__name__}")
    if style != "auto":
        return style
    if hasattr(fn, "model") and not isinstance(fn, nn.Module):
        return "object"
    count = _positional_count(fn)
    if count == 4:
        return "function"
    if count == 1:
        return "factory"
    raise ValueError(
        f"cannot tell how to call the external attack {fn!r}: give style='function' for "
        "fn(model, x, y, eps), 'object' for atk(x, y) (torchattacks) or 'factory' for "
        "make(eps) -> atk")


@dataclass(frozen=True, eq=False)
class ExternalAttack:
    """An attack from outside the registry (see the module docstring).

    Attributes:
        fn: the function, object or factory.
        style: ``"function"``, ``"object"`` or ``"factory"``.
        kind: ``"fixed-eps"`` (outputs outside the ε-ball are a bug, flagged) or
            ``"minimal-norm"`` (only outputs within ε count; the others are ignored).
        norms: threat models it supports (empty: any).
        eps_attribute: the attribute an ``object`` reads its budget from (``"eps"``).
    """

    fn: Any
    style: str = "function"
    kind: str = "fixed-eps"
    norms: tuple[str, ...] = ()
    eps_attribute: str = "eps"

    def describe(self) -> str:
        """What identifies the attack in a state file's fingerprint: its type's qualified
        name and the style."""
        f = self.fn
        name = getattr(f, "__qualname__", None) or type(f).__qualname__
        return f"{getattr(f, '__module__', type(f).__module__)}.{name}:{self.style}"

    def _call(self, model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Any:
        if self.style == "function":
            return self.fn(model, x, y, eps)
        if self.style == "factory":
            return self.fn(eps)(x, y)
        if not hasattr(self.fn, self.eps_attribute):
            return self.fn(x, y)
        old = getattr(self.fn, self.eps_attribute)
        setattr(self.fn, self.eps_attribute, eps)
        try:
            return self.fn(x, y)
        finally:
            setattr(self.fn, self.eps_attribute, old)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, eps: float, seed: int) -> Tensor:
        """``x_adv`` [B, ...] on ``x``'s device and dtype, detached; an output that is not
        a tensor of ``x``'s shape raises ``ValueError``; NaNs are replaced by +inf (so the
        re-check rejects those rows). Torch's global generator is forked and seeded with
        ``seed``."""
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            torch.manual_seed(seed)
            out = self._call(model, x, y, float(eps))
        if not isinstance(out, Tensor) or tuple(out.shape) != tuple(x.shape):
            shape = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"the external attack {self.describe()} returned {shape}; an "
                             f"attack must return x_adv of the input's shape {list(x.shape)}")
        out = out.detach().to(x.device, x.dtype)
        return torch.where(torch.isnan(out), torch.full_like(out, float("inf")), out)
