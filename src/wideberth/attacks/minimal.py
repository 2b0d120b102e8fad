"""Minimal-norm attacks: Carlini–Wagner ℓ2 and Fast Minimum-Norm (FMN, ℓ2 / ℓ∞ / ℓ1).

A minimal-norm attack does not take a budget ε; it searches, per example, for the smallest
perturbation that changes the prediction,

    d(x, y) = min_δ ‖δ‖  s.t.  LM(x + δ, y) = max_{j≠y} f_j(x + δ) − f_y(x + δ) ≥ 0,
              x + δ ∈ [0, 1]^D,

which is the MMA paper's margin (specs/mma.md §1.2; ties count as misclassified). Every
attack here returns an *upper bound* of d: a verified adversarial input and its distance.

- :func:`cw_l2` – Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks"
  (IEEE S&P 2017), ℓ2 version, with AdverTorch ``CarliniWagnerL2Attack`` semantics: the
  MMA paper used it for its minimum-ℓ2-norm statistics (ICLR 2020 App. F.1, Tables 2–3;
  specs/mma.md §5.6, §7.3b).
- :func:`fmn` – Pintor, Roli, Brendel & Biggio, "Fast Minimum-norm Adversarial Attacks
  through Adaptive Norm Constraints" (NeurIPS 2021), Algorithm 1, for ℓ2, ℓ∞ and ℓ1.

Both return a :class:`MinimalNormResult` ``(x_adv, distance, found)``. Examples that are
already misclassified get ``x_adv = x``, ``distance = 0`` and ``found = True`` and are not
attacked. Examples for which no adversarial input was found get ``x_adv = x``,
``distance = +inf`` and ``found = False``. Before returning, every candidate is
re-verified with one forward pass of the whole returned batch; a candidate that is not
misclassified there (possible only within float rounding of the decision boundary) is
dropped and reported as not found, so ``found`` always implies ``LM(x_adv, y) >= 0``.

Conventions (DESIGN.md): everything runs inside :func:`~wideberth.attacks.base.attack_context`
(eval mode, parameter ``.grad`` untouched, modes restored); inputs are validated once with
:func:`~wideberth.attacks.base.prepare`; inputs are never modified in place; device and dtype
come from ``x``. Both attacks are deterministic (no random start, hence no ``seed``), and
every quantity is per example – losses are sums of per-example terms, Adam is elementwise,
early stopping is decided per example – so an example's result does not depend on the rest
of its batch.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..losses import cw_loss, logit_margin
from ..threat import ThreatModel, get_threat
from .base import Attack, ModelLike, attack_context, loss_and_grad, prepare

__all__ = [
    "MinimalNormResult",
    "cw_l2",
    "cw_l2_attack",
    "fmn",
    "fmn_attack",
    "CWL2",
    "FMN",
]

log = logging.getLogger(__name__)

# AdverTorch CarliniWagnerL2Attack constants (same meaning, our own names).
_ATANH_SHRINK = 0.999999  # keeps arctanh finite for pixels at exactly 0 or 1
_ABORT_RTOL = 0.999999  # "loss stopped improving" when loss > previous * this
_NUM_ABORT_CHECKS = 10  # abort-early checks per binary-search step
_COEFF_UPPER_INIT = 1e10  # "no successful constant yet" upper bound on c
_COEFF_UPPER_CHECK = 1e9  # below this an upper bound is known: bisect, else c *= 10
_REPEAT_MIN_STEPS = 10  # with >= this many binary steps, the last one reuses the upper bound


@dataclass
class MinimalNormResult:
    """Outcome of a minimal-norm attack, one entry per example.

    Attributes:
        x_adv: ``[B, ...]`` the smallest adversarial input found; ``x`` itself where none
            was found or where ``x`` was already misclassified.
        distance: ``[B]`` ``‖x_adv − x‖`` in the attack's norm; ``0`` where ``x`` was
            already misclassified; ``+inf`` where no adversarial input was found.
        found: ``[B]`` bool, True where ``x_adv`` is misclassified (including the already
            misclassified examples, with ``x_adv = x``).
    """

    x_adv: Tensor
    distance: Tensor
    found: Tensor


# --------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------


def _view(t: Tensor, like: Tensor) -> Tensor:
    """Reshape a ``[B]`` tensor to ``[B, 1, ..., 1]`` for broadcasting against ``like``."""
    return t.reshape((t.shape[0],) + (1,) * (like.dim() - 1))


def _check_positive_int(value: int, name: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")


def _check_positive(value: float, name: str, allow_zero: bool = False) -> None:
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(
            f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite; got {value!r}"
        )


def _split(model: ModelLike, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Indices of the examples to attack (correctly classified) and the misclassified mask."""
    with torch.no_grad():
        lm = logit_margin(model(x), y)
    mis = lm >= 0
    return torch.nonzero(~mis).squeeze(1), mis


def _assemble(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    idx: Tensor,
    mis: Tensor,
    adv_sub: Tensor,
    found_sub: Tensor,
    attack: str,
) -> MinimalNormResult:
    """Scatter the attacked sub-batch back, re-verify candidates, compute distances."""
    x_adv = x.detach().clone()
    found = mis.clone()
    if idx.numel() > 0:
        x_adv[idx] = torch.where(_view(found_sub, adv_sub), adv_sub, x[idx].detach())
        found[idx] = found_sub
        attacked = torch.zeros_like(mis)
        attacked[idx] = True
        with torch.no_grad():
            ok = logit_margin(model(x_adv), y) >= 0
        bad = found & attacked & ~ok
        if bool(bad.any()):
            log.warning(
                "%s: %d candidate(s) failed re-verification (within rounding of the decision "
                "boundary); reported as not found",
                attack,
                int(bad.sum()),
            )
            x_adv = torch.where(_view(bad, x), x.detach(), x_adv)
            found = found & ~bad
    distance = threat.norm(x_adv - x.detach())
    distance = torch.where(found, distance, torch.full_like(distance, math.inf))
    distance = torch.where(mis, torch.zeros_like(distance), distance)
    return MinimalNormResult(x_adv=x_adv, distance=distance, found=found)


