"""MMA and OMMA training: adversarial training at each example's own margin.

Paper: Ding, Sharma, Lui & Huang, *MMA Training: Direct Input Space Margin Maximization
through Adversarial Training*, ICLR 2020 (§2.4–2.5, Eqs. 7–8, Algorithm 2), with the
authors' code (``BorealisAI/mma_training``, ``trainer.py: train_one_batch``) settling what
the paper leaves open. Norms: ``"linf"`` and ``"l2"`` as in the paper (``"l1"`` also runs).

One step on a batch of ``m`` examples (Algorithm 2, as the authors' ``train_one_batch``
does it), model in train mode:

1. Clean forward ``f(x)`` (train mode: BatchNorm uses and updates batch statistics).
   ``L_cln = (1/m)·Σ_j CE(x_j)``.
2. Split: *correct* ⇔ ``SLM(f(x), y) < 0`` (code, ``correct_by="slm"``, i.e. ``p_y > 1/2``);
   the paper's ``LM < 0`` (ties wrong) is ``correct_by="lm"``; ``"argmax"`` is
   ``argmax f(x) == y`` (torch's tie rule). Everything else is *wrong*.
3. AN-PGD (:func:`wideberth.attacks.an_pgd`) on the correct subset only, in one batched
   call, from ``ε_init = max(ε_min, stored ε)`` (stored ε read by dataset index), with
   ``ε_max = 1.05·d_max``, PGD step ``step_scale·ε_init/steps`` per example, SLM for PGD
   and bisection → ``(x*, ε*)``. PGD runs in eval mode (BatchNorm running statistics,
   frozen parameters); the bisection too unless ``search_in_eval=False``.
4. Mixed batch ``x_mix``: ``x`` with every correct row replaced by its ``x*`` (hinge-dropped
   ones included, as in the code); second forward ``f(x_mix)`` in train mode, so BatchNorm
   sees a clean batch and then a mixed batch (two separate forwards, as in the code).
5. ``L_MMA = (1/m)·[Σ_{correct, ε* < d_max} CE(x*_i) + Σ_{wrong} CE(x_j)]`` – hinge-dropped
   examples (``ε* ≥ d_max``, which includes "no success found", since the search then ends
   above ``d_max``) contribute nothing; misclassified examples are not attacked and get
   their clean CE (from the mixed forward, where their rows are clean).
6. ``loss = (1 − c)·L_MMA + c·L_cln`` with ``c = clean_coeff`` (MMA: 1/3, Eq. 8; OMMA: 0,
   Eq. 7). A misclassified example's clean CE thus has total weight ``c + (1 − c) = 1``.
   The trainer does one backward on this sum, which equals the code's two backward passes
   combined as ``(1 − c)·∇L_MMA + c·∇L_cln``.
7. Store update (inside :meth:`MMA.loss`, before the optimiser step; the store is only read
   at the next visit of the same example): ``ε ← ε*`` for correct examples, ``0`` for wrong
   ones, at the batch's dataset indices. The ``max(ε_min, ·)`` floor on read makes a wrong
   example restart from ``ε_min``.

Per-example state (:class:`~wideberth.example_state.ExampleState`, saved in checkpoints):

* ``mma_eps`` – the stored ε (initialised to ``ε_min``).
* ``mma_epoch`` – the epoch (0-based) of the example's last visit, ``-1`` before any.
* ``mma_status`` – what happened at that visit: 0 = correct and trained at ``x*``,
  1 = correct but hinge-dropped (``ε* ≥ d_max``), 2 = misclassified (by ``correct_by``).

Per-epoch logs (:meth:`MMA.epoch_logs`) are computed from that state alone – no counters
live in the method object – so a run resumed from any checkpoint (end of epoch or mid
epoch) logs exactly the numbers the uninterrupted run logs: the examples already visited in
the interrupted epoch carry their ``mma_epoch``/``mma_status`` in the checkpoint, the rest
are visited after the resume.

Choices that differ from the authors' code are AN-PGD's (``clip_final=True``,
``search_in_eval=True``; see :mod:`wideberth.attacks.anpgd`) and are flags here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..attacks.anpgd import an_pgd
from ..losses import ce, get_loss, logit_margin, soft_logit_margin
from ..params import param
from ..threat import normalize_norm
from .base import Batch, Method, MethodParams, StepContext

__all__ = ["MMA", "MMAParams", "OMMA", "OMMAParams", "EPS_MAX_FACTOR", "HIST_BINS"]

#: ``ε_max = EPS_MAX_FACTOR · d_max`` (Ding et al. 2020, App. C): the 5 % above d_max is
#: what lets a failed search end above d_max, so the hinge drops that example.
EPS_MAX_FACTOR = 1.05
#: Number of bins of the per-epoch histogram of stored ε over ``[0, ε_max]``.
HIST_BINS = 10

_CORRECT_BY = ("slm", "lm", "argmax")
_DIRECTIONS = ("eps_init", "actual_norm")
_RETURN_MODES = ("last_mid", "upper")
_INITS = ("advertorch", "uniform", "zero")
_PROJECTIONS = ("approx", "exact")

#: ``mma_status`` codes.
STATUS_TRAINED, STATUS_DROPPED, STATUS_WRONG = 0, 1, 2


def _loss_name(value: Any) -> str:
    """``value`` if it names a loss of :func:`wideberth.losses.get_loss`."""
    if not isinstance(value, str):
        raise TypeError(f"expected a loss name, got {value!r}")
    get_loss(value)
    return value


@dataclass
class MMAParams(MethodParams):
    """Parameters of MMA training (Ding et al. 2020, §2.5 and App. C; where the paper is
    silent, the defaults are the authors' code's).

    Attributes:
        d_max: hinge threshold (required). Correct examples whose estimated margin
            ε* is ≥ d_max get no adversarial term. ε_max = 1.05·d_max. Units: raw [0, 1]
            pixel scale (CIFAR-10 ℓ∞ MMA-32 → 32/255 = 0.1255).
        norm: ``"linf"`` or ``"l2"`` (``"l1"`` runs too).
        eps_min: ε floor, used as ``ε_init = max(ε_min, stored ε)`` and as the initial
            stored ε. Paper/code values: MNIST-ℓ∞ 0.1, MNIST-ℓ2 0.5, CIFAR-10-ℓ2 0.5,
            CIFAR-10-ℓ∞ 0.005 (code; the paper's App. C text says 0.05). Must be
            > 0 (AN-PGD needs a positive radius; misclassified examples are stored as 0) and
            < ε_max.
        steps: PGD iterations of AN-PGD (40 MNIST, 10 CIFAR-10).
        step_scale: PGD step = ``step_scale·ε_init/steps`` per example (2.5).
        n_search: bisection steps (10).
        clean_coeff: ``c`` in ``(1 − c)·L_MMA + c·L_cln``; 1/3 for MMA (Eq. 8), 0 for OMMA.
        correct_by: split criterion on the clean train-mode logits: ``"slm"`` (code,
            SLM < 0 ⇔ p_y > 1/2; default), ``"lm"`` (the paper's Eq. 3, LM < 0, ties
            wrong) or ``"argmax"`` (``argmax == y``).
        attack_loss, search_loss: losses of AN-PGD's PGD and bisection (both SLM in MMA).
        direction, return_mode, clip_final, search_in_eval: AN-PGD flags (where the
            authors' code departs from the paper's Algorithm 1), see
            :func:`wideberth.attacks.an_pgd`; defaults are the library's.
        init, projection: AN-PGD's PGD random start and projection (advertorch's, as in
            the code).
    """

    d_max: float = param(gt=0, hint="the hinge threshold")
    norm: str = param("linf", convert=normalize_norm)
    eps_min: float = param(
        0.1, gt=0,
        hint="AN-PGD starts at max(eps_min, stored eps) and misclassified examples are "
        "stored as 0",
    )
    steps: int = param(40, ge=1)
    step_scale: float = param(2.5, gt=0)
    n_search: int = param(10, ge=1)
    clean_coeff: float = param(1.0 / 3.0, ge=0, le=1, hint="1/3 for MMA, 0 for OMMA")
    correct_by: str = param("slm", choices=_CORRECT_BY)
    attack_loss: str = param("slm", convert=_loss_name)
    search_loss: str = param("slm", convert=_loss_name)
    direction: str = param("eps_init", choices=_DIRECTIONS)
    return_mode: str = param("last_mid", choices=_RETURN_MODES)
    clip_final: bool = True
    search_in_eval: bool = True
    init: str = param("advertorch", choices=_INITS)
    projection: str = param("approx", choices=_PROJECTIONS)

    method_name: ClassVar[str] = "mma"

    def check(self) -> None:
        """``eps_min`` must lie below ``eps_max = 1.05·d_max``."""
        if self.eps_min >= self.eps_max:
            self.fail(
                f"params.eps_min ({self.eps_min}) must be below eps_max = "
                f"{EPS_MAX_FACTOR}*d_max = {self.eps_max:g}; lower eps_min or raise d_max"
            )

    @property
    def eps_max(self) -> float:
        """Upper end of AN-PGD's search: ``1.05·d_max``."""
        return EPS_MAX_FACTOR * self.d_max


