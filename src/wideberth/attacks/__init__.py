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

from typing import Any

import torch
from torch import Tensor

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

__all__ = [
    "ATTACK_NAMES",
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

#: the names ``wideberth attack --attack`` and :func:`run_attack` accept
ATTACK_NAMES = ("fgsm", "pgd", "apgd-ce", "apgd-dlr", "anpgd", "fmn", "cw-l2", "square")


def run_attack(
    name: str,
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    norm: str = "linf",
    eps: float,
    steps: int = 40,
    restarts: int = 1,
    seed: int = 0,
    **kwargs: Any,
) -> Tensor:
    """Run a named attack at budget ``eps`` and return x_adv [B, ...] (the CLI's dispatcher).

    - ``fgsm``: one step of size ε (``fgm`` for ℓ2/ℓ1); ``steps``/``restarts`` unused.
    - ``pgd``: CE loss, step 2.5ε/steps, ``restarts`` random restarts, best iterate.
    - ``apgd-ce`` / ``apgd-dlr``: APGD-CE and targeted APGD-DLR (AutoAttack's APGD-T).
    - ``anpgd``: AN-PGD with ε_init = ε_max = ε and the logit-margin (LM) search loss, so
      "success" means misclassified (MMA's SLM criterion means p_y ≤ 1/2); returns the
      shortest successful perturbation along the PGD ray (``return_mode="upper"``).
    - ``fmn`` / ``cw-l2``: minimal-norm attacks; a perturbation counts only when its norm
      is ≤ ε, otherwise x itself is returned for that example.
    - ``square``: the Square attack (ℓ∞/ℓ2, margin loss, no gradients); ``steps`` is its
      query budget ``n_queries`` per example (the paper and AutoAttack use 5000, so pass
      e.g. ``--steps 5000``: the CLI's default of 40 is a smoke test), ``restarts`` unused.
    """
    if name == "fgsm":
        return fgm(model, x, y, norm=norm, eps=eps, **kwargs)
    if name == "pgd":
        return pgd(model, x, y, norm=norm, eps=eps, steps=steps, restarts=restarts, seed=seed, **kwargs)
    if name == "apgd-ce":
        return apgd_ce(model, x, y, norm=norm, eps=eps, steps=steps, restarts=restarts, seed=seed, **kwargs)
    if name == "apgd-dlr":
        return apgd_dlr_targeted(
            model, x, y, norm=norm, eps=eps, steps=steps, restarts=restarts, seed=seed, **kwargs
        )
    if name == "anpgd":
        eps_t = torch.full((x.shape[0],), float(eps), device=x.device, dtype=x.dtype)
        return an_pgd(
            model, x, y, norm=norm, eps_init=eps_t, eps_max=float(eps), steps=steps,
            search_loss="lm", return_mode="upper", seed=seed, **kwargs,
        ).x_adv
    if name in ("fmn", "cw-l2"):
        if name == "fmn":
            res = fmn(model, x, y, norm=norm, steps=max(steps, 1), **kwargs)
        else:
            if norm != "l2":
                raise ValueError("cw-l2 is an ℓ2 attack; use --norm l2 (or --attack fmn)")
            res = cw_l2(model, x, y, **kwargs)
        within = res.found & (res.distance <= eps)
        return torch.where(within.view(-1, *([1] * (x.dim() - 1))), res.x_adv, x)
    if name == "square":
        return square(model, x, y, norm=norm, eps=eps, n_queries=steps, seed=seed, **kwargs)
    raise ValueError(f"unknown attack {name!r}; choose from {', '.join(ATTACK_NAMES)}")
