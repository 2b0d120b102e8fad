"""APGD: Auto-PGD, the step-size-free PGD of AutoAttack (ℓ∞ and ℓ2): the public attacks.

Paper: F. Croce and M. Hein, *Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks*, ICML 2020 (§3, Algorithm 1; reference code
``fra31/auto-attack``, ``autopgd_base.py``). The iteration itself (step size ``2ε`` halved
at the checkpoints, momentum 0.75, best point kept) is in
:mod:`wideberth.attacks.apgd_iteration`.

Entry points: :func:`apgd` (general), :func:`apgd_ce` (untargeted cross-entropy, the first
attack of AutoAttack), :func:`apgd_dlr` (untargeted DLR) and :func:`apgd_dlr_targeted`
(APGD-T: targeted DLR over the top-``n_target_classes`` classes, the second attack of
AutoAttack), and the callable classes :class:`APGD` and :class:`APGDT`.

Differences from the reference code, all deliberate:

- checkpoints are the paper's closed form ``⌈p_j N⌉`` (the reference's integer recursion
  agrees for ``N = 100``: 22, 41, 57, 70, 80, 87, 93, 99);
- condition 2 can fire at the first checkpoint (as in the paper; the reference disables it
  there), and condition 1 uses the paper's strict ``<``;
- targets for APGD-T are the highest *non-true* clean logits (the reference takes the 2nd,
  3rd, … highest logits, which equals this for correctly classified points);
- random starts come from per-example streams keyed by (seed, restart, content) unless a
  ``generator`` is given (batch independence), and examples that are already broken are
  not attacked again in later restarts / targets (``early_stop=True``);
- for examples never broken the highest-loss point found is returned (the reference
  returns the clean input).

ℓ1 is not offered here: APGD-ℓ1 (Croce & Hein, ICML 2021) adapts the sparsity of its steps
and is a different algorithm; use :func:`wideberth.attacks.pgd` with ``norm="l1"`` (sparse
top-k steps) for ℓ1.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..losses import dlr_loss, dlr_targeted_loss, get_loss
from ..threat import ThreatModel, check_inputs, eps_vector, get_threat
from .apgd_iteration import LossFn, apgd_checkpoints, apgd_drive
from .base import Attack, LossLike, ModelLike, attack_context, prepare

__all__ = [
    "APGD",
    "APGDT",
    "apgd",
    "apgd_ce",
    "apgd_checkpoints",
    "apgd_dlr",
    "apgd_dlr_targeted",
]

_L1_MESSAGE = (
    "APGD supports norm='linf' and norm='l2' only; for l1 use wideberth.attacks.pgd with "
    "norm='l1' (sparse top-k steepest-ascent steps). APGD-l1 (Croce & Hein 2021) is a "
    "different algorithm and is not implemented."
)



def _untargeted_objective(loss: LossLike, num_classes: int) -> LossFn:
    if callable(loss):
        return loss
    name = str(loss).strip().lower()
    if name in ("dlr_t", "dlr_targeted", "kl", "trades_kl"):
        raise ValueError(
            f"loss {loss!r} is not an untargeted loss of (logits, y); use loss='ce' or 'dlr'"
            " (targeted DLR: targeted=True with loss='dlr', or apgd_dlr_targeted)"
        )
    fn = get_loss(name)
    if fn is dlr_loss and num_classes < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes; the model has K = {num_classes}")
    return fn


def _targeted_objective(loss: LossLike, num_classes: int) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """``(logits, y, y_target) -> [B]``, ascended by the attack."""
    if callable(loss):
        return loss
    name = str(loss).strip().lower()
    if name in ("ce", "cross_entropy", "xent"):
        return lambda logits, y, t: -F.cross_entropy(logits, t.long(), reduction="none")
    if name in ("dlr", "dlr_t", "dlr_targeted"):
        if num_classes < 4:
            raise ValueError(
                "the targeted DLR loss needs at least 4 classes (it uses the 3rd and 4th largest"
                f" logits); the model has K = {num_classes}. Use apgd_ce / loss='ce' instead."
            )
        return dlr_targeted_loss
    raise ValueError(f"targeted APGD supports loss='ce' or 'dlr' (or a callable); got {loss!r}")


def _check_hyper(steps: int, restarts: int, rho: float, alpha: float, norm_name: str) -> None:
    if norm_name == "l1":
        raise ValueError(_L1_MESSAGE)
    if isinstance(steps, bool) or int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer; got {steps!r}")
    if isinstance(restarts, bool) or int(restarts) != restarts or restarts < 1:
        raise ValueError(f"restarts must be an integer >= 1; got {restarts!r}")
    if not 0.0 < float(rho) <= 1.0:
        raise ValueError(f"rho must be in (0, 1]; got {rho}")
    if not 0.0 < float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in (0, 1]; got {alpha}")


def _setup(
    model: ModelLike, x: Tensor, y: Tensor, eps: float | Tensor, norm: str | float | ThreatModel,
    check: bool,
) -> ThreatModel:
    if check:
        threat, _ = prepare(model, x, y, eps, norm)
        assert threat is not None
    else:
        threat = get_threat(norm)
    return threat




def apgd(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    norm: str | float | ThreatModel = "linf",
    eps: float | Tensor,
    steps: int = 100,
    loss: LossLike = "ce",
    restarts: int = 1,
    targeted: bool = False,
    y_target: Tensor | None = None,
    rho: float = 0.75,
    alpha: float = 0.75,
    early_stop: bool = True,
    seed: int = 0,
    generator: torch.Generator | None = None,
    check: bool = True,
) -> Tensor:
    """Auto-PGD (APGD) within the ``norm`` ball of radius ``eps`` ∩ [0, 1].

    Paper: Croce & Hein, *Reliable evaluation of adversarial robustness with an ensemble of
    diverse parameter-free attacks*, ICML 2020 (§3, Algorithm 1). Norms: ``"linf"`` (sign steps)
    and ``"l2"`` (normalised-gradient steps); ``"l1"`` raises :class:`ValueError`. Step size
    starts at ``2ε`` per example and is halved at the checkpoints :func:`apgd_checkpoints`
    (see :mod:`wideberth.attacks.apgd_iteration`); momentum ``alpha``.

    Args:
        model: an ``nn.Module`` or callable mapping [B, ...] in [0, 1] to logits [B, K];
            attacked in eval mode with its modes and parameter gradients restored after.
        x: clean inputs [B, ...] in [0, 1] (never modified).
        y: true labels [B] (integer).
        norm: ``"linf"`` or ``"l2"`` (or a :class:`~wideberth.threat.ThreatModel`).
        eps: radius, a float or a per-example tensor [B].
        steps: iterations per run (a run costs ``steps + 1`` forward and ``steps``
            backward passes; each call adds one forward pass on the clean batch).
        loss: untargeted: ``"ce"`` (APGD-CE), ``"dlr"`` (APGD-DLR, ``K >= 3``), another
            registry name of :func:`wideberth.losses.get_loss` of the form ``(logits, y)``, or
            a callable ``(logits, y) -> [B]`` to ascend. Targeted: ``"ce"`` (ascends
            ``−CE(logits, y_target)``), ``"dlr"`` (targeted DLR, ``K >= 4``) or a callable
            ``(logits, y, y_target) -> [B]``.
        restarts: runs from independent random starts; with ``early_stop`` later runs
            attack only the examples no earlier run broke.
        targeted: attack towards ``y_target`` (required); success then means predicting
            ``y_target``. For AutoAttack's APGD-T (top-k targets, success = any
            misclassification) use :func:`apgd_dlr_targeted`.
        y_target: target labels [B] (integer, different from ``y``), only with ``targeted``.
        rho: condition-1 threshold on the fraction of loss increases between checkpoints.
        alpha: momentum weight on the new step (``1`` disables momentum).
        early_stop: do not attack examples that are already broken (including those
            misclassified, or on target, at the clean input, which are returned unchanged).
        seed, generator: randomness of the starts; with ``generator`` the batch draws from
            it, else per-example streams keyed by (seed, restart, content) make the result of
            an example independent of the rest of its batch.
        check: validate inputs (range, NaN, labels, ε) first.

    Returns:
        x_adv [B, ...], same dtype and device as ``x``: per example a successful point if one
        was found (the highest-loss successful point seen), otherwise the highest-loss point
        seen; always with ``‖x_adv − x‖ <= eps`` (up to float rounding of ``x + δ``) and in
        [0, 1]. Success is judged on the argmax: ``argmax f(x_adv) != y`` (untargeted) or
        ``== y_target`` (targeted).
    """
    threat = _setup(model, x, y, eps, norm, check)
    _check_hyper(steps, restarts, rho, alpha, threat.name)
    x = x.detach()
    y = y.detach().to(x.device).long()
    eps_t = eps_vector(eps, x).detach()
    with attack_context(model):
        with torch.no_grad():
            clean_logits = model(x)
        k = int(clean_logits.shape[1])
        if targeted:
            if y_target is None:
                raise ValueError(
                    "targeted=True needs y_target (one target class per example); for "
                    "AutoAttack's APGD-T over the top classes use apgd_dlr_targeted"
                )
            if check:
                check_inputs(x, y_target, None, k)
            t_all = y_target.detach().to(x.device).long()
            if bool((t_all == y).any()):
                raise ValueError("y_target must differ from y for every example")
            tobj = _targeted_objective(loss, k)

            def objective_for(rows: Tensor, t: Tensor | None) -> LossFn:
                assert t is not None
                return lambda logits, yy: tobj(logits, yy, t)

            def success_for(rows: Tensor, t: Tensor | None) -> Callable[[Tensor], Tensor]:
                assert t is not None
                return lambda logits: logits.argmax(1) == t

            targets: Tensor | None = t_all.unsqueeze(1)
        else:
            if y_target is not None:
                raise ValueError("y_target is only used with targeted=True")
            uobj = _untargeted_objective(loss, k)

            def objective_for(rows: Tensor, t: Tensor | None) -> LossFn:
                return uobj

            def success_for(rows: Tensor, t: Tensor | None) -> Callable[[Tensor], Tensor]:
                yr = y[rows]
                return lambda logits: logits.argmax(1) != yr

            targets = None
        out = apgd_drive(
            model, x, y, threat, eps_t, steps=steps, restarts=restarts, rho=rho, alpha=alpha,
            early_stop=early_stop, seed=seed, generator=generator, clean_logits=clean_logits,
            targets=targets, objective_for=objective_for, success_for=success_for,
        )
    return out.detach()


def apgd_ce(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    norm: str | float | ThreatModel,
    eps: float | Tensor,
    steps: int = 100,
    restarts: int = 1,
    **kw: object,
) -> Tensor:
    """APGD-CE: untargeted APGD on the cross-entropy loss (AutoAttack's first attack).

    Paper: Croce & Hein, ICML 2020, §3, Algorithm 1 (APGD) and §5 (AutoAttack). Norms: ``"linf"``, ``"l2"``. Shapes: x [B, ...] in
    [0, 1], y [B], eps float or [B]. Other keywords go to :func:`apgd`. Returns x_adv [B, ...].
    """
    return apgd(model, x, y, norm=norm, eps=eps, steps=steps, loss="ce", restarts=restarts, **kw)  # type: ignore[arg-type]


def apgd_dlr(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    norm: str | float | ThreatModel,
    eps: float | Tensor,
    steps: int = 100,
    restarts: int = 1,
    **kw: object,
) -> Tensor:
    """APGD-DLR: untargeted APGD on the DLR loss (shift- and scale-invariant; ``K >= 3``).

    Paper: Croce & Hein, ICML 2020, §3 (APGD) and §4 (the DLR loss). Norms: ``"linf"``, ``"l2"``. Shapes: x [B, ...] in
    [0, 1], y [B], eps float or [B]. Other keywords go to :func:`apgd`. Returns x_adv [B, ...].
    """
    return apgd(model, x, y, norm=norm, eps=eps, steps=steps, loss="dlr", restarts=restarts, **kw)  # type: ignore[arg-type]


def apgd_dlr_targeted(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    norm: str | float | ThreatModel,
    eps: float | Tensor,
    steps: int = 100,
    n_target_classes: int = 9,
    restarts: int = 1,
    loss: LossLike = "dlr",
    rho: float = 0.75,
    alpha: float = 0.75,
    early_stop: bool = True,
    seed: int = 0,
    generator: torch.Generator | None = None,
    check: bool = True,
) -> Tensor:
    """APGD-T: APGD on the targeted DLR loss over the top target classes (AutoAttack).

    Paper: Croce & Hein, ICML 2020, §3 (APGD), §4 (targeted DLR loss) and §5 (AutoAttack's
    APGD-T). Norms: ``"linf"``, ``"l2"``. Shapes: x [B, ...] in [0, 1], y [B], eps float or
    [B]. For ``j = 1 …
    n_target_classes`` (capped at ``K − 1``) each example is attacked towards the class
    with its ``j``-th highest non-true logit on the clean input, ``restarts`` runs per
    target; an example counts as broken (misclassified, any class) if any run breaks it,
    and with ``early_stop`` it is not attacked again. Needs ``K >= 4`` (the DLR
    denominator uses the 4th largest logit) unless ``loss="ce"`` (targeted CE).

    Args:
        model, x, y, norm, eps, steps, restarts, rho, alpha, early_stop, seed, generator,
        check: as in :func:`apgd`.
        n_target_classes: number of target classes per example (AutoAttack: 9).
        loss: ``"dlr"`` (targeted DLR, default) or ``"ce"`` (ascends ``−CE(logits, t)``).

    Returns:
        x_adv [B, ...]: per example a misclassified point if one was found, otherwise the
        highest targeted-loss point over all targets and restarts; ``‖x_adv − x‖ <= eps``
        and in [0, 1].
    """
    threat = _setup(model, x, y, eps, norm, check)
    _check_hyper(steps, restarts, rho, alpha, threat.name)
    if isinstance(n_target_classes, bool) or int(n_target_classes) != n_target_classes or n_target_classes < 1:
        raise ValueError(f"n_target_classes must be an integer >= 1; got {n_target_classes!r}")
    x = x.detach()
    y = y.detach().to(x.device).long()
    eps_t = eps_vector(eps, x).detach()
    with attack_context(model):
        with torch.no_grad():
            clean_logits = model(x)
        k = int(clean_logits.shape[1])
        tobj = _targeted_objective(loss, k)
        n_t = min(int(n_target_classes), k - 1)
        masked = clean_logits.scatter(1, y.unsqueeze(1), -math.inf)
        # stable order: ties broken by class index, so the targets of an example never
        # depend on the batch
        targets = masked.sort(dim=1, descending=True, stable=True).indices[:, :n_t]

        def objective_for(rows: Tensor, t: Tensor | None) -> LossFn:
            assert t is not None
            return lambda logits, yy: tobj(logits, yy, t)

        def success_for(rows: Tensor, t: Tensor | None) -> Callable[[Tensor], Tensor]:
            yr = y[rows]
            return lambda logits: logits.argmax(1) != yr

        out = apgd_drive(
            model, x, y, threat, eps_t, steps=steps, restarts=restarts, rho=rho, alpha=alpha,
            early_stop=early_stop, seed=seed, generator=generator, clean_logits=clean_logits,
            targets=targets, objective_for=objective_for, success_for=success_for,
        )
    return out.detach()


class APGD(Attack):
    """``APGD(model, norm="linf", eps=8/255)(x, y)``: see :func:`apgd` (APGD-CE by default)."""

    fn = staticmethod(apgd)


class APGDT(Attack):
    """``APGDT(model, norm="linf", eps=8/255)(x, y)``: see :func:`apgd_dlr_targeted`."""

    fn = staticmethod(apgd_dlr_targeted)
