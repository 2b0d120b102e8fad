"""TRADES: TRadeoff-inspired Adversarial DEfense via Surrogate-loss minimisation.

Paper: Zhang, Yu, Jiao, Xing, El Ghaoui, Jordan, *Theoretically Principled Trade-off
between Robustness and Accuracy*, ICML 2019 (§4, Algorithm 1). Implemented with the semantics
of the authors' ``trades_loss`` (``trades.py`` in their released code), the de-facto definition
of TRADES and the source of the released checkpoints.

Outer loss (model in train mode)::

    L = CE_mean(f(x), y) + β · (1/B) Σ_i KL( softmax f(x_i) ‖ softmax f(x'_i) )

``β = 1/λ`` (the paper's tables report 1/λ: 6 for the headline models, 1 also used). The KL
term is reduced with ``batchmean`` (sum / batch size, not torch's ``mean``, which would
also divide by the number of classes), its direction is KL(p_clean ‖ p_adv) (the clean
distribution is the target, as ``KLDivLoss(log_softmax(f(x')), softmax(f(x)))`` in the
code), and the clean distribution is **not detached**: the θ-gradient flows through both
branches (Algorithm 1, step 12).

Inner maximisation of the summed KL over x' (x' held fixed afterwards):

* start ``x' = x + 0.001·N(0, I)`` (noise from ``ctx.generator``; not clipped before the
  first step): at x' = x the KL and its input gradient are exactly 0, so the attack needs
  a nudge;
* ℓ∞ (``norm: linf``): K steps of ``x' ← clip_[0,1](Π_{B∞(x, ε)}(x' + η·sign ∇ₓ' KL))``;
* ℓ2 (``norm: l2``): δ = x' − x is moved by plain SGD on −KL with lr ``η`` (default
  ``2ε/K``, the reference's fixed choice): the gradient is normalised per example to unit
  ℓ2 norm (a zero gradient is replaced by a draw of N(0, I), not normalised, as in the
  reference), then δ ← clamp(x + δ, 0, 1) − x and δ is rescaled per example to ‖δ‖₂ ≤ ε
  (``torch.renorm``);
* finally x' is clamped to [0, 1] and detached.

The attack runs in **eval** mode (``attack_bn: eval``; the code since 2019-03-14), so the
natural logits f(x) that the reference recomputes at every inner step are constant: they
are computed once under ``no_grad`` (exactly equivalent). ``attack_bn: train`` attacks in
train mode instead (the code before that date): BN uses batch statistics and updates its
running statistics at every attack forward, dropout is active; the natural target is then
computed once per step (one train-mode forward) rather than at every inner step.

Forwards of the outer loss, all in train mode and separate (never concatenated, B7.12):
``f(x)`` for the CE, ``f(x')``, and ``f(x)`` again for the KL's clean branch, as the
reference does (three passes; with dropout the two clean passes use different masks).
``reuse_nat_forward: true`` reuses the CE pass for the KL's clean branch: one forward less
(about a quarter of the outer cost), identical for networks without dropout (BatchNorm in
train mode normalises the same batch the same way; only the running statistics get one
update less), different masks otherwise.

Training accuracy: :meth:`TRADES.loss` returns the clean train-mode logits (the CE pass);
the accuracy of the inner attack's outputs is logged per epoch as ``train_adv_accuracy``
(from the f(x') pass the loss needs anyway; a KL attack, not a label attack, so it
overstates robust accuracy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..losses import trades_kl
from ..params import param
from ..threat import normalize_norm
from .base import Batch, Method, MethodParams, StepContext
from .common import BN_MODES, attack_forward

__all__ = ["TRADES", "TRADESParams", "trades_attack"]

#: per-example state field: did the model classify the TRADES attack output correctly.
ADV_FIELD = "trades_adv_correct"


def trades_attack(
    model: nn.Module,
    x: Tensor,
    *,
    norm: str = "linf",
    eps: float,
    step_size: float,
    steps: int,
    generator: torch.Generator | None = None,
    bn: str = "eval",
    logits_nat: Tensor | None = None,
) -> Tensor:
    """TRADES' inner maximisation of Σ_i KL(p(x_i) ‖ p(x'_i)) (Zhang et al. 2019,
    Algorithm 1, as the authors' ``trades_loss``), detached x'.

    Args:
        model: the network; run in ``bn`` mode (``"eval"``: every submodule in eval mode,
            restored after; ``"train"``: the current mode) with frozen parameters.
        x: clean inputs [B, ...] in [0, 1].
        norm: ``"linf"`` (sign steps) or ``"l2"`` (normalised-gradient SGD).
        eps: radius (float).
        step_size: η, the ℓ∞ sign-step size or the ℓ2 SGD learning rate.
        steps: K inner iterations.
        generator: source of the 0.001·N(0, I) start (and of the ℓ2 zero-gradient draws).
        logits_nat: the target logits f(x) if already computed in the attack's mode;
            otherwise computed once here under ``no_grad``.

    Returns:
        x' [B, ...] in [0, 1] with ‖x' − x‖ ≤ ε (ℓ∞: up to float rounding of the clamp).
    """
    x = x.detach()
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    with attack_forward(model, bn) as fwd:
        if logits_nat is None:
            with torch.no_grad():
                logits_nat = fwd(x)
        target = logits_nat.detach()

        def kl_grad(x_adv: Tensor) -> Tensor:
            x_adv = x_adv.detach().requires_grad_(True)
            with torch.enable_grad():
                loss = trades_kl(fwd(x_adv), target, reduction="sum")
                (grad,) = torch.autograd.grad(loss, x_adv)
            return grad

        if norm == "linf":
            x_adv = x + 0.001 * noise
            for _ in range(steps):
                grad = kl_grad(x_adv)
                x_adv = x_adv + step_size * grad.sign()
                x_adv = torch.min(torch.max(x_adv, x - eps), x + eps)
                x_adv = x_adv.clamp(0.0, 1.0)
        elif norm == "l2":
            delta = 0.001 * noise
            for _ in range(steps):
                grad = kl_grad(x + delta)  # ascent direction of the KL (= −∇ of SGD's loss)
                norms = grad.flatten(1).norm(p=2, dim=1)
                zero = norms == 0
                shape = (-1,) + (1,) * (x.dim() - 1)
                grad = grad / norms.view(shape)
                if bool(zero.any()):
                    draw = torch.randn(
                        grad[zero].shape, generator=generator, device=x.device, dtype=x.dtype
                    )
                    grad[zero] = draw
                delta = delta + step_size * grad
                delta = (x + delta).clamp(0.0, 1.0) - x
                delta = delta.renorm(p=2, dim=0, maxnorm=eps)
            x_adv = x + delta
        else:
            raise ValueError(f"TRADES supports norm 'linf' or 'l2'; got {norm!r}")
    return x_adv.clamp(0.0, 1.0).detach()


@dataclass
class TRADESParams(MethodParams):
    """Parameters of TRADES (``method.name: trades``).

    Attributes:
        norm: ``"linf"`` (default; sign steps) or ``"l2"`` (normalised-gradient SGD).
        eps: radius (required); the paper's 0.031 on CIFAR-10 (not 8/255), 0.3 on MNIST.
        step_size: inner step η; ``None`` → ``2·eps/steps`` (the reference's ℓ2 rule; the
            paper's ℓ∞ settings are explicit: 0.007 for CIFAR-10 K=10, 0.01 for MNIST K=40).
        steps: inner iterations K (10 on CIFAR-10, 40 on MNIST).
        beta: β = 1/λ, the weight of the KL term (6 for the headline models, 1 also used).
        reuse_nat_forward: reuse the CE forward for the KL's clean branch (one forward
            fewer; differs from the reference only for models with dropout).
        attack_bn: ``"eval"`` (default, the code since 2019-03-14) or ``"train"``.
        log_adv_accuracy: log ``train_adv_accuracy`` (free: reuses the f(x') forward).
    """

    norm: str = param("linf", convert=normalize_norm)
    eps: float | None = param(
        None, required=True, ge=0,
        hint="the perturbation radius, e.g. 0.031 for CIFAR-10 ℓ∞, 0.3 for MNIST ℓ∞",
    )
    step_size: float | None = param(None, ge=0)
    steps: int = param(10, ge=0)
    beta: float = param(6.0, ge=0)
    reuse_nat_forward: bool = False
    attack_bn: str = param("eval", choices=BN_MODES)
    log_adv_accuracy: bool = True

    method_name: ClassVar[str] = "trades"

    def check(self) -> None:
        """TRADES has the reference's two variants only: ℓ∞ and ℓ2."""
        if self.norm not in ("linf", "l2"):
            self.fail(
                "params.norm must be linf or l2 (the reference's two variants), "
                f"got {self.norm!r}"
            )

    @property
    def effective_step_size(self) -> float:
        """η: ``step_size``, or ``2·eps/steps`` when it is None."""
        assert self.eps is not None
        if self.step_size is not None:
            return self.step_size
        return 2.0 * self.eps / max(self.steps, 1)


class TRADES(Method):
    """TRADES (Zhang et al., ICML 2019), ℓ∞ or ℓ2, with the reference code's semantics.

    ``L = CE_mean(f(x), y) + β·KL_batchmean(p(x) ‖ p(x'))`` with x' from
    :func:`trades_attack` (see the module docstring). Returns ``(L, f(x))``: the clean
    train-mode logits of the CE pass.
    """

    name = "trades"
    Params = TRADESParams
    params: TRADESParams

    def setup(self, model: nn.Module, state: Any, num_train: int) -> None:
        if self.params.log_adv_accuracy:
            state.register(ADV_FIELD, default=math.nan)

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> tuple[Tensor, Tensor]:
        p = self.params
        assert p.eps is not None
        x, y = batch.x, batch.y
        x_adv = trades_attack(
            model,
            x,
            norm=p.norm,
            eps=p.eps,
            step_size=p.effective_step_size,
            steps=p.steps,
            generator=ctx.generator,
            bn=p.attack_bn,
        )
        # outer loss: three separate train-mode forwards, in the reference's order
        logits = model(x)
        loss_natural = F.cross_entropy(logits, y)
        logits_adv = model(x_adv)
        logits_nat_kl = logits if p.reuse_nat_forward else model(x)
        loss_robust = trades_kl(logits_adv, logits_nat_kl, reduction="batchmean")
        loss = loss_natural + p.beta * loss_robust
        if p.log_adv_accuracy and ctx.state is not None and ADV_FIELD in ctx.state:
            correct = (logits_adv.detach().argmax(1) == y).float()
            ctx.state.set(ADV_FIELD, batch.index, correct)
        return loss, logits

    def epoch_logs(self, state: Any, epoch: int) -> dict[str, Any]:
        if not (self.params.log_adv_accuracy and state is not None and ADV_FIELD in state):
            return {}
        v = state.all(ADV_FIELD)
        seen = ~torch.isnan(v)
        return {"train_adv_accuracy": float(v[seen].mean())} if bool(seen.any()) else {}
