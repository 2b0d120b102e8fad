"""Carlini–Wagner ℓ2: the minimal-ℓ2-norm attack of Carlini & Wagner (IEEE S&P 2017).

Paper: N. Carlini and D. Wagner, *Towards Evaluating the Robustness of Neural Networks*,
IEEE Symposium on Security and Privacy 2017, §V (the ℓ2 attack: change of variables
``x' = (tanh(w) + 1)/2``, objective ``‖x' − x‖₂² + c·f(x')`` with the logit hinge
``f = max(Z_y − max_{j≠y} Z_j + κ, 0)``, binary search over ``c``), with AdverTorch
``CarliniWagnerL2Attack`` semantics. Ding et al. (*MMA Training*, ICLR 2020, App. F.1,
Tables 2–3) used it for their minimum-ℓ2-norm statistics; they do not give its
hyperparameters, so the defaults are AdverTorch's (9 binary-search steps, lr 0.01,
initial constant 1e-3, κ = 0).

Returns a :class:`~wideberth.attacks.minimal_norm.MinimalNormResult` (see
:mod:`wideberth.attacks.minimal_norm` for the conventions shared by every minimal-norm
attack). Runs inside :func:`~wideberth.attacks.base.attack_context` (eval mode, parameter
``.grad`` untouched, modes restored); inputs are validated once with
:func:`~wideberth.attacks.base.prepare` and never modified in place; device and dtype come
from ``x``. Deterministic (no random start, hence no ``seed``), and every quantity is per
example – the loss is a sum of per-example terms, Adam is elementwise, early stopping is
decided per example – so an example's result does not depend on the rest of its batch.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import Tensor

from ..losses import cw_loss, logit_margin
from ..threat import get_threat
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

__all__ = ["CWL2", "cw_l2", "cw_l2_attack"]

log = logging.getLogger(__name__)

# AdverTorch CarliniWagnerL2Attack constants (same meaning, our own names).
_ATANH_SHRINK = 0.999999  # keeps arctanh finite for pixels at exactly 0 or 1
_ABORT_RTOL = 0.999999  # "loss stopped improving" when loss > previous * this
_NUM_ABORT_CHECKS = 10  # abort-early checks per binary-search step
_COEFF_UPPER_INIT = 1e10  # "no successful constant yet" upper bound on c
_COEFF_UPPER_CHECK = 1e9  # below this an upper bound is known: bisect, else c *= 10
_REPEAT_MIN_STEPS = 10  # with >= this many binary steps, the last one reuses the upper bound


def _cw_core(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    steps: int,
    binary_search_steps: int,
    initial_const: float,
    lr: float,
    kappa: float,
    abort_early: bool,
) -> tuple[Tensor, Tensor]:
    """CW-ℓ2 on correctly classified examples; returns ``(best x', found)``."""
    n = x.shape[0]
    dev, dt = x.device, x.dtype
    x = x.detach()
    w0 = torch.atanh((x.clamp(0, 1) * 2 - 1) * _ATANH_SHRINK)
    # the search over c spans 1e-3 … 1e10: keep it in at least float32 (half would overflow)
    cdt = torch.promote_types(dt, torch.float32)
    c = torch.full((n,), float(initial_const), device=dev, dtype=cdt)
    lower = torch.zeros(n, device=dev, dtype=cdt)
    upper = torch.full((n,), _COEFF_UPPER_INIT, device=dev, dtype=cdt)
    best_l2sq = torch.full((n,), math.inf, device=dev, dtype=dt)
    best_adv = x.clone()
    found = torch.zeros(n, dtype=torch.bool, device=dev)
    beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
    check_every = max(steps // _NUM_ABORT_CHECKS, 1)
    repeat = binary_search_steps >= _REPEAT_MIN_STEPS

    for outer in range(binary_search_steps):
        if repeat and outer == binary_search_steps - 1:
            c = upper.clone()
        coeff = c.clone()

        def objective(logits: Tensor, yy: Tensor, coeff: Tensor = coeff) -> Tensor:
            # c · max(Z_y − max_{j≠y} Z_j + κ, 0) = c · (κ − min(LM, κ)), per example
            hinge = kappa - cw_loss(logits, yy, kappa=kappa, form="min")
            return (coeff * hinge).to(hinge.dtype)

        w = w0.clone()
        m = torch.zeros_like(w)
        v = torch.zeros_like(w)
        active = torch.ones(n, dtype=torch.bool, device=dev)
        prev = torch.full((n,), math.inf, device=dev, dtype=dt)
        success_round = torch.zeros(n, dtype=torch.bool, device=dev)
        t = 0
        for it in range(steps):
            tw = torch.tanh(w)
            xp = (tw + 1) / 2
            closs, g_x, logits = loss_and_grad(model, xp, y, objective)
            diff = xp - x
            l2sq = diff.reshape(n, -1).pow(2).sum(1)
            if abort_early and it % check_every == 0:
                total = l2sq + closs
                stalled = active & (total > prev * _ABORT_RTOL)
                prev = torch.where(active, total, prev)
                active = active & ~stalled
                if not bool(active.any()):
                    break
            lm = logit_margin(logits, y)
            success = active & (lm >= kappa)
            success_round |= success
            better = success & (l2sq < best_l2sq)
            best_l2sq = torch.where(better, l2sq, best_l2sq)
            best_adv = torch.where(batch_view(better, x), xp, best_adv)
            found |= success
            # Adam step on w for the still-active examples (elementwise, torch.optim.Adam form)
            grad_w = (2 * diff + g_x) * (1 - tw * tw) / 2
            t += 1
            m = beta1 * m + (1 - beta1) * grad_w
            v = beta2 * v + (1 - beta2) * grad_w * grad_w
            denom = v.sqrt() / math.sqrt(1 - beta2**t) + adam_eps
            w_new = w - (lr / (1 - beta1**t)) * m / denom
            w = torch.where(batch_view(active, w), w_new, w)
        # binary search over c, per example (AdverTorch _update_loss_coeffs)
        upper = torch.where(success_round, torch.minimum(upper, c), upper)
        lower = torch.where(success_round, lower, torch.maximum(lower, c))
        known = upper < _COEFF_UPPER_CHECK
        c = torch.where(known, (lower + upper) / 2, torch.where(success_round, c, c * 10))
        log.debug(
            "cw_l2: binary step %d/%d, %d/%d examples with an adversarial so far",
            outer + 1,
            binary_search_steps,
            int(found.sum()),
            n,
        )
    return best_adv, found


def cw_l2(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    steps: int = 1000,
    binary_search_steps: int = 9,
    initial_const: float = 1e-3,
    lr: float = 0.01,
    kappa: float = 0.0,
    abort_early: bool = True,
    check: bool = True,
) -> MinimalNormResult:
    """Carlini–Wagner ℓ2 minimal-norm attack (Carlini & Wagner, IEEE S&P 2017, §V), untargeted.

    Norm: ℓ2 only. AdverTorch ``CarliniWagnerL2Attack`` semantics, as Ding et al. used for
    their CW-ℓ2 minimum-norm statistics (*MMA Training*, ICLR 2020, App. F.1, Tables 2–3):

    * box by change of variables: ``x' = (tanh(w) + 1)/2 ∈ [0, 1]``, ``w`` starting at
      ``arctanh((2x − 1)·0.999999)`` (reset at every binary-search step, with a fresh Adam);
    * Adam (β = (0.9, 0.999), eps 1e-8, learning rate ``lr``) on
      ``Σ_i ‖x'_i − x_i‖₂² + c_i · max(Z_y(x'_i) − max_{j≠y} Z_j(x'_i) + κ, 0)``
      (a sum of per-example terms: each example's trajectory is its own);
    * ``binary_search_steps`` rounds over ``c`` per example, starting at ``initial_const``:
      after a round with a success ``upper = min(upper, c)``, otherwise
      ``lower = max(lower, c)``; then ``c = (lower + upper)/2`` once an upper bound is known,
      else ``c ← 10c``. With ``binary_search_steps >= 10`` the last round reuses the upper
      bound (AdverTorch's ``repeat``);
    * abort early: every ``steps // 10`` iterations an example stops if its loss did not
      decrease by a relative 1e-6 since the last check;
    * an iterate succeeds if ``max_{j≠y} Z_j − Z_y ≥ κ`` (ties count as misclassified);
      each example keeps its successful iterate of smallest ℓ2 distance over all rounds.

    Deviations from AdverTorch, all for per-example independence or exactness:
    AdverTorch's abort-early test uses the *batch* total loss (so results depend on the
    batch) – here it is per example; its "previous loss" starts at 1e6 (an example whose
    first loss exceeds 1e6 would abort at once) – here at +inf; distances are measured to
    ``x`` itself rather than to ``(tanh(arctanh((2x − 1)·0.999999)) + 1)/2`` (≤ 5e-7 per
    pixel apart). ``steps`` defaults to 1000 (AdverTorch's default is 10000; Ding et al.
    2020, App. F.1, do not give their setting).

    Args:
        model: classifier returning logits ``[B, K]`` for inputs in ``[0, 1]``.
        x: inputs ``[B, ...]`` in ``[0, 1]``.
        y: integer labels ``[B]``.
        steps: Adam iterations per binary-search step (AdverTorch ``max_iterations``).
        binary_search_steps: rounds of the search over the constant ``c``.
        initial_const: starting ``c``.
        lr: Adam learning rate (in ``w`` space).
        kappa: confidence κ >= 0.
        abort_early: stop an example's round when its loss stalls.
        check: validate inputs with :func:`~wideberth.attacks.base.prepare` first.

    Returns:
        :class:`MinimalNormResult` with ℓ2 distances ``[B]``.
    """
    check_int(steps, "steps")
    check_int(binary_search_steps, "binary_search_steps")
    check_positive(initial_const, "initial_const")
    check_positive(lr, "lr")
    check_positive(kappa, "kappa", allow_zero=True)
    threat = get_threat("l2")
    if check:
        prepare(model, x, y, norm=threat)
    if x.shape[0] == 0:
        return empty_result(x)
    with attack_context(model):
        idx, mis = split_misclassified(model, x, y)
        if idx.numel() > 0:
            adv_sub, found_sub = _cw_core(
                model,
                x[idx],
                y[idx],
                steps=steps,
                binary_search_steps=binary_search_steps,
                initial_const=float(initial_const),
                lr=float(lr),
                kappa=float(kappa),
                abort_early=abort_early,
            )
        else:
            adv_sub, found_sub = x[idx], mis[idx]
        return assemble_result(model, x, y, threat, idx, mis, adv_sub, found_sub, "cw_l2")



def cw_l2_attack(model: ModelLike, x: Tensor, y: Tensor, **kwargs: Any) -> Tensor:
    """:func:`cw_l2` returning only ``x_adv`` ``[B, ...]`` (the :class:`Attack` protocol)."""
    return cw_l2(model, x, y, **kwargs).x_adv



class CWL2(ResultAttack):
    """Callable Carlini–Wagner ℓ2 (see :func:`cw_l2`): ``CWL2(model, steps=200)(x, y)``
    returns ``x_adv`` ``[B, ...]``; :meth:`result` returns the :class:`MinimalNormResult`."""

    fn = staticmethod(cw_l2_attack)
    result_fn = staticmethod(cw_l2)
