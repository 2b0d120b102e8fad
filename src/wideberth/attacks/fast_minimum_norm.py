"""Fast Minimum-Norm (FMN): minimal-norm attack for ℓ2, ℓ∞ and ℓ1.

Paper: M. Pintor, F. Roli, W. Brendel and B. Biggio, *Fast Minimum-norm Adversarial
Attacks through Adaptive Norm Constraints*, NeurIPS 2021, Algorithm 1 (gradient ascent
on the logit margin inside an ℓp ball whose radius adapts per example, projected on ball ∩
box, cosine-annealed step and radius-adaptation schedules).

Returns a :class:`~wideberth.attacks.minimal_norm.MinimalNormResult` (see
:mod:`wideberth.attacks.minimal_norm` for the conventions shared by every minimal-norm
attack). Runs inside :func:`~wideberth.attacks.base.attack_context` (eval mode, parameter
``.grad`` untouched, modes restored); inputs are validated once with
:func:`~wideberth.attacks.base.prepare` and never modified in place; device and dtype come
from ``x``. Deterministic (starts at δ = 0, hence no ``seed``) and per example throughout,
so an example's result does not depend on the rest of its batch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..losses import logit_margin
from ..threat import ThreatModel, get_threat
from .base import (
    ModelLike,
    ResultAttack,
    attack_context,
    batch_view,
    check_int,
    loss_and_grad,
    prepare,
)
from .minimal_norm import (
    MinimalNormResult,
    assemble_result,
    check_positive,
    empty_result,
    split_misclassified,
)

__all__ = ["FMN", "fmn", "fmn_attack"]


def _fmn_core(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    steps: int,
    alpha_init: float,
    alpha_final: float,
    gamma_init: float,
    gamma_final: float,
) -> tuple[Tensor, Tensor]:
    """FMN on correctly classified examples; returns ``(best x_adv, found)``."""
    n = x.shape[0]
    dev, dt = x.device, x.dtype
    x = x.detach()
    step_threat = get_threat("l2")  # FMN steps along the ℓ2-normalised gradient for every norm
    delta = torch.zeros_like(x)
    eps = torch.full((n,), math.inf, device=dev, dtype=dt)
    worst = threat.norm(torch.maximum(x, 1 - x))
    best_norm = torch.full((n,), math.inf, device=dev, dtype=dt)
    best_adv = x.clone()
    found = torch.zeros(n, dtype=torch.bool, device=dev)

    def record(x_adv: Tensor, lm: Tensor) -> tuple[Tensor, Tensor]:
        nonlocal best_norm, best_adv, found
        dnorm = threat.norm(x_adv - x)
        is_adv = lm >= 0
        better = is_adv & (dnorm < best_norm)
        best_norm = torch.where(better, dnorm, best_norm)
        best_adv = torch.where(batch_view(better, x), x_adv, best_adv)
        found = found | is_adv
        return dnorm, is_adv

    for i in range(steps):
        cosine = (1 + math.cos(math.pi * i / steps)) / 2
        alpha = alpha_final + (alpha_init - alpha_final) * cosine
        gamma = gamma_final + (gamma_init - gamma_final) * cosine
        x_adv = (x + delta).clamp(0, 1)
        lm, grad, _ = loss_and_grad(model, x_adv, y, logit_margin)
        dnorm, is_adv = record(x_adv, lm)
        # ε update (Algorithm 1): shrink while adversarial, grow once one was found,
        # before that jump to the linearised distance to the boundary ‖δ‖ + |LM| / ‖∇LM‖_*,
        # overshot by (1 + γ): on a (locally) linear boundary the exact jump lands on the
        # boundary itself (LM ≈ −1e-16) and would never count as adversarial.
        to_boundary = lm.abs() / threat.dual_norm(grad).clamp(min=1e-12)
        eps = torch.where(
            is_adv,
            torch.minimum(eps * (1 - gamma), best_norm),
            torch.where(found, eps * (1 + gamma), (dnorm + to_boundary) * (1 + gamma)),
        )
        eps = torch.minimum(eps, worst)
        # ascent step along the ℓ2-normalised gradient, then exact projection on ball ∩ box
        delta = threat.project((x_adv - x) + step_threat.step(grad, alpha), x, eps)
    # the last step's iterate is evaluated too (one forward; the reference code drops it)
    x_adv = (x + delta).clamp(0, 1)
    with torch.no_grad():
        record(x_adv, logit_margin(model(x_adv), y))
    return best_adv, found


def fmn(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    norm: str | float = "l2",
    steps: int = 100,
    alpha_init: float = 1.0,
    alpha_final: float | None = None,
    gamma_init: float = 0.05,
    gamma_final: float = 0.001,
    check: bool = True,
) -> MinimalNormResult:
    """Fast Minimum-Norm attack (Pintor et al., NeurIPS 2021, Algorithm 1), untargeted.

    Gradient ascent on the logit margin ``LM = max_{j≠y} Z_j − Z_y`` inside an ℓp ball of
    adaptive radius ε_k, projected on ball ∩ box after each step:

    * step ``k`` of ``steps``: ``α_k`` and ``γ_k`` are cosine-annealed from ``alpha_init`` to
      ``alpha_final`` (default ``alpha_init / 100``) and from ``gamma_init`` to
      ``gamma_final``;
    * while no adversarial has been found, ``ε_k = ‖δ_k‖ + |LM| / ‖∇LM‖_*`` (the
      linearised distance to the boundary; ``‖·‖_*`` the dual norm); when ``x + δ_k`` is
      adversarial, ``ε_k = min(ε_{k−1}(1 − γ_k), best norm so far)``; otherwise (once one
      has been found) ``ε_k = ε_{k−1}(1 + γ_k)``; always capped at the largest feasible
      norm ``‖max(x, 1 − x)‖``;
    * ``δ_{k+1} = Π_{B(ε_k) ∩ box}(δ_k + α_k ∇LM / ‖∇LM‖₂)`` – the ℓ2-normalised gradient
      for every norm, as in the reference code; the projection is wideberth's exact ball ∩
      box projection (the reference projects on the ball, then clips; identical for ℓ∞).
    * each example keeps the adversarial iterate of smallest norm (``LM ≥ 0``, ties count
      as misclassified); the final iterate is evaluated as well.

    Starts from ``δ = 0`` (no random start, no initial attack): deterministic. The FMN
    reference uses ``alpha_init = 1`` by default for every norm; on high-dimensional ℓ∞
    problems a larger initial step may converge faster.

    Args:
        model: classifier returning logits ``[B, K]`` for inputs in ``[0, 1]``.
        x: inputs ``[B, ...]`` in ``[0, 1]``.
        y: integer labels ``[B]``.
        norm: ``"l2"``, ``"linf"`` or ``"l1"`` (aliases as in :func:`wideberth.threat.get_threat`).
        steps: iterations (forward + backward each).
        alpha_init, alpha_final: step size schedule (ℓ2 length of the gradient step).
        gamma_init, gamma_final: ε-adaptation factor schedule, in ``(0, 1)``.
        check: validate inputs with :func:`~wideberth.attacks.base.prepare` first.

    Returns:
        :class:`MinimalNormResult` with distances ``[B]`` in ``norm``.
    """
    check_int(steps, "steps")
    check_positive(alpha_init, "alpha_init")
    a_final = float(alpha_init) / 100 if alpha_final is None else float(alpha_final)
    check_positive(a_final, "alpha_final")
    for name, g in (("gamma_init", gamma_init), ("gamma_final", gamma_final)):
        if not (0.0 < float(g) < 1.0):
            raise ValueError(f"{name} must be in (0, 1); got {g!r}")
    if check:
        threat, _ = prepare(model, x, y, norm=norm)
        assert threat is not None
    else:
        threat = get_threat(norm)
    if x.shape[0] == 0:
        return empty_result(x)
    with attack_context(model):
        idx, mis = split_misclassified(model, x, y)
        if idx.numel() > 0:
            adv_sub, found_sub = _fmn_core(
                model,
                x[idx],
                y[idx],
                threat,
                steps=steps,
                alpha_init=float(alpha_init),
                alpha_final=a_final,
                gamma_init=float(gamma_init),
                gamma_final=float(gamma_final),
            )
        else:
            adv_sub, found_sub = x[idx], mis[idx]
        return assemble_result(model, x, y, threat, idx, mis, adv_sub, found_sub, f"fmn-{threat.name}")



def fmn_attack(model: ModelLike, x: Tensor, y: Tensor, **kwargs: Any) -> Tensor:
    """:func:`fmn` returning only ``x_adv`` ``[B, ...]`` (the :class:`Attack` protocol)."""
    return fmn(model, x, y, **kwargs).x_adv



class FMN(ResultAttack):
    """Callable Fast Minimum-Norm attack (see :func:`fmn`): ``FMN(model, norm="linf")(x, y)``
    returns ``x_adv`` ``[B, ...]``; :meth:`result` returns the :class:`MinimalNormResult`."""

    fn = staticmethod(fmn_attack)
    result_fn = staticmethod(fmn)
