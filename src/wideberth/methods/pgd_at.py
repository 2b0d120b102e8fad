"""PGD adversarial training (Madry et al.) and PGD with linear ε scaling (PGDLS).

**PGD-AT** (Madry et al., *Towards Deep Learning Models Resistant to Adversarial Attacks*,
ICLR 2018; the "PGD-ε" baseline of Ding et al., *MMA Training*, ICLR 2020, §4 and App. C)
minimises the robust cross-entropy

    min_θ  E  max_{‖δ‖ ≤ ε, x+δ ∈ [0, 1]}  CE(f_θ(x + δ), y)

with the inner maximisation approximated by PGD (:func:`wideberth.attacks.pgd`), and the
θ-update taken on the **last** PGD iterate (as in both papers). Optionally the clean loss is
mixed in: ``(1 − w)·CE(f(x_adv), y) + w·CE(f(x), y)`` (``clean_weight = w``; default 0,
"pure Madry": the MMA paper does not say whether its PGD baselines mix in the clean loss;
pure adversarial CE is the library's reading).

**PGDLS** (MMA paper §4.2, "PGD with Linear Scaling") is PGD-AT whose ε grows linearly from 0
to the target over the first ``ramp_epochs`` epochs (50 in the paper), then stays constant.
The paper says only "linearly in 50 epochs"; the ramp here is applied per optimiser step,
see :func:`pgdls_eps` for the exact convention. The PGD step size scales with the current ε
(so the step stays ``step_scale·ε_t/steps``, as App. C's 2.5·ε/steps rule at every ε).

Norms: anything :func:`wideberth.threat.get_threat` accepts (``"linf"``, ``"l2"``,
``"l1"``); the papers use ℓ∞ and ℓ2.

MMA's settings (Ding et al. 2020, App. C, the same for PGD and MMA training): 40-step
(MNIST) / 10-step (CIFAR-10) PGD on the **soft logit margin** (``attack_loss: slm``) with
step ``2.5·ε/steps`` and advertorch's random start (``init: advertorch``); the θ-loss is CE.
SLM and CE give identical sign / normalised-gradient PGD iterates (Ding et al. 2020,
Prop. 2.4), but SLM does not saturate in float32.

BatchNorm during the attack (``attack_bn``, :mod:`wideberth.methods.common`):

* ``"eval"`` (default; what MMA's and TRADES' code do): the attack runs the model in eval
  mode, so BatchNorm normalises with its running statistics and dropout is off; the model's
  modes (and the BN running statistics) are exactly as before once the attack returns.
  The attack therefore targets a slightly different function (eval-mode BN) from the one
  the loss is computed on (train-mode BN, batch statistics of the adversarial batch).
* ``"train"``: the attack calls the model in train mode (through a plain callable, which
  :func:`wideberth.attacks.pgd` does not mode-switch): BN uses the current batch's
  statistics, as in the loss forward, and dropout is active. Trade-off: every attack
  forward also **updates the BN running statistics** (``steps`` extra momentum updates per
  training step, with statistics of intermediate iterates), and dropout makes the attack's
  gradients noisy. For models without BatchNorm and dropout the two modes are identical.
  Parameters are frozen (``requires_grad=False``) during the attack in both modes, so no
  parameter gradient is built or touched.

Training accuracy: :meth:`PGDAT.loss` returns the logits the loss was computed on, the
**adversarial** ones, so the trainer's ``train_accuracy`` is the running accuracy on the
training attack's outputs (robust training accuracy, what Madry's code logs). Clean
accuracy is logged separately as ``train_clean_accuracy`` (``log_clean_accuracy: true``):
one extra no-grad forward of the clean batch in **eval** mode per step (a train-mode
no-grad forward would move the BN running statistics); each training example's last result
is kept in the per-example state (so the number is exact across resume) and the epoch log
reports the mean over the examples seen so far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._modes import eval_mode
from ..attacks.projected_gradient import pgd
from ..params import param
from ..threat import normalize_norm
from .base import Batch, Method, MethodParams, StepContext
from .common import BN_MODES, attack_forward

__all__ = ["PGDAT", "PGDATParams", "PGDLS", "PGDLSParams", "pgdls_eps", "attack_forward"]

ATTACK_LOSSES = ("ce", "slm", "lm", "cw")
INITS = ("uniform", "advertorch", "zero")
PROJECTIONS = ("exact", "approx")

#: per-example state field holding the clean-correct flag (NaN: never seen) of PGD-AT.
CLEAN_FIELD = "pgd_at_clean_correct"

EPS_HINT = (
    "the perturbation radius, e.g. 0.3 for MNIST ℓ∞, 0.03137 = 8/255 for CIFAR-10 ℓ∞, "
    "2.0 for MNIST ℓ2"
)


# --------------------------------------------------------------------------- PGD-AT

@dataclass
class PGDATParams(MethodParams):
    """Parameters of PGD adversarial training (``method.name: pgd-at``).

    Attributes:
        norm: threat model, ``"linf"`` (default), ``"l2"`` or ``"l1"``.
        eps: perturbation radius (required); ℓ∞ on [0, 1] pixels (CIFAR-10: write k/255 as
            a number), ℓ2 / ℓ1 raw.
        steps: PGD iterations (MMA: 40 on MNIST, 10 on CIFAR-10).
        step_size: absolute PGD step; ``None`` → ``step_scale·eps/steps``.
        step_scale: multiplier of ``eps/steps`` when ``step_size`` is None (MMA: 2.5).
        attack_loss: loss the attack ascends: ``"ce"`` (default), ``"slm"`` (MMA's
            recipes), ``"lm"`` or ``"cw"``. The θ-loss is always CE.
        init: PGD start, ``"uniform"`` (uniform in ball ∩ box), ``"advertorch"`` (MMA's
            code) or ``"zero"``.
        projection: ``"exact"`` projection onto ball ∩ box, or ``"approx"`` (advertorch's
            clip-then-shrink; identical for ℓ∞).
        clean_weight: w in ``(1 − w)·CE(adv) + w·CE(clean)``; 0 = pure adversarial CE.
        attack_bn: ``"eval"`` (default) or ``"train"``: the model's mode during the attack
            (see the module docstring for the trade-off).
        return_best: train on PGD's best iterate instead of the last one (default False,
            as the papers).
        log_clean_accuracy: one extra eval-mode no-grad clean forward per step to log
            ``train_clean_accuracy`` per epoch.
    """

    norm: str = param("linf", convert=normalize_norm)
    eps: float | None = param(None, required=True, ge=0, hint=EPS_HINT)
    steps: int = param(10, ge=0)
    step_size: float | None = param(None, ge=0)
    step_scale: float = param(2.5, ge=0)
    attack_loss: str = param("ce", choices=ATTACK_LOSSES)
    init: str = param("uniform", choices=INITS)
    projection: str = param("exact", choices=PROJECTIONS)
    clean_weight: float = param(0.0, ge=0, le=1)
    attack_bn: str = param("eval", choices=BN_MODES)
    return_best: bool = False
    log_clean_accuracy: bool = True

    method_name: ClassVar[str] = "pgd-at"


class PGDAT(Method):
    """Madry et al. (ICLR 2018) PGD adversarial training; MMA's PGD-ε baseline.

    Loss per batch (model in train mode, mean over the batch)::

        x_adv = PGD(f, x, y; norm, ε, steps, step, attack_loss)      (detached, last iterate)
        L = (1 − w)·CE(f(x_adv), y) + w·CE(f(x), y)                   (w = clean_weight)

    The attack's random start draws from ``ctx.generator`` (reproducible, resume-exact).
    Returns ``(L, f(x_adv))``: the adversarial logits (see the module docstring).
    """

    name = "pgd-at"
    Params = PGDATParams
    params: PGDATParams

    def __init__(self, params: MethodParams) -> None:
        super().__init__(params)
        self._last_eps: float | None = None

    # -- hooks for PGDLS
    def current_eps(self, ctx: StepContext) -> float:
        """ε used at this step (constant for PGD-AT)."""
        assert self.params.eps is not None
        return self.params.eps

    def step_size_for(self, eps: float) -> float:
        """PGD step for radius ``eps``: ``step_size·eps/target`` (scaled with ε, so equal to
        ``step_size`` at the target), or ``step_scale·eps/steps`` when ``step_size`` is None."""
        p = self.params
        assert p.eps is not None
        if p.step_size is None:
            return p.step_scale * eps / max(p.steps, 1)
        if p.eps == 0:
            return 0.0
        return p.step_size if eps == p.eps else p.step_size * eps / p.eps

    # -- Method API
    def setup(self, model: nn.Module, state: Any, num_train: int) -> None:
        if self.params.log_clean_accuracy:
            state.register(CLEAN_FIELD, default=math.nan)

    def adversarial(self, model: nn.Module, x: Tensor, y: Tensor, eps: float,
                    generator: torch.Generator | None) -> Tensor:
        """The training attack's output for ``(x, y)`` at radius ``eps`` (detached)."""
        p = self.params
        if eps == 0 or p.steps == 0:
            return x.detach()
        with attack_forward(model, p.attack_bn) as fwd:
            return pgd(
                fwd,
                x,
                y,
                norm=p.norm,
                eps=eps,
                steps=p.steps,
                step_size=self.step_size_for(eps),
                loss=p.attack_loss,
                init=p.init,
                return_best=p.return_best,
                projection=p.projection,
                generator=generator,
                check=False,  # training data is valid; a check forward would move BN stats
            )

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> tuple[Tensor, Tensor]:
        p = self.params
        x, y = batch.x, batch.y
        eps = self.current_eps(ctx)
        self._last_eps = eps
        if p.log_clean_accuracy and ctx.state is not None and CLEAN_FIELD in ctx.state:
            with torch.no_grad(), eval_mode(model):
                correct = (model(x).argmax(1) == y).float()
            ctx.state.set(CLEAN_FIELD, batch.index, correct)
        x_adv = self.adversarial(model, x, y, eps, ctx.generator)
        logits_adv = model(x_adv)
        loss = F.cross_entropy(logits_adv, y)
        if p.clean_weight > 0:
            loss_clean = F.cross_entropy(model(x), y)
            loss = (1 - p.clean_weight) * loss + p.clean_weight * loss_clean
        return loss, logits_adv

    def epoch_logs(self, state: Any, epoch: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self._last_eps is not None:
            out["eps"] = self._last_eps
        if self.params.log_clean_accuracy and state is not None and CLEAN_FIELD in state:
            v = state.all(CLEAN_FIELD)
            seen = ~torch.isnan(v)
            if bool(seen.any()):
                out["train_clean_accuracy"] = float(v[seen].mean())
        return out


# --------------------------------------------------------------------------- PGDLS

def pgdls_eps(step: int, steps_per_epoch: int, eps: float, ramp_epochs: float) -> float:
    """ε of PGDLS at (0-based) optimiser step ``step``.

    ``ε_t = eps · min(1, (step + 1) / (ramp_epochs · steps_per_epoch))``: the linear ramp
    ε(t) = eps·t/T, T = ramp_epochs·steps_per_epoch, is 0 at the start of training (t = 0)
    and each step uses its value at the **end** of the step (t = step + 1). So step 0 uses
    eps/T (no step is spent at ε = 0), and ε reaches ``eps`` exactly at the last step of
    epoch ``ramp_epochs`` (step T − 1), then stays there. ``ramp_epochs = 0`` gives
    ``eps`` throughout (plain PGD-AT).
    """
    if step < 0 or steps_per_epoch <= 0:
        raise ValueError(
            f"step must be >= 0 and steps_per_epoch > 0; got {step}, {steps_per_epoch}"
        )
    if ramp_epochs < 0:
        raise ValueError(f"ramp_epochs must be >= 0; got {ramp_epochs}")
    total = ramp_epochs * steps_per_epoch
    if step + 1 >= total:
        return float(eps)
    return float(eps) * (step + 1) / total


@dataclass
class PGDLSParams(PGDATParams):
    """PGD-AT parameters plus ``ramp_epochs`` (default 50, the MMA paper's): the number of
    epochs over which ε grows linearly from 0 to ``eps`` (per step, see :func:`pgdls_eps`).
    An explicit ``step_size`` is the step at the full ``eps`` and scales with the current ε."""

    ramp_epochs: float = param(50.0, ge=0)

    method_name: ClassVar[str] = "pgdls"


class PGDLS(PGDAT):
    """PGD with Linear Scaling (Ding et al., MMA training, ICLR 2020, §4): PGD-AT whose ε
    ramps linearly from 0 to ``eps`` over ``ramp_epochs`` epochs (per step), then stays.

    Loss: as :class:`PGDAT` at ``ε_t = pgdls_eps(ctx.step, ctx.steps_per_epoch, eps,
    ramp_epochs)``, with the PGD step scaled by ``ε_t/eps``. ``epoch_logs`` reports the ε
    of the epoch's last step as ``eps``.
    """

    name = "pgdls"
    Params = PGDLSParams
    params: PGDLSParams

    def current_eps(self, ctx: StepContext) -> float:
        p = self.params
        assert p.eps is not None
        return pgdls_eps(ctx.step, ctx.steps_per_epoch, p.eps, p.ramp_epochs)
