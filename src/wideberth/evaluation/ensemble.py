"""Majority-vote ensembles and the two ways the MMA paper attacks them.

Paper: Ding et al., *MMA Training: Direct Input Space Margin Maximization through
Adversarial Training*, ICLR 2020, §4.3 and App. C (the PGD-ens / PGDLS-ens baselines:
"majority vote on label predictions, and using the softmax scores as the tie breaker") and
App. D (attacking them).

**Prediction.** :class:`MajorityVoteEnsemble` predicts the label most members predict; among
tied labels, the one with the largest *summed member softmax probability* wins (our reading
of the paper's "softmax scores as the tie breaker", which does not say how members' scores
combine). Its
``forward`` returns a ``[B, K]`` **vote score**, not logits::

    score_k = votes_k + (Σ_m softmax(f_m(x))_k) / (M + 1)

Votes are integers and the tie-break term lies in ``[0, M/(M+1)] ⊂ [0, 1)``, so
``score.argmax(1)`` is exactly the rule above. Only the tie-break term carries a gradient:
a gradient attack on the score itself mostly ascends a sum of saturated softmaxes and is
weak. Attack the members instead.

**Attacks** (App. D), both PGD on the members' logits:

1. *naive*: ascend Σ_m L(f_m(x'), y) with L = CE or CW (the paper's "minimize the sum of
   losses" read as the attacker's objective: minimising it would defend), with the single
   model split of restarts (N − N//2 CE, N//2 CW);
2. *custom* (:func:`custom_ensemble_loss`), per example and step: while fewer than half the
   members are wrong, the sum of the CW losses of the members still correct; otherwise the
   sum over members of the margin towards label0, the most frequent wrong label (N more
   restarts).

Our PGD (:func:`wideberth.attacks.pgd`) takes a loss ``(logits [B, K'], y) -> [B]`` and
judges success by ``logits.argmax(1) != y``. :class:`EnsembleAttackView` makes both work
for an ensemble: its ``forward`` returns ``[B, (M + 1)·K]``, the vote score (shifted up by
a detached per-example constant so that the row's argmax always falls in it: success means
the *ensemble* is wrong) followed by the M members' exact logits; :class:`EnsembleLoss`
knows M and reads the member blocks back. The same view therefore runs unchanged through
:func:`wideberth.evaluate` (ε-grid reuse, streaming, feasibility re-checks, resume), which
is what :func:`evaluate_ensemble` does. A generic loss (``"ce"``, ``"cw"``) on the view's
output is meaningless: use :class:`EnsembleLoss`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..losses import ce, cw_loss
from .robustness import AttackSpec, EvalReport, evaluate, suite_attacks

__all__ = [
    "ENSEMBLE_ATTACKS",
    "EnsembleAttackView",
    "EnsembleLoss",
    "MajorityVoteEnsemble",
    "custom_ensemble_loss",
    "ensemble_attacks",
    "evaluate_ensemble",
    "majority_vote_scores",
    "naive_ensemble_loss",
    "split_view_output",
]

#: the attack names :func:`ensemble_attacks` and :func:`evaluate_ensemble` accept
ENSEMBLE_ATTACKS = ("naive-ce", "naive-cw", "custom")


def _check_member_logits(member_logits: Tensor, y: Tensor | None = None) -> None:
    if member_logits.dim() != 3:
        raise ValueError(
            f"member logits must have shape [M, B, K]; got shape {list(member_logits.shape)}"
        )
    if member_logits.shape[0] < 1:
        raise ValueError("member logits hold no member (M = 0)")
    if y is not None and (y.dim() != 1 or y.shape[0] != member_logits.shape[1]):
        raise ValueError(
            f"labels must have shape [B] = [{member_logits.shape[1]}]; got shape {list(y.shape)}"
        )


def majority_vote_scores(member_logits: Tensor) -> Tensor:
    """Vote scores ``[B, K]`` of members' logits ``[M, B, K]``: votes + Σ_m softmax / (M + 1).

    ``argmax(1)`` is the majority-vote label with the MMA paper's tie-break (§4.3, App. C:
    among the labels with the most votes, the largest summed member softmax
    probability). Differentiable only through the tie-break term."""
    _check_member_logits(member_logits)
    m, _, k = member_logits.shape
    votes = F.one_hot(member_logits.argmax(2), k).to(member_logits.dtype).sum(0)
    prob_sum = member_logits.softmax(2).sum(0)
    return votes + prob_sum / (m + 1)


class MajorityVoteEnsemble(nn.Module):
    """Majority vote of classifiers with the summed-softmax tie-break (MMA, ICLR 2020, App. C).

    ``forward(x)`` maps images ``[B, C, H, W]`` in [0, 1] to a ``[B, K]`` vote score
    (:func:`majority_vote_scores`) whose argmax is the ensemble's prediction. **It is not
    logits**: do not attack it with a CE/CW loss (only the tie-break term has a gradient);
    attack the members with :meth:`attack_view` and :class:`EnsembleLoss`, or call
    :func:`evaluate_ensemble`. Using it as the *target* of transfer attacks
    (:mod:`wideberth.evaluation.transfer`) or for clean accuracy is fine.

    The members are submodules, so :func:`wideberth.attacks.attack_context` (and
    ``.eval()``, ``.to()``, ``state_dict``) handle them: eval mode and frozen parameters
    during an attack, every member's own modes restored after.

    Args:
        members: the classifiers, each mapping ``[B, C, H, W]`` to logits ``[B, K]`` with the
            same K; at least one.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one member; got an empty list")
        bad = [type(m).__name__ for m in members if not isinstance(m, nn.Module)]
        if bad:
            raise TypeError(f"ensemble members must be nn.Module instances; got {bad}")
        self.members = nn.ModuleList(members)

    @property
    def n_members(self) -> int:
        return len(self.members)

    def member_logits(self, x: Tensor) -> Tensor:
        """The members' logits stacked: ``[M, B, K]``."""
        outs = [member(x) for member in self.members]
        shapes = {tuple(o.shape) for o in outs}
        if len(shapes) != 1 or outs[0].dim() != 2:
            raise ValueError(
                "every member must return logits of the same shape [B, K]; got shapes "
                f"{[list(o.shape) for o in outs]}"
            )
        return torch.stack(outs)

    def forward(self, x: Tensor) -> Tensor:
        """Vote score ``[B, K]`` (not logits; see the class docstring)."""
        return majority_vote_scores(self.member_logits(x))

    def attack_view(self) -> EnsembleAttackView:
        """The :class:`EnsembleAttackView` of this ensemble (shares its members)."""
        return EnsembleAttackView(self)


