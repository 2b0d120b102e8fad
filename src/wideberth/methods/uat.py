"""Universal adversarial training (UAT): one perturbation shared by all inputs, trained along.

Paper: Shafahi, Najibi, Xu, Dickerson, Davis & Goldstein, *Universal adversarial training*
(AAAI 2020; arXiv 2018); the uSGD baseline of the min-max framework's adversarial training
comparison (Wang et al., *Towards a unified min-max framework for adversarial exploration
and robustness*, App. E.2, Table A7): ℓ∞,
ε = 0.3 on MNIST, batch 128.

One universal perturbation δ (the shape of one image) lives across batches. Each step, on
the batch x (model in train mode, the simultaneous update of the paper: δ and θ from the
same forward pass)::

    x' = clip(x + δ, 0, 1);   L = CE(f(x'), y)  (batch mean)
    δ ← Π_ε(δ + step · sign(∇_δ L))        (delta_mode "sign", FGSM-style uSGD; default)
    δ ← Π_ε(δ + lr · ∇_δ L)                (delta_mode "raw", plain SGD ascent)
    θ ← θ − η ∇_θ [(1 − c)·L + c·CE(f(x), y)]

Π_ε clips to the ℓ∞ ball (the box is enforced by the clip of x + δ). δ is method state
(:meth:`state_dict`): checkpointed and restored, so a resumed run continues with the very
perturbation it had. Wang et al. do not give the δ step of their uSGD baseline:
``step_size`` defaults to ε/10, so δ can cross the ball in a few batches and keeps tracking
the moving model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..params import param
from .base import Batch, Method, MethodParams, StepContext

__all__ = ["UAT", "UATParams"]

_DELTA_MODES = ("sign", "raw")


@dataclass
class UATParams(MethodParams):
    """Parameters of UAT (``method.name: uat``).

    Attributes:
        eps: ℓ∞ radius of the universal perturbation (required; the paper's 0.3 on MNIST).
        step_size: δ step (``sign``: the ℓ∞ step length; ``raw``: the learning rate);
            ``None`` → ε/10.
        delta_mode: ``"sign"`` (default) or ``"raw"``.
        clean_weight: c, weight of the clean cross-entropy (default 0: UAT trains on x + δ).
    """

    eps: float | None = param(
        None, required=True, gt=0,
        hint="the ℓ∞ radius of the universal perturbation, e.g. 0.3 on MNIST",
    )
    step_size: float | None = param(None, gt=0)
    delta_mode: str = param("sign", choices=_DELTA_MODES)
    clean_weight: float = param(0.0, ge=0, le=1)

    method_name: ClassVar[str] = "uat"


class UAT(Method):
    """Universal adversarial training (Shafahi et al.): ℓ∞, one δ [C, H, W] for all inputs.

    ``train_accuracy`` is the accuracy on x + δ. Logged per epoch: ``uat_delta_linf`` (‖δ‖∞)
    and ``uat_delta_mean_abs`` (mean |δ|)."""

    name = "uat"
    Params = UATParams

    def __init__(self, params: MethodParams) -> None:
        super().__init__(params)
        self.delta: Tensor | None = None

    def _step(self) -> float:
        p = self.params
        assert isinstance(p, UATParams) and p.eps is not None
        return p.eps / 10 if p.step_size is None else float(p.step_size)

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> tuple[Tensor, Tensor]:
        p = self.params
        assert isinstance(p, UATParams) and p.eps is not None
        x, y = batch.x, batch.y
        if self.delta is None:
            self.delta = torch.zeros(x.shape[1:], device=x.device, dtype=x.dtype)
        d = self.delta.to(x.device, x.dtype).detach().requires_grad_(True)
        logits = model((x + d).clamp(0, 1))
        adv = F.cross_entropy(logits, y)
        (g,) = torch.autograd.grad(adv, d, retain_graph=True)
        with torch.no_grad():
            step = g.sign() if p.delta_mode == "sign" else g
            self.delta = (d + self._step() * step).clamp(-p.eps, p.eps).detach()
        loss = adv if p.clean_weight == 0 else (1 - p.clean_weight) * adv + p.clean_weight * F.cross_entropy(model(x), y)
        return loss, logits

    def epoch_logs(self, state: Any, epoch: int) -> dict[str, Any]:
        if self.delta is None:
            return {}
        return {"uat_delta_linf": float(self.delta.abs().max()),
                "uat_delta_mean_abs": float(self.delta.abs().mean())}

    def state_dict(self) -> dict[str, Tensor]:
        return {} if self.delta is None else {"delta": self.delta}

    def load_state_dict(self, tensors: dict[str, Tensor]) -> None:
        unknown = set(tensors) - {"delta"}
        if unknown:
            raise ValueError(f"method 'uat': unexpected checkpoint tensors {sorted(unknown)}")
        self.delta = tensors["delta"].clone() if "delta" in tensors else None
