"""APGD: Auto-PGD, the step-size-free PGD of AutoAttack (ℓ∞ and ℓ2).

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

Entry points: :func:`apgd` (general), :func:`apgd_ce` (untargeted cross-entropy, the first
attack of AutoAttack), :func:`apgd_dlr` (untargeted DLR) and :func:`apgd_dlr_targeted`
(APGD-T: targeted DLR over the top-``n_target_classes`` classes, the second attack of
AutoAttack), and the callable classes :class:`APGD` and :class:`APGDT`.

Differences from the reference code, all deliberate:

- checkpoints are the paper's closed form ``⌈p_j N⌉`` (the reference's integer recursion
  agrees for ``N = 100``: 22, 41, 57, 70, 80, 87, 93, 99);
- condition 2 can fire at the first checkpoint (as in the paper; the reference disables it
  there), and condition 1 uses the paper's strict ``<``;
- targets for APGD-T are the highest *non-true* clean logits (the reference takes the 2nd,
  3rd, … highest logits, which equals this for correctly classified points);
- random starts come from per-example streams keyed by (seed, restart, content) unless a
  ``generator`` is given (batch independence), and examples that are already broken are
  not attacked again in later restarts / targets (``early_stop=True``);
- for examples never broken the highest-loss point found is returned (the reference
  returns the clean input).

ℓ1 is not offered here: APGD-ℓ1 (Croce & Hein, ICML 2021) adapts the sparsity of its steps
and is a different algorithm; use :func:`wideberth.attacks.pgd` with ``norm="l1"`` (sparse
top-k steps) for ℓ1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import Tensor

from ..losses import dlr_loss, dlr_targeted_loss, get_loss
from ..threat import ThreatModel, check_inputs, eps_vector, get_threat
from .base import Attack, LossLike, ModelLike, attack_context, loss_and_grad, prepare, random_start

__all__ = [
    "APGD",
    "APGDT",
    "apgd",
    "apgd_ce",
    "apgd_checkpoints",
    "apgd_dlr",
    "apgd_dlr_targeted",
]

log = logging.getLogger(__name__)

_L1_MESSAGE = (
    "APGD supports norm='linf' and norm='l2' only; for l1 use wideberth.attacks.pgd with "
    "norm='l1' (sparse top-k steepest-ascent steps). APGD-l1 (Croce & Hein 2021) is a "
    "different algorithm and is not implemented."
)

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


def _view(v: Tensor, like: Tensor) -> Tensor:
    """[b] -> [b, 1, ..., 1] to broadcast against ``like``."""
    return v.reshape((v.shape[0],) + (1,) * (like.dim() - 1))


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
            out_x = torch.where(_view(better, x), x_cur, out_x)
            out_loss = torch.where(better, loss, out_loss)
            out_succ = out_succ | succ

            n_incr = n_incr + (loss > loss_prev).long()
            loss_prev = loss
            improved = loss > best_loss
            best_delta = torch.where(_view(improved, x), delta, best_delta)
            best_grad = torch.where(_view(improved, x), grad, best_grad)
            best_loss = torch.where(improved, loss, best_loss)

            if k in ckpt and k < steps:
                reduce = _halve_mask(n_incr, k - w_prev, rho, reduced_last, best_loss, best_at_last)
                if bool(reduce.any()):
                    step_size = torch.where(reduce, step_size / 2.0, step_size)
                    m = _view(reduce, x)
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
    bx[rows] = torch.where(_view(better, cx), cx, bx[rows])
    bl[rows] = torch.where(better, cl, lo)
    bs[rows] = s | cs


# --------------------------------------------------------------------------------------
# Objectives and argument checks
# --------------------------------------------------------------------------------------


def _untargeted_objective(loss: LossLike, num_classes: int) -> LossFn:
    if callable(loss):
        return loss
    name = str(loss).strip().lower()
    if name in ("dlr_t", "dlr_targeted", "kl", "trades_kl"):
        raise ValueError(
            f"loss {loss!r} is not an untargeted loss of (logits, y); use loss='ce' or 'dlr'"
            " (targeted DLR: targeted=True with loss='dlr', or apgd_dlr_targeted)"
        )
    fn = get_loss(name)
    if fn is dlr_loss and num_classes < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes; the model has K = {num_classes}")
    return fn


def _targeted_objective(loss: LossLike, num_classes: int) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """``(logits, y, y_target) -> [B]``, ascended by the attack."""
    if callable(loss):
        return loss
    name = str(loss).strip().lower()
    if name in ("ce", "cross_entropy", "xent"):
        return lambda logits, y, t: -F.cross_entropy(logits, t.long(), reduction="none")
    if name in ("dlr", "dlr_t", "dlr_targeted"):
        if num_classes < 4:
            raise ValueError(
                "the targeted DLR loss needs at least 4 classes (it uses the 3rd and 4th largest"
                f" logits); the model has K = {num_classes}. Use apgd_ce / loss='ce' instead."
            )
        return dlr_targeted_loss
    raise ValueError(f"targeted APGD supports loss='ce' or 'dlr' (or a callable); got {loss!r}")


def _check_hyper(steps: int, restarts: int, rho: float, alpha: float, norm_name: str) -> None:
    if norm_name == "l1":
        raise ValueError(_L1_MESSAGE)
    if isinstance(steps, bool) or int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer; got {steps!r}")
    if isinstance(restarts, bool) or int(restarts) != restarts or restarts < 1:
        raise ValueError(f"restarts must be an integer >= 1; got {restarts!r}")
    if not 0.0 < float(rho) <= 1.0:
        raise ValueError(f"rho must be in (0, 1]; got {rho}")
    if not 0.0 < float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in (0, 1]; got {alpha}")


def _setup(
    model: ModelLike, x: Tensor, y: Tensor, eps: float | Tensor, norm: str | float | ThreatModel,
    check: bool,
) -> ThreatModel:
    if check:
        threat, _ = prepare(model, x, y, eps, norm)
        assert threat is not None
    else:
        threat = get_threat(norm)
    return threat


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def _drive(
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
    """Run APGD over target columns and restarts, attacking only unbroken examples.

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