def _empty(x: Tensor) -> MinimalNormResult:
    return MinimalNormResult(
        x_adv=x.detach().clone(),
        distance=x.new_zeros((0,)),
        found=torch.zeros((0,), dtype=torch.bool, device=x.device),
    )


# --------------------------------------------------------------------------------------
# Carlini–Wagner ℓ2
# --------------------------------------------------------------------------------------


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
            best_adv = torch.where(_view(better, x), xp, best_adv)
            found |= success
            # Adam step on w for the still-active examples (elementwise, torch.optim.Adam form)
            grad_w = (2 * diff + g_x) * (1 - tw * tw) / 2
            t += 1
            m = beta1 * m + (1 - beta1) * grad_w
            v = beta2 * v + (1 - beta2) * grad_w * grad_w
            denom = v.sqrt() / math.sqrt(1 - beta2**t) + adam_eps
            w_new = w - (lr / (1 - beta1**t)) * m / denom
            w = torch.where(_view(active, w), w_new, w)
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
    """Carlini–Wagner ℓ2 minimal-norm attack (Carlini & Wagner, IEEE S&P 2017), untargeted.

    AdverTorch ``CarliniWagnerL2Attack`` semantics, as the MMA paper used for its CW-ℓ2
    minimum-norm statistics (ICLR 2020 App. F.1, Tables 2–3; specs/mma.md §5.6):

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
    pixel apart). ``steps`` defaults to 1000 (AdverTorch's default is 10000; the MMA paper
    does not give its setting, spec ambiguity in §5.6).

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
    _check_positive_int(steps, "steps")
    _check_positive_int(binary_search_steps, "binary_search_steps")
    _check_positive(initial_const, "initial_const")
    _check_positive(lr, "lr")
    _check_positive(kappa, "kappa", allow_zero=True)
    threat = get_threat("l2")
    if check:
        prepare(model, x, y, norm=threat)
    if x.shape[0] == 0:
        return _empty(x)
    with attack_context(model):
        idx, mis = _split(model, x, y)
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
        return _assemble(model, x, y, threat, idx, mis, adv_sub, found_sub, "cw_l2")


# --------------------------------------------------------------------------------------
# Fast Minimum-Norm (FMN)
# --------------------------------------------------------------------------------------


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
        best_adv = torch.where(_view(better, x), x_adv, best_adv)
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
    _check_positive_int(steps, "steps")
    _check_positive(alpha_init, "alpha_init")
    a_final = float(alpha_init) / 100 if alpha_final is None else float(alpha_final)
    _check_positive(a_final, "alpha_final")
    for name, g in (("gamma_init", gamma_init), ("gamma_final", gamma_final)):
        if not (0.0 < float(g) < 1.0):
            raise ValueError(f"{name} must be in (0, 1); got {g!r}")
    if check:
        threat, _ = prepare(model, x, y, norm=norm)
        assert threat is not None
    else:
        threat = get_threat(norm)
    if x.shape[0] == 0:
        return _empty(x)
    with attack_context(model):
        idx, mis = _split(model, x, y)
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
        return _assemble(model, x, y, threat, idx, mis, adv_sub, found_sub, f"fmn-{threat.name}")


# --------------------------------------------------------------------------------------
# x_adv-returning wrappers and callable classes
# --------------------------------------------------------------------------------------


def cw_l2_attack(model: ModelLike, x: Tensor, y: Tensor, **kwargs: Any) -> Tensor:
    """:func:`cw_l2` returning only ``x_adv`` ``[B, ...]`` (the :class:`Attack` protocol)."""
    return cw_l2(model, x, y, **kwargs).x_adv


def fmn_attack(model: ModelLike, x: Tensor, y: Tensor, **kwargs: Any) -> Tensor:
    """:func:`fmn` returning only ``x_adv`` ``[B, ...]`` (the :class:`Attack` protocol)."""
    return fmn(model, x, y, **kwargs).x_adv


class CWL2(Attack):
    """Callable Carlini–Wagner ℓ2 (see :func:`cw_l2`): ``CWL2(model, steps=200)(x, y)``
    returns ``x_adv`` ``[B, ...]``; :meth:`result` returns the :class:`MinimalNormResult`."""

    fn = staticmethod(cw_l2_attack)

    def result(self, x: Tensor, y: Tensor, **kwargs: Any) -> MinimalNormResult:
        """Run the attack and return ``(x_adv, distance, found)``."""
        return cw_l2(self.model, x, y, **{**self.kwargs, **kwargs})


class FMN(Attack):
    """Callable Fast Minimum-Norm attack (see :func:`fmn`): ``FMN(model, norm="linf")(x, y)``
    returns ``x_adv`` ``[B, ...]``; :meth:`result` returns the :class:`MinimalNormResult`."""

    fn = staticmethod(fmn_attack)

    def result(self, x: Tensor, y: Tensor, **kwargs: Any) -> MinimalNormResult:
        """Run the attack and return ``(x_adv, distance, found)``."""
        return fmn(self.model, x, y, **{**self.kwargs, **kwargs})
