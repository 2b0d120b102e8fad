"""The one min-max driver behind the ensemble, universal and transformation attacks.

Wang et al. (2021), *Adversarial attack generation empowered by min-max optimization*,
§2.2, eqs. (5)–(7): the robust attacks over K models, over K inputs sharing one
perturbation and over K data transformations are three domains of one problem (12),

    min_{δ ∈ X} max_{w ∈ P}  Σ_i w_i F_i(δ) − (γ/2) ‖w − 1/K‖²,

solved by APGDA (Algorithm 1, :func:`wideberth.minmax.apgda`). They differ only in what a
row and a domain are and in how ``F_i`` is computed; everything else is shared and lives
here:

* :class:`DomainProblem` describes one application: the rows (``[B, ...]``, one δ and one w
  per row), how to build ``δ ↦ F(δ)`` ``[B, K]``, the box of δ, the models to run in eval
  mode, the clean inputs to validate, the per-norm default (α, β, γ) and the adversarial
  inputs ``x + δ``;
* :func:`check_attack` (with :func:`check_model` / :func:`check_models`) is the one
  validation path of method, attack loss and fixed weights;
* :func:`step_parameters` is the one choice of (α, β, γ);
* :func:`solve` makes the one call into :func:`apgda` and returns the one result type
  :class:`MinMaxResult`: the adversarial inputs, δ, the domain weights and the trajectories
  of the weights and of the per-domain losses.

Baselines (Wang et al. 2021, §4.1, App. D.2): ``"minmax"`` learns the weights; every other
method keeps them fixed (``update_w=False``): at the given ``weights`` for ``"fixed"``
(Table A4's ``w_prior``, ``w_static``, …), at the uniform 1/K otherwise (the average loss:
ensemble PGD, EOT, the universal average baseline). Every method thus runs the same routine
with the same α, T, start, step rule and projection, as the authors' code does
(``fixed_w=True``), so a comparison isolates the weights.

The attack loss ``f`` shared by the three applications is :func:`attack_loss`, the minimised
C&W margin with confidence κ = 50 or −CE (App. C.2).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import Tensor

from ..attacks.base import ModelLike, attack_context, prepare
from ..losses import ce, cw_loss
from ..threat import ThreatModel, normalize_norm
from .descent_ascent import APGDAResult, DomainLosses, apgda
from .simplex import on_simplex

__all__ = [
    "ATTACK_LOSSES",
    "DomainProblem",
    "MinMaxResult",
    "attack_loss",
    "check_attack",
    "check_model",
    "check_models",
    "solve",
    "step_parameters",
]

#: Attack losses ``f`` of the applications (Wang et al. 2021, App. C.2): the C&W margin
#: with confidence κ, or cross-entropy.
ATTACK_LOSSES: tuple[str, ...] = ("cw", "ce")

#: Per-norm default (α, β, γ) of one application, keyed by canonical norm name.
StepDefaults = Mapping[str, tuple[float, float, float]]


def attack_loss(logits: Tensor, y: Tensor, loss: str = "cw", kappa: float = 50.0) -> Tensor:
    """Per-example attack loss to **minimise** (Wang et al. 2021, §2.2, App. C.2).

    ``"cw"``: ``relu(Z_y − max_{j≠y} Z_j + κ)`` = ``κ − cw_loss(logits, y, kappa=κ)``
    (κ = 50 in the paper; the paper's ``max{Z_y − max_{j≠y} Z_j, −κ}`` plus the constant κ,
    the authors' code form: identical δ-gradients and w-updates); ``"ce"``:
    ``−CE(logits, y)``. Shapes: logits ``[B, C]``, y ``[B]`` -> ``[B]``.
    """
    if loss == "cw":
        return kappa - cw_loss(logits, y, kappa=kappa)
    if loss == "ce":
        return -ce(logits, y)
    raise ValueError(f"loss must be 'cw' or 'ce'; got {loss!r}")


def check_model(model: object) -> None:
    """Raise ``ValueError`` unless ``model`` is callable (an ``nn.Module`` or a function)."""
    if not callable(model):
        raise ValueError(f"model must be callable; got {type(model).__name__}")


def check_models(models: Sequence[ModelLike]) -> list[ModelLike]:
    """``models`` as a list after checking it is a non-empty sequence of callables (not one
    ``nn.Module``); ``ValueError`` otherwise."""
    if isinstance(models, torch.nn.Module) or not isinstance(models, Sequence):
        raise ValueError("models must be a list of models (nn.Module or callables)")
    ms = list(models)
    if len(ms) == 0:
        raise ValueError("models must contain at least one model")
    for m in ms:
        if not callable(m):
            raise ValueError(f"every model must be callable; got {type(m).__name__}")
    return ms


def check_attack(
    method: str,
    methods: Sequence[str],
    loss: str,
    weights: object | None = None,
) -> None:
    """The validation shared by the min-max attacks: ``method`` one of ``methods``, ``loss``
    one of :data:`ATTACK_LOSSES`, and ``weights`` given exactly for ``method="fixed"``.
    Raises ``ValueError``."""
    if method not in methods:
        raise ValueError(f"method must be one of {', '.join(methods)}; got {method!r}")
    if loss not in ATTACK_LOSSES:
        raise ValueError(f"loss must be 'cw' or 'ce'; got {loss!r}")
    if (weights is not None) != (method == "fixed"):
        raise ValueError("weights are required for method='fixed' and only allowed there")


def step_parameters(
    defaults: StepDefaults,
    norm: str,
    alpha: float | Tensor | None,
    beta: float | None,
    gamma: float | None,
) -> tuple[float | Tensor, float, float]:
    """``(α, β, γ)``: the given values, each ``None`` replaced by an application's default
    for the canonical ``norm`` (``defaults[norm]``)."""
    a0, b0, g0 = defaults[norm]
    return (a0 if alpha is None else alpha, b0 if beta is None else beta,
            g0 if gamma is None else gamma)


def _fixed_weights(weights: Sequence[float] | Tensor, k: int, like: Tensor) -> Tensor:
    w0 = torch.as_tensor(weights, dtype=like.dtype, device=like.device)
    if w0.shape[-1] != k or w0.dim() not in (1, 2):
        raise ValueError(f"weights must have shape [K] = [{k}] or [B, K]; got {list(w0.shape)}")
    if not bool(on_simplex(w0).all()):
        raise ValueError("weights must lie on the probability simplex (>= 0, summing to 1)")
    return w0


@dataclass(frozen=True)
class DomainProblem:
    """One application of the min-max attack (Wang et al. 2021, §2.2): B rows × K domains.

    Attributes:
        models: the models the losses run; each is held under
            :func:`~wideberth.attacks.base.attack_context` (eval mode, frozen) while
            ``losses`` is built and the attack runs.
        rows: ``[B, ...]``: δ's shape, dtype and device (one δ[b] and one w[b] per row).
        losses: builds ``δ ↦ F(δ)`` ``[B, K]`` (attack losses to minimise, row b depending
            only on δ[b]); called once, inside the models' ``attack_context``.
        k: the number of domains K (to check fixed weights against).
        defaults: (α, β, γ) per canonical norm name, used where the caller gives ``None``.
        inputs: the clean examples and labels ``(x [N, ...], y [N])`` checked against every
            model by :func:`solve` when ``check=True``.
        check_eps: also check ε against ``inputs`` (False where ε is per row and the rows
            are not the inputs, e.g. per group).
        lo, hi: the box of δ ``[B, ...]`` (default ``[−rows, 1 − rows]``).
        weights: the fixed weights ``[K]`` or ``[B, K]`` of ``method="fixed"``.
        single_domain: the losses combine the K outputs into one domain (the ensemble's
            averaged-output baselines): the result then reports no weights.
        x_adv: δ(T) ``[B, ...]`` -> the adversarial inputs (default
            ``clamp(rows + δ, 0, 1)``).
    """

    models: Sequence[ModelLike]
    rows: Tensor
    losses: Callable[[], DomainLosses]
    k: int
    defaults: StepDefaults
    inputs: tuple[Tensor, Tensor]
    check_eps: bool = True
    lo: Tensor | None = None
    hi: Tensor | None = None
    weights: Sequence[float] | Tensor | None = None
    single_domain: bool = False
    x_adv: Callable[[Tensor], Tensor] | None = None


@dataclass
class MinMaxResult:
    """Output of the min-max attacks (Wang et al. 2021, §2.2, Algorithm 1), from :func:`solve`.

    Attributes:
        x_adv: the adversarial inputs from the last iterate δ(T) (``[B, C, H, W]`` for the
            ensemble and transformation attacks, ``[G, K, C, H, W]`` for a universal
            perturbation), in [0, 1] and within ε.
        delta: δ(T), ``[B, ...]`` (one per row: image or group).
        w: final domain weights ``[B, K]`` (learned for ``"minmax"``, the fixed or uniform
            ones otherwise; ``None`` for a single combined domain).
        w_trajectory: ``[T + 1, B, K]``: w(0..T), or None (as ``w``).
        loss_trajectory: the per-domain losses φ(t) = F(δ(t)), ``[T + 1, B, K]``
            (``[T + 1, B, 1]`` for a single combined domain).
        delta_trajectory: ``[T + 1, B, ...]`` δ(0..T) if ``record_delta``, else None.
        method: the method that produced it.
        core: the raw :class:`~wideberth.minmax.APGDAResult`.
    """

    x_adv: Tensor
    delta: Tensor
    w: Tensor | None
    w_trajectory: Tensor | None
    loss_trajectory: Tensor
    delta_trajectory: Tensor | None
    method: str
    core: APGDAResult


def solve(
    problem: DomainProblem,
    *,
    method: str,
    norm: str | float | ThreatModel,
    eps: float | Tensor,
    steps: int,
    alpha: float | Tensor | None,
    beta: float | None,
    gamma: float | None,
    delta_mode: str = "raw",
    init: str = "zero",
    seed: int = 0,
    generator: torch.Generator | None = None,
    record_delta: bool = False,
    check: bool = True,
    progress: bool | None = None,
) -> MinMaxResult:
    """Run one min-max attack problem with APGDA (Wang et al. 2021, Algorithm 1).

    Validates ``problem.inputs`` against every model (``check``; all must output the same
    number of classes), fills in (α, β, γ) from ``problem.defaults``, validates the fixed
    weights, builds the losses and calls :func:`~wideberth.minmax.apgda` once with the models
    in eval mode: learned weights for ``method="minmax"``, fixed ones (``problem.weights``
    or uniform) for every other method. ``method`` itself is validated by the application
    (:func:`check_attack`); the other arguments are :func:`apgda`'s (``progress``: its
    bar, labelled with ``method``).

    Returns:
        :class:`MinMaxResult`: ``x_adv``, δ ``[B, ...]``, weights ``[B, K]`` and the
        trajectories ``[T + 1, B, K]``.

    Raises:
        ValueError: inputs the models reject, bad weights, or :func:`apgda`'s checks.
    """
    ms = list(problem.models)
    if check:
        x, y = problem.inputs
        ncls = {prepare(m, x, y, eps if problem.check_eps else None, norm)[1] for m in ms}
        if len(ncls) != 1:
            raise ValueError(f"all models must output the same number of classes; got {sorted(ncls)}")
    alpha, beta, gamma = step_parameters(problem.defaults, normalize_norm(norm), alpha, beta, gamma)
    rows = problem.rows
    w0 = None if problem.weights is None else _fixed_weights(problem.weights, problem.k, rows)
    with ExitStack() as stack:
        for m in ms:
            stack.enter_context(attack_context(m))
        res = apgda(
            problem.losses(), rows, norm=norm, eps=eps, steps=steps, alpha=alpha, beta=beta,
            gamma=gamma, delta_mode=delta_mode, w0=w0, update_w=method == "minmax", init=init,
            seed=seed, generator=generator, lo=problem.lo, hi=problem.hi,
            record_delta=record_delta, progress=progress, progress_desc=f"APGDA {method}",
        )
    x_adv = (rows + res.delta).clamp(0, 1) if problem.x_adv is None else problem.x_adv(res.delta)
    single = problem.single_domain
    return MinMaxResult(
        x_adv=x_adv.detach(),
        delta=res.delta,
        w=None if single else res.w,
        w_trajectory=None if single else res.w_trajectory,
        loss_trajectory=res.loss_trajectory,
        delta_trajectory=res.delta_trajectory,
        method=method,
        core=res,
    )
