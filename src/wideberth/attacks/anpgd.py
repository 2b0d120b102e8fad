"""AN-PGD: Adaptive-Norm PGD, MMA's approximation of the shortest successful perturbation.

Paper: Ding, Sharma, Lui & Huang, *MMA Training: Direct Input Space Margin Maximization
through Adversarial Training*, ICLR 2020, Algorithm 1 (specs/mma.md §2), and the authors'
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
   (specs/mma.md §2.3): a negative loss (attack failed) raises ``lo`` to ``cur``, a
   non-negative one lowers ``hi`` to ``cur``; then ``cur = (lo + hi)/2``. The first update
   reproduces Algorithm 1's interval choice ([ε_init, ε_max] if PGD failed, [0, ε_init] if
   it succeeded).
4. ``ε* = cur`` (the last midpoint, code) or ``hi`` (smallest scale seen to succeed);
   ``x* = x + ε*·u``, clipped to the box unless ``clip_final=False``.

If no point on the ray succeeds, ε* converges to ``ε_max − (ε_max − scale)/2^n_search``;
with MMA's ``ε_max = 1.05·d_max`` that lies above ``d_max``, which is how MMA drops such
examples from its hinge (specs/mma.md §2.3, §9.2).

Code-vs-paper choices (specs/mma.md §2.5, §10, ambiguities A3–A6), all flags:

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

The test/validation-time variant (:func:`an_pgd_eval`, the code's ``ANPGDForTest``) attacks
at a fixed test ε, bisects the logit margin, and is MMA's model-selection metric
(:func:`average_margin`).

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

from ..losses import get_loss
from ..threat import ThreatModel, eps_vector, get_threat
from .base import Attack, LossLike, ModelLike, attack_context, prepare

__all__ = [
    "ANPGD",
    "ANPGDResult",
    "an_pgd",
    "an_pgd_attack",
    "an_pgd_eval",
    "average_margin",
]

Direction = Literal["eps_init", "actual_norm"]
ReturnMode = Literal["last_mid", "upper"]
EvalStart = Literal["half_eps_max", "test_eps"]

_DIRECTIONS = ("eps_init", "actual_norm")
_RETURN_MODES = ("last_mid", "upper")
_EVAL_STARTS = ("half_eps_max", "test_eps")


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


def _view(t: Tensor, like: Tensor) -> Tensor:
    return t.reshape((t.shape[0],) + (1,) * (like.dim() - 1))


@contextmanager
def _search_context(model: ModelLike, in_eval: bool) -> Iterator[None]:
    ctx = attack_context(model) if in_eval else nullcontext(model)
    with ctx, torch.no_grad():
        yield


def _check_int(value: int, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")


def _check_choice(value: str, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def _positive_vector(value: float | Tensor, x: Tensor, name: str, check: bool) -> Tensor:
    """ε as a ``[B]`` tensor on x's device; with ``check``, finite and > 0."""
    if check:
        from .._checks import check_eps

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
    """The code's ``bisection_search`` (specs/mma.md §2.3), vectorised over the batch.

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
    x_hi = (x + _view(eps_max, x) * unit).clamp(0, 1)
    x_cur = x_first

    def update() -> None:
        nonlocal lo, hi, found, hi_known, x_hi
        ok = m >= 0
        lo = torch.where(ok, lo, torch.maximum(lo, torch.minimum(cur, hi)))
        better = ok & (cur <= hi)
        hi = torch.where(better, cur, hi)
        x_hi = torch.where(_view(better, x), x_cur, x_hi)
        found = found | ok
        hi_known = hi_known | better

    for _ in range(n_search):
        update()
        cur = (lo + hi) / 2
        x_cur = (x + _view(cur, x) * unit).clamp(0, 1)
        m = search_fn(model(x_cur), y)
    update()
    return {"lo": lo, "hi": hi, "cur": cur, "m": m, "x_cur": x_cur, "found": found,
            "hi_known": hi_known, "x_hi": x_hi}


def _an_pgd_core(
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
    """PGD at ``pgd_eps`` + ray bisection. ``start``: the scale the first bound update
    attributes the PGD point's loss to (None: its true scale; the eval quirk passes
    0.5·ε_max)."""
    from .projected_gradient import pgd

    x = x.detach()
    x_pgd = pgd(
        model, x, y, norm=threat, eps=pgd_eps, steps=steps, step_size=pgd_step,
        loss=attack_loss, init=init, return_best=False, projection=projection,
        seed=seed, generator=generator, check=False,
    ).detach()
    d1 = x_pgd - x
    scale = pgd_eps.clone() if direction == "eps_init" else threat.norm(d1)
    unit = d1 / _view(torch.where(scale > 0, scale, torch.ones_like(scale)), x)
    search_fn = get_loss(search_loss)
    with _search_context(model, search_in_eval):
        m0 = search_fn(model(x_pgd), y)
        if start is None:
            cur0, x_first = scale, x_pgd
        else:  # the eval quirk: the loss measured at x_pgd is attributed to `start`
            cur0, x_first = start, (x + _view(start, x) * unit).clamp(0, 1)
        r = _ray_bisection(model, x, y, unit, cur0, m0, eps_max, n_search, search_fn, x_first)
    if return_mode == "last_mid":
        eps_star, success = r["cur"], r["m"] >= 0
        x_star = r["x_cur"] if clip_final else x + _view(eps_star, x) * unit
    else:
        eps_star, success = r["hi"], r["hi_known"]
        x_star = r["x_hi"] if clip_final else x + _view(eps_star, x) * unit
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
    """AN-PGD (MMA training's attack, ICLR 2020 Algorithm 1; specs/mma.md §2.1–2.5, §2.8).

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
    _check_int(steps, "steps", 0)
    _check_int(n_search, "n_search", 0)
    _check_choice(direction, "direction", _DIRECTIONS)
    _check_choice(return_mode, "return_mode", _RETURN_MODES)
    if not (isinstance(step_scale, (int, float)) and math.isfinite(step_scale) and step_scale >= 0):
        raise ValueError(f"step_scale must be a finite number >= 0; got {step_scale!r}")
    if check:
        threat, _ = prepare(model, x, y, eps_init, norm)
        assert threat is not None
    else:
        threat = get_threat(norm)
    y = y.to(x.device)
    e_init = _positive_vector(eps_init, x, "eps_init", check)
    e_max = _positive_vector(eps_max, x, "eps_max", check)
    return _an_pgd_core(
        model, x, y, threat,
        pgd_eps=e_init, pgd_step=step_scale * e_init / max(steps, 1), eps_max=e_max,
        steps=steps, n_search=n_search, attack_loss=attack_loss, search_loss=search_loss,
        direction=direction, return_mode=return_mode, clip_final=clip_final,
        search_in_eval=search_in_eval, init=init, projection=projection, seed=seed,
        generator=generator, start=None,
    )


def an_pgd_eval(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    norm: str | float | ThreatModel,
    test_eps: float | Tensor,
    eps_max: float | Tensor,
    steps: int,
    test_step: float | Tensor | None = None,
    n_search: int = 10,
    attack_loss: LossLike = "slm",
    search_loss: LossLike = "lm",
    start: EvalStart = "half_eps_max",
    return_mode: ReturnMode = "last_mid",
    clip_final: bool = True,
    search_in_eval: bool = True,
    init: str = "advertorch",
    projection: str = "approx",
    seed: int = 0,
    generator: torch.Generator | None = None,
    check: bool = True,
) -> ANPGDResult:
    """Test/validation-time AN-PGD (MMA code's ``ANPGDForTest``; specs/mma.md §2.7).

    MMA's model-selection monitor: PGD at a fixed ``test_eps`` (SLM, random start,
    ``steps`` = the training value), ``u = (x_pgd − x)/test_eps``, then ``n_search``
    bisection steps of the **logit margin** (LM ≥ 0 ⇔ misclassified) on ``[0, ε_max]``.
    Runs on all examples; misclassified ones end near 0 (``ε_max/2^(n_search+1)``; not
    exactly 0).

    The code's quirk (default ``start="half_eps_max"``): the bisection starts at
    ``cur = 0.5·ε_max`` but with the loss measured at ``test_eps``, i.e. the first bracket
    update treats the PGD outcome at ``test_eps`` as if it had been observed at
    ``0.5·ε_max``. ``start="test_eps"`` attributes it to ``test_eps`` (consistent bisection).

    Per-setting values (specs/mma.md §2.7): MNIST-ℓ∞ ``test_eps=0.3, test_step=0.01``;
    MNIST-ℓ2 ``2.0, 0.125``; CIFAR10-ℓ∞ ``8/255, 2/255``; CIFAR10-ℓ2 ``1.0, 0.25``;
    ``eps_max = 1.05·d_max``; ``steps`` 40 (MNIST) / 10 (CIFAR-10).

    Args:
        model, x, y, norm: as in :func:`an_pgd` (x ``[B, ...]``, y ``[B]``).
        test_eps: PGD radius, float or ``[B]`` (> 0).
        eps_max: search upper end, float or ``[B]``.
        steps: PGD iterations.
        test_step: PGD step, float or ``[B]``; default ``2.5·test_eps/steps``.
        n_search: bisection steps.
        attack_loss, search_loss: PGD loss (SLM) and bisection loss (LM).
        start: ``"half_eps_max"`` (code quirk, default) or ``"test_eps"``.
        return_mode, clip_final, search_in_eval, init, projection, seed, generator, check:
            as in :func:`an_pgd` (direction is always ``test_eps`` units, as in the code).

    Returns:
        :class:`ANPGDResult`; ``eps`` ``[B]`` are the per-example margin estimates.
    """
    _check_int(steps, "steps", 0)
    _check_int(n_search, "n_search", 0)
    _check_choice(start, "start", _EVAL_STARTS)
    _check_choice(return_mode, "return_mode", _RETURN_MODES)
    if check:
        threat, _ = prepare(model, x, y, test_eps, norm)
        assert threat is not None
    else:
        threat = get_threat(norm)
    y = y.to(x.device)
    e_test = _positive_vector(test_eps, x, "test_eps", check)
    e_max = _positive_vector(eps_max, x, "eps_max", check)
    if test_step is None:
        step = 2.5 * e_test / max(steps, 1)
    else:
        if check:
            from .._checks import check_eps

            check_eps(test_step, x.shape[0], name="test_step")
        step = eps_vector(test_step, x).detach()
    return _an_pgd_core(
        model, x, y, threat,
        pgd_eps=e_test, pgd_step=step, eps_max=e_max, steps=steps, n_search=n_search,
        attack_loss=attack_loss, search_loss=search_loss, direction="eps_init",
        return_mode=return_mode, clip_final=clip_final, search_in_eval=search_in_eval,
        init=init, projection=projection, seed=seed, generator=generator,
        start=0.5 * e_max if start == "half_eps_max" else None,
    )


def average_margin(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int | None = None,
    **kwargs: Any,
) -> float:
    """MMA's model-selection metric: the mean of :func:`an_pgd_eval`'s ε* over ``x``.

    ``kwargs`` go to :func:`an_pgd_eval` (``norm``, ``test_eps``, ``eps_max``, ``steps`` …).
    ``batch_size`` splits ``x`` into chunks (results are batch independent with the default
    per-example random streams and ``search_in_eval=True``). Shapes: x ``[N, ...]``,
    y ``[N]``; returns a Python float.
    """
    n = x.shape[0]
    if n == 0:
        raise ValueError("x is an empty batch; the average margin is undefined")
    if batch_size is None or batch_size >= n:
        return float(an_pgd_eval(model, x, y, **kwargs).eps.double().mean())
    _check_int(batch_size, "batch_size", 1)
    total = 0.0
    for i in range(0, n, batch_size):
        total += float(an_pgd_eval(model, x[i : i + batch_size], y[i : i + batch_size], **kwargs).eps.double().sum())
    return total / n


def an_pgd_attack(model: ModelLike, x: Tensor, y: Tensor, **kwargs: Any) -> Tensor:
    """:func:`an_pgd` returning only ``x_adv`` ``[B, ...]`` (the :class:`Attack` protocol)."""
    return an_pgd(model, x, y, **kwargs).x_adv


class ANPGD(Attack):
    """Callable AN-PGD (see :func:`an_pgd`):
    ``ANPGD(model, norm="linf", eps_init=0.1, eps_max=0.42, steps=40)(x, y)`` returns
    ``x_adv`` ``[B, ...]``; :meth:`result` returns the full :class:`ANPGDResult`."""

    fn = staticmethod(an_pgd_attack)

    def result(self, x: Tensor, y: Tensor, **kwargs: Any) -> ANPGDResult:
        """Run AN-PGD and return the :class:`ANPGDResult` (ε* per example included)."""
        return an_pgd(self.model, x, y, **{**self.kwargs, **kwargs})
