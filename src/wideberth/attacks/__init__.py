"""Attacks and margin estimation.

Every attack is a plain function ``attack(model, x, y, *, norm, eps, ...) -> x_adv`` plus a
small callable class (``PGD(model, eps=0.3)(x, y)``). All of them take any ``nn.Module`` or
callable returning logits, run it in eval mode and restore every submodule's mode and every
parameter's gradient state, never return a point outside the ε-ball or the [0, 1] box
(unless documented: AN-PGD's ``clip_final=False``), accept per-example ε tensors [B], and
give an example the same result whatever else is in its batch (same seed).

=================  ===================================================  ===============
attack             paper                                                norms
=================  ===================================================  ===============
fgsm / fgm         Goodfellow et al. 2015                               ℓ∞ / any
pgd                Madry et al. 2018 (restarts, best iterate)           ℓ∞, ℓ2, ℓ1
apgd (CE, DLR)     Croce & Hein 2020 (APGD-CE, APGD-T)                  ℓ∞, ℓ2
an_pgd             Ding et al. 2020 (MMA), adaptive-norm PGD            ℓ∞, ℓ2, ℓ1
cw_l2              Carlini & Wagner 2017 (minimal ℓ2)                   ℓ2
fmn                Pintor et al. 2021 (fast minimum-norm)               ℓ∞, ℓ2, ℓ1
square             Andriushchenko et al. 2020 (black-box, score-based)  ℓ∞, ℓ2
=================  ===================================================  ===============

``estimate_margin(model, x, y, norm)`` returns each example's distance to the decision
boundary (0 where already misclassified); ``margin_stats`` summarises distances as the
papers' tables do.
"""

from __future__ import annotations

from .anpgd import ANPGD, ANPGDResult, an_pgd, an_pgd_attack, an_pgd_eval, average_margin
from .auto_pgd import APGD, APGDT, apgd, apgd_ce, apgd_checkpoints, apgd_dlr, apgd_dlr_targeted
from .base import Attack, ModelLike, attack_context, loss_and_grad, prepare, random_start
from .margin import (
    MarginResult,
    default_eps_max,
    estimate_margin,
    estimate_margin_result,
    gradient_margin_bound,
    margin_stats,
)
from .minimal import CWL2, FMN, MinimalNormResult, cw_l2, cw_l2_attack, fmn, fmn_attack
from .projected_gradient import FGM, FGSM, PGD, fgm, fgsm, pgd
from .random_search import Square, square
from .registry import (
    ATTACKS,
    AttackEntry,
    attack_names,
    get_attack,
    register_attack,
    run_attack,
)

__all__ = [
    "ATTACK_NAMES",
    "ATTACKS",
    "AttackEntry",
    "attack_names",
    "get_attack",
    "register_attack",
    "ANPGD",
    "ANPGDResult",
    "APGD",
    "APGDT",
    "Attack",
    "CWL2",
    "FGM",
    "FGSM",
    "FMN",
    "MarginResult",
    "MinimalNormResult",
    "ModelLike",
    "PGD",
    "Square",
    "an_pgd",
    "an_pgd_attack",
    "an_pgd_eval",
    "apgd",
    "apgd_ce",
    "apgd_checkpoints",
    "apgd_dlr",
    "apgd_dlr_targeted",
    "attack_context",
    "average_margin",
    "cw_l2",
    "cw_l2_attack",
    "default_eps_max",
    "estimate_margin",
    "estimate_margin_result",
    "fgm",
    "fgsm",
    "fmn",
    "fmn_attack",
    "gradient_margin_bound",
    "loss_and_grad",
    "margin_stats",
    "pgd",
    "prepare",
    "random_start",
    "run_attack",
    "square",
]

#: canonical names of every registered attack (``wideberth attack --attack`` choices)
ATTACK_NAMES = attack_names()
