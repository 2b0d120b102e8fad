"""Robust ensemble attack over K models (Wang et al., min-max framework, eq. (5), spec §2a).

One perturbation δ per input that should fool **all** K models at once:

    min_{δ ∈ X} max_{w ∈ P} Σ_i w_i f(δ; x, y, M_i) − (γ/2)‖w − 1/K‖²,

solved by :func:`wideberth.minmax.apgda` with one row per image and one domain per
model. ``f`` is the minimised C&W margin with confidence κ = 50 in the authors' code form
``relu(Z_y − max_{j≠y} Z_j + κ)`` = ``κ − cw_loss(logits, y, kappa=κ)`` (the same function
as the paper's ``max{Z_y − max_{j≠y} Z_j, −κ}`` plus the constant κ: identical δ-gradients
and w-updates), or ``−CE``.

Methods (``method=``):

* ``"minmax"`` – learned per-example weights (APGDA);
* ``"avg"`` – average of the per-model losses, w ≡ 1/K (ensemble PGD, Liu et al. 2018);
* ``"fixed"`` – given weights held fixed: Table A4's ``w_prior`` (:data:`W_PRIOR_MNIST`),
  ``w_static`` (:data:`W_STATIC_MNIST`), ``w_{c+d}``, ``w_{a+c+d}``;
* ``"clip"`` – Table A4's ``w_clip``: uniform weights on the C&W loss clipped from below at
  ``clip_threshold`` (40 in the relu(·+κ) form: a model stops being pushed once its margin
  ``Z_y − max_{j≠y} Z_j`` is ≤ −10, Shafahi et al. 2018);
* ``"avg_logit"`` / ``"avg_prob"`` – the loss on the averaged logits ``Z̄ = mean_i Z_i``, or
  on ``log p̄`` with ``p̄ = mean_i softmax(Z_i)`` (extensions from the later version of the
  work; not in the seed).

Every method runs the same routine with the same α, T, init, step rule and projection
(spec §8.14). Metrics: :func:`ensemble_metrics` (ASR_all, per-model ASR, ASR_avg) and
:func:`lift`. Conventions: ``x`` ``[B, C, H, W]`` in [0, 1], ``y`` ``[B]`` int64, logits
``[B, classes]``; models run in eval mode with frozen parameters (``attack_context``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import Tensor

from ..attacks.base import Attack, ModelLike, attack_context, prepare
from ..losses import ce, cw_loss
from ..threat import ThreatModel, normalize_norm
from .descent_ascent import APGDAResult, apgda, step_parameters
from .simplex import on_simplex

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

#: (α, β, γ) per norm: the Table 1 MNIST readings of spec §5.4 (raw-gradient steps, 50 iters).
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


def attack_loss(logits: Tensor, y: Tensor, loss: str = "cw", kappa: float = 50.0) -> Tensor:
    """Per-example attack loss to **minimise** (Wang et al., min-max framework, §2a).

    ``"cw"``: ``relu(Z_y − max_{j≠y} Z_j + κ)`` = ``κ − cw_loss(logits, y, kappa=κ)``
    (κ = 50 in the paper); ``"ce"``: ``−CE(logits, y)``. Shapes: logits ``[B, C]``,
    y ``[B]`` -> ``[B]``.
    """
    if loss == "cw":
        return kappa - cw_loss(logits, y, kappa=kappa)
    if loss == "ce":
        return -ce(logits, y)
    raise ValueError(f"loss must be 'cw' or 'ce'; got {loss!r}")


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
    """``δ ↦ F(δ)`` for :func:`apgda` (Wang et al., min-max framework, eq. (5)).

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


@dataclass
class EnsembleResult:
    """Output of :func:`ensemble_attack` (Wang et al., min-max framework, §2a).

    Attributes:
        x_adv: ``[B, C, H, W]``, the last iterate ``x + δ(T)`` (in [0, 1], within ε).
        w: final weights ``[B, K]`` (learned for ``"minmax"``, the fixed ones otherwise;
            ``None`` for ``"avg_logit"``/``"avg_prob"``, which have a single domain).
        w_trajectory: ``[T + 1, B, K]`` or None (as ``w``).
        loss_trajectory: per-domain losses ``[T + 1, B, K]`` (``[T + 1, B, 1]`` for the
            combined-output baselines).
        method: the method that produced it.
        core: the raw :class:`APGDAResult`.
    """

    x_adv: Tensor
    w: Tensor | None
    w_trajectory: Tensor | None
    loss_trajectory: Tensor
    method: str
    core: APGDAResult


