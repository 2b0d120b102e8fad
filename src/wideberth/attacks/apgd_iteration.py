"""The APGD iteration: step-size schedule, momentum, checkpoints, restarts and targets.

Paper: F. Croce and M. Hein, *Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks*, ICML 2020 (Algorithm 1; reference code
``fra31/auto-attack``, ``autopgd_base.py``).

With ``P`` the exact projection onto the ε-ball ∩ [0, 1] box (the threat model's), ``η`` a
per-example step size and ``step`` the threat model's steepest-ascent step (``sign`` for ℓ∞,
``g/‖g‖₂`` for ℓ2), one run of ``N = steps`` iterations is::

    x⁰ = random start,  η = 2ε
    x¹ = P(x⁰ + step(∇f(x⁰), η))                                   (no momentum)
    z  = P(xᵏ + step(∇f(xᵏ), η))
    xᵏ⁺¹ = P(xᵏ + α(z − xᵏ) + (1 − α)(xᵏ − xᵏ⁻¹))                  (α = 0.75)

and ``x_max`` is the highest-loss iterate so far. At the checkpoints ``w_j = ⌈p_j N⌉`` with
``p₀ = 0``, ``p₁ = 0.22``, ``p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)``
(:func:`apgd_checkpoints`), an example halves its step size and restarts from ``x_max``
when

1. the loss increased in fewer than ``ρ·(w_j − w_{j−1})`` of the steps since the last
   checkpoint (``ρ = 0.75``), or
2. its step size was not halved at the last checkpoint and its best loss has not improved
   since then.

Everything is per example (step sizes, checkpoint decisions, best points), so with a model
that does not mix examples (no BatchNorm in train mode; attacks run in eval mode anyway)
an example's result does not depend on the rest of its batch.

:func:`apgd_drive` runs this over restarts (and, for APGD-T, target classes), attacking only
the examples no earlier run broke; the public attacks (:func:`wideberth.attacks.apgd`,
:func:`~wideberth.attacks.apgd_ce`, :func:`~wideberth.attacks.apgd_dlr_targeted`) are thin
front-ends in :mod:`wideberth.attacks.auto_pgd` that choose the loss and the success test.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from fractions import Fraction

import torch
from torch import Tensor

from ..threat import ThreatModel
from .base import ModelLike, batch_view, loss_and_grad, random_start

__all__ = ["LossFn", "apgd_checkpoints", "apgd_drive"]

log = logging.getLogger(__name__)

#: a per-example loss ``(logits [b, K], y [b]) -> [b]`` ascended by APGD
LossFn = Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------


def apgd_checkpoints(steps: int) -> list[int]:
    """The iterations at which APGD checks whether to halve its step size.

    ``w_j = ⌈p_j · steps⌉`` for ``j >= 1`` with ``p₀ = 0``, ``p₁ = 0.22`` and
    ``p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)``, keeping ``p_j <= 1`` (computed in
    exact rational arithmetic, so no float rounding pushes a ceiling up). Repeated values
    (small ``steps``) are dropped. ``apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]``.

    Args:
        steps: number of iterations ``N >= 0``.

    Returns:
        Increasing list of iteration counts in ``[1, steps]``.
    """
    if isinstance(steps, bool) or int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer; got {steps!r}")
    n = int(steps)
    out: list[int] = []
    p_prev, p = Fraction(0), Fraction(22, 100)
    while p <= 1:
        w = math.ceil(p * n)
        if w >= 1 and (not out or w > out[-1]):
            out.append(w)
        p_prev, p = p, p + max(p - p_prev - Fraction(3, 100), Fraction(6, 100))
    return out


# --------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------


def _halve_mask(
    n_incr: Tensor,
    window: int,
    rho: float,
    reduced_last: Tensor,
    best_loss: Tensor,
    best_at_last: Tensor,
) -> Tensor:
    """Which examples halve their step size at a checkpoint, ``[b]`` bool.

    Condition 1: the loss increased (``f(x^{i+1}) > f(x^i)``) in fewer than ``rho·window``
    of the ``window = w_j − w_{j−1}`` steps since the last checkpoint. Condition 2: the step
    size was not halved at the last checkpoint and the best loss has not improved since.
    """
    cond1 = n_incr.to(best_loss.dtype) < rho * window
    cond2 = ~reduced_last & (best_loss <= best_at_last)
    return cond1 | cond2



def _run(
    model: ModelLike,
    threat: ThreatModel,
    x: Tensor,
    eps: Tensor,
    delta: Tensor,
    objective: LossFn,
    labels: Tensor,
    success_fn: Callable[[Tensor], Tensor],
    steps: int,
    checkpoints: list[int],
    rho: float,
    alpha: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """One APGD run from ``x + delta``.

    Returns ``(x_out [b, ...], success [b] bool, loss [b])``: per example the best point seen
    (a successful one if any, the highest-loss one among those with the same success).
    """
    ckpt = set(checkpoints)
    # x + δ can leave [0, 1] by an ulp; the clamp only moves towards x, so stays in the ball
    x_cur = (x + delta).clamp(0.0, 1.0)
    loss, grad, logits = loss_and_grad(model, x_cur, labels, objective)
    succ = success_fn(logits)

    out_x, out_succ, out_loss = x_cur, succ, loss
    best_delta, best_grad, best_loss = delta, grad, loss
    delta_prev = delta
    loss_prev = loss
    step_size = 2.0 * eps  # η = 2ε per example (ℓ∞ and ℓ2)
    n_incr = torch.zeros_like(loss, dtype=torch.long)
    reduced_last = torch.zeros_like(succ)
    best_at_last = best_loss
    w_prev = 0

    for k in range(1, steps + 1):
        with torch.no_grad():
            z = threat.project(delta + threat.step(grad, step_size, x_adv=x + delta), x, eps)
            if k == 1:  # first step without momentum
                new = z
            else:
                new = threat.project(
                    delta + alpha * (z - delta) + (1.0 - alpha) * (delta - delta_prev), x, eps
                )
            delta_prev, delta = delta, new
            x_cur = (x + delta).clamp(0.0, 1.0)
        if k < steps:
            loss, grad, logits = loss_and_grad(model, x_cur, labels, objective)
        else:  # the last iterate needs no gradient
            with torch.no_grad():
                logits = model(x_cur)
                loss = objective(logits, labels).detach()
        with torch.no_grad():
            succ = success_fn(logits)
            better = (succ & ~out_succ) | ((succ == out_succ) & (loss > out_loss))
            out_x = torch.where(batch_view(better, x), x_cur, out_x)
            out_loss = torch.where(better, loss, out_loss)
            out_succ = out_succ | succ

            n_incr = n_incr + (loss > loss_prev).long()
            loss_prev = loss
            improved = loss > best_loss
            best_delta = torch.where(batch_view(improved, x), delta, best_delta)
            best_grad = torch.where(batch_view(improved, x), grad, best_grad)
            best_loss = torch.where(improved, loss, best_loss)

            if k in ckpt and k < steps:
                reduce = _halve_mask(n_incr, k - w_prev, rho, reduced_last, best_loss, best_at_last)
                if bool(reduce.any()):
                    step_size = torch.where(reduce, step_size / 2.0, step_size)
                    m = batch_view(reduce, x)
                    delta = torch.where(m, best_delta, delta)
                    grad = torch.where(m, best_grad, grad)
                    loss_prev = torch.where(reduce, best_loss, loss_prev)
                reduced_last = reduce
                best_at_last = best_loss
                n_incr = torch.zeros_like(n_incr)
                w_prev = k
    return out_x, out_succ, out_loss


def _merge(
    state: tuple[Tensor, Tensor, Tensor], rows: Tensor, cand: tuple[Tensor, Tensor, Tensor]
) -> None:
    """Fold a run's results into the running best (in place) at ``rows``: a candidate wins if
    it succeeds where the best did not, or has the same success and a higher loss."""
    bx, bs, bl = state
    cx, cs, cl = cand
    s, lo = bs[rows], bl[rows]
    better = (cs & ~s) | ((cs == s) & (cl > lo))
    bx[rows] = torch.where(batch_view(better, cx), cx, bx[rows])
    bl[rows] = torch.where(better, cl, lo)
    bs[rows] = s | cs



def apgd_drive(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    eps_t: Tensor,
    *,
    steps: int,
    restarts: int,
    rho: float,
    alpha: float,
    early_stop: bool,
    seed: int,
    generator: torch.Generator | None,
    clean_logits: Tensor,
    targets: Tensor | None,
    objective_for: Callable[[Tensor, Tensor | None], LossFn],
    success_for: Callable[[Tensor, Tensor | None], Callable[[Tensor], Tensor]],
) -> Tensor:
    """Run APGD over target columns and restarts, attacking only unbroken examples; x_adv [B, ...].

    ``targets`` is ``None`` (untargeted) or ``[B, T]``: column ``j`` holds each example's
    ``j``-th target, each with its own ``restarts`` runs. ``objective_for(rows, t)`` and
    ``success_for(rows, t)`` build the loss ``(logits, y_rows) -> [b]`` and the success test
    ``logits -> [b]`` for the examples ``rows`` and their targets ``t`` (or ``None``).
    ``clean_logits`` [B, K] decide which examples are broken before any run (they are
    returned as ``x`` when ``early_stop``).
    """
    b = x.shape[0]
    dev = x.device
    checkpoints = apgd_checkpoints(steps)
    all_rows = torch.arange(b, device=dev)
    first_t = None if targets is None else targets[:, 0]
    best_x = x.clone()
    best_succ = success_for(all_rows, first_t)(clean_logits).clone()
    best_loss = torch.full((b,), -math.inf, device=dev, dtype=x.dtype)
    n_cols = 1 if targets is None else targets.shape[1]
    for j in range(n_cols):
        for r in range(restarts):
            rows = all_rows[~best_succ] if early_stop else all_rows
            if rows.numel() == 0:
                return best_x
            t = None if targets is None else targets[rows, j]
            xs, es = x[rows], eps_t[rows]
            delta = random_start(
                threat, xs, es, generator=generator, seed=seed, restart=j * restarts + r
            )
            cand = _run(
                model, threat, xs, es, delta, objective_for(rows, t), y[rows],
                success_for(rows, t), steps, checkpoints, rho, alpha,
            )
            _merge((best_x, best_succ, best_loss), rows, cand)
            log.debug(
                "apgd: target %d/%d, restart %d/%d: %d of %d examples broken",
                j + 1, n_cols, r + 1, restarts, int(best_succ.sum()), b,
            )
    return best_x

