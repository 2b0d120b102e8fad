"""Robust attack over data transformations (Wang et al. 2021, *Adversarial attack generation
empowered by min-max optimization*, §2.2 eq. (7), §4.1 Table 3, App. C.3, D.3).

One perturbation δ per image that should fool the model under **every** transformation
family ``p_j`` (the EOT generalisation):

    min_{δ ∈ X} max_{w ∈ P} Σ_j w_j E_{t ~ p_j}[ f(t(x + δ); y, M) ] − (γ/2)‖w − 1/K‖²,

an adapter on the min-max driver (:mod:`wideberth.minmax.problem`) with one row per image
and **one domain per transformation** (F_j = attack loss of ``model(T_j(x + δ))``). ``f`` is
the minimised C&W loss ``relu(Z_y − max_{j≠y} Z_j + κ)`` (κ = 50) or ``−CE``
(:func:`wideberth.minmax.problem.attack_loss`). The identity ("ori") is one of the domains
of the paper's sets (:func:`wideberth.transforms.paper_transforms`).

Methods: ``"minmax"`` (learned per-image weights, APGDA) and ``"avg"`` (w ≡ 1/K: **EOT**,
Athalye et al., the paper's baseline); same α, T, init, step rule and projection.

Stochastic transformations (Table A5): a random transform draws afresh on every call, so
the expectation ``E_{t ~ p_j}`` is estimated at every APGDA iteration by the mean loss over
``n_samples`` fresh draws (default 1; the paper does not give the number, and the authors'
code draws one Bernoulli per transform per batch); draws are per example by default
(``per_example`` of the transforms). The δ-gradient of iteration t+1 and the w-step of
iteration t share the same draws (APGDA's one-forward-per-iteration schedule).
Reproducibility: random transforms given by name (``"tableA5"``) use the attack's
generator; random transform objects without a generator of their own are re-bound to it
too (see :func:`bind_generator`).

Metrics (:func:`transform_metrics`): per-transform accuracy / ASR on ``T_j(x_adv)``, ASR_avg
(1 − the mean accuracy over transforms and images) and ASR_gp (fraction of images
misclassified under **all** K transformations). Lift is on ASR_gp.

Shapes: ``x`` ``[B, C, H, W]`` in [0, 1], ``y`` ``[B]`` int64, δ ``[B, C, H, W]``,
weights ``[B, K]``. The model runs in eval mode with frozen parameters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..attacks.base import ModelLike, attack_context
from ..threat import ThreatModel
from ..transforms import Transform, paper_transforms, parse_transform
from .problem import DomainProblem, MinMaxResult, attack_loss, check_attack, check_model, solve

__all__ = [
    "TRANSFORM_HPARAMS",
    "TRANSFORM_METHODS",
    "TransformAttackResult",
    "TransformMetrics",
    "bind_generator",
    "resolve_transforms",
    "transform_attack",
    "transform_domain_losses",
    "transform_metrics",
]

TRANSFORM_METHODS: tuple[str, ...] = ("minmax", "avg")

#: (α, β, γ) per norm for raw-gradient steps. ℓ∞: Table 3 of Wang et al. (2021), printed
#: "α = 2, β = ⟨unreadable⟩, γ = 10" (the OCR lost the fraction bars): α = 1/2, β ≈ 1/50,
#: γ = 10. ℓ2/ℓ1 (not in the paper): the ensemble values' α, β (App. C.2) with γ = 10.
TRANSFORM_HPARAMS: dict[str, tuple[float, float, float]] = {
    "linf": (1 / 2, 1 / 50, 10.0),
    "l2": (1 / 10, 1 / 100, 10.0),
    "l1": (1 / 4, 1 / 100, 10.0),
}

TransformLike = Transform | Callable[[Tensor], Tensor]


def _is_random(t: object) -> bool:
    return bool(getattr(t, "random", False))


def bind_generator(t: TransformLike, generator: torch.Generator | None) -> TransformLike:
    """A copy of transform ``t`` whose random members without a generator of their own draw
    from ``generator`` (recursing into Compose / RandomApply / RandomChoice). Transforms that
    already have a generator, deterministic ones and plain callables are returned as is.
    (Wang et al. 2021, App. C.3, Table A5: makes the stochastic attack reproducible.)
    """
    if generator is None or not isinstance(t, Transform) or not dataclasses.is_dataclass(t):
        return t
    changes: dict[str, object] = {}
    for f in dataclasses.fields(t):
        if not f.init:
            continue
        v = getattr(t, f.name)
        if f.name == "generator" and v is None:
            changes[f.name] = generator
        elif isinstance(v, Transform):
            nv = bind_generator(v, generator)
            if nv is not v:
                changes[f.name] = nv
        elif isinstance(v, tuple) and v and all(isinstance(e, Transform) for e in v):
            nt = tuple(bind_generator(e, generator) for e in v)
            if any(a is not b for a, b in zip(nt, v, strict=True)):
                changes[f.name] = nt
    return dataclasses.replace(t, **changes) if changes else t


def resolve_transforms(
    transforms: str | Sequence[TransformLike | str],
    generator: torch.Generator | None = None,
) -> list[TransformLike]:
    """The K transformation domains (Wang et al. 2021, §2.2 eq. (7)).

    Args:
        transforms: a paper setting name (``"table3"``/``"deterministic"``,
            ``"tableA5"``/``"stochastic"``, ``"tableA6"``/``"rotation"``, see
            :func:`wideberth.transforms.paper_transforms`), or a non-empty list of
            :class:`~wideberth.transforms.Transform` objects, transform names
            (:func:`~wideberth.transforms.parse_transform`) or callables ``[B, C, H, W] ->
            [B, C, H, W]``.
        generator: bound to random transforms that have none (:func:`bind_generator`).

    Returns:
        list of K transforms.
    """
    if isinstance(transforms, str):
        ts: list[TransformLike] = list(paper_transforms(transforms))
    else:
        if isinstance(transforms, Transform) or not isinstance(transforms, Sequence):
            raise ValueError("transforms must be a paper setting name or a list of transforms")
        ts = []
        for t in transforms:
            if isinstance(t, str):
                ts.append(parse_transform(t))
            elif callable(t):
                ts.append(t)
            else:
                raise ValueError(f"every transform must be a Transform, a name or a callable; got {t!r}")
    if not ts:
        raise ValueError("transforms must contain at least one transform")
    return [bind_generator(t, generator) for t in ts]


def transform_domain_losses(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    transforms: Sequence[TransformLike],
    *,
    loss: str = "cw",
    kappa: float = 50.0,
    n_samples: int = 1,
) -> Callable[[Tensor], Tensor]:
    """``δ ↦ F(δ)`` for :func:`~wideberth.minmax.apgda` (Wang et al. 2021, eq. (7)).

    Args:
        model: maps ``[B, C, H, W]`` to logits ``[B, classes]`` (caller: eval mode).
        x: clean images ``[B, C, H, W]``. y: labels ``[B]``.
        transforms: K transforms (differentiable maps of ``[B, C, H, W]``).
        loss, kappa: see :func:`wideberth.minmax.problem.attack_loss`.
        n_samples: fresh draws averaged per random transform per call (deterministic
            transforms are evaluated once).

    Returns:
        a callable ``delta [B, C, H, W] -> [B, K]``, ``F[b, j] = f(model(T_j(clamp(x + δ,
        0, 1))))`` (the clamp is the identity for feasible δ); row b depends only on δ[b]
        when the transforms act per example.
    """

    def fn(delta: Tensor) -> Tensor:
        xa = (x + delta).clamp(0, 1)
        cols = []
        for t in transforms:
            n = n_samples if _is_random(t) else 1
            f = attack_loss(model(t(xa)), y, loss, kappa)
            for _ in range(n - 1):
                f = f + attack_loss(model(t(xa)), y, loss, kappa)
            cols.append(f / n)
        return torch.stack(cols, 1)

    return fn


@dataclass
class TransformAttackResult(MinMaxResult):
    """Output of :func:`transform_attack` (Wang et al. 2021, §2.2 eq. (7)): the min-max
    driver's :class:`~wideberth.minmax.problem.MinMaxResult` (``x_adv``/δ ``[B, C, H, W]``,
    weights ``[B, K]``, uniform for ``"avg"``/EOT, per-transform losses ``[T + 1, B, K]``)
    plus the transforms.

    Attributes:
        transforms: the K transforms used (``labels`` gives their column names).
    """

    transforms: list[TransformLike]

    @property
    def labels(self) -> list[str]:
        """Column names of the domains (the paper's "ori", "flh", …, or ``repr``)."""
        return [getattr(t, "label", "") or repr(t) for t in self.transforms]


def _check_count(name: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be an int >= 1; got {v!r}")
    return v


def transform_attack(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    transforms: str | Sequence[TransformLike | str] = "table3",
    *,
    norm: str | float | ThreatModel = "linf",
    eps: float | Tensor,
    steps: int = 20,
    method: str = "minmax",
    alpha: float | Tensor | None = None,
    beta: float | None = None,
    gamma: float | None = None,
    delta_mode: str = "raw",
    n_samples: int = 1,
    loss: str = "cw",
    kappa: float = 50.0,
    init: str = "zero",
    seed: int = 0,
    generator: torch.Generator | None = None,
    record_delta: bool = False,
    check: bool = True,
    progress: bool | None = None,
) -> TransformAttackResult:
    """Adversarial attack robust over K data transformations by min-max optimisation (Wang
    et al. 2021, *Adversarial attack generation empowered by min-max optimization*, eq. (7));
    ``method="avg"`` is EOT. Norms ℓ∞ (the paper: ε = 0.03, 20 steps), ℓ2, ℓ1.

    Args:
        model: ``nn.Module`` (or callable) mapping ``[B, C, H, W]`` to logits; run under
            :func:`~wideberth.attacks.base.attack_context` (eval mode, frozen).
        x: clean images ``[B, C, H, W]`` in [0, 1]. y: true labels ``[B]``.
        transforms: a paper setting name or a list of transforms (:func:`resolve_transforms`).
        eps: radius (float or ``[B]``). steps: T (20 in the paper).
        method: ``"minmax"`` (APGDA) or ``"avg"`` (EOT, w ≡ 1/K).
        alpha, beta, gamma: ``None`` takes :data:`TRANSFORM_HPARAMS` for the norm.
        delta_mode: ``"raw"`` (paper), ``"sign"`` or ``"normalized"``.
        n_samples: Monte-Carlo draws per random transform per iteration (default 1).
        loss, kappa: ``"cw"`` (κ = 50) or ``"ce"``.
        init: δ(0) (``"zero"`` default; the authors' code uses ``"normal0.1_raw"``).
        seed, generator: randomness of the start **and** of random transforms without a
            generator of their own; with ``generator=None`` a generator seeded with
            ``seed`` is made (so runs are reproducible by default).
        record_delta: also keep δ(0..T).
        check: validate x, y, ε against the model first.
        progress: a bar over the T iterations (:func:`wideberth.progress.progress_bar`):
            None (default) draws it when standard error is a terminal.

    Returns:
        :class:`TransformAttackResult`: ``x_adv``/δ ``[B, C, H, W]``, weights ``[B, K]``,
        trajectories ``[T + 1, B, K]``.

    Raises:
        ValueError: bad shapes, transforms, method, loss, n_samples, or the checks of
        :func:`~wideberth.minmax.apgda`.
    """
    check_model(model)
    check_attack(method, TRANSFORM_METHODS, loss)
    n_samples = _check_count("n_samples", n_samples)
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a [B, C, H, W] tensor; got {shape}")
    if not isinstance(y, Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must be a [B] = [{x.shape[0]}] label tensor")
    gen = generator
    if gen is None:
        gen = torch.Generator(device=x.device)
        gen.manual_seed(int(seed))
    ts = resolve_transforms(transforms, gen)
    xd = x.detach()
    yd = y.to(xd.device)
    problem = DomainProblem(
        models=[model], rows=xd,
        losses=lambda: transform_domain_losses(
            model, xd, yd, ts, loss=loss, kappa=kappa, n_samples=n_samples),
        k=len(ts), defaults=TRANSFORM_HPARAMS, inputs=(x, y),
    )
    res = solve(
        problem, method=method, norm=norm, eps=eps, steps=steps, alpha=alpha, beta=beta,
        gamma=gamma, delta_mode=delta_mode, init=init, generator=gen,
        record_delta=record_delta, check=check, progress=progress,
    )
    return TransformAttackResult(
        **{f.name: getattr(res, f.name) for f in dataclasses.fields(MinMaxResult)}, transforms=ts,
    )


@dataclass
class TransformMetrics:
    """Transformation-attack metrics (Wang et al. 2021, §4.1 Table 3, App. D.3 Tables A5/A6),
    w.r.t. true labels (clean errors count as successes).

    Attributes:
        fooled: ``[B, K]`` bool, image b misclassified under transform j.
        per_transform_acc: ``[K]``, Acc_t (the tables' ori … crop columns, as fractions).
        per_transform_asr: ``[K]``, 1 − Acc_t.
        asr_avg: 1 − mean accuracy over transforms and images.
        asr_gp: fraction of images misclassified under **all** K transforms.
    """

    fooled: Tensor
    per_transform_acc: Tensor
    per_transform_asr: Tensor
    asr_avg: float
    asr_gp: float


def transform_metrics(
    model: ModelLike,
    x_adv: Tensor,
    y: Tensor,
    transforms: str | Sequence[TransformLike | str] = "table3",
    *,
    generator: torch.Generator | None = None,
) -> TransformMetrics:
    """Per-transform Acc/ASR, ASR_avg and ASR_gp of ``x_adv`` ``[B, C, H, W]`` against ``y``
    ``[B]`` (Wang et al. 2021, §4.1; fractions in [0, 1]). A random transform
    is evaluated on one fresh draw (from ``generator`` if it has none of its own). The model
    runs in eval mode under ``attack_context``."""
    check_model(model)
    if not isinstance(x_adv, Tensor) or x_adv.dim() != 4:
        raise ValueError("x_adv must be a [B, C, H, W] tensor")
    if not isinstance(y, Tensor) or y.dim() != 1 or y.shape[0] != x_adv.shape[0] or y.shape[0] == 0:
        raise ValueError("y must be [B] with the same B >= 1 as x_adv")
    ts = resolve_transforms(transforms, generator)
    yy = y.to(x_adv.device)
    with torch.no_grad(), attack_context(model):
        fooled = torch.stack([model(t(x_adv)).argmax(1) != yy for t in ts], 1)
    acc = 1 - fooled.float().mean(0)
    return TransformMetrics(
        fooled=fooled,
        per_transform_acc=acc,
        per_transform_asr=1 - acc,
        asr_avg=float(1 - acc.mean()),
        asr_gp=float(fooled.all(1).float().mean()),
    )