class EnsembleAttackView(nn.Module):
    """An ensemble seen by a single-model attack: output ``[B, (M + 1)·K]``.

    Columns ``[0, K)`` hold the ensemble's vote score plus a detached per-example constant
    (``max`` of all member logits + 1), so the row's argmax always lies there and equals
    the ensemble's prediction: :func:`wideberth.attacks.pgd`'s success test
    (``argmax != y``) and :func:`wideberth.evaluate`'s re-check then judge the *ensemble*.
    Columns ``[(m + 1)·K, (m + 2)·K)`` hold member m's logits, unchanged. Attack it with an
    :class:`EnsembleLoss` (which knows M); a generic loss on this output is meaningless.

    Args:
        ensemble: the :class:`MajorityVoteEnsemble` (a submodule, so attack contexts reach
            its members).
    """

    def __init__(self, ensemble: MajorityVoteEnsemble) -> None:
        super().__init__()
        if not isinstance(ensemble, MajorityVoteEnsemble):
            raise TypeError(f"expected a MajorityVoteEnsemble; got {type(ensemble).__name__}")
        self.ensemble = ensemble

    @property
    def n_members(self) -> int:
        return self.ensemble.n_members

    def forward(self, x: Tensor) -> Tensor:
        z = self.ensemble.member_logits(x)  # [M, B, K]
        m, b, k = z.shape
        lift = z.detach().amax(dim=(0, 2)).unsqueeze(1) + 1  # [B, 1]
        scores = majority_vote_scores(z) + lift
        return torch.cat([scores, z.permute(1, 0, 2).reshape(b, m * k)], dim=1)

    def split(self, out: Tensor) -> tuple[Tensor, Tensor]:
        """``(shifted vote score [B, K], member logits [M, B, K])`` of a forward output."""
        return split_view_output(out, self.n_members)


