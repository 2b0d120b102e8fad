"""Robustness metrics for AT over several perturbation types (Wang et al. 2021, *Adversarial
attack generation empowered by min-max optimization*, §2.3, §4.2, Table 4 / A8, Fig. 3b).

* ``Acc-ℓp``: accuracy on the outputs of a PGD attack in the ℓp ball of radius ε_p ∩ [0, 1]
  (:func:`wideberth.attacks.pgd`; default 20 steps, step 2.5·ε/steps, best iterate).
* ``Acc^max_adv``: the fraction of examples classified correctly under **every** norm's
  attack (the per-example worst case, not ``min_p Acc-ℓp``: §4.2 "robust to both"); δ = 0 lies in every
  ball, so an example must also be clean-correct.
* ``Acc^avg_adv``: the mean of the ``Acc-ℓp`` (Table 4: of ℓ∞ and ℓ2; Table A7 also averages
  an ``Acc-uni`` column, pass it through ``extra``).
* ``S``: the area under the curve of ``Acc^max_adv`` versus ε_ℓ2 at a fixed ε_ℓ∞ (Fig. 3b,
  "overall worst-case robustness"). The paper gives neither the grid nor the rule:
  here the **trapezoidal rule** over a given grid (default 0.5, 1.0, …, 3.0, Table A8's
  ε_ℓ2 values); ``normalize=True`` divides by the grid's width (a mean accuracy in [0, 1]).

Accuracies are fractions in [0, 1]. Shapes: x ``[N, C, H, W]`` in [0, 1], y ``[N]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..attacks.base import attack_context
from ..attacks.projected_gradient import pgd
from ..threat import normalize_norm

__all__ = [
    "MultiNormMetrics",
    "DEFAULT_L2_GRID",
    "combine_correct",
    "multi_norm_metrics",
    "robust_correct",
    "trapezoid_area",
    "worst_case_auc",
]

#: ε_ℓ2 grid of Table A8 (MNIST), the default for :func:`worst_case_auc`.
DEFAULT_L2_GRID: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)

ModelLike = nn.Module | Callable[[Tensor], Tensor]


@dataclass
class MultiNormMetrics:
    """Clean accuracy, ``Acc-ℓp`` per norm (``per_norm``, keyed by norm name or the given
    key), ``max_adv`` (correct under all attacks), ``avg_adv`` (mean of ``per_norm``) and the
    per-example correctness masks ``correct`` ``{key: [N] bool}`` (with ``"clean"``)."""

    clean: float
    per_norm: dict[str, float]
    max_adv: float
    avg_adv: float
    correct: dict[str, Tensor] = field(repr=False, default_factory=dict)


def combine_correct(clean: Tensor, correct: Mapping[str, Tensor]) -> MultiNormMetrics:
    """Aggregate per-example correctness masks into the metrics of Table 4.

    Args:
        clean: ``[N]`` bool, clean-correct.
        correct: ``{name: [N] bool}``, correct under each attack (ℓ∞, ℓ2, …, uni).

    Returns:
        :class:`MultiNormMetrics`: ``max_adv = mean(clean ∧ ⋀_p correct_p)``,
        ``avg_adv = mean_p Acc_p``.
    """
    if not correct:
        raise ValueError("combine_correct needs at least one attack's correctness mask")
    clean = clean.detach().bool().reshape(-1)
    masks = {k: v.detach().bool().reshape(-1) for k, v in correct.items()}
    for k, v in masks.items():
        if v.shape != clean.shape:
            raise ValueError(f"mask {k!r} has {v.numel()} entries, clean has {clean.numel()}")
    per = {k: float(v.float().mean()) for k, v in masks.items()}
    all_ok = clean.clone()
    for v in masks.values():
        all_ok &= v
    return MultiNormMetrics(
        clean=float(clean.float().mean()),
        per_norm=per,
        max_adv=float(all_ok.float().mean()),
        avg_adv=sum(per.values()) / len(per),
        correct={"clean": clean, **masks},
    )


def _predict(model: ModelLike, x: Tensor, batch_size: int) -> Tensor:
    with attack_context(model) as m, torch.no_grad():
        return torch.cat([m(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def robust_correct(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    norm: str,
    eps: float,
    steps: int = 20,
    step_size: float | None = None,
    restarts: int = 1,
    loss: str = "ce",
    seed: int = 0,
    batch_size: int = 500,
) -> Tensor:
    """``[N]`` bool: is each example classified correctly on the output of a PGD attack
    (:func:`wideberth.attacks.pgd`, best iterate, eval mode) in the ``norm`` ball of radius
    ``eps`` ∩ [0, 1]? ``eps = 0`` is clean accuracy."""
    out = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        if eps == 0 or steps == 0:
            xa = xb
        else:
            xa = pgd(model, xb, yb, norm=norm, eps=eps, steps=steps, step_size=step_size,
                     restarts=restarts, loss=loss, seed=seed)
        out.append(_predict(model, xa, batch_size) == yb)
    return torch.cat(out)


def multi_norm_metrics(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    eps: Mapping[str, float] | Sequence[tuple[str, float]],
    *,
    steps: int = 20,
    restarts: int = 1,
    loss: str = "ce",
    seed: int = 0,
    batch_size: int = 500,
    extra: Mapping[str, Tensor] | None = None,
) -> MultiNormMetrics:
    """Acc, Acc-ℓp per norm, Acc^max_adv and Acc^avg_adv (Wang et al., Table 4) with our PGD.

    Args:
        model: classifier ``[N, C, H, W] -> [N, classes]`` (attacked in eval mode).
        x, y: ``[N, ...]`` in [0, 1] and ``[N]``.
        eps: ``{norm: ε}`` or pairs (e.g. ``{"linf": 0.2, "l2": 2.0}``); keys are the
            canonical norm names.
        steps, restarts, loss, seed: of each PGD attack (step 2.5·ε/steps).
        extra: further correctness masks ``{name: [N] bool}`` to include (e.g. ``uni``).

    Returns:
        :class:`MultiNormMetrics` (fractions in [0, 1]).
    """
    pairs = list(eps.items()) if isinstance(eps, Mapping) else list(eps)
    clean = _predict(model, x, batch_size) == y
    masks: dict[str, Tensor] = {}
    for norm, e in pairs:
        key = normalize_norm(norm)
        masks[key] = robust_correct(model, x, y, norm=key, eps=float(e), steps=steps,
                                    restarts=restarts, loss=loss, seed=seed,
                                    batch_size=batch_size)
    if extra:
        masks.update({k: v.to(clean.device) for k, v in extra.items()})
    return combine_correct(clean, masks)


def trapezoid_area(xs: Sequence[float], ys: Sequence[float], normalize: bool = False) -> float:
    """Trapezoidal area under the points ``(xs, ys)`` (xs strictly increasing, ≥ 2 points);
    ``normalize`` divides by ``xs[-1] − xs[0]``."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError("trapezoid_area needs >= 2 points and as many ys as xs")
    if any(b <= a for a, b in zip(xs, xs[1:], strict=False)):
        raise ValueError(f"xs must be strictly increasing; got {list(xs)}")
    area = sum((b - a) * (ya + yb) / 2 for a, b, ya, yb in
               zip(xs, xs[1:], ys, ys[1:], strict=False))
    return area / (xs[-1] - xs[0]) if normalize else area


