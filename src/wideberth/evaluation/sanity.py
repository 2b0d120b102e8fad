"""Checks that catch a weak evaluation (gradient masking, broken attacks, a misused model).

A robust-accuracy number is only as good as the attacks behind it. These checks run on a
small subset after :func:`wideberth.evaluate` and return human-readable flags (empty when
nothing is suspicious), following the warning signs of Athalye, Carlini & Wagner (ICML
2018), Carlini et al. "On evaluating adversarial robustness" (2019) and AutoAttack's
reports (Croce & Hein, ICML 2020):

* :func:`unbounded_attack_check`: at a radius that covers the whole [0, 1] box any image
  can be reached, so a working white-box attack drives accuracy to (nearly) zero; a model
  that stays accurate there is masking its gradients (or the attack is broken);
* :func:`zero_gradient_check`: examples whose input gradient of the cross-entropy is
  exactly zero (saturated softmax, non-differentiable layers) give gradient attacks no
  direction;
* :func:`black_box_check`: a small score-based attack (Square) that breaks a point the
  white-box suite could not break means the white-box suite was misled;
* :func:`monotonicity_check`: robust accuracy must not increase with ε (flags results
  assembled from independent runs; :func:`wideberth.evaluate` is monotone by construction).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attacks import attack_context, pgd, square

__all__ = [
    "unbounded_radius",
    "unbounded_attack_check",
    "zero_gradient_check",
    "black_box_check",
    "monotonicity_check",
]

UNBOUNDED_ACC_MAX = 0.10  # accuracy above this at an unbounded radius is flagged
ZERO_GRAD_FRAC_MAX = 0.01


def unbounded_radius(norm: str, image_shape: Sequence[int]) -> float:
    """A radius whose ball contains the whole box [0, 1]^D around any x: 1 (ℓ∞), √D (ℓ2),
    D (ℓ1)."""
    d = math.prod(image_shape)
    return {"linf": 1.0, "l2": math.sqrt(d), "l1": float(d)}[norm]


def unbounded_attack_check(
    model: nn.Module, x: Tensor, y: Tensor, norm: str, steps: int = 50, seed: int = 0
) -> list[str]:
    """PGD (CE then CW loss, ``steps`` each) at :func:`unbounded_radius`; flags an accuracy
    above 10 %. Shapes: x [B, C, H, W] in [0, 1], y [B]."""
    eps = unbounded_radius(norm, tuple(x.shape[1:]))
    robust = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    for loss, kw in (("ce", None), ("cw", {"form": "advertorch"})):
        rows = robust.nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        x_adv = pgd(model, x[rows], y[rows], norm=norm, eps=eps, steps=steps, loss=loss,
                    loss_kwargs=kw, seed=seed, check=False)
        with torch.no_grad(), attack_context(model):
            robust[rows] = model(x_adv).argmax(1) == y[rows]
    acc = float(robust.double().mean())
    if acc > UNBOUNDED_ACC_MAX:
        return [f"accuracy stays {acc:.1%} under PGD at an unbounded radius (ε = {eps:g} {norm}, "
                "which reaches every image): possible gradient masking or a broken attack"]
    return []


def zero_gradient_check(model: nn.Module, x: Tensor, y: Tensor) -> list[str]:
    """Flags when more than 1 % of the correctly classified examples have an exactly zero
    input gradient of the cross-entropy. Shapes: x [B, ...], y [B]."""
    with attack_context(model), torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        logits = model(xg)
        (g,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), xg)
    correct = logits.detach().argmax(1) == y
    if not bool(correct.any()):
        return []
    zero = (g.flatten(1) == 0).all(1) & correct
    frac = float(zero.sum()) / float(correct.sum())
    if frac > ZERO_GRAD_FRAC_MAX:
        return [f"{frac:.1%} of the correctly classified examples have an exactly zero input "
                "gradient of the cross-entropy (saturated softmax or non-differentiable layers): "
                "gradient attacks get no direction there; margin losses (CW, DLR) or a "
                "black-box attack may do better"]
    return []


def black_box_check(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    norm: str,
    eps: float,
    robust_whitebox: Tensor,
    n_queries: int = 1000,
    seed: int = 0,
    attack: Callable[..., Tensor] | None = None,
) -> list[str]:
    """Square (score-based, no gradients) on the points the white-box suite left robust at
    ``eps``; flags any point it breaks. ``robust_whitebox``: [B] bool. ``attack`` defaults
    to :func:`wideberth.attacks.square` (ℓ∞ and ℓ2); other norms are skipped."""
    if attack is None:
        if norm not in ("linf", "l2"):
            return []
        attack = square
    rows = robust_whitebox.nonzero().squeeze(1)
    if rows.numel() == 0:
        return []
    x_adv = attack(model, x[rows], y[rows], norm=norm, eps=eps, n_queries=n_queries, seed=seed,
                   check=False)
    with torch.no_grad(), attack_context(model):
        broke = int((model(x_adv).argmax(1) != y[rows]).sum())
    if broke:
        return [f"a black-box attack (Square, {n_queries} queries) broke {broke} of the "
                f"{rows.numel()} checked points the white-box suite left robust at ε = {eps:g}: "
                "the white-box evaluation is misled (gradient masking?) and overstates robustness"]
    return []


def monotonicity_check(robust_accuracy: dict[str, float]) -> list[str]:
    """Flags robust accuracy that increases with ε (keys are ε's as strings)."""
    items = sorted((float(k), v) for k, v in robust_accuracy.items())
    ups = [(a, b) for (a, ra), (b, rb) in pairwise(items) if rb > ra + 1e-12]
    if ups:
        where = ", ".join(f"{a:g} → {b:g}" for a, b in ups)
        return [f"robust accuracy increases with ε ({where}): the attacks at the larger ε are "
                "weaker than at the smaller one (too few steps or restarts, or masking)"]
    return []
