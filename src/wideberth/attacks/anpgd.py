"""AN-PGD: Adaptive-Norm PGD, MMA's approximation of the shortest successful perturbation.

Paper: Ding, Sharma, Lui & Huang, *MMA Training: Direct Input Space Margin Maximization
through Adversarial Training*, ICLR 2020, §2 and Algorithm 1 (settings in App. C), and the authors'
code (GitHub ``BorealisAI/mma_training``, ``anpgd.py``), whose deviations from Algorithm 1
are offered as flags. Norms: ``"linf"`` and ``"l2"`` as in the paper (``"l1"`` also runs).

One AN-PGD call, per example ``i``:

1. ``x_pgd = PGD(x, y, ε_init[i])`` – PGD ascending ``attack_loss`` (SLM) in the ε_init ball
   ∩ [0, 1], ``steps`` iterations of size ``step_scale·ε_init/steps`` (per example),
   advertorch random start, advertorch's clip-then-shrink ℓ2 projection, last iterate.
2. A ray ``s ↦ clip(x + s·u, 0, 1)`` through ``x_pgd``: ``u = (x_pgd − x)/scale`` with
   ``scale = ε_init`` (code) or ``scale = ‖x_pgd − x‖`` (paper), so ``x + scale·u = x_pgd``.
3. ``n_search`` bisection steps for the zero crossing of ``search_loss`` (SLM) along the ray
   on ``[0, ε_max]``, started at ``cur = scale`` with the loss measured at ``x_pgd``
   (the authors' ``bisection_search``): a negative loss (attack failed) raises ``lo`` to ``cur``, a
   non-negative one lowers ``hi`` to ``cur``; then ``cur = (lo + hi)/2``. The first update
   reproduces Algorithm 1's interval choice ([ε_init, ε_max] if PGD failed, [0, ε_init] if
   it succeeded).
4. ``ε* = cur`` (the last midpoint, code) or ``hi`` (smallest scale seen to succeed);
   ``x* = x + ε*·u``, clipped to the box unless ``clip_final=False``.

If no point on the ray succeeds, ε* converges to ``ε_max − (ε_max − scale)/2^n_search``;
with MMA's ``ε_max = 1.05·d_max`` that lies above ``d_max``, which is how MMA drops such
examples from its hinge (Ding et al. 2020, §2, Eq. 8 and App. B.1: an example with no
successful perturbation is treated as a very large one and ignored by the hinge).

Code-vs-paper choices (where the authors' code deviates from Algorithm 1; labelled A3–A6
below), all flags:

======================  ===========================  ==========================  ==================
flag                    paper (Algorithm 1)          authors' code               wideberth default
======================  ===========================  ==========================  ==================
``direction``           ``"actual_norm"`` δ1/‖δ1‖    ``"eps_init"`` δ1/ε_init    ``"eps_init"`` (A3)
``return_mode``         crossing (unspecified)       ``"last_mid"``              ``"last_mid"`` (A4)
``clip_final``          n/a                          ``False`` (unclipped x*)    ``True`` (A5)
``search_in_eval``      n/a                          ``False`` (train-mode BN)   ``True`` (A6)
======================  ===========================  ==========================  ==================

Why these defaults: ``direction`` and ``return_mode`` follow the code because MMA's
published numbers were produced by it and the difference is small (the two directions
agree whenever PGD ends on the sphere, ℓ∞ almost always); ``clip_final=True`` returns the
very point the bisection evaluated (the code trains on a possibly out-of-box input);
``search_in_eval=True`` because the code's train-mode search is an apparent accident that
updates BatchNorm running statistics and makes results depend on the batch.

The test/validation-time variant (:func:`~wideberth.attacks.mma_margins.an_pgd_eval`, the
code's ``ANPGDForTest``), MMA's model-selection metric
(:func:`~wideberth.attacks.mma_margins.average_margin`) and the repeated AN-PGD margin
search (:func:`~wideberth.attacks.mma_margins.anpgd_margin`) live in
:mod:`wideberth.attacks.mma_margins`; they reuse :func:`pgd_then_bisect`.

Conventions: PGD always runs inside :func:`~wideberth.attacks.base.attack_context` (eval
mode, frozen parameters); the search too unless ``search_in_eval=False``. Every submodule's
mode and every parameter's ``requires_grad`` and ``.grad`` come back as found; inputs are
never modified in place; device and dtype come from ``x``; ε's are per example; with the
default per-example random streams an example's result does not depend on its batch
(except with ``search_in_eval=False`` on a model whose train mode couples examples, e.g.
BatchNorm).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from .._checks import check_eps
from ..losses import get_loss
from ..threat import ThreatModel, eps_vector, get_threat
from .base import (
    LossLike,
    ModelLike,
    ResultAttack,
    attack_context,
    batch_view,
    check_choice,
    check_int,
    prepare,
)
from .projected_gradient import pgd

__all__ = [
    "ANPGD",
    "ANPGDResult",
    "RETURN_MODES",
    "an_pgd",
    "an_pgd_attack",
    "pgd_then_bisect",
    "positive_eps_vector",
]

Direction = Literal["eps_init", "actual_norm"]
ReturnMode = Literal["last_mid", "upper"]

_DIRECTIONS = ("eps_init", "actual_norm")
#: the values of ``return_mode`` (:func:`an_pgd`, :func:`~wideberth.attacks.an_pgd_eval`)
RETURN_MODES = ("last_mid", "upper")


@dataclass
class ANPGDResult:
    """Outcome of AN-PGD, one entry per example (``B`` examples, inputs ``[B, ...]``).

    The ray of example ``i`` is ``s ↦ clip(x_i + s·unit_i, 0, 1)``; scales ``s`` are in the
    units of ``unit`` (ε_init units for ``direction="eps_init"``, the norm itself for
    ``"actual_norm"``, where ``‖unit‖ = 1``).

    Attributes:
        x_adv: ``[B, ...]`` ``x + eps·unit`` (clipped to [0, 1] if ``clip_final``).
        eps: ``[B]`` ε*, the estimated margin along the ray (≤ ε_max).
        lo: ``[B]`` final lower bracket: largest scale seen to fail (0 if none).
        hi: ``[B]`` final upper bracket: smallest scale seen to succeed (ε_max if none).
        found: ``[B]`` bool, some evaluated point (the PGD output included) had
            ``search_loss >= 0``.
        success: ``[B]`` bool, ``search_loss >= 0`` was observed at the returned scale
            (``last_mid``: at the last midpoint; ``upper``: ``hi`` was set by a successful
            evaluation, i.e. ``x_adv`` is known to succeed when ``clip_final``).
        pgd_success: ``[B]`` bool, ``search_loss >= 0`` at the PGD output (Algorithm 1's
            branch: True → searched [0, ε_init], False → [ε_init, ε_max]).
        x_pgd: ``[B, ...]`` the PGD output ``x + δ1``.
        unit: ``[B, ...]`` the ray direction ``u``.
        scale: ``[B]`` the scale of ``x_pgd`` on the ray (ε_init or ‖δ1‖).

    With ``search_loss="slm"`` "success" means ``SLM >= 0`` (``p_y <= 1/2``), which does
    not imply misclassification (SLM ≥ LM); use ``search_loss="lm"`` for that.
    """

    x_adv: Tensor
    eps: Tensor
    lo: Tensor
    hi: Tensor
    found: Tensor
    success: Tensor
    pgd_success: Tensor
    x_pgd: Tensor
    unit: Tensor
    scale: Tensor


@contextmanager
def _search_context(model: ModelLike, in_eval: bool) -> Iterator[None]:
    ctx = attack_context(model) if in_eval else nullcontext(model)
    with ctx, torch.no_grad():
        yield


def positive_eps_vector(value: float | Tensor, x: Tensor, name: str, check: bool) -> Tensor:
    """ε (float or ``[B]``) as a ``[B]`` tensor on x's device and dtype; with ``check``,
    validated (``name`` in the messages) and required finite and > 0 for every example."""
    if check:
        check_eps(value, x.shape[0], name=name)
    v = eps_vector(value, x).detach()
    if check and v.numel() > 0 and bool((v <= 0).any()):
        raise ValueError(
            f"{name} must be > 0 for every example; found minimum {float(v.min()):.6g}"
            + (
                " (MMA reads its stored margins as max(eps_min, eps), never 0)"
                if name == "eps_init"
                else ""
            )
        )
    return v


def _ray_bisection(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    unit: Tensor,
    cur: Tensor,
    m: Tensor,
    eps_max: Tensor,
    n_search: int,
    search_fn: Callable[[Tensor, Tensor], Tensor],
    x_first: Tensor,
) -> dict[str, Tensor]:
    """The authors' ``bisection_search`` (``BorealisAI/mma_training``, ``anpgd.py``; the
    search of Ding et al. 2020, Algorithm 1), vectorised over the batch.

    ``m`` is the search loss already attributed to scale ``cur`` (point ``x_first``).
    Returns a dict with ``lo``/``hi`` (including the last evaluation), ``cur`` (the last
    midpoint) with its loss ``m`` and point ``x_cur``, ``found`` (some evaluation had loss
    >= 0), ``hi_known`` (``hi`` was set by such an evaluation) and ``x_hi`` (the evaluated,
    clipped point at ``hi``; ``clip(x + ε_max·u)`` where ``hi`` is not known). The bracket
    stays ordered (``lo <= hi``) even when the start lies above ε_max.
    """
    lo = torch.zeros_like(cur)
    hi = eps_max.clone()
    found = torch.zeros_like(cur, dtype=torch.bool)
    hi_known = torch.zeros_like(cur, dtype=torch.bool)
    x_hi = (x + batch_view(eps_max, x) * unit).clamp(0, 1)
    x_cur = x_first

    def update() -> None:
        nonlocal lo, hi, found, hi_known, x_hi
        ok = m >= 0
        lo = torch.where(ok, lo, torch.maximum(lo, torch.minimum(cur, hi)))
        better = ok & (cur <= hi)
        hi = torch.where(better, cur, hi)
        x_hi = torch.where(batch_view(better, x), x_cur, x_hi)
        found = found | ok
        hi_known = hi_known | better

    for _ in range(n_search):
        update()
        cur = (lo + hi) / 2
        x_cur = (x + batch_view(cur, x) * unit).clamp(0, 1)
        m = search_fn(model(x_cur), y)
    update()
    return {"lo": lo, "hi": hi, "cur": cur, "m": m, "x_cur": x_cur, "found": found,
            "hi_known": hi_known, "x_hi": x_hi}


def pgd_then_bisect(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    pgd_eps: Tensor,
    pgd_step: Tensor,
    eps_max: Tensor,
    steps: int,
    n_search: int,
    attack_loss: LossLike,
    search_loss: LossLike,
    direction: str,
    return_mode: str,
    clip_final: bool,
    search_in_eval: bool,
    init: str,
    projection: str,
    seed: int,
    generator: torch.Generator | None,
    start: Tensor | None,
) -> ANPGDResult:
    """One AN-PGD pass without argument checks: PGD at ``pgd_eps`` [B] (steps ``pgd_step``
    [B]) from x [B, ...], then the ray bisection on ``[0, eps_max]`` ([B]); the shared body
    of :func:`an_pgd` and :func:`~wideberth.attacks.an_pgd_eval` (see them for the other
    arguments). ``start``: the scale the first bound update
    attributes the PGD point's loss to (None: its true scale; the eval quirk passes
    0.5·ε_max)."""
    x = x.detach()
    x_pgd = pgd(
        model, x, y, norm=threat, eps=pgd_eps, steps=steps, step_size=pgd_step,
        loss=attack_loss, init=init, return_best=False, projection=projection,
        seed=seed, generator=generator, check=False,
    ).detach()
    d1 = x_pgd - x
    scale = pgd_eps.clone() if direction == "eps_init" else threat.norm(d1)
    unit = d1 / batch_view(torch.where(scale > 0, scale, torch.ones_like(scale)), x)
    search_fn = get_loss(search_loss)
    with _search_context(model, search_in_eval):
        m0 = search_fn(model(x_pgd), y)
        if start is None:
            cur0, x_first = scale, x_pgd
        else:  # the eval quirk: the loss measured at x_pgd is attributed to `start`
            cur0, x_first = start, (x + batch_view(start, x) * unit).clamp(0, 1)
        r = _ray_bisection(model, x, y, unit, cur0, m0, eps_max, n_search, search_fn, x_first)
    if return_mode == "last_mid":
        eps_star, success = r["cur"], r["m"] >= 0
        x_star = r["x_cur"] if clip_final else x + batch_view(eps_star, x) * unit
    else:
        eps_star, success = r["hi"], r["hi_known"]
        x_star = r["x_hi"] if clip_final else x + batch_view(eps_star, x) * unit
    return ANPGDResult(
        x_adv=x_star.detach(),
        eps=eps_star.detach(),
        lo=r["lo"].detach(),
        hi=r["hi"].detach(),
        found=r["found"],
        success=success,
        pgd_success=m0 >= 0,
        x_pgd=x_pgd,
        unit=unit.detach(),
        scale=scale.detach(),
    )


def an_pgd(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    norm: str | float | ThreatModel,
    eps_init: float | Tensor,
    eps_max: float | Tensor,
    steps: int,
    step_scale: float = 2.5,
    n_search: int = 10,
    attack_loss: LossLike = "slm",
    search_loss: LossLike = "slm",
    direction: Direction = "eps_init",
    return_mode: ReturnMode = "last_mid",
    clip_final: bool = True,
    search_in_eval: bool = True,
    init: str = "advertorch",
    projection: str = "approx",
    seed: int = 0,
    generator: torch.Generator | None = None,
    check: bool = True,
) -> ANPGDResult:
    """AN-PGD: MMA training's attack (Ding et al., *MMA Training*, ICLR 2020, §2, Algorithm 1).

    Approximates each example's shortest successful perturbation δ* by a PGD run at its own
    warm-start ε_init followed by a bisection along the PGD direction (see the module
    docstring for the algorithm and the code-vs-paper flags).

    Args:
        model: ``nn.Module`` or callable, ``[B, ...]`` in [0, 1] → logits ``[B, K]``.
        x: clean inputs ``[B, ...]`` in [0, 1] (never modified).
        y: integer labels ``[B]``.
        norm: ``"linf"`` or ``"l2"`` (paper), ``"l1"``, or a :class:`ThreatModel`.
        eps_init: the PGD radius, float or per-example ``[B]`` (> 0). MMA: ε_min in the
            first epoch, then each example's margin from the previous epoch.
        eps_max: upper end of the search, float or ``[B]`` (MMA: ``1.05·d_max``). Scales
            above it are never returned (ε* ≤ ε_max; an ε_init above ε_max is clamped for
            the bracket).
        steps: PGD iterations (MMA: 40 MNIST, 10 CIFAR-10).
        step_scale: PGD step = ``step_scale·ε_init/steps`` per example (MMA: 2.5).
        n_search: bisection steps (MMA: 10). Resolution ``(hi − lo)/2^n_search``.
        attack_loss: loss PGD ascends (MMA: ``"slm"``); any name of
            :func:`wideberth.losses.get_loss` or a callable ``(logits, y) -> [B]``.
        search_loss: loss whose zero crossing is searched; ``>= 0`` counts as success
            (MMA training: ``"slm"``; ``"lm"`` for true misclassification).
        direction: ``"eps_init"`` – ``u = δ1/ε_init`` (authors' code, default, A3);
            ``"actual_norm"`` – ``u = δ1/‖δ1‖`` (paper's Algorithm 1). With ``"eps_init"``
            ε* is in units of ε_init and overstates ``‖x* − x‖`` when PGD ends inside
            the ball.
        return_mode: ``"last_mid"`` – the last bisection midpoint, whose success is not
            guaranteed (authors' code, default, A4); ``"upper"`` – the smallest scale at
            which success was observed (``hi``), ``x_adv`` being that very evaluated point
            when ``clip_final``; ε_max (with ``found=False``) where nothing succeeded.
            ``"upper"`` biases margins slightly upward.
        clip_final: clip ``x + ε*·u`` to [0, 1] (default, A5: it is then exactly the point
            the search evaluated). ``False`` reproduces the code, which returns the
            **unclipped** point: ``x_adv`` may then leave the [0, 1] box (by design).
        search_in_eval: run the bisection forwards in eval mode with frozen parameters
            (default, A6). ``False`` runs them in whatever mode the caller left the model
            (the code: train mode, so BatchNorm uses batch statistics and updates its
            running statistics; results then depend on the batch). PGD always runs in
            eval mode. Modes are restored exactly either way.
        init: PGD random start, ``"advertorch"`` (MMA's code, default), ``"uniform"`` or
            ``"zero"``.
        projection: PGD projection, ``"approx"`` (advertorch: clip to the box then shrink
            into the ball, MMA's code, default) or ``"exact"``.
        seed, generator: randomness of the PGD start; without ``generator`` each example
            draws from its own stream keyed by ``(seed, content)`` (batch independent).
        check: validate inputs once (range, NaN, labels, ε).

    Returns:
        :class:`ANPGDResult` with ``x_adv`` ``[B, ...]`` and ``eps`` ``[B]`` (ε*), plus the
        bracket, success flags, the PGD point and the ray. ``‖x_adv − x‖ ≤ ε*`` (up to
        float rounding); ``x_adv ∈ [0, 1]`` when ``clip_final``.
    """
    check_int(steps, "steps", 0)
    check_int(n_search, "n_search", 0)
    check_choice(direction, "direction", _DIRECTIONS)
    check_choice(return_mode, "return_mode", RETURN_MODES)
    if not (isinstance(step_scale, (int, float)) and math.isfinite(step_scale) and step_scale >= 0):
        raise ValueError(f"step_scale must be a finite number >= 0; got {step_scale!r}")
    if check:
        threat, _ = prepare(model, x, y, eps_init, norm)
        assert threat is not None
    else:
        threat = get_threat(norm)
    y = y.to(x.device)
    e_init = positive_eps_vector(eps_init, x, "eps_init", check)
    e_max = positive_eps_vector(eps_max, x, "eps_max", check)
    return pgd_then_bisect(
        model, x, y, threat,
        pgd_eps=e_init, pgd_step=step_scale * e_init / max(steps, 1), eps_max=e_max,
        steps=steps, n_search=n_search, attack_loss=attack_loss, search_loss=search_loss,
        direction=direction, return_mode=return_mode, clip_final=clip_final,
        search_in_eval=search_in_eval, init=init, projection=projection, seed=seed,
        generator=generator, start=None,
    )


def an_pgd_attack(model: ModelLike, x: Tensor, y: Tensor, **kwargs: Any) -> Tensor:
    """:func:`an_pgd` returning only ``x_adv`` ``[B, ...]`` (the :class:`Attack` protocol)."""
    return an_pgd(model, x, y, **kwargs).x_adv


class ANPGD(ResultAttack):
    """Callable AN-PGD (see :func:`an_pgd`):
    ``ANPGD(model, norm="linf", eps_init=0.1, eps_max=0.42, steps=40)(x, y)`` returns
    ``x_adv`` ``[B, ...]``; :meth:`result` returns the full :class:`ANPGDResult`."""

    fn = staticmethod(an_pgd_attack)
    result_fn = staticmethod(an_pgd)
