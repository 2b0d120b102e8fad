"""The ℓ∞ threat model: a clamp is the exact projection onto ball ∩ box.

Both the ℓ∞ ball and the box are products of intervals, so their intersection is too and
the Euclidean projection is the coordinate-wise clamp ``δ_i ∈ [max(lo_i, −ε), min(hi_i,
ε)]`` (Wang et al., "Towards a unified min-max framework for adversarial exploration
and robustness", 2019, Prop. 1, p = ∞). Steps are FGSM/PGD's signed gradient (Goodfellow
et al., ICLR 2015; Madry et al., ICLR 2018).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..noise import Noise
from .base import ThreatModel, as_batch_eps, flatten_batch

__all__ = ["LinfBall", "project_linf_box"]


def _bound(b: Tensor | float, like: Tensor) -> Tensor:
    """A box bound as a tensor (a float becomes a 0-dim tensor of ``like``'s dtype)."""
    return b if isinstance(b, Tensor) else torch.as_tensor(b, dtype=like.dtype, device=like.device)


def project_linf_box(
    v: Tensor, lo: Tensor | float, hi: Tensor | float, eps: float | Tensor
) -> Tensor:
    """Exact projection of ``v`` onto ``{‖δ‖∞ ≤ ε} ∩ [lo, hi]`` (separable: a clamp).

    Args:
        v: point to project, shape ``[B, ...]``.
        lo, hi: box bounds broadcastable to ``v`` with ``lo <= 0 <= hi``.
        eps: float or ``[B]``.

    Returns:
        δ with ``δ_i = clip(v_i, max(lo_i, −ε), min(hi_i, ε))``, shape of ``v``.
    """
    e = as_batch_eps(eps, v)
    return torch.clamp(torch.clamp(v, min=-e, max=e), min=_bound(lo, v), max=_bound(hi, v))


class LinfBall(ThreatModel):
    """ℓ∞ ball ∩ box. Step: ``α·sign(g)`` (FGSM/PGD, Madry et al. 2018).

    Projection is the clamp ``δ_i ∈ [max(−x_i, −ε), min(1 − x_i, ε)]``, exact because the
    set is a product of intervals. Random start: ``U(−ε, ε)`` per coordinate, then clamped.
    """

    name = "linf"
    p = math.inf

    def norm(self, delta: Tensor) -> Tensor:
        f = flatten_batch(delta)
        if f.shape[1] == 0:
            return f.new_zeros(f.shape[0])
        return f.abs().amax(1)

    def dual_norm(self, g: Tensor) -> Tensor:
        return flatten_batch(g).abs().sum(1)

    def sample_ball(self, x: Tensor, eps: Tensor, noise: Noise) -> Tensor:
        u = noise.rand(x.shape)
        return (2 * u - 1) * eps

    def step(self, grad: Tensor, step_size: float | Tensor, x_adv: Tensor | None = None) -> Tensor:
        return torch.sign(grad) * as_batch_eps(step_size, grad)

    def project_box(
        self, delta: Tensor, lo: Tensor | float, hi: Tensor | float, eps: float | Tensor
    ) -> Tensor:
        return project_linf_box(delta, lo, hi, eps)

    def projector(
        self, x: Tensor, eps: float | Tensor, exact: bool = True
    ) -> Callable[[Tensor], Tensor]:
        # ball and box are both products of intervals: one clamp to their intersection
        # (exact and approximate projections coincide)
        e = as_batch_eps(eps, x)
        lo, hi = torch.maximum(-x, -e), torch.minimum(1 - x, e)
        return lambda delta: torch.clamp(delta, min=lo, max=hi)
