"""What the minimal-norm attacks share: their result type and how a result is assembled.

A minimal-norm attack does not take a budget ε; it searches, per example, for the smallest
perturbation that changes the prediction,

    d(x, y) = min_δ ‖δ‖  s.t.  LM(x + δ, y) = max_{j≠y} f_j(x + δ) − f_y(x + δ) ≥ 0,
              x + δ ∈ [0, 1]^D,

the input-space margin of Ding et al., *MMA Training*, ICLR 2020, §2, Eqs. (1)–(2) (ties
count as misclassified, as there). Every attack of this kind returns an *upper bound* of d:
a verified adversarial input and its distance, as a :class:`MinimalNormResult`
``(x_adv, distance, found)``:

- examples that are already misclassified get ``x_adv = x``, ``distance = 0`` and
  ``found = True`` and are not attacked (:func:`split_misclassified`);
- examples for which no adversarial input was found get ``x_adv = x``,
  ``distance = +inf`` and ``found = False``;
- before returning, every candidate is re-verified with one forward pass of the whole
  returned batch (:func:`assemble_result`); a candidate that is not misclassified there
  (possible only within float rounding of the decision boundary) is dropped and reported
  as not found, so ``found`` always implies ``LM(x_adv, y) >= 0``.

Implementations: :func:`wideberth.attacks.cw_l2` (Carlini & Wagner 2017),
:func:`wideberth.attacks.fmn` (Pintor et al. 2021) and the repeated AN-PGD margin search
:func:`wideberth.attacks.anpgd_margin` (Ding et al. 2020); the registry
(:mod:`wideberth.attacks.registry`) lists them as kind ``"minimal-norm"``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..losses import logit_margin
from ..threat import ThreatModel
from .base import ModelLike, batch_view

__all__ = [
    "MinimalNormResult",
    "assemble_result",
    "check_positive",
    "empty_result",
    "split_misclassified",
]

log = logging.getLogger(__name__)


@dataclass
class MinimalNormResult:
    """Outcome of a minimal-norm attack, one entry per example.

    Attributes:
        x_adv: ``[B, ...]`` the smallest adversarial input found; ``x`` itself where none
            was found or where ``x`` was already misclassified.
        distance: ``[B]`` ``‖x_adv − x‖`` in the attack's norm; ``0`` where ``x`` was
            already misclassified; ``+inf`` where no adversarial input was found.
        found: ``[B]`` bool, True where ``x_adv`` is misclassified (including the already
            misclassified examples, with ``x_adv = x``).
    """

    x_adv: Tensor
    distance: Tensor
    found: Tensor


def check_positive(value: float, name: str, allow_zero: bool = False) -> None:
    """``ValueError`` unless ``value`` is finite and ``> 0`` (``>= 0`` with ``allow_zero``)."""
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(
            f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite; got {value!r}"
        )


def split_misclassified(model: ModelLike, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """``(idx, mis)``: indices [n] of the examples to attack (correctly classified,
    ``LM(x, y) < 0``) and the misclassified mask [B] (``LM >= 0``, ties count as wrong)."""
    with torch.no_grad():
        lm = logit_margin(model(x), y)
    mis = lm >= 0
    return torch.nonzero(~mis).squeeze(1), mis


def assemble_result(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    idx: Tensor,
    mis: Tensor,
    adv_sub: Tensor,
    found_sub: Tensor,
    attack: str,
) -> MinimalNormResult:
    """Scatter the attacked sub-batch (``adv_sub`` [n, ...], ``found_sub`` [n] at rows
    ``idx``) back into the batch x [B, ...], re-verify candidates with one forward pass,
    compute the distances in ``threat``'s norm. ``attack`` names the attack in the log."""
    x_adv = x.detach().clone()
    found = mis.clone()
    if idx.numel() > 0:
        x_adv[idx] = torch.where(batch_view(found_sub, adv_sub), adv_sub, x[idx].detach())
        found[idx] = found_sub
        attacked = torch.zeros_like(mis)
        attacked[idx] = True
        with torch.no_grad():
            ok = logit_margin(model(x_adv), y) >= 0
        bad = found & attacked & ~ok
        if bool(bad.any()):
            log.warning(
                "%s: %d candidate(s) failed re-verification (within rounding of the decision "
                "boundary); reported as not found",
                attack,
                int(bad.sum()),
            )
            x_adv = torch.where(batch_view(bad, x), x.detach(), x_adv)
            found = found & ~bad
    distance = threat.norm(x_adv - x.detach())
    distance = torch.where(found, distance, torch.full_like(distance, math.inf))
    distance = torch.where(mis, torch.zeros_like(distance), distance)
    return MinimalNormResult(x_adv=x_adv, distance=distance, found=found)


def empty_result(x: Tensor) -> MinimalNormResult:
    """The result for an empty batch x [0, ...]."""
    return MinimalNormResult(
        x_adv=x.detach().clone(),
        distance=x.new_zeros((0,)),
        found=torch.zeros((0,), dtype=torch.bool, device=x.device),
    )