def split_view_output(out: Tensor, n_members: int) -> tuple[Tensor, Tensor]:
    """Inverse of :class:`EnsembleAttackView`'s layout: ``[B, (M + 1)·K]`` →
    ``(vote block [B, K], member logits [M, B, K])``."""
    if out.dim() != 2 or n_members < 1 or out.shape[1] % (n_members + 1):
        raise ValueError(
            f"expected an ensemble view output [B, (M + 1)·K] with M = {n_members}; got shape "
            f"{list(out.shape)} (attack an EnsembleAttackView with an EnsembleLoss built for it)"
        )
    b, k = out.shape[0], out.shape[1] // (n_members + 1)
    return out[:, :k], out[:, k:].reshape(b, n_members, k).permute(1, 0, 2)


def naive_ensemble_loss(
    member_logits: Tensor, y: Tensor, loss: str = "ce", *, kappa: float = 50.0
) -> Tensor:
    """The naive ensemble attack's objective (MMA, App. D): Σ_m L(f_m, y), ascended.

    Args:
        member_logits: ``[M, B, K]``.
        y: labels ``[B]``.
        loss: ``"ce"`` or ``"cw"`` (AdverTorch's ``max(LM + κ, 0)``, the form of MMA's
            released evaluation; the paper's footnote 10 prints ``min{LM, 0}``).
        kappa: the CW confidence κ.

    Returns:
        ``[B]``.
    """
    _check_member_logits(member_logits, y)
    m, b, k = member_logits.shape
    flat, yy = member_logits.reshape(m * b, k), y.repeat(m)
    if loss == "ce":
        per = ce(flat, yy)
    elif loss == "cw":
        per = cw_loss(flat, yy, kappa=kappa, form="advertorch")
    else:
        raise ValueError(f"the naive ensemble loss is 'ce' or 'cw'; got {loss!r}")
    return per.reshape(m, b).sum(0)


def custom_ensemble_loss(
    member_logits: Tensor, y: Tensor, *, kappa: float = 50.0, literal: bool = False
) -> Tensor:
    """The MMA paper's custom ensemble-attack loss (Ding et al., ICLR 2020, App. D), ascended.

    Per example, with M members of which W predict a wrong label (``argmax ≠ y``):

    * ``2W < M`` (fewer than half wrong): Σ over the members still correct of their CW loss,
      AdverTorch form ``max(LM + κ, 0)`` (MMA's released evaluation; footnote 10);
    * otherwise: label0 = the wrong label predicted by the most members (ties: the largest
      summed member softmax probability, as in the vote's tie-break); per member, logit0 = its logit of
      label0 and logit1 = its largest logit of another label; the loss is
      ``Σ_m (logit0 − logit1)``, which pushes every member towards label0.

    The paper prints the second branch as "the loss we maximize is the sum of
    logit1 − logit0". Ascending that pushes every member *away* from label0 (a member
    voting label0 is moved to its runner-up, often the true label), which defends rather
    than attacks: we read it as a sign slip, like the naive attack's "minimize the sum of
    losses". ``literal=True`` ascends ``Σ_m (logit1 − logit0)`` exactly as printed.
    Exactly half wrong counts as the second branch (the paper covers only fewer and more
    than half).

    Args:
        member_logits: ``[M, B, K]``, ``K >= 2``.
        y: labels ``[B]``.
        kappa: CW confidence κ of the first branch.
        literal: the printed sign of the second branch (see above).

    Returns:
        ``[B]``.
    """
    _check_member_logits(member_logits, y)
    m, b, k = member_logits.shape
    if k < 2:
        raise ValueError(f"the custom ensemble loss needs at least 2 classes; got K = {k}")
    z = member_logits
    y = y.long()
    pred = z.detach().argmax(2)  # [M, B]
    wrong = pred != y.unsqueeze(0)
    n_wrong = wrong.sum(0)
    # branch 1: CW of the members still correct
    cw = cw_loss(z.reshape(m * b, k), y.repeat(m), kappa=kappa, form="advertorch").reshape(m, b)
    few = (cw * (~wrong).to(cw.dtype)).sum(0)
    # branch 2: label0 = most frequent wrong label, ties by summed softmax (< 1, so it only
    # breaks ties; the true label has no wrong vote and a wrong label has at least one)
    wrong_votes = (F.one_hot(pred, k) * wrong.unsqueeze(2)).sum(0).to(z.dtype)  # [B, K]
    label0 = (wrong_votes + z.detach().softmax(2).sum(0) / (m + 1)).argmax(1)  # [B]
    idx = label0.view(1, b, 1).expand(m, b, 1)
    logit0 = z.gather(2, idx).squeeze(2)  # [M, B]
    logit1 = z.scatter(2, idx, float("-inf")).amax(2)
    margin = (logit1 - logit0) if literal else (logit0 - logit1)
    many = margin.sum(0)
    return torch.where(2 * n_wrong < m, few, many)


