"""Classification losses used by attacks and training objectives.

Sign convention: **every loss here is one an attack ascends** – larger means more
adversarial – so PGD maximises it and a training objective minimises it (CE, TRADES KL).

Shapes: ``logits`` is ``[B, K]``; labels ``y`` (and ``y_target``) are integer tensors of shape
``[B]``. Every function takes ``reduction`` in ``{"none", "mean", "sum"}`` and defaults to
``"none"``, returning one value per example (``[B]``); attacks differentiate the *sum* so
that examples never influence each other.

Registry names (:func:`get_loss`) and per-example values, with ``LM = max_{j≠y} f_j − f_y``:

* ``"ce"`` – :func:`ce`: ``log Σ_j exp f_j − f_y``.
* ``"lm"`` – :func:`logit_margin`: ``LM`` (``>= 0`` ⇔ misclassified; ties count as wrong).
* ``"slm"`` – :func:`soft_logit_margin`: ``log Σ_{j≠y} exp f_j − f_y``.
* ``"cw"`` – :func:`cw_loss`: ``min(LM, κ)`` (``form="min"``, κ = 0 by default) or
  ``max(LM + κ, 0)`` (``form="advertorch"``, κ = 50 by default).
* ``"dlr"`` – :func:`dlr_loss`: ``LM / (z_π1 − z_π3 + 1e-12)``.
* ``"dlr_t"`` – :func:`dlr_targeted_loss`: ``(z_t − z_y) / (z_π1 − (z_π3 + z_π4)/2 + 1e-12)``,
  called as ``fn(logits, y, y_target)``.
* ``"kl"`` – :func:`trades_kl`: ``KL(p_clean ‖ p_adv)``, called as
  ``fn(logits_adv, logits_clean)``.

References: LM/SLM and Propositions 2.3–2.4 – Ding et al., MMA training, ICLR 2020
(§1.2, Eqs. 1–2; §2.2, Props. 2.3–2.4, Eqs. 5–6); CW – Carlini & Wagner, IEEE S&P 2017; DLR – Croce &
Hein, AutoAttack, ICML 2020, §4; KL – Zhang et al., TRADES, ICML 2019, Eq. 5 and the
authors' ``trades_loss``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "LOSSES",
    "ce",
    "cw_loss",
    "dlr_loss",
    "dlr_targeted_loss",
    "get_loss",
    "is_misclassified",
    "lm",
    "logit_margin",
    "slm",
    "soft_logit_margin",
    "trades_kl",
]

_REDUCTIONS = ("none", "mean", "sum")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"reduction must be one of {_REDUCTIONS}; got {reduction!r}")


def _check_logits(logits: Tensor, y: Tensor, min_classes: int = 2, what: str = "this loss") -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape [B, K]; got shape {list(logits.shape)}")
    if y.dim() != 1 or y.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels must have shape [B] = [{logits.shape[0]}]; got shape {list(y.shape)}"
        )
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise ValueError(f"labels must be an integer tensor; got dtype {y.dtype}")
    k = logits.shape[1]
    if k < min_classes:
        raise ValueError(f"{what} needs at least {min_classes} classes; got K = {k}")


def _true_mask(logits: Tensor, y: Tensor) -> Tensor:
    """Boolean ``[B, K]`` mask that is True at the true class."""
    return torch.zeros_like(logits, dtype=torch.bool).scatter(1, y.long().unsqueeze(1), True)


def _true_logit(logits: Tensor, y: Tensor) -> Tensor:
    return logits.gather(1, y.long().unsqueeze(1)).squeeze(1)


def _max_other(logits: Tensor, y: Tensor) -> Tensor:
    """``max_{j≠y} f_j`` per example, ``[B]``."""
    return logits.masked_fill(_true_mask(logits, y), float("-inf")).amax(1)


# --------------------------------------------------------------------------------------
# CE, LM, SLM
# --------------------------------------------------------------------------------------


def ce(logits: Tensor, y: Tensor, reduction: str = "none") -> Tensor:
    """Cross-entropy ``L^CE = log Σ_j exp f_j − f_y`` (ascended by attacks, minimised in training).

    Args:
        logits: ``[B, K]``.
        y: integer labels ``[B]``.
        reduction: ``"none"`` (``[B]``), ``"mean"`` or ``"sum"``.
    """
    _check_logits(logits, y, 1, "cross-entropy")
    return _reduce(F.cross_entropy(logits, y.long(), reduction="none"), reduction)


def logit_margin(logits: Tensor, y: Tensor, reduction: str = "none") -> Tensor:
    """Logit margin loss ``L^LM = max_{j≠y} f_j − f_y`` (Ding et al., MMA, ICLR 2020, §1.2).

    Negative ⇔ correctly classified; ``>= 0`` ⇔ misclassified (ties count as wrong). Its
    zero level set is the decision boundary of class ``y``. Requires ``K >= 2``.

    Args:
        logits: ``[B, K]``.
        y: integer labels ``[B]``.
        reduction: ``"none"`` (``[B]``), ``"mean"`` or ``"sum"``.
    """
    _check_logits(logits, y, 2, "the logit margin")
    return _reduce(_max_other(logits, y) - _true_logit(logits, y), reduction)


def soft_logit_margin(logits: Tensor, y: Tensor, reduction: str = "none") -> Tensor:
    """Soft logit margin ``L^SLM = log Σ_{j≠y} exp f_j − f_y`` (Ding et al., MMA, ICLR 2020, §2.2).

    A masked, numerically stable logsumexp over the non-true classes (works for ``K = 2``,
    where it equals LM). Facts (MMA Props. 2.3–2.4): ``LM <= SLM <= LM + log(K − 1)``,
    ``CE = log(1 + exp(SLM)) = softplus(SLM)``, hence ``∇CE = σ(SLM)·∇SLM = (1 − p_y)·∇SLM``
    (Prop. 2.4): sign/normalised-gradient PGD iterates under CE and SLM coincide.
    ``SLM < 0 ⇔ p_y > 1/2``.

    Args:
        logits: ``[B, K]``.
        y: integer labels ``[B]``.
        reduction: ``"none"`` (``[B]``), ``"mean"`` or ``"sum"``.
    """
    _check_logits(logits, y, 2, "the soft logit margin")
    others = logits.masked_fill(_true_mask(logits, y), float("-inf"))
    return _reduce(torch.logsumexp(others, dim=1) - _true_logit(logits, y), reduction)


lm = logit_margin
slm = soft_logit_margin


def is_misclassified(logits: Tensor, y: Tensor) -> Tensor:
    """Boolean ``[B]``: ``LM >= 0``, i.e. wrong prediction with ties counted as wrong
    (MMA, ICLR 2020, §2, Eq. 3: S⁻ = {LM ≥ 0}, so ties are errors). Stricter than ``logits.argmax(1) != y`` on ties."""
    with torch.no_grad():
        return logit_margin(logits.detach(), y) >= 0


# --------------------------------------------------------------------------------------
# Carlini–Wagner
# --------------------------------------------------------------------------------------


def cw_loss(
    logits: Tensor,
    y: Tensor,
    kappa: float | None = None,
    form: str = "min",
    reduction: str = "none",
) -> Tensor:
    """Untargeted Carlini–Wagner margin loss, in ascent form (larger = more adversarial).

    Two forms, both functions of ``LM = max_{j≠y} f_j − f_y``:

    * ``form="min"`` (default ``kappa = 0``): ``min(LM, κ)``. This is CW's ``f_6`` objective
      ``max(f_y − max_{j≠y} f_j, −κ)`` with the sign flipped for ascent. With ``κ = 0`` it is the
      MMA paper's footnote-10 CW loss ``min{LM, 0}``; with ``κ = 50`` it is the min-max paper's
      ensemble-attack loss (whose code writes ``relu(f_y − max_{j≠y} f_j + κ)`` minimised –
      equal to ``κ − min(LM, κ)``, so identical gradients). It stops pushing once the
      example is misclassified by margin ``κ``.
    * ``form="advertorch"`` (default ``kappa = 50``): ``max(LM + κ, 0)`` – AdverTorch /
      MMA-code ``cw_loss``, used by MMA's evaluation PGD (the authors' released evaluation; the
      paper's footnote 10 writes ``min{LM, 0}``, the ``form="min"`` above).
      Same gradient as LM whenever ``LM > −κ``, and it keeps pushing after
      misclassification; zero gradient for examples classified correctly by more than ``κ``.

    Args:
        logits: ``[B, K]``, ``K >= 2``.
        y: integer labels ``[B]``.
        kappa: confidence κ; ``None`` means 0 for ``"min"`` and 50 for ``"advertorch"``.
        form: ``"min"`` or ``"advertorch"``.
        reduction: ``"none"`` (``[B]``), ``"mean"`` or ``"sum"``.
    """
    margin = logit_margin(logits, y)
    if form == "min":
        k = 0.0 if kappa is None else float(kappa)
        loss = torch.clamp(margin, max=k)
    elif form == "advertorch":
        k = 50.0 if kappa is None else float(kappa)
        loss = torch.clamp(margin + k, min=0)
    else:
        raise ValueError(f"form must be 'min' or 'advertorch'; got {form!r}")
    return _reduce(loss, reduction)


# --------------------------------------------------------------------------------------
# DLR (AutoAttack)
# --------------------------------------------------------------------------------------


def dlr_loss(logits: Tensor, y: Tensor, reduction: str = "none") -> Tensor:
    """Untargeted Difference-of-Logits-Ratio loss (Croce & Hein 2020, AutoAttack):

    ``DLR = −(z_y − max_{j≠y} z_j) / (z_π1 − z_π3 + 1e-12)``, with ``z_π1 >= z_π2 >= …`` the
    sorted logits. Ascended by attacks; invariant to shifting and (positive) scaling of the
    logits (up to the 1e-12). Requires ``K >= 3``.

    Args:
        logits: ``[B, K]``.
        y: integer labels ``[B]``.
        reduction: ``"none"`` (``[B]``), ``"mean"`` or ``"sum"``.
    """
    _check_logits(logits, y, 3, "the untargeted DLR loss")
    z = logits.sort(dim=1, descending=True).values
    num = _max_other(logits, y) - _true_logit(logits, y)
    return _reduce(num / (z[:, 0] - z[:, 2] + 1e-12), reduction)


def dlr_targeted_loss(
    logits: Tensor, y: Tensor, y_target: Tensor, reduction: str = "none"
) -> Tensor:
    """Targeted DLR loss (Croce & Hein 2020, APGD-T):

    ``−(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e-12)`` with ``t = y_target``. Ascended by
    the attack (pushes the target logit above the true one). Requires ``K >= 4``.

    Args:
        logits: ``[B, K]``.
        y: integer true labels ``[B]``.
        y_target: integer target labels ``[B]`` (should differ from ``y``).
        reduction: ``"none"`` (``[B]``), ``"mean"`` or ``"sum"``.
    """
    _check_logits(logits, y, 4, "the targeted DLR loss")
    _check_logits(logits, y_target, 4, "the targeted DLR loss")
    z = logits.sort(dim=1, descending=True).values
    num = _true_logit(logits, y_target) - _true_logit(logits, y)
    den = z[:, 0] - 0.5 * (z[:, 2] + z[:, 3]) + 1e-12
    return _reduce(num / den, reduction)


# --------------------------------------------------------------------------------------
# TRADES KL
# --------------------------------------------------------------------------------------


def trades_kl(logits_adv: Tensor, logits_clean: Tensor, reduction: str = "none") -> Tensor:
    """TRADES robustness term ``KL(p_clean ‖ p_adv) = Σ_k p_clean,k (log p_clean,k − log p_adv,k)``.

    The direction matches the TRADES code ``nn.KLDivLoss(log_softmax(f(x')), softmax(f(x)))``
    (Zhang et al., TRADES, ICML 2019, Eq. 5; the authors' ``trades_loss``): the clean distribution is the *target*. Not
    symmetric. Gradients flow through both arguments (TRADES does not detach the clean
    branch); detach ``logits_clean`` yourself if you want a fixed target.

    Args:
        logits_adv: ``[B, K]`` logits at ``x'``.
        logits_clean: ``[B, K]`` logits at ``x``.
        reduction: ``"none"`` (``[B]``), ``"sum"``, or ``"batchmean"`` = ``"mean"`` = sum / B
            (TRADES' outer-loss term). Note ``"mean"`` here is the mean over **examples**,
            not torch ``KLDivLoss(reduction="mean")``, which also divides by ``K``.
    """
    if logits_adv.dim() != 2 or logits_adv.shape != logits_clean.shape:
        raise ValueError(
            "logits_adv and logits_clean must both have shape [B, K]; got "
            f"{list(logits_adv.shape)} and {list(logits_clean.shape)}"
        )
    log_p_adv = F.log_softmax(logits_adv, dim=1)
    log_p_clean = F.log_softmax(logits_clean, dim=1)
    kl = F.kl_div(log_p_adv, log_p_clean, reduction="none", log_target=True).sum(1)
    if reduction == "batchmean":
        reduction = "mean"
    return _reduce(kl, reduction)


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------

LossFn = Callable[..., Tensor]

#: name → function. All but ``"kl"`` and ``"dlr_t"`` are called as ``fn(logits, y, reduction=...)``;
#: ``"dlr_t"`` as ``fn(logits, y, y_target)`` and ``"kl"`` as ``fn(logits_adv, logits_clean)``.
LOSSES: dict[str, LossFn] = {
    "ce": ce,
    "lm": logit_margin,
    "slm": soft_logit_margin,
    "cw": cw_loss,
    "dlr": dlr_loss,
    "dlr_t": dlr_targeted_loss,
    "kl": trades_kl,
}

_LOSS_ALIASES = {
    "cross_entropy": "ce",
    "xent": "ce",
    "logit_margin": "lm",
    "soft_logit_margin": "slm",
    "dlr_targeted": "dlr_t",
    "trades_kl": "kl",
}


def get_loss(name: str | LossFn, **kwargs: object) -> LossFn:
    """Look up a loss by name (case-insensitive): ``"ce"``, ``"lm"``, ``"slm"``, ``"cw"``,
    ``"dlr"``, ``"dlr_t"`` (targeted DLR), ``"kl"`` (TRADES KL), plus the long aliases
    ``"cross_entropy"``, ``"logit_margin"``, ``"soft_logit_margin"``, ``"dlr_targeted"``,
    ``"trades_kl"``.

    ``kwargs`` are bound with :func:`functools.partial`, e.g.
    ``get_loss("cw", form="advertorch", kappa=50)`` for MMA's evaluation CW loss. A callable
    is returned unchanged (``kwargs`` then bound to it if given). Unknown names raise
    :class:`ValueError` listing the valid ones.
    """
    if callable(name):
        fn: LossFn = name
    else:
        key = str(name).strip().lower()
        key = _LOSS_ALIASES.get(key, key)
        if key not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; valid losses are {', '.join(LOSSES)}")
        fn = LOSSES[key]
    return functools.partial(fn, **kwargs) if kwargs else fn