def apgd(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    norm: str | float | ThreatModel = "linf",
    eps: float | Tensor,
    steps: int = 100,
    loss: LossLike = "ce",
    restarts: int = 1,
    targeted: bool = False,
    y_target: Tensor | None = None,
    rho: float = 0.75,
    alpha: float = 0.75,
    early_stop: bool = True,
    seed: int = 0,
    generator: torch.Generator | None = None,
    check: bool = True,
) -> Tensor:
    """Auto-PGD (APGD) within the ``norm`` ball of radius ``eps`` ∩ [0, 1].

    Paper: Croce & Hein, *Reliable evaluation of adversarial robustness with an ensemble of
    diverse parameter-free attacks*, ICML 2020 (Algorithm 1). Norms: ``"linf"`` (sign steps)
    and ``"l2"`` (normalised-gradient steps); ``"l1"`` raises :class:`ValueError`. Step size
    starts at ``2ε`` per example and is halved at the checkpoints :func:`apgd_checkpoints`
    (see the module docstring); momentum ``alpha``.

    Args:
        model: an ``nn.Module`` or callable mapping [B, ...] in [0, 1] to logits [B, K];
            attacked in eval mode with its modes and parameter gradients restored after.
        x: clean inputs [B, ...] in [0, 1] (never modified).
        y: true labels [B] (integer).
        norm: ``"linf"`` or ``"l2"`` (or a :class:`~wideberth.threat.ThreatModel`).
        eps: radius, a float or a per-example tensor [B].
        steps: iterations per run (a run costs ``steps + 1`` forward and ``steps``
            backward passes; each call adds one forward pass on the clean batch).
        loss: untargeted: ``"ce"`` (APGD-CE), ``"dlr"`` (APGD-DLR, ``K >= 3``), another
            registry name of :func:`wideberth.losses.get_loss` of the form ``(logits, y)``, or
            a callable ``(logits, y) -> [B]`` to ascend. Targeted: ``"ce"`` (ascends
            ``−CE(logits, y_target)``), ``"dlr"`` (targeted DLR, ``K >= 4``) or a callable
            ``(logits, y, y_target) -> [B]``.
        restarts: runs from independent random starts; with ``early_stop`` later runs
            attack only the examples no earlier run broke.
        targeted: attack towards ``y_target`` (required); success then means predicting
            ``y_target``. For AutoAttack's APGD-T (top-k targets, success = any
            misclassification) use :func:`apgd_dlr_targeted`.
        y_target: target labels [B] (integer, different from ``y``), only with ``targeted``.
        rho: condition-1 threshold on the fraction of loss increases between checkpoints.
        alpha: momentum weight on the new step (``1`` disables momentum).
        early_stop: do not attack examples that are already broken (including those
            misclassified, or on target, at the clean input, which are returned unchanged).
        seed, generator: randomness of the starts; with ``generator`` the batch draws from
            it, else per-example streams keyed by (seed, restart, content) make the result of
            an example independent of the rest of its batch.
        check: validate inputs (range, NaN, labels, ε) first.

    Returns:
        x_adv [B, ...], same dtype and device as ``x``: per example a successful point if one
        was found (the highest-loss successful point seen), otherwise the highest-loss point
        seen; always with ``‖x_adv − x‖ <= eps`` (up to float rounding of ``x + δ``) and in
        [0, 1]. Success is judged on the argmax: ``argmax f(x_adv) != y`` (untargeted) or
        ``== y_target`` (targeted).
    """
    threat = _setup(model, x, y, eps, norm, check)
    _check_hyper(steps, restarts, rho, alpha, threat.name)
    x = x.detach()
    y = y.detach().to(x.device).long()
    eps_t = eps_vector(eps, x).detach()
    with attack_context(model):
        with torch.no_grad():
            clean_logits = model(x)
        k = int(clean_logits.shape[1])
        if targeted:
            if y_target is None:
                raise ValueError(
                    "targeted=True needs y_target (one target class per example); for "
                    "AutoAttack's APGD-T over the top classes use apgd_dlr_targeted"
                )
            if check:
                check_inputs(x, y_target, None, k)
            t_all = y_target.detach().to(x.device).long()
            if bool((t_all == y).any()):
                raise ValueError("y_target must differ from y for every example")
            tobj = _targeted_objective(loss, k)

            def objective_for(rows: Tensor, t: Tensor | None) -> LossFn:
                assert t is not None
                return lambda logits, yy: tobj(logits, yy, t)

            def success_for(rows: Tensor, t: Tensor | None) -> Callable[[Tensor], Tensor]:
                assert t is not None
                return lambda logits: logits.argmax(1) == t

            targets: Tensor | None = t_all.unsqueeze(1)
        else:
            if y_target is not None:
                raise ValueError("y_target is only used with targeted=True")
            uobj = _untargeted_objective(loss, k)

            def objective_for(rows: Tensor, t: Tensor | None) -> LossFn:
                return uobj

            def success_for(rows: Tensor, t: Tensor | None) -> Callable[[Tensor], Tensor]:
                yr = y[rows]
                return lambda logits: logits.argmax(1) != yr

            targets = None
        out = _drive(
            model, x, y, threat, eps_t, steps=steps, restarts=restarts, rho=rho, alpha=alpha,
            early_stop=early_stop, seed=seed, generator=generator, clean_logits=clean_logits,
            targets=targets, objective_for=objective_for, success_for=success_for,
        )
    return out.detach()


