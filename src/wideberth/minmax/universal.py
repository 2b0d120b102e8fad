"""Universal perturbation over K inputs (Wang et al. 2021, *Adversarial attack generation
empowered by min-max optimization*, §2.2 eq. (6), §4.1 Table 2, App. F).

One perturbation δ shared by a **group** of K images that should fool the (single) model on
every image of the group:

    min_{δ ∈ X} max_{w ∈ P} Σ_i w_i f(δ; x_i, y_i, M) − (γ/2)‖w − 1/K‖²,
    X = {δ : ‖δ‖_p ≤ ε} ∩ ⋂_i [−x_i, 1 − x_i],

an adapter on the min-max driver (:mod:`wideberth.minmax.problem`) with **one row per
group** (δ[g], w[g]) and **one domain per group member** (F_i = attack loss of image i under
``x_i + δ``). The box of a shared δ is the intersection of the K images' boxes,
``lo = max_i(−x_i)``, ``hi = min_i(1 − x_i)``, handed to the exact projection of Prop. 1, so
every ``x_i + δ`` stays in [0, 1] without clipping (the paper does not say how the box of a
shared δ is handled; the authors' code applies the per-image projection K times in turn,
exact for ℓ∞ but not for ℓ1/ℓ2). ``f`` is the minimised C&W loss
``relu(Z_y − max_{j≠y} Z_j + κ)`` (κ = 50) or ``−CE``
(:func:`wideberth.minmax.problem.attack_loss`).

Methods: ``"minmax"`` (learned per-group weights, APGDA) and ``"avg"`` (w ≡ 1/K, the
average-loss baseline of Table 2); both run the same routine with the same α, T, init, step
rule and projection. Metrics (:func:`universal_metrics`): ASR_gp = fraction of groups in
which **every** image is misclassified by the shared δ, ASR_avg = fraction of misclassified
images over all groups, and the per-image success matrix. Lift is on ASR_gp
(:func:`wideberth.minmax.ensemble.lift`).

Shapes: ``x`` is ``[G, K, C, H, W]`` (G groups of K images, labels ``[G, K]``) or a flat
batch ``[N, C, H, W]`` with ``group_size=K`` (labels ``[N]``; the groups are consecutive
blocks of K, as the authors' code reshapes the test set in order; N must be divisible by
K). δ is ``[G, C, H, W]``; weights ``[G, K]``. Images in [0, 1]; the model runs in eval
mode with frozen parameters (``attack_context``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..attacks.base import ModelLike, attack_context
from ..threat import ThreatModel
from .problem import DomainProblem, MinMaxResult, attack_loss, check_attack, check_model, solve

__all__ = [
    "UNIVERSAL_HPARAMS",
    "UNIVERSAL_METHODS",
    "UniversalMetrics",
    "UniversalResult",
    "group_box",
    "universal_attack",
    "universal_domain_losses",
    "universal_metrics",
]

UNIVERSAL_METHODS: tuple[str, ...] = ("minmax", "avg")

#: (α, β, γ) per norm for raw-gradient steps. ℓ∞: Table 2 of Wang et al. (2021) prints
#: α = "1" and an unreadable β (the OCR lost the fraction bars) with γ = 4; we take the
#: authors' code's universal default α = 1/6, β = 1/50, γ = 4. ℓ2/ℓ1 (not in the paper):
#: the ensemble values' α, β (App. C.2) with the Table 2 γ = 4.
UNIVERSAL_HPARAMS: dict[str, tuple[float, float, float]] = {
    "linf": (1 / 6, 1 / 50, 4.0),
    "l2": (1 / 10, 1 / 100, 4.0),
    "l1": (1 / 4, 1 / 100, 4.0),
}


def _grouped(x: Tensor, y: Tensor, group_size: int | None) -> tuple[Tensor, Tensor]:
    """``(x [G, K, C, H, W], y [G, K])`` from either accepted layout; ValueError otherwise."""
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise ValueError("x and y must be tensors")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating tensor; got dtype {x.dtype}")
    if group_size is None:
        if x.dim() != 5:
            raise ValueError(
                "x must be [G, K, C, H, W] (or [N, C, H, W] with group_size=K); got shape "
                f"{list(x.shape)}"
            )
        if tuple(y.shape) != tuple(x.shape[:2]):
            raise ValueError(f"y must have shape [G, K] = {list(x.shape[:2])}; got {list(y.shape)}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError("x must hold at least one group of at least one image")
        return x, y
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be an int >= 1; got {group_size!r}")
    if x.dim() != 4:
        raise ValueError(f"with group_size, x must be [N, C, H, W]; got shape {list(x.shape)}")
    n = x.shape[0]
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"y must have shape [N] = [{n}]; got {list(y.shape)}")
    if n == 0 or n % group_size:
        raise ValueError(f"the batch size N = {n} must be a positive multiple of group_size = {group_size}")
    return x.reshape(n // group_size, group_size, *x.shape[1:]), y.reshape(n // group_size, group_size)


def group_box(x: Tensor) -> tuple[Tensor, Tensor]:
    """Box of a δ shared by each group (Wang et al. 2021, §2.2 eq. (6)).

    Args:
        x: ``[G, K, ...]`` images in [0, 1].

    Returns:
        ``(lo, hi)``, each ``[G, ...]``: ``lo = max_i(−x_i)``, ``hi = min_i(1 − x_i)``, the
        intersection of the K boxes ``[−x_i, 1 − x_i]`` (it contains 0).
    """
    if not isinstance(x, Tensor) or x.dim() < 2:
        raise ValueError("x must be a tensor of shape [G, K, ...]")
    return (-x).amax(dim=1), (1 - x).amin(dim=1)


def universal_domain_losses(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    loss: str = "cw",
    kappa: float = 50.0,
) -> Callable[[Tensor], Tensor]:
    """``δ ↦ F(δ)`` for :func:`~wideberth.minmax.apgda` (Wang et al. 2021, eq. (6)).

    Args:
        model: maps ``[N, C, H, W]`` in [0, 1] to logits ``[N, classes]`` (the caller puts
            it in eval mode).
        x: grouped images ``[G, K, C, H, W]``. y: labels ``[G, K]``.
        loss, kappa: see :func:`wideberth.minmax.problem.attack_loss`.

    Returns:
        a callable ``delta [G, C, H, W] -> [G, K]``: ``F[g, i]`` is the attack loss of image
        ``x[g, i] + δ[g]`` (clamped to [0, 1], the identity for feasible δ). Row g depends
        only on δ[g].
    """
    g, k = x.shape[:2]
    flat_y = y.reshape(g * k)

    def fn(delta: Tensor) -> Tensor:
        xa = (x + delta.unsqueeze(1)).clamp(0, 1).reshape(g * k, *x.shape[2:])
        return attack_loss(model(xa), flat_y, loss, kappa).reshape(g, k)

    return fn


#: The result of :func:`universal_attack`: the :class:`~wideberth.minmax.problem.MinMaxResult`
#: of the min-max driver, with δ ``[G, C, H, W]`` (the last iterate), ``x_adv``
#: ``[G, K, C, H, W]`` (``x_i + δ`` for every image), weights ``[G, K]`` (uniform for
#: ``"avg"``), per-image losses ``[T + 1, G, K]`` and δ(0..T) if ``record_delta``.
UniversalResult = MinMaxResult


def universal_attack(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    group_size: int | None = None,
    norm: str | float | ThreatModel = "linf",
    eps: float | Tensor,
    steps: int = 20,
    method: str = "minmax",
    alpha: float | Tensor | None = None,
    beta: float | None = None,
    gamma: float | None = None,
    delta_mode: str = "raw",
    loss: str = "cw",
    kappa: float = 50.0,
    init: str = "zero",
    seed: int = 0,
    generator: torch.Generator | None = None,
    record_delta: bool = False,
    check: bool = True,
    progress: bool | None = None,
) -> UniversalResult:
    """Universal (per-group) perturbation by min-max optimisation (Wang et al. 2021,
    *Adversarial attack generation empowered by min-max optimization*, eq. (6)); norms ℓ∞,
    ℓ2, ℓ1.

    Args:
        model: ``nn.Module`` (or callable) mapping ``[N, C, H, W]`` to logits; run under
            :func:`~wideberth.attacks.base.attack_context` (eval mode, frozen).
        x: ``[G, K, C, H, W]`` in [0, 1] with y ``[G, K]``, or ``[N, C, H, W]`` with y ``[N]``
            and ``group_size=K`` (consecutive blocks of K form the groups).
        y: true labels (int64).
        group_size: K for a flat batch; must be None for a 5-D ``x``.
        eps: radius (float or ``[G]``, one per group). steps: T (20 in Table 2).
        method: ``"minmax"`` (APGDA) or ``"avg"`` (w ≡ 1/K baseline).
        alpha, beta, gamma: APGDA steps and regularisation; ``None`` takes
            :data:`UNIVERSAL_HPARAMS` for the norm. α may be a ``[G]`` tensor.
        delta_mode: ``"raw"`` (paper), ``"sign"`` or ``"normalized"``.
        loss, kappa: ``"cw"`` (κ = 50) or ``"ce"``.
        init: δ(0); ``"zero"`` by default (the authors' universal attack). seed, generator:
            randomness of a random start.
        record_delta: also keep δ(0..T) (to check feasibility along the run).
        check: validate x, y, ε against the model first.
        progress: a bar over the T iterations (:func:`wideberth.progress.progress_bar`):
            None (default) draws it when standard error is a terminal.

    Returns:
        :class:`UniversalResult`: δ ``[G, C, H, W]``, ``x_adv`` ``[G, K, C, H, W]``, weights
        ``[G, K]`` and trajectories ``[T + 1, G, K]``.

    Raises:
        ValueError: bad shapes, group size, method, loss, or the checks of
        :func:`~wideberth.minmax.apgda`.
    """
    check_model(model)
    check_attack(method, UNIVERSAL_METHODS, loss)
    xg, yg = _grouped(x, y, group_size)
    g, k = xg.shape[:2]
    flat = (xg.reshape(g * k, *xg.shape[2:]), yg.reshape(g * k))
    xg = xg.detach()
    yg = yg.to(xg.device)
    lo, hi = group_box(xg)
    if bool((lo > 0).any() | (hi < 0).any()):
        raise ValueError("x must lie in [0, 1]")
    problem = DomainProblem(
        models=[model], rows=xg[:, 0],
        losses=lambda: universal_domain_losses(model, xg, yg, loss=loss, kappa=kappa),
        k=k, defaults=UNIVERSAL_HPARAMS, inputs=flat, check_eps=False, lo=lo, hi=hi,
        x_adv=lambda delta: (xg + delta.unsqueeze(1)).clamp(0, 1),
    )
    return solve(
        problem, method=method, norm=norm, eps=eps, steps=steps, alpha=alpha, beta=beta,
        gamma=gamma, delta_mode=delta_mode, init=init, seed=seed, generator=generator,
        record_delta=record_delta, check=check, progress=progress,
    )


@dataclass
class UniversalMetrics:
    """Universal-perturbation metrics (Wang et al. 2021, §2.2 eq. (6), §4.1, Table 2), w.r.t.
    true labels (clean errors count as successes).

    Attributes:
        fooled: ``[G, K]`` bool, per-image success (image i of group g misclassified).
        asr_gp: fraction of groups in which **every** image is fooled.
        asr_avg: fraction of fooled images over all groups (ASR averaged over images).
    """

    fooled: Tensor
    asr_gp: float
    asr_avg: float


def universal_metrics(model: ModelLike, x_adv: Tensor, y: Tensor) -> UniversalMetrics:
    """ASR_gp, ASR_avg and per-image success of ``x_adv`` ``[G, K, C, H, W]`` against ``y``
    ``[G, K]`` (Wang et al. 2021, §2.2 eq. (6), §4.1; fractions in [0, 1]). The model runs in
    eval mode under ``attack_context``."""
    check_model(model)
    xg, yg = _grouped(x_adv, y, None)
    g, k = xg.shape[:2]
    with torch.no_grad(), attack_context(model):
        pred = model(xg.reshape(g * k, *xg.shape[2:])).argmax(1).reshape(g, k)
    fooled = pred != yg.to(pred.device)
    return UniversalMetrics(
        fooled=fooled,
        asr_gp=float(fooled.all(1).float().mean()),
        asr_avg=float(fooled.float().mean()),
    )