@dataclass(frozen=True)
class EnsembleLoss:
    """A PGD loss for an :class:`EnsembleAttackView`: ``loss(view_output, y) -> [B]``.

    Attributes:
        n_members: M, to read the member logits back from the view's output.
        kind: ``"ce"`` / ``"cw"`` (:func:`naive_ensemble_loss`) or ``"custom"``
            (:func:`custom_ensemble_loss`).
        kappa: CW confidence κ (AdverTorch form, 50 by default as in MMA's evaluation).
        literal: the custom loss's printed sign (see :func:`custom_ensemble_loss`).

    A frozen dataclass, so an :class:`AttackSpec` holding it stays comparable and
    JSON-serialisable (:func:`wideberth.evaluate`'s ``state_file`` works).
    """

    n_members: int
    kind: str = "ce"
    kappa: float = 50.0
    literal: bool = False

    def __post_init__(self) -> None:
        if self.n_members < 1:
            raise ValueError(f"n_members must be >= 1; got {self.n_members}")
        if self.kind not in ("ce", "cw", "custom"):
            raise ValueError(f"kind must be 'ce', 'cw' or 'custom'; got {self.kind!r}")

    def __call__(self, out: Tensor, y: Tensor) -> Tensor:
        _, z = split_view_output(out, self.n_members)
        if self.kind == "custom":
            return custom_ensemble_loss(z, y, kappa=self.kappa, literal=self.literal)
        return naive_ensemble_loss(z, y, self.kind, kappa=self.kappa)


