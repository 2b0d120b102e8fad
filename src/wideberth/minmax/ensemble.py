"""Robust ensemble attack over K models (Wang et al. 2021, *Adversarial attack generation
empowered by min-max optimization*, §2.2 eq. (5), §4.1 Table 1, App. D.1–D.2).

One perturbation δ per input that should fool **all** K models at once:

    min_{δ ∈ X} max_{w ∈ P} Σ_i w_i f(δ; x, y, M_i) − (γ/2)‖w − 1/K‖²,

an adapter on the min-max driver (:mod:`wideberth.minmax.problem`): one row per image and
one domain per model. ``f`` is :func:`~wideberth.minmax.problem.attack_loss`, the minimised
C&W margin with confidence κ = 50 in the authors' code form ``relu(Z_y − max_{j≠y} Z_j + κ)``
(the paper's ``max{Z_y − max_{j≠y} Z_j, −κ}`` plus the constant κ: identical δ-gradients and
w-updates), or ``−CE``.

Methods (``method=``):

* ``"minmax"`` – learned per-example weights (APGDA);
* ``"avg"`` – average of the per-model losses, w ≡ 1/K (ensemble PGD, Liu et al. 2018);
* ``"fixed"`` – given weights held fixed: Table A4's ``w_prior`` (:data:`W_PRIOR_MNIST`),
  ``w_static`` (:data:`W_STATIC_MNIST`), ``w_{c+d}``, ``w_{a+c+d}``;
* ``"clip"`` – Table A4's ``w_clip``: uniform weights on the C&W loss clipped from below at
  ``clip_threshold`` (40 in the relu(·+κ) form: a model stops being pushed once its margin
  ``Z_y − max_{j≠y} Z_j`` is ≤ −10, Shafahi et al. 2018);
* ``"avg_logit"`` / ``"avg_prob"`` – the loss on the averaged logits ``Z̄ = mean_i Z_i``, or
  on ``log p̄`` with ``p̄ = mean_i softmax(Z_i)`` (baselines of the NeurIPS-2021 version's
  comparisons; not in the 2020 preprint's tables).

Every method runs the same routine with the same α, T, init, step rule and projection (the
driver's one call into APGDA; the authors' code runs the average with ``fixed_w=True``).
Metrics: :func:`ensemble_metrics` (ASR_all, per-model ASR, ASR_avg) and :func:`lift`.
Conventions: ``x`` ``[B, C, H, W]`` in [0, 1], ``y`` ``[B]`` int64, logits ``[B, classes]``;
models run in eval mode with frozen parameters (``attack_context``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..attacks.base import Attack, ModelLike, attack_context
from ..threat import ThreatModel
from .problem import DomainProblem, MinMaxResult, attack_loss, check_attack, check_models, solve

__all__ = [
    "ENSEMBLE_METHODS",
    "DEFAULT_HPARAMS",
    "W_PRIOR_MNIST",
    "W_STATIC_MNIST",
    "EnsembleResult",
    "EnsembleMetrics",
    "MinMaxEnsembleAttack",
    "attack_loss",
    "ensemble_attack",
    "ensemble_domain_losses",
    "ensemble_metrics",
    "lift",
]

ENSEMBLE_METHODS: tuple[str, ...] = ("minmax", "avg", "fixed", "clip", "avg_logit", "avg_prob")

#: (α, β, γ) per norm: the Table 1 MNIST values of Wang et al. 2021, App. C.2 (raw-gradient
#: steps, 50 iterations; the text prints α, β as the denominators 4, 50, …: read 1/4, 1/50).
DEFAULT_HPARAMS: dict[str, tuple[float, float, float]] = {
    "linf": (1 / 4, 1 / 50, 3.0),
    "l2": (1 / 10, 1 / 100, 3.0),
    "l1": (1 / 4, 1 / 100, 5.0),
}

#: Table A4 ``w_prior`` for MNIST models [A, B, C, D] (robustness prior C > D > A > B).
W_PRIOR_MNIST: tuple[float, ...] = (0.2, 0.1, 0.4, 0.3)
#: Table A4 ``w_static``: converged mean APGDA weights over all data, MNIST [A, B, C, D].
W_STATIC_MNIST: dict[str, tuple[float, ...]] = {
    "l2": (0.209, 0.046, 0.495, 0.250),
    "linf": (0.080, 0.076, 0.541, 0.303),
}


def ensemble_domain_losses(
    models: Sequence[ModelLike],
    x: Tensor,
    labels: Sequence[Tensor] | Tensor,
    *,
    loss: str = "cw",
    kappa: float = 50.0,
    combine: str = "none",
    floor: float | None = None,
) -> Callable[[Tensor], Tensor]:
    """``δ ↦ F(δ)`` for :func:`~wideberth.minmax.apgda` (Wang et al. 2021, eq. (5)).

    Args:
        models: K models mapping ``[B, C, H, W]`` in [0, 1] to logits ``[B, classes]``
            (the caller puts them in eval mode).
        x: clean inputs ``[B, C, H, W]``.
        labels: ``[B]`` (shared) or one ``[B]`` per model (per-model predicted labels).
        loss, kappa: see :func:`attack_loss`.
        combine: ``"none"`` (``[B, K]``: one domain per model), ``"logit"`` (``[B, 1]``:
            loss on the mean logits) or ``"prob"`` (``[B, 1]``: loss on ``log`` of the mean
            softmax).
        floor: clip each loss from below at ``floor`` (``w_clip``).

    Returns:
        a callable ``delta [B, C, H, W] -> [B, K]`` (or ``[B, 1]``), evaluated at
        ``clamp(x + δ, 0, 1)`` (the identity for feasible δ).
    """
    k = len(models)
    labs = [labels] * k if isinstance(labels, Tensor) else list(labels)
    if len(labs) != k:
        raise ValueError(f"got {len(labs)} label tensors for {k} models")

    def fn(delta: Tensor) -> Tensor:
        xa = (x + delta).clamp(0, 1)
        zs = [m(xa) for m in models]
        if combine == "none":
            f = torch.stack([attack_loss(z, yy, loss, kappa) for z, yy in zip(zs, labs, strict=True)], 1)
        elif combine == "logit":
            f = attack_loss(torch.stack(zs).mean(0), labs[0], loss, kappa).unsqueeze(1)
        elif combine == "prob":
            p = torch.stack([torch.softmax(z, dim=1) for z in zs]).mean(0)
            f = attack_loss(torch.log(p.clamp_min(1e-30)), labs[0], loss, kappa).unsqueeze(1)
        else:
            raise ValueError(f"combine must be 'none', 'logit' or 'prob'; got {combine!r}")
        return f if floor is None else torch.clamp(f, min=floor)

    return fn


#: The result of :func:`ensemble_attack`: the :class:`~wideberth.minmax.problem.MinMaxResult`
#: of the min-max driver (``w``/``w_trajectory`` are None for ``"avg_logit"``/``"avg_prob"``,
#: which have a single domain; ``delta_trajectory`` is None).
EnsembleResult = MinMaxResult


def ensemble_attack(
    models: Sequence[ModelLike],
    x: Tensor,
    y: Tensor,
    *,
    norm: str | float | ThreatModel = "linf",
    eps: float | Tensor,
    steps: int = 50,
    method: str = "minmax",
    alpha: float | Tensor | None = None,
    beta: float | None = None,
    gamma: float | None = None,
    delta_mode: str = "raw",
    weights: Sequence[float] | Tensor | None = None,
    loss: str = "cw",
    kappa: float = 50.0,
    clip_threshold: float = 40.0,
    label_mode: str = "true",
    init: str = "zero",
    seed: int = 0,
    check: bool = True,
    progress: bool | None = None,
) -> EnsembleResult:
    """Robust adversarial attack against an ensemble of K models (Wang et al. 2021, *Adversarial
    attack generation empowered by min-max optimization*, eq. (5)); norms ℓ∞, ℓ2, ℓ1.

    Args:
        models: K ``nn.Module``s (or callables) mapping ``[B, C, H, W]`` to logits; each is
            run under :func:`~wideberth.attacks.base.attack_context` (eval mode, frozen).
        x: clean inputs ``[B, C, H, W]`` in [0, 1]. y: true labels ``[B]``.
        eps: radius (float or ``[B]``). steps: T (50 in the paper's ensemble tables).
        method: one of :data:`ENSEMBLE_METHODS` (module docstring).
        alpha, beta, gamma: APGDA steps and regularisation; ``None`` takes
            :data:`DEFAULT_HPARAMS` for the norm (MNIST Table 1 readings, raw steps).
        delta_mode: ``"raw"`` (paper), ``"sign"`` or ``"normalized"``.
        weights: ``[K]`` (or ``[B, K]``) on the simplex, for ``method="fixed"`` only.
        loss: ``"cw"`` (κ = ``kappa``) or ``"ce"``. clip_threshold: the ``w_clip`` floor.
        label_mode: ``"true"`` (the paper) or ``"predicted"`` (each model's clean prediction,
            the authors' code; for the combined baselines the combined prediction).
        init, seed: δ(0) (see :func:`~wideberth.minmax.apgda`).
        check: validate x, y, ε against every model first.
        progress: a bar over the T iterations (:func:`wideberth.progress.progress_bar`):
            None (default) draws it when standard error is a terminal.

    Returns:
        :class:`EnsembleResult` (``x_adv`` and δ ``[B, C, H, W]``, weights ``[B, K]`` and their
        trajectory ``[T + 1, B, K]``).
    """
    ms = check_models(models)
    check_attack(method, ENSEMBLE_METHODS, loss, weights)
    if label_mode not in ("true", "predicted"):
        raise ValueError(f"label_mode must be 'true' or 'predicted'; got {label_mode!r}")
    if method == "clip" and loss != "cw":
        raise ValueError("method='clip' clips the C&W loss (relu form): use loss='cw'")
    xd = x.detach()
    yd = y.to(xd.device)
    combine = {"avg_logit": "logit", "avg_prob": "prob"}.get(method, "none")

    def losses() -> Callable[[Tensor], Tensor]:
        labels: Tensor | list[Tensor] = yd
        if label_mode == "predicted":  # the models are in eval mode here
            with torch.no_grad():
                zs = [m(xd) for m in ms]
                if combine == "none":
                    labels = [z.argmax(1) for z in zs]
                elif combine == "logit":
                    labels = torch.stack(zs).mean(0).argmax(1)
                else:
                    labels = torch.stack([torch.softmax(z, 1) for z in zs]).mean(0).argmax(1)
        return ensemble_domain_losses(
            ms, xd, labels, loss=loss, kappa=kappa, combine=combine,
            floor=clip_threshold if method == "clip" else None,
        )

    problem = DomainProblem(
        models=ms, rows=xd, losses=losses, k=len(ms), defaults=DEFAULT_HPARAMS,
        inputs=(x, y), weights=weights, single_domain=combine != "none",
    )
    return solve(
        problem, method=method, norm=norm, eps=eps, steps=steps, alpha=alpha, beta=beta,
        gamma=gamma, delta_mode=delta_mode, init=init, seed=seed, check=check,
        progress=progress,
    )


@dataclass
class EnsembleMetrics:
    """Ensemble-attack metrics (Wang et al. 2021, §2.2, §4.1), w.r.t. true labels.

    Attributes:
        fooled: ``[B, K]`` bool, model i misclassifies example b.
        asr_all: fraction of examples misclassified by **every** model (= 1 − Acc_any).
        per_model_asr: ``[K]``, ASR_i = 1 − Acc_i.
        asr_avg: mean of the per-model ASR (Table A4's ASR_avg).
    """

    fooled: Tensor
    asr_all: float
    per_model_asr: Tensor
    asr_avg: float


def ensemble_metrics(models: Sequence[ModelLike], x_adv: Tensor, y: Tensor) -> EnsembleMetrics:
    """ASR_all, per-model ASR and ASR_avg of ``x_adv`` ``[B, C, H, W]`` against ``y`` ``[B]``
    (Wang et al. 2021, §2.2, §4.1; clean errors count as successes). Each model
    runs in eval mode under ``attack_context``; all fractions are in [0, 1]."""
    ms = check_models(models)
    if x_adv.dim() < 1 or y.dim() != 1 or x_adv.shape[0] != y.shape[0] or y.shape[0] == 0:
        raise ValueError("x_adv must be [B, ...] and y [B] with the same B >= 1")
    cols = []
    with torch.no_grad():
        for m in ms:
            with attack_context(m):
                cols.append(m(x_adv).argmax(1) != y.to(x_adv.device))
    fooled = torch.stack(cols, 1)
    per = fooled.float().mean(0)
    return EnsembleMetrics(
        fooled=fooled,
        asr_all=float(fooled.all(1).float().mean()),
        per_model_asr=per,
        asr_avg=float(per.mean()),
    )


def lift(asr_method: float, asr_baseline: float) -> float:
    """Relative gain ``(ASR_method − ASR_baseline) / ASR_baseline`` (the paper's "Lift"; inf
    when the baseline's ASR is 0 and the method's is not, NaN when both are 0)."""
    if asr_baseline == 0:
        return math.nan if asr_method == 0 else math.inf
    return (asr_method - asr_baseline) / asr_baseline


def _ensemble_x_adv(models: Sequence[ModelLike], x: Tensor, y: Tensor, **kwargs: object) -> Tensor:
    return ensemble_attack(models, x, y, **kwargs).x_adv  # type: ignore[arg-type]


class MinMaxEnsembleAttack(Attack):
    """``MinMaxEnsembleAttack([m1, m2, m3], eps=0.2)(x, y) -> x_adv``: the callable-class
    form of :func:`ensemble_attack` (Wang et al. 2021), returning only
    ``x_adv`` ``[B, C, H, W]``; the "model" is the list of models."""

    fn = staticmethod(_ensemble_x_adv)