def worst_case_auc(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    eps_linf: float,
    eps_l2_grid: Sequence[float] = DEFAULT_L2_GRID,
    normalize: bool = False,
    steps: int = 20,
    seed: int = 0,
    batch_size: int = 500,
) -> tuple[float, list[float]]:
    """The S metric (Wang et al., Fig. 3b): area under Acc^max_adv versus ε_ℓ2 at fixed ε_ℓ∞.

    Runs the ℓ∞ attack once and one ℓ2 attack per grid point; Acc^max_adv(ε_ℓ2) is the
    fraction correct under both. Returns ``(S, [Acc^max_adv at each grid point])``, S by the
    trapezoidal rule (:func:`trapezoid_area`)."""
    grid = [float(e) for e in eps_l2_grid]
    clean = _predict(model, x, batch_size) == y
    inf_ok = robust_correct(model, x, y, norm="linf", eps=eps_linf, steps=steps, seed=seed,
                            batch_size=batch_size)
    accs = []
    for e in grid:
        l2_ok = robust_correct(model, x, y, norm="l2", eps=e, steps=steps, seed=seed,
                               batch_size=batch_size)
        accs.append(float((clean & inf_ok & l2_ok).float().mean()))
    return trapezoid_area(grid, accs, normalize=normalize), accs