def apgd_ce(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    norm: str | float | ThreatModel,
    eps: float | Tensor,
    steps: int = 100,
    restarts: int = 1,
    **kw: object,
) -> Tensor:
    """APGD-CE: untargeted APGD on the cross-entropy loss (AutoAttack's first attack).

    Paper: Croce & Hein, ICML 2020. Norms: ``"linf"``, ``"l2"``. Shapes: x [B, ...] in
    [0, 1], y [B], eps float or [B]. Other keywords go to :func:`apgd`. Returns x_adv [B, ...].
    """
    return apgd(model, x, y, norm=norm, eps=eps, steps=steps, loss="ce", restarts=restarts, **kw)  # type: ignore[arg-type]


def apgd_dlr(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    norm: str | float | ThreatModel,
    eps: float | Tensor,
    steps: int = 100,
    restarts: int = 1,
    **kw: object,
) -> Tensor:
    """APGD-DLR: untargeted APGD on the DLR loss (shift- and scale-invariant; ``K >= 3``).

    Paper: Croce & Hein, ICML 2020. Norms: ``"linf"``, ``"l2"``. Shapes: x [B, ...] in
    [0, 1], y [B], eps float or [B]. Other keywords go to :func:`apgd`. Returns x_adv [B, ...].
    """
    return apgd(model, x, y, norm=norm, eps=eps, steps=steps, loss="dlr", restarts=restarts, **kw)  # type: ignore[arg-type]


