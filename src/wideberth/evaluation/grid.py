"""One batch over the ε grid: every attack of a suite at every ε, outputs re-verified.

The engine of :func:`wideberth.evaluate` (its docstring defines the reuse modes). Every
adversarial example, whoever made it (a registered attack or an external one,
:mod:`wideberth.evaluation.external`), counts only when it lies in its ε-ball and the [0, 1]
box (:meth:`wideberth.threat.ThreatModel.contains`, relative tolerance
:data:`~wideberth.threat.FEASIBILITY_RTOL`) and a fresh forward pass misclassifies it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..threat import FEASIBILITY_RTOL, ThreatModel
from .suites import AttackSpec, attack_seed

__all__ = ["BatchResult", "attack_batch"]


@dataclass
class BatchResult:
    """The outcome of one batch: ``first_broken`` [B] (CPU int64; k = never, −1 = clean
    error), ``breaker`` [B] (index of the attack that broke it, −1 none) and
    ``violations`` ``{attack name: infeasible misclassified outputs of a fixed-ε attack}``."""

    first_broken: Tensor
    breaker: Tensor
    violations: dict[str, int] = field(default_factory=dict)


def attack_batch(
    model: nn.Module,
    xb: Tensor,
    yb: Tensor,
    correct: Tensor,
    specs: Sequence[AttackSpec],
    threat: ThreatModel,
    eps_sorted: Sequence[float],
    seed: int,
    reuse: str,
    batch: int = 0,
) -> BatchResult:
    """Run the suite over the grid on one batch ``xb`` [B, C, H, W], ``yb`` [B];
    ``correct`` [B] bool: clean prediction right; ``batch``: the batch index (seeds of
    external attacks)."""
    k = len(eps_sorted)
    fb = torch.where(correct.cpu(), k, -1)
    bb = torch.full_like(fb, -1)
    violations: dict[str, int] = {}
    adv_norm = torch.full((xb.shape[0],), float("inf"), device=xb.device, dtype=xb.dtype)

    def attack(rows: Tensor, i: int) -> Tensor:
        """Run the suite at ε_i on ``rows`` (each attack on the rows still unbroken);
        returns the rows it broke."""
        eps = eps_sorted[i]
        todo, broke = rows, []
        for a, spec in enumerate(specs):
            if todo.numel() == 0:
                break
            xt, yt = xb[todo], yb[todo]
            x_adv = spec.run(model, xt, yt, norm=threat.name, eps=eps, seed=attack_seed(seed, a),
                             batch=batch, eps_index=i)
            with torch.no_grad():
                wrong = model(x_adv).argmax(1) != yt
            d = threat.norm(x_adv - xt)
            feasible = threat.contains(xt, x_adv, eps, distance=d) & torch.isfinite(d)
            bad = int((wrong & ~feasible).sum())
            if bad and spec.strict_budget:
                violations[spec.name] = violations.get(spec.name, 0) + bad
            ok = wrong & feasible
            hit = todo[ok]
            fb[hit.cpu()] = i
            bb[hit.cpu()] = a
            adv_norm[hit] = d[ok]
            broke.append(hit)
            todo = todo[~ok]
        return torch.cat(broke) if broke else rows[:0]

    if reuse == "up":  # increasing ε: only points robust so far are attacked
        robust = correct.clone()
        for i in range(k):
            rows = robust.nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            robust[attack(rows, i)] = False
        return BatchResult(fb, bb, violations)
    # "both", decreasing ε: only points broken at every larger ε are attacked again; an
    # adversarial example found at a larger ε whose norm is within ε_i breaks it at ε_i
    # too (reused); a point robust at ε_i is taken as robust at every smaller ε
    active = correct.clone()
    for i in reversed(range(k)):
        reused = active & (adv_norm <= eps_sorted[i] * (1 + FEASIBILITY_RTOL))
        fb[reused.cpu()] = i
        rows = (active & ~reused).nonzero().squeeze(1)
        still = torch.zeros_like(active)
        if rows.numel():
            still[attack(rows, i)] = True
        active = reused | still
        if not bool(active.any()):
            break
    return BatchResult(fb, bb, violations)
