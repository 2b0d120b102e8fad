"""FGSM / FGM and projected gradient descent (PGD) for ℓ∞, ℓ2 and ℓ1.

PGD (Madry et al., ICLR 2018; Kurakin et al. 2017 without the random start) ascends a
per-example loss over the ε-ball ∩ [0, 1] box:

    δ₀ = random start (or 0),   δ_{t+1} = Π_{B(ε) ∩ box}(δ_t + step(∇_δ L(x + δ_t, y)))

where ``step`` is the threat model's steepest-ascent step (sign for ℓ∞, normalised gradient
for ℓ2, sparse top-k for ℓ1). What wideberth adds to the textbook loop:

- **best iterate**: each example keeps the first iterate that broke it, judged on the same
  forward pass that computes the gradient, so tracking costs no forward at all; an example
  no iterate broke gets the final iterate, which a caller's evaluation judges anyway
  (PGD-k costs exactly k forward+backward passes);
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
from ..noise import Noise
from ..threat import ThreatModel, as_batch_eps, clip_to_box, eps_vector, get_threat
from .base import Attack, LossLike, ModelLike, attack_context, loss_and_grad, prepare, random_start

__all__ = ["pgd", "fgsm", "fgm", "PGD", "FGSM", "FGM", "advertorch_init", "radial_init"]

_INITS = ("auto", "uniform", "radial", "advertorch", "zero")


def _objective(
    loss: LossLike, targeted: bool, loss_kwargs: dict | None
) -> Callable[[Tensor, Tensor], Tensor]:
    fn = get_loss(loss, **(loss_kwargs or {}))
    if targeted:
        return lambda logits, t: -fn(logits, t)
    return fn


def advertorch_init(threat: ThreatModel, x: Tensor, eps: float | Tensor, noise: Noise) -> Tensor:
    """advertorch's ``rand_init_delta``, the random start of the PGD inside AN-PGD in the MMA
    authors' code (Ding et al., ICLR 2020, App. C; ``BorealisAI/mma_training``).

    ℓ∞: U(−ε, ε) per coordinate, then clipped to the box (the same as ``uniform``).
    ℓ2: a uniformly random image z ∈ [0, 1]^D, δ = z − x shrunk into the ε-ball, then
    clipped to the box. ℓ1 has no advertorch counterpart and uses ``uniform``.
    """
    if threat.name != "l2":
        return clip_to_box(x, threat.sample_ball(x, as_batch_eps(eps, x), noise))
    z = noise.rand(x.shape)
    return threat.project_approx(z - x, x, eps)


def radial_init(threat: ThreatModel, x: Tensor, eps: float | Tensor, noise: Noise) -> Tensor:
    """A random direction at a uniformly random radius: ``δ = ε·r·d/‖d‖``, ``r ~ U(0, 1)``,
    ``d`` uniform in the ball (so its direction follows the ball's own distribution), then
    clipped to the box. In high dimension a point uniform in the ℓ2 ball lies almost
    surely near its sphere (mean radius ε·D/(D+1)); the radial start also covers the
    interior, and for ℓ2 PGD it is the stronger start (benchmarks/bench_pgd.py). It is the
    start of torchattacks' ``PGDL2``."""
    e = eps_vector(eps, x)
    direction = threat.normalize(threat.sample_ball(x, as_batch_eps(e, x), noise))
    radius = as_batch_eps(e * noise.rand((x.shape[0],)), x)
    return clip_to_box(x, direction * radius)


def _start(
    threat: ThreatModel,
    x: Tensor,
    eps: Tensor,
    init: str,
    generator: torch.Generator | None,
    seed: int,
    restart: int,
) -> Tensor:
    if init == "auto":  # the first run from x, later restarts from random points
        init = "zero" if restart == 0 else "radial" if threat.name == "l2" else "uniform"
    if init == "zero":
        return torch.zeros_like(x)
    if init == "uniform":
        return random_start(threat, x, eps, generator=generator, seed=seed, restart=restart)
    sample = radial_init if init == "radial" else advertorch_init
    return random_start(
        threat, x, eps, generator=generator, seed=seed, restart=restart,
        sampler=lambda xi, ei, noise: sample(threat, xi, ei, noise),
    )


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
    exact: bool,
    return_best: bool,
    early_stop: bool,
    judge_last: bool,
) -> tuple[Tensor, Tensor]:
    """One PGD run over all of ``x``: returns (x_adv, success [B]).

    Each iterate is judged on the forward pass that computes its gradient, so the first
    iterate that breaks an example is known at no extra cost. The final iterate is never
    the input of a gradient step: it is judged (one extra forward, on the rows that return
    it) only when ``judge_last`` is set; otherwise its success is reported as False even
    though it may break the example (the caller's own evaluation will see it)."""
    n = x.shape[0]
    track = return_best or early_stop
    out = (x + delta).clamp(0, 1)
    succ = torch.zeros(n, dtype=torch.bool, device=x.device)
    rows: Tensor | None = None  # None while every example is still attacked
    done = succ  # succ at the rows still attacked (the same tensor while rows is None)
    xa, la, ea, sa, da = x, labels, eps, step_size, delta
    project = threat.projector(xa, ea, exact)
    for _ in range(steps):
        x_cur = (xa + da).clamp(0, 1)
        _, grad, logits = loss_and_grad(model, x_cur, la, objective)
        if track:
            s = success_fn(logits, la)
            new = s & ~done  # keep the first iterate that broke each example
            if bool(new.any()):
                idx = new.nonzero().squeeze(1)
                at = idx if rows is None else rows[idx]
                out[at] = x_cur[idx]
                succ[at] = True
                if rows is not None:
                    done = succ[rows]
            if early_stop and bool(s.any()):
                keep = ~s
                rows = torch.arange(n, device=x.device)[keep] if rows is None else rows[keep]
                if rows.numel() == 0:
                    return out, succ
                xa, la, ea, sa, da = xa[keep], la[keep], ea[keep], sa[keep], da[keep]
                grad, x_cur = grad[keep], x_cur[keep]
                done = succ[rows]
                project = threat.projector(xa, ea, exact)
        da = project(da + threat.step(grad, sa, x_adv=x_cur))

    x_last = (xa + da).clamp(0, 1)
    # rows that return the final iterate: all attacked rows with last-iterate semantics,
    # only the unbroken ones when the breaking iterate is kept
    sel = torch.arange(n, device=x.device) if rows is None else rows
    take = ~succ[sel] if return_best else torch.ones_like(sel, dtype=torch.bool)
    at = sel[take]
    out[at] = x_last[take]
    if judge_last and at.numel() > 0:
        with torch.no_grad():
            succ[at] = success_fn(model(x_last[take]), la[take])
    elif not return_best:
        succ[at] = False
    return out, succ


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
    init: str | None = "auto",
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

    Paper: Madry, Makelov, Schmidt, Tsipras & Vladu, *Towards Deep Learning Models Resistant
    to Adversarial Attacks* (ICLR 2018), §2, Eq. (2.1) (the saddle point problem whose inner
    maximisation PGD solves). Norms: ``"linf"``, ``"l2"``, ``"l1"``. Shapes: x [B, ...] in
    [0, 1], y [B], eps a float or [B]; returns x_adv [B, ...].

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
        restarts: independent runs; later runs attack only examples not yet broken (each
            run but the last judges its final iterate: one forward on the unbroken rows).
        init: ``"auto"``: the first run starts at x, every later restart at a random point
            (``"radial"`` for ℓ2, ``"uniform"`` otherwise); for one run, starting at x
            is the stronger choice (``benchmarks/bench_pgd.py`` measures it), and the
            restarts still explore. ``"uniform"`` (uniform in the ball, then clipped to
            the box: Madry et al.'s random start), ``"radial"`` (random direction at a
            radius ε·U(0, 1), :func:`radial_init`), ``"advertorch"`` (the MMA authors'
            code, :func:`advertorch_init`), or ``None``/``"zero"`` (every run starts at x).
        targeted: descend ``loss(logits, y_target)`` instead; success means predicting
            ``y_target``.
        return_best: per example, return the first iterate that broke it if any, else the
            final iterate (of the last restart). Success-wise this is the best of all
            iterates: the example is broken by the returned point iff some iterate broke
            it. ``False`` returns the final iterate even if an earlier one broke it (the
            textbook loop), except that with several restarts an example keeps the final
            iterate of a restart that broke it.
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
    labels = (y_target if targeted and y_target is not None else y).to(x.device)
    objective = _objective(loss, targeted, loss_kwargs)

    def success_fn(logits: Tensor, lab: Tensor) -> Tensor:
        pred = logits.argmax(1)
        return pred == lab if targeted else pred != lab

    with attack_context(model):
        best_x = x.clone()
        todo = torch.arange(x.shape[0], device=x.device)
        for r in range(restarts):
            xs, ls, es, ss = x[todo], labels[todo], eps_t[todo], step_t[todo]
            delta = _start(threat, xs, es, init, generator, seed, r)
            last = r == restarts - 1
            xr, succ = _run(
                model, threat, xs, ls, es, ss, steps, objective, success_fn, delta,
                projection == "exact", return_best, early_stop, judge_last=not last,
            )
            # every row of todo is unbroken so far, so this restart's result is at least
            # as good: broken, or (last restart) an unjudged final iterate that may be
            best_x[todo] = xr
            if not last:
                todo = todo[~succ]
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

    Paper: Goodfellow, Shlens & Szegedy, *Explaining and Harnessing Adversarial Examples*
    (ICLR 2015), §4 (FGSM, ℓ∞); Miyato et al. (2016) for ℓ2. Norms: ``"linf"``, ``"l2"``,
    ``"l1"``.
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
    """FGSM (Goodfellow, Shlens & Szegedy, ICLR 2015, §4), ℓ∞: ``x + eps·sign(∇ₓ loss)``,
    clipped to [0, 1].

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