@dataclass
class OMMAParams(MMAParams):
    """OMMA = MMA without the extra clean term (Eq. 7): ``clean_coeff`` is fixed to 0."""

    clean_coeff: float = param(0.0, ge=0, le=1, hint="0 for OMMA")

    method_name: ClassVar[str] = "omma"

    def check(self) -> None:
        """As MMA's, and ``clean_coeff`` must be 0."""
        super().check()
        if self.clean_coeff != 0.0:
            self.fail(
                "params.clean_coeff must be 0 (OMMA is MMA with clean_coeff 0); to use another "
                f"clean_coeff, train with method 'mma' (got clean_coeff {self.clean_coeff})"
            )


class MMA(Method):
    """Max-Margin Adversarial training (Ding et al., ICLR 2020, Eq. 8 and Algorithm 2).

    See the module docstring for the step. ``loss`` returns ``(loss, clean_logits)``;
    the per-example ε store is updated inside ``loss``.

    Example (YAML ``method`` section)::

        method:
          name: mma
          params: {norm: linf, d_max: 0.45, eps_min: 0.1, steps: 40}
    """

    name = "mma"
    Params = MMAParams
    params: MMAParams

    EPS_FIELD: ClassVar[str] = "mma_eps"
    EPOCH_FIELD: ClassVar[str] = "mma_epoch"
    STATUS_FIELD: ClassVar[str] = "mma_status"

    def __init__(self, params: MethodParams) -> None:
        if not isinstance(params, MMAParams):
            raise TypeError(f"{type(self).__name__} needs MMAParams, got {type(params).__name__}")
        super().__init__(params)

    # ------------------------------------------------------------------ setup
    def setup(self, model: nn.Module, state: Any, num_train: int) -> None:
        """Register the per-example fields (ε at ε_min, never visited)."""
        state.register(self.EPS_FIELD, default=self.params.eps_min)
        state.register(self.EPOCH_FIELD, default=-1, dtype=torch.int64)
        state.register(self.STATUS_FIELD, default=0, dtype=torch.int64)

    # ------------------------------------------------------------------ the step
    def _correct(self, logits: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            lg = logits.detach()
            if self.params.correct_by == "slm":
                return soft_logit_margin(lg, y) < 0
            if self.params.correct_by == "lm":
                return logit_margin(lg, y) < 0
            return lg.argmax(1) == y

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> tuple[Tensor, Tensor]:
        """The MMA loss of one batch (Eqs. 7–8, normalised by the full batch size as in the
        authors' code) and the clean train-mode logits."""
        p = self.params
        x, y = batch.x, batch.y
        m = x.shape[0]
        c = p.clean_coeff
        index = batch.index

        # 1. clean forward, train mode (no graph needed when the clean term has weight 0)
        if c > 0:
            logits = model(x)
            loss_cln = ce(logits, y, reduction="mean")
        else:
            with torch.no_grad():
                logits = model(x)
            loss_cln = None

        # 2. split
        correct = self._correct(logits, y)
        wrong = ~correct

        # 3. AN-PGD on the correct subset, one batched call
        eps_star = torch.zeros(m, device=x.device, dtype=x.dtype)
        x_mix = x.detach().clone()
        if bool(correct.any()):
            stored = ctx.state.get(self.EPS_FIELD, index[correct.to(index.device)])
            eps_init = stored.to(x.device, x.dtype).clamp(min=p.eps_min)
            res = an_pgd(
                model,
                x[correct].detach(),
                y[correct],
                norm=p.norm,
                eps_init=eps_init,
                eps_max=p.eps_max,
                steps=p.steps,
                step_scale=p.step_scale,
                n_search=p.n_search,
                attack_loss=p.attack_loss,
                search_loss=p.search_loss,
                direction=p.direction,  # type: ignore[arg-type]
                return_mode=p.return_mode,  # type: ignore[arg-type]
                clip_final=p.clip_final,
                search_in_eval=p.search_in_eval,
                init=p.init,
                projection=p.projection,
                generator=ctx.generator,
                check=False,
            )
            x_mix[correct] = res.x_adv.to(x.dtype)
            eps_star[correct] = res.eps.to(x.dtype)

        # 4.–5. mixed forward, train mode; hinge (strict) and wrong rows
        keep = correct & (eps_star < p.d_max)
        dropped = correct & ~keep
        ce_mix = ce(model(x_mix), y)
        loss_mma = ce_mix[keep | wrong].sum() / m

        # 6. combination (one backward in the trainer)
        loss = loss_mma if loss_cln is None else (1.0 - c) * loss_mma + c * loss_cln

        # 7. store: ε* for correct rows, 0 for wrong ones (eps_star is 0 there already)
        self._record(ctx, index, eps_star, dropped, wrong)
        return loss, logits

    def _record(
        self, ctx: StepContext, index: Tensor, eps_star: Tensor, dropped: Tensor, wrong: Tensor
    ) -> None:
        state = ctx.state
        status = torch.full_like(index, STATUS_TRAINED, dtype=torch.int64, device="cpu")
        status[dropped.cpu()] = STATUS_DROPPED
        status[wrong.cpu()] = STATUS_WRONG
        state.set(self.EPS_FIELD, index, eps_star.detach())
        state.set(self.EPOCH_FIELD, index, torch.full_like(status, int(ctx.epoch)))
        state.set(self.STATUS_FIELD, index, status)

    # ------------------------------------------------------------------ logs
    def epoch_logs(self, state: Any, epoch: int) -> dict[str, Any]:
        """Per-epoch margin statistics, computed from the per-example state only.

        - ``mma_eps_mean``: mean stored ε over the training examples visited so far (after
          the first full epoch: the whole training set).
        - ``mma_eps_hist``: counts of those ε in ``HIST_BINS`` equal bins over
          ``[0, ε_max]`` (``mma_eps_hist_max`` = ε_max; ε_max itself falls in the last bin).
        - ``mma_dropped_frac``: fraction of the examples visited in this epoch that were
          correct but hinge-dropped (ε* ≥ d_max).
        - ``mma_wrong_frac``: fraction of them that were misclassified by ``correct_by``.
        - ``mma_visited``: number of examples visited in this epoch.
        """
        p = self.params
        last = state.all(self.EPOCH_FIELD)
        eps = state.all(self.EPS_FIELD)[last >= 0].double()
        this = last == epoch
        status = state.all(self.STATUS_FIELD)[this]
        n = int(this.sum())
        if eps.numel():
            hist = torch.histc(eps.clamp(0.0, p.eps_max), bins=HIST_BINS, min=0.0, max=p.eps_max)
            mean = float(eps.mean())
        else:
            hist, mean = torch.zeros(HIST_BINS, dtype=torch.float64), 0.0
        return {
            "mma_eps_mean": mean,
            "mma_eps_hist": [int(v) for v in hist.round().tolist()],
            "mma_eps_hist_max": p.eps_max,
            "mma_dropped_frac": float((status == STATUS_DROPPED).sum()) / max(n, 1),
            "mma_wrong_frac": float((status == STATUS_WRONG).sum()) / max(n, 1),
            "mma_visited": n,
        }


class OMMA(MMA):
    """OMMA: MMA without the extra clean loss (Eq. 7 alone; ``clean_coeff = 0``)."""

    name = "omma"
    Params = OMMAParams