def _check_models(models: Sequence[ModelLike]) -> list[ModelLike]:
    if isinstance(models, torch.nn.Module) or not isinstance(models, Sequence):
        raise ValueError("models must be a list of models (nn.Module or callables)")
    ms = list(models)
    if len(ms) == 0:
        raise ValueError("models must contain at least one model")
    for m in ms:
        if not callable(m):
            raise ValueError(f"every model must be callable; got {type(m).__name__}")
    return ms


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
) -> EnsembleResult:
    """Robust adversarial attack against an ensemble of K models (Wang et al., *Adversarial
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
        init, seed: δ(0) (see :func:`apgda`).
        check: validate x, y, ε against every model first.

    Returns:
        :class:`EnsembleResult` (``x_adv`` ``[B, C, H, W]``, weights ``[B, K]`` and their
        trajectory ``[T + 1, B, K]``).
    """
    ms = _check_models(models)
    if method not in ENSEMBLE_METHODS:
        raise ValueError(f"method must be one of {', '.join(ENSEMBLE_METHODS)}; got {method!r}")
    if label_mode not in ("true", "predicted"):
        raise ValueError(f"label_mode must be 'true' or 'predicted'; got {label_mode!r}")
    if loss not in ("cw", "ce"):
        raise ValueError(f"loss must be 'cw' or 'ce'; got {loss!r}")
    if method == "clip" and loss != "cw":
        raise ValueError("method='clip' clips the C&W loss (relu form): use loss='cw'")
    if (weights is not None) != (method == "fixed"):
        raise ValueError("weights are required for method='fixed' and only allowed there")
    name = normalize_norm(norm)
    if check:
        ncls = {prepare(m, x, y, eps, norm)[1] for m in ms}
        if len(ncls) != 1:
            raise ValueError(f"all models must output the same number of classes; got {sorted(ncls)}")
    k = len(ms)
    alpha, beta, gamma = step_parameters(DEFAULT_HPARAMS, name, alpha, beta, gamma)
    x = x.detach()
    y = y.to(x.device)

    w0: Tensor | None = None
    if weights is not None:
        w0 = torch.as_tensor(weights, dtype=x.dtype, device=x.device)
        if w0.shape[-1] != k or w0.dim() not in (1, 2):
            raise ValueError(f"weights must have shape [K] = [{k}] or [B, K]; got {list(w0.shape)}")
        if not bool(on_simplex(w0).all()):
            raise ValueError("weights must lie on the probability simplex (>= 0, summing to 1)")

    combine = {"avg_logit": "logit", "avg_prob": "prob"}.get(method, "none")
    with ExitStack() as stack:
        for m in ms:
            stack.enter_context(attack_context(m))
        labels: Tensor | list[Tensor] = y
        if label_mode == "predicted":
            with torch.no_grad():
                zs = [m(x) for m in ms]
                if combine == "none":
                    labels = [z.argmax(1) for z in zs]
                elif combine == "logit":
                    labels = torch.stack(zs).mean(0).argmax(1)
                else:
                    labels = torch.stack([torch.softmax(z, 1) for z in zs]).mean(0).argmax(1)
        fn = ensemble_domain_losses(
            ms, x, labels, loss=loss, kappa=kappa, combine=combine,
            floor=clip_threshold if method == "clip" else None,
        )
        res = apgda(
            fn, x, norm=norm, eps=eps, steps=steps, alpha=alpha, beta=beta,
            gamma=gamma, delta_mode=delta_mode, w0=w0, update_w=method == "minmax",
            init=init, seed=seed,
        )
    x_adv = (x + res.delta).clamp(0, 1).detach()
    single = combine != "none"
    return EnsembleResult(
        x_adv=x_adv,
        w=None if single else res.w,
        w_trajectory=None if single else res.w_trajectory,
        loss_trajectory=res.loss_trajectory,
        method=method,
        core=res,
    )


@dataclass
class EnsembleMetrics:
    """Ensemble-attack metrics (Wang et al., min-max framework, §2a), w.r.t. true labels.

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
    (Wang et al., min-max framework, §2a; clean errors count as successes). Each model
    runs in eval mode under ``attack_context``; all fractions are in [0, 1]."""
    ms = _check_models(models)
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
    form of :func:`ensemble_attack` (Wang et al., min-max framework), returning only
    ``x_adv`` ``[B, C, H, W]``; the "model" is the list of models."""

    fn = staticmethod(_ensemble_x_adv)
