"""Per-example input-space margins: distance to the decision boundary, and their statistics.

The margin of a correctly classified example (Ding et al., *MMA Training*, ICLR 2020, §2,
Eqs. (1)–(2)) is

    d(x, y) = min_δ ‖δ‖  s.t.  LM(x + δ, y) = max_{j≠y} f_j − f_y ≥ 0   (ties count as wrong),

and ``0`` for a misclassified one. Estimators:

- :func:`estimate_margin` / :func:`estimate_margin_result` – attack-based **upper bounds**
  (every returned distance belongs to a verified misclassified point in [0, 1]), by any
  minimal-norm attack of the registry (:func:`margin_methods`): ``"fmn"`` (Fast
  Minimum-Norm, Pintor et al., NeurIPS 2021; also ``"auto"``), ``"cw-l2"`` (Carlini–Wagner
  ℓ2, the MMA paper's Tables 2–3; ``"cw"`` accepted) or ``"anpgd"`` (repeated AN-PGD with a
  logit-margin bisection, :func:`~wideberth.attacks.mma_margins.anpgd_margin`).
- :func:`~wideberth.attacks.lipschitz_margin.gradient_margin_bound` – Wu & Yu's sampled
  Lipschitz **lower-bound estimate** (2019, §5.1 Eq. (16)), exact for linear models.
- :func:`~wideberth.attacks.margin_statistics.margin_stats` – mean, quartiles, fraction
  below thresholds, counts (MMA Tables 2–3 count misclassified examples as 0).

All estimators run the model in eval mode (:func:`~wideberth.attacks.base.attack_context`)
and restore every submodule's mode and every parameter's ``requires_grad`` and ``.grad``;
inputs are never modified in place; devices come from ``x``; every example's result is
independent of the rest of its batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..threat import ThreatModel
from .base import ModelLike, threat_for
from .lipschitz_margin import gradient_margin_bound
from .margin_statistics import margin_stats
from .mma_margins import default_eps_max
from .registry import ATTACKS, attack_names, get_attack

__all__ = [
    "MarginResult",
    "default_eps_max",
    "estimate_margin",
    "estimate_margin_result",
    "gradient_margin_bound",
    "margin_methods",
    "margin_stats",
]

#: a margin method: ``"auto"`` or a minimal-norm attack of the registry (or its alias)
Method = str

#: what ``method="auto"`` means
AUTO_METHOD = "fmn"


@dataclass
class MarginResult:
    """Per-example margin estimates (``B`` examples).

    Attributes:
        distance: ``[B]`` ``‖x_adv − x‖`` of a verified misclassified ``x_adv`` (an upper
            bound of the margin); ``0`` where ``x`` is already misclassified (``LM ≥ 0``);
            ``+inf`` where no misclassified point was found.
        found: ``[B]`` bool, True where ``distance`` is finite.
        x_adv: ``[B, ...]`` the misclassified point (``x`` where misclassified or not found).
        method: the estimator that produced the numbers, as asked for (``"auto"`` reads
            ``"fmn"``): ``"fmn"``, ``"anpgd"``, ``"cw-l2"`` or ``"cw"`` …
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
    """

    distance: Tensor
    found: Tensor
    x_adv: Tensor
    method: str
    norm: str


def margin_methods() -> tuple[str, ...]:
    """The accepted ``method`` values: ``"auto"``, then every minimal-norm attack of the
    registry and its aliases (``"fmn"``, ``"cw-l2"``, ``"cw"``, ``"anpgd"`` …)."""
    names = attack_names(kind="minimal-norm")
    return ("auto", *names, *(a for n in names for a in ATTACKS[n].aliases))


def estimate_margin_result(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    norm: str | float | ThreatModel = "l2",
    method: Method = "auto",
    *,
    check: bool = True,
    **kwargs: Any,
) -> MarginResult:
    """Per-example distance to the decision boundary (an attack-based upper bound).

    Misclassified examples (``LM(x, y) ≥ 0``, ties count as wrong) get distance 0 and are
    not attacked; the others are attacked, every candidate is re-verified with one forward
    pass (``LM ≥ 0`` at the returned point), and unverified or missing ones get ``+inf``
    and ``found=False``.

    Methods (:func:`margin_methods`; each runs the registry entry's ``minimize``, and
    ``kwargs`` go to it):

    * ``"fmn"`` (``"auto"``): :func:`wideberth.attacks.fmn` (Pintor et al. 2021; ℓ2, ℓ∞,
      ℓ1); ``kwargs``: ``steps`` …
    * ``"cw-l2"`` (``"cw"`` is accepted, without a warning: it is the established name of
      this method): :func:`wideberth.attacks.cw_l2` (Carlini & Wagner 2017; ℓ2 only).
    * ``"anpgd"``: :func:`wideberth.attacks.anpgd_margin` (Ding et al. 2020, Algorithm 1,
      repeated); ``kwargs``: ``eps_max`` (default :func:`default_eps_max`, the box
      diameter), ``eps_init``, ``rounds=5``, ``steps=50``, ``step_scale=12.5``,
      ``n_search=20``, ``attack_loss="lm"``, ``init="advertorch"``, ``seed=0``.

    Args:
        model: ``nn.Module`` or callable, ``[B, ...]`` in [0, 1] → logits ``[B, K]``.
        x: inputs ``[B, ...]`` in [0, 1] (never modified).
        y: integer labels ``[B]``.
        norm: ``"l2"`` (default), ``"linf"``, ``"l1"`` (aliases accepted).
        method: ``"auto"`` (= ``"fmn"``) or a minimal-norm attack's name (see above).
        check: validate inputs once (range, NaN, labels).

    Returns:
        :class:`MarginResult` (``distance`` ``[B]``, ``found`` ``[B]``, ``x_adv``).
    """
    choices = margin_methods()
    if method not in choices:
        raise ValueError(f"method must be one of {', '.join(map(repr, choices))}; got {method!r}")
    threat = threat_for(model, x, y, norm, check)
    name = AUTO_METHOD if method == "auto" else method
    entry = get_attack(name, warn=False)
    if not entry.supports(threat.name):
        raise ValueError(
            f"method={method!r} ({entry.paper}) is an {'/'.join(entry.norms)} attack; "
            f"got norm={threat.name!r}"
        )
    assert entry.minimize is not None
    x = x.detach()
    y = y.to(x.device)
    r = entry.minimize(model, x, y, norm=threat.name, check=False, **kwargs)
    return MarginResult(
        distance=r.distance, found=r.found, x_adv=r.x_adv, method=name, norm=threat.name
    )


def estimate_margin(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    norm: str | float | ThreatModel = "l2",
    method: Method = "auto",
    **kwargs: Any,
) -> Tensor:
    """Per-example distance to the decision boundary ``[B]``: 0 where already misclassified,
    ``+inf`` where the attack found no misclassified point (see
    :func:`estimate_margin_result` for the methods, their options and ``found``).

    Shapes: x ``[B, ...]`` in [0, 1], y ``[B]``. The values are attack-based upper bounds of
    the true margin (minimal-norm attacks never prove robustness).
    """
    return estimate_margin_result(model, x, y, norm, method, **kwargs).distance
