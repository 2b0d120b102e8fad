"""FGSM / FGM and projected gradient descent (PGD) for ℓ∞, ℓ2 and ℓ1.

PGD (Madry et al., ICLR 2018; Kurakin et al. 2017 without the random start) ascends a
per-example loss over the ε-ball ∩ [0, 1] box:

    δ₀ = random start (or 0),   δ_{t+1} = Π_{B(ε) ∩ box}(δ_t + step(∇_δ L(x + δ_t, y)))

where ``step`` is the threat model's steepest-ascent step (sign for ℓ∞, normalised gradient
for ℓ2, sparse top-k for ℓ1). What wideberth adds to the textbook loop:

- **best iterate**: each example keeps the iterate that broke it (or, failing that, the one
  with the highest loss), judged on the same forward pass that computes the gradient, so
  it costs one extra forward per run, not per step;
- **restarts**: later restarts only attack the examples no earlier restart broke; an
  example counts as broken if any restart broke it;
- **early stop** (optional): examples stop being attacked as soon as they are broken;
- **per-example ε and step size** ([B] tensors), as MMA needs;
- **batch independence**: every computation is per example (the gradient of a sum), and
  by default random starts come from per-example streams keyed by content and seed.

FGSM (Goodfellow et al., ICLR 2015) is one PGD step of size ε from δ = 0; FGM is the same
for another norm.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._checks import check_eps
from ..losses import get_loss
from ..threat import ThreatModel, eps_vector, get_threat
from .base import Attack, LossLike, ModelLike, attack_context, loss_and_grad, prepare, random_start

__all__ = ["pgd", "fgsm", "fgm", "PGD", "FGSM", "FGM", "advertorch_init"]

_INITS = ("uniform", "advertorch", "zero")


def _objective(
    loss: LossLike, targeted: bool, loss_kwargs: dict | None
) -> Callable[[Tensor, Tensor], Tensor]:
    fn = get_loss(loss, **(loss_kwargs or {}))
    if targeted:
        return lambda logits, t: -fn(logits, t)
    return fn


def advertorch_init(
    threat: ThreatModel, x: Tensor, eps: float | Tensor, generator: torch.Generator | None
) -> Tensor:
    """advertorch's ``rand_init_delta`` (used by MMA's code, specs/mma.md §2.2).

    ℓ∞: U(−ε, ε) per coordinate, then clipped to the box (the same as ``uniform``).
    ℓ2: a uniformly random image z ∈ [0, 1]^D, δ = z − x shrunk into the ε-ball, then
    clipped to the box. ℓ1 has no advertorch counterpart and uses ``uniform``.
    """
    if threat.name != "l2":
        return threat.random_init(x, eps, generator=generator)
    z = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return threat.project_approx(z - x, x, eps)


def _start(
    threat: ThreatModel,
    x: Tensor,
    eps: Tensor,
    init: str,
    generator: torch.Generator | None,
    seed: int,
    restart: int,
) -> Tensor:
    if init == "zero":
        return torch.zeros_like(x)
    if init == "uniform":
        return random_start(threat, x, eps, generator=generator, seed=seed, restart=restart)
    return random_start(
        threat, x, eps, generator=generator, seed=seed, restart=restart,
        sampler=lambda xi, ei, g: advertorch_init(threat, xi, ei, g),
    )


def _merge(
    best: tuple[Tensor, Tensor, Tensor],
    rows: Tensor | None,
    cand_x: Tensor,
    cand_succ: Tensor,
    cand_obj: Tensor,
) -> None:
    """Fold candidates into the running best (in place) at ``rows`` (None: all rows).

    A candidate wins if it succeeds where the best did not, or has the same success and a
    higher objective."""
    best_x, best_succ, best_obj = best
    sel = slice(None) if rows is None else rows
    b_succ, b_obj = best_succ[sel], best_obj[sel]
    better = (cand_succ & ~b_succ) | ((cand_succ == b_succ) & (cand_obj > b_obj))
    mask = better.view(-1, *([1] * (cand_x.dim() - 1)))
    best_x[sel] = torch.where(mask, cand_x, best_x[sel])
    best_obj[sel] = torch.where(better, cand_obj, b_obj)
    best_succ[sel] = b_succ | cand_succ


def _run(
    model: ModelLike,
    threat: ThreatModel,
    x: Tensor,
    labels: Tensor,
    eps: Tensor,
    step_size: Tensor,
    steps: int,
    objective: Callable[[Tensor, Tensor], Tensor],
    success_fn: Callable[[Tensor, Tensor], Tensor],
    delta: Tensor,
    project: Callable[[Tensor, Tensor, Tensor], Tensor],
    return_best: bool,
    early_stop: bool,
    judge_last: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """One PGD run over all of ``x``: returns (x_adv, success [B], objective [B]).

    Each iterate is judged on the forward pass that computes its gradient; only the final
    iterate costs an extra forward (when tracking is on). With ``return_best=False`` the
    last iterate is judged too (one extra forward) unless ``judge_last`` is False, in which
    case the returned success is all False and the objective −inf (a single run whose
    caller needs only ``x_adv``)."""
    n = x.shape[0]
    track = return_best or early_stop
    best = (
        (x + delta).clamp(0, 1),
        torch.zeros(n, dtype=torch.bool, device=x.device),
        torch.full((n,), -torch.inf, device=x.device, dtype=x.dtype),
    )
    rows: Tensor | None = None  # None while every example is still attacked
    xa, la, ea, sa, da = x, labels, eps, step_size, delta
    for _ in range(steps):
        x_cur = (xa + da).clamp(0, 1)
        obj, grad, logits = loss_and_grad(model, x_cur, la, objective)
        if track:
            succ = success_fn(logits, la)
            if return_best:
                _merge(best, rows, x_cur, succ, obj)
            else:  # early stop with last-iterate semantics: keep the breaking iterate
                _merge(best, rows, x_cur, succ, torch.where(succ, torch.inf, -torch.inf))
            if early_stop and bool(succ.any()):
                keep = ~succ
                rows = torch.arange(n, device=x.device)[keep] if rows is None else rows[keep]
                if rows.numel() == 0:
                    return best
                xa, la, ea, sa, da = xa[keep], la[keep], ea[keep], sa[keep], da[keep]
                grad, x_cur = grad[keep], x_cur[keep]
        da = project(da + threat.step(grad, sa, x_adv=x_cur), xa, ea)

    x_last = (xa + da).clamp(0, 1)
    if return_best:
        with torch.no_grad():
            logits = model(x_last)
        _merge(best, rows, x_last, success_fn(logits, la), objective(logits, la))
    else:
        sel = slice(None) if rows is None else rows
        best[0][sel] = x_last
        if early_stop or judge_last:
            with torch.no_grad():
                logits = model(x_last)
            best[1][sel] = success_fn(logits, la)
            best[2][sel] = objective(logits, la)
    return best


def pgd(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    norm: str | float | ThreatModel = "linf",
    eps: float | Tensor,
    steps: int = 40,
    step_size: float | Tensor | None = None,
    loss: LossLike = "ce",
    loss_kwargs: dict | None = None,
    restarts: int = 1,
    init: str | None = "uniform",
    targeted: bool = False,
    y_target: Tensor | None = None,
    return_best: bool = True,
    early_stop: bool = False,
    projection: str = "exact",
    seed: int = 0,
    generator: torch.Generator | None = None,
    check: bool = True,
) -> Tensor:
    """Projected gradient ascent on ``loss`` within the ``norm`` ball of radius ``eps`` ∩ [0, 1].

    Paper: Madry et al., *Towards Deep Learning Models Resistant to Adversarial Attacks*
    (ICLR 2018). Norms: ``"linf"``, ``"l2"``, ``"l1"``.

    Args:
        model: an ``nn.Module`` or callable mapping [B, C, H, W] in [0, 1] to logits [B, K];
            attacked in eval mode with its modes and parameter gradients restored after.
        x: clean inputs [B, ...] in [0, 1] (never modified).
        y: labels [B] (int64).
        eps: radius, a float or a per-example tensor [B].
        steps: iterations per restart.
        step_size: float or [B]; default ``2.5 * eps / steps`` (per example).
        loss: ``"ce"``, ``"lm"``, ``"slm"``, ``"cw"``, ``"dlr"`` or a callable
            ``(logits, y) -> [B]`` that the attack *ascends*; ``loss_kwargs`` are bound to it
            (e.g. ``{"kappa": 50}``).
        restarts: independent runs; later runs attack only examples not yet broken.
        init: ``"uniform"`` (uniform in the ball, then projected), ``"advertorch"`` (MMA's
            code, specs/mma.md §2.2), or ``None``/``"zero"`` (start at x).
        targeted: descend ``loss(logits, y_target)`` instead; success means predicting
            ``y_target``.
        return_best: per example, return the best iterate (a successful one if any, else
            the highest loss) instead of the last. With ``return_best=False`` and several
            restarts, each restart's last iterate is judged (one extra forward per
            restart) and an example gets the last iterate of a restart that broke it, or
            else the one with the highest final loss.
        early_stop: stop attacking an example as soon as it is broken.
        projection: ``"exact"`` (Euclidean projection onto ball ∩ box) or ``"approx"``
            (clip to the box then shrink into the ball, advertorch's order).
        seed, generator: randomness of the starts; with ``generator`` the batch draws from it,
            else per-example streams keyed by (seed, restart, content): batch independent.
        check: validate inputs (range, NaN, labels, ε) first.

    Returns:
        x_adv [B, ...] with ‖x_adv − x‖ ≤ eps and x_adv ∈ [0, 1].
    """
    if check:
        threat, _ = prepare(model, x, y if not targeted else y_target if y_target is not None else y, eps, norm)
    else:
        threat = get_threat(norm)
    assert threat is not None
    if targeted and y_target is None:
        raise ValueError("targeted=True needs y_target (the class each example should become)")
    if steps < 0 or restarts < 1:
        raise ValueError(f"steps must be >= 0 and restarts >= 1; got steps={steps}, restarts={restarts}")
    init = "zero" if init is None else init
    if init not in _INITS:
        raise ValueError(f"init must be one of {', '.join(_INITS)} or None; got {init!r}")
    if projection not in ("exact", "approx"):
        raise ValueError(f"projection must be 'exact' or 'approx'; got {projection!r}")
    x = x.detach()
    eps_t = eps_vector(eps, x)
    if step_size is None:
        step_t = 2.5 * eps_t / max(steps, 1)
    else:
        if check:  # the same checks and messages as eps, naming step_size
            check_eps(step_size, x.shape[0], name="step_size")
        step_t = eps_vector(step_size, x)
        if bool((step_t < 0).any()):
            raise ValueError("step_size must be >= 0")
    labels = (y_target if targeted else y).to(x.device)
    objective = _objective(loss, targeted, loss_kwargs)

    def success_fn(logits: Tensor, lab: Tensor) -> Tensor:
        pred = logits.argmax(1)
        return pred == lab if targeted else pred != lab

    project = threat.project if projection == "exact" else threat.project_approx
    with attack_context(model):
        best_x = x.clone()
        best_succ = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        best_obj = torch.full((x.shape[0],), -torch.inf, device=x.device, dtype=x.dtype)
        todo = torch.arange(x.shape[0], device=x.device)
        for r in range(restarts):
            xs, ls, es, ss = x[todo], labels[todo], eps_t[todo], step_t[todo]
            delta = _start(threat, xs, es, init, generator, seed, r)
            xr, succ, obj = _run(
                model, threat, xs, ls, es, ss, steps, objective, success_fn, delta,
                project, return_best, early_stop, judge_last=restarts > 1,
            )
            if r == 0:
                best_x[todo], best_succ[todo], best_obj[todo] = xr, succ, obj
            else:
                _merge((best_x, best_succ, best_obj), todo, xr, succ, obj)
            todo = todo[~best_succ[todo]]
            if todo.numel() == 0:
                break
    return best_x.detach()


def fgm(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    norm: str | float | ThreatModel = "l2",
    eps: float | Tensor,
    loss: LossLike = "ce",
    loss_kwargs: dict | None = None,
    targeted: bool = False,
    y_target: Tensor | None = None,
    check: bool = True,
) -> Tensor:
    """Fast gradient method: one steepest-ascent step of length ``eps`` from x, projected.

    Paper: Goodfellow et al. (ICLR 2015) for ℓ∞ (FGSM); Miyato et al. (2016) for ℓ2.
    Shapes: x [B, ...] in [0, 1], y [B], eps float or [B]. Returns x_adv [B, ...].
    """
    return pgd(
        model, x, y, norm=norm, eps=eps, steps=1, step_size=eps, loss=loss,
        loss_kwargs=loss_kwargs, init=None, targeted=targeted, y_target=y_target,
        return_best=False, check=check,
    )


def fgsm(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    eps: float | Tensor,
    loss: LossLike = "ce",
    loss_kwargs: dict | None = None,
    targeted: bool = False,
    y_target: Tensor | None = None,
    check: bool = True,
) -> Tensor:
    """FGSM (Goodfellow et al., ICLR 2015), ℓ∞: ``x + eps·sign(∇ₓ loss)``, clipped to [0, 1].

    Shapes: x [B, ...] in [0, 1], y [B], eps float or [B]. Returns x_adv [B, ...].
    """
    return fgm(
        model, x, y, norm="linf", eps=eps, loss=loss, loss_kwargs=loss_kwargs,
        targeted=targeted, y_target=y_target, check=check,
    )


class PGD(Attack):
    """``PGD(model, norm="linf", eps=0.3, steps=40)(x, y)``: see :func:`pgd`."""

    fn = staticmethod(pgd)


class FGSM(Attack):
    """``FGSM(model, eps=0.3)(x, y)``: see :func:`fgsm`."""

    fn = staticmethod(fgsm)


class FGM(Attack):
    """``FGM(model, norm="l2", eps=1.0)(x, y)``: see :func:`fgm`."""

    fn = staticmethod(fgm)