def apgd_dlr_targeted(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    norm: str | float | ThreatModel,
    eps: float | Tensor,
    steps: int = 100,
    n_target_classes: int = 9,
    restarts: int = 1,
    loss: LossLike = "dlr",
    rho: float = 0.75,
    alpha: float = 0.75,
    early_stop: bool = True,
    seed: int = 0,
    generator: torch.Generator | None = None,
    check: bool = True,
) -> Tensor:
    """APGD-T: APGD on the targeted DLR loss over the top target classes (AutoAttack).

    Paper: Croce & Hein, ICML 2020. Norms: ``"linf"``, ``"l2"``. For ``j = 1 …
    n_target_classes`` (capped at ``K − 1``) each example is attacked towards the class
    with its ``j``-th highest non-true logit on the clean input, ``restarts`` runs per
    target; an example counts as broken (misclassified, any class) if any run breaks it,
    and with ``early_stop`` it is not attacked again. Needs ``K >= 4`` (the DLR
    denominator uses the 4th largest logit) unless ``loss="ce"`` (targeted CE).

    Args:
        model, x, y, norm, eps, steps, restarts, rho, alpha, early_stop, seed, generator,
        check: as in :func:`apgd`.
        n_target_classes: number of target classes per example (AutoAttack: 9).
        loss: ``"dlr"`` (targeted DLR, default) or ``"ce"`` (ascends ``−CE(logits, t)``).

    Returns:
        x_adv [B, ...]: per example a misclassified point if one was found, otherwise the
        highest targeted-loss point over all targets and restarts; ``‖x_adv − x‖ <= eps``
        and in [0, 1].
    """
    threat = _setup(model, x, y, eps, norm, check)
    _check_hyper(steps, restarts, rho, alpha, threat.name)
    if isinstance(n_target_classes, bool) or int(n_target_classes) != n_target_classes or n_target_classes < 1:
        raise ValueError(f"n_target_classes must be an integer >= 1; got {n_target_classes!r}")
    x = x.detach()
    y = y.detach().to(x.device).long()
    eps_t = eps_vector(eps, x).detach()
    with attack_context(model):
        with torch.no_grad():
            clean_logits = model(x)
        k = int(clean_logits.shape[1])
        tobj = _targeted_objective(loss, k)
        n_t = min(int(n_target_classes), k - 1)
        masked = clean_logits.scatter(1, y.unsqueeze(1), -math.inf)
        # stable order: ties broken by class index, so the targets of an example never
        # depend on the batch
        targets = masked.sort(dim=1, descending=True, stable=True).indices[:, :n_t]

        def objective_for(rows: Tensor, t: Tensor | None) -> LossFn:
            assert t is not None
            return lambda logits, yy: tobj(logits, yy, t)

        def success_for(rows: Tensor, t: Tensor | None) -> Callable[[Tensor], Tensor]:
            yr = y[rows]
            return lambda logits: logits.argmax(1) != yr

        out = _drive(
            model, x, y, threat, eps_t, steps=steps, restarts=restarts, rho=rho, alpha=alpha,
            early_stop=early_stop, seed=seed, generator=generator, clean_logits=clean_logits,
            targets=targets, objective_for=objective_for, success_for=success_for,
        )
    return out.detach()


class APGD(Attack):
    """``APGD(model, norm="linf", eps=8/255)(x, y)``: see :func:`apgd` (APGD-CE by default)."""

    fn = staticmethod(apgd)


class APGDT(Attack):
    """``APGDT(model, norm="linf", eps=8/255)(x, y)``: see :func:`apgd_dlr_targeted`."""

    fn = staticmethod(apgd_dlr_targeted)
