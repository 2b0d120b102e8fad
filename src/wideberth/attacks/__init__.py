"""Attacks and margin estimation.

Every attack is a plain function ``attack(model, x, y, *, norm, eps, ...) -> x_adv`` plus a
small callable class (``PGD(model, eps=0.3)(x, y)``). All of them take any ``nn.Module`` or
callable returning logits, run it in eval mode and restore every submodule's mode and every
parameter's gradient state, never return a point outside the ε-ball or the [0, 1] box
(unless documented: AN-PGD's ``clip_final=False``), accept per-example ε tensors [B], and
give an example the same result whatever else is in its batch (same seed).

The registered attacks (:data:`ATTACKS`, :mod:`wideberth.attacks.registry`). This table
mirrors the registry: it is the text of :func:`attack_table` (names with their aliases,
kind, paper, norms), and a contract test fails when the two differ. Fixed-ε attacks search
a ball of radius ε; minimal-norm attacks return each example's smallest perturbation found
(``distance``, ``found``, ``x_adv``) and count at a budget ε where ``distance ≤ ε``.

=================  ============  =========================================  ============
attack             kind          paper                                      norms
=================  ============  =========================================  ============
fgsm               fixed-eps     Goodfellow, Shlens & Szegedy, ICLR 2015    linf, l2, l1
pgd                fixed-eps     Madry et al., ICLR 2018                    linf, l2, l1
apgd-ce            fixed-eps     Croce & Hein, ICML 2020                    linf, l2
apgd-t / apgd-dlr  fixed-eps     Croce & Hein, ICML 2020                    linf, l2
square             fixed-eps     Andriushchenko et al., ECCV 2020           linf, l2
anpgd              minimal-norm  Ding et al., ICLR 2020 (MMA), Algorithm 1  linf, l2, l1
fmn                minimal-norm  Pintor et al., NeurIPS 2021                linf, l2, l1
cw-l2 / cw         minimal-norm  Carlini & Wagner, IEEE S&P 2017            l2
=================  ============  =========================================  ============

Functions: ``fgsm`` → :func:`fgm` / :func:`fgsm`; ``pgd`` → :func:`pgd`; ``apgd-ce`` →
:func:`apgd_ce`; ``apgd-t`` → :func:`apgd_dlr_targeted`; ``square`` → :func:`square`;
``anpgd`` → :func:`an_pgd` (one pass) and :func:`anpgd_margin` (the margin search);
``fmn`` → :func:`fmn`; ``cw-l2`` → :func:`cw_l2`.

``estimate_margin(model, x, y, norm)`` returns each example's distance to the decision
boundary (0 where already misclassified); ``margin_stats`` summarises distances as the
papers' tables do.
"""

from __future__ import annotations

from .anpgd import ANPGD, ANPGDResult, an_pgd, an_pgd_attack, pgd_then_bisect
from .apgd_iteration import apgd_drive
from .auto_pgd import APGD, APGDT, apgd, apgd_ce, apgd_checkpoints, apgd_dlr, apgd_dlr_targeted
from .base import (
    Attack,
    ModelLike,
    ResultAttack,
    attack_context,
    batch_view,
    loss_and_grad,
    prepare,
    random_start,
)
from .carlini_wagner import CWL2, cw_l2, cw_l2_attack
from .fast_minimum_norm import FMN, fmn, fmn_attack
from .lipschitz_margin import gradient_margin_bound
from .margin import (
    MarginResult,
    estimate_margin,
    estimate_margin_result,
    margin_methods,
)
from .margin_statistics import margin_stats
from .minimal_norm import MinimalNormResult
from .mma_margins import an_pgd_eval, anpgd_margin, average_margin, default_eps_max
from .projected_gradient import FGM, FGSM, PGD, fgm, fgsm, pgd
from .random_search import Square, square
from .registry import (
    ATTACKS,
    AttackEntry,
    attack_names,
    attack_table,
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
    "attack_table",
    "ANPGD",
    "ANPGDResult",
    "APGD",
    "APGDT",
    "Attack",
    "ResultAttack",
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
    "anpgd_margin",
    "apgd",
    "apgd_ce",
    "apgd_checkpoints",
    "apgd_dlr",
    "apgd_dlr_targeted",
    "apgd_drive",
    "attack_context",
    "average_margin",
    "batch_view",
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
    "margin_methods",
    "margin_stats",
    "pgd",
    "pgd_then_bisect",
    "prepare",
    "random_start",
    "run_attack",
    "square",
]

#: canonical names of every registered attack (``wideberth attack --attack`` choices)
ATTACK_NAMES = attack_names()