def ensemble_attacks(
    n_members: int,
    norm: str,
    image_shape: Sequence[int],
    *,
    restarts: int = 10,
    steps: int = 100,
    step: float | None = None,
    attacks: Sequence[str] = ENSEMBLE_ATTACKS,
    literal: bool = False,
    kappa: float = 50.0,
) -> list[AttackSpec]:
    """The MMA paper's ensemble attacks as a suite for an :class:`EnsembleAttackView`.

    Built from the ``paper`` suite (:func:`wideberth.evaluation.robustness.suite_attacks`:
    its CE/CW restart split, step rule ε/4 or ε/40 for ℓ∞ MNIST, AdverTorch start) with
    ``steps`` iterations: ``naive-ce`` (N − N//2 restarts), ``naive-cw`` (N//2) and
    ``custom`` (N more), N = ``restarts`` (App. D: 50 for MNIST, 10 for CIFAR-10).
    With N = 1 the paper's split gives CW no restart, so ``naive-cw`` is left out.

    Args:
        n_members: M.
        norm: threat model (``"linf"``, ``"l2"``, ``"l1"``).
        image_shape: ``(C, H, W)`` (selects the step rule).
        restarts, steps: N and the PGD iterations (paper: 100).
        step: step size as a fraction of ε (``None``: the paper's rule).
        attacks: a subset of :data:`ENSEMBLE_ATTACKS`, run in the given order.
        literal, kappa: see :class:`EnsembleLoss`.
    """
    unknown = [a for a in attacks if a not in ENSEMBLE_ATTACKS]
    if unknown or not attacks:
        raise ValueError(
            f"attacks must be a non-empty subset of {ENSEMBLE_ATTACKS}; got {list(attacks)}"
        )
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    paper = suite_attacks("paper", norm, image_shape, restarts)
    base = {s.loss: s for s in paper}  # "ce" always, "cw" when N >= 2
    common = {"steps": steps} if step is None else {"steps": steps, "step": step}
    specs = []
    for name in attacks:
        if name == "custom":
            loss = EnsembleLoss(n_members, "custom", kappa, literal)
            specs.append(dataclasses.replace(base["ce"], restarts=restarts, loss=loss,
                                             label=name, **common))
        elif name[len("naive-"):] in base:
            kind = name[len("naive-"):]
            specs.append(dataclasses.replace(base[kind], loss=EnsembleLoss(n_members, kind, kappa),
                                             label=name, **common))
    if not specs:
        raise ValueError(f"no attack left: with restarts={restarts} the paper's split gives "
                         "naive-cw no restart (it needs restarts >= 2)")
    return specs


def evaluate_ensemble(
    members: Sequence[nn.Module] | MajorityVoteEnsemble,
    x: Tensor,
    y: Tensor,
    *,
    norm: str,
    epsilons: Sequence[float],
    restarts: int = 10,
    steps: int = 100,
    step: float | None = None,
    attacks: Sequence[str] = ENSEMBLE_ATTACKS,
    literal: bool = False,
    kappa: float = 50.0,
    batch_size: int = 500,
    seed: int = 0,
    state_file: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvalReport:
    """Robust accuracy of a majority-vote ensemble under the MMA paper's ensemble attacks.

    Paper: Ding et al., MMA training, ICLR 2020, App. D. Norms:
    ``"linf"``, ``"l2"``, ``"l1"``. Per ε, an example is robust iff the ensemble
    (:class:`MajorityVoteEnsemble`) classifies it correctly and no attack of
    :func:`ensemble_attacks` (naive CE, naive CW, custom) makes it wrong: the pointwise worst
    case. Runs :func:`wideberth.evaluate` on the :class:`EnsembleAttackView`, so it keeps
    its conventions (a clean error is never robust, AvgAcc has k + 1 terms and AvgRobAcc k,
    ε-grid reuse, feasibility re-checks, streaming, ``state_file`` resume).

    Args:
        members: the member classifiers (logits ``[B, K]``), or the ensemble itself.
        x: images ``[N, C, H, W]`` in [0, 1]; y: labels ``[N]``.
        norm, epsilons: threat model and radii > 0.
        restarts, steps, step, attacks, literal, kappa: see :func:`ensemble_attacks`.
        batch_size, seed, state_file, progress: see :func:`wideberth.evaluate`.

    Returns:
        :class:`wideberth.evaluation.robustness.EvalReport` with ``suite="ensemble"`` and the
        attack names ``naive-ce``, ``naive-cw``, ``custom``.
    """
    ensemble = members if isinstance(members, MajorityVoteEnsemble) else MajorityVoteEnsemble(members)
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(
            f"x must be images of shape [N, C, H, W]; got {list(getattr(x, 'shape', []))}"
        )
    specs = ensemble_attacks(
        ensemble.n_members, norm, tuple(x.shape[1:]), restarts=restarts, steps=steps, step=step,
        attacks=attacks, literal=literal, kappa=kappa,
    )
    report = evaluate(
        ensemble.attack_view(), x, y, norm=norm, epsilons=epsilons, suite=specs,
        batch_size=batch_size, seed=seed, state_file=state_file, progress=progress,
    )
    report.suite = "ensemble"
    return report
