"""Euclidean projection onto the probability simplex (domain weights of the min-max framework).

Wang et al. (2021), *Adversarial attack generation empowered by min-max optimization*,
§3.1 eq. (14) (the unified min-max framework): the inner maximisation over the domain
weights ``w ∈ P = {w ∈ R^K : w ≥ 0, 1ᵀw = 1}`` is a projected ascent step
``w ← proj_P(b)`` with ``proj_P(b) = (b − μ1)₊`` and ``μ`` the root of ``1ᵀ(b − μ1)₊ = 1``.

* :func:`project_simplex` – exact, sort-based (Held, Wolfe & Crowder 1974; Duchi et al. 2008),
  the one the library uses;
* :func:`project_simplex_bisection` – the paper's bisection on ``μ`` over
  ``[min b − 1/K, max b − 1/K]`` (§3.1, after Boyd & Vandenberghe), kept as a sort-free
  reference.

Both are batched over leading dimensions: ``v`` has shape ``[..., K]`` and each row (last
dimension) is projected independently. Not a softmax, not a renormalisation: zero weights
are legitimate and frequent (the projection is the Euclidean one of (14)).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["project_simplex", "project_simplex_bisection", "on_simplex"]


def _check(v: Tensor) -> None:
    if not isinstance(v, Tensor):
        raise TypeError(f"v must be a torch.Tensor of shape [..., K]; got {type(v).__name__}")
    if v.dim() < 1 or v.shape[-1] < 1:
        raise ValueError(f"v must have shape [..., K] with K >= 1; got shape {list(v.shape)}")
    if not v.is_floating_point():
        raise ValueError(f"v must be a floating-point tensor; got dtype {v.dtype}")


def project_simplex(v: Tensor) -> Tensor:
    """Exact Euclidean projection of each row of ``v`` onto the probability simplex.

    Wang et al. (min-max framework), eq. (14): ``proj_P(b) = (b − μ1)₊``. Sort-based
    (Held et al. 1974; Duchi et al. 2008): sort ``u = sort(v, descending)``, let
    ``ρ = max{j : u_j − (Σ_{i≤j} u_i − 1)/j > 0}``, ``μ = (Σ_{i≤ρ} u_i − 1)/ρ``. O(K log K),
    no iteration, differentiable almost everywhere.

    Args:
        v: ``[..., K]`` floating tensor (any leading dims, any device/dtype); not modified.

    Returns:
        ``w`` of the shape of ``v`` with ``w ≥ 0`` and ``w.sum(-1) == 1`` (to rounding);
        the identity on points already on the simplex (to rounding).

    Raises:
        ValueError: ``K = 0``, a non-floating dtype, or non-finite entries.
    """
    _check(v)
    if not bool(torch.isfinite(v).all()):
        raise ValueError("project_simplex: v contains NaN or inf")
    k = v.shape[-1]
    u, _ = torch.sort(v, dim=-1, descending=True)
    css = torch.cumsum(u, dim=-1) - 1
    ind = torch.arange(1, k + 1, device=v.device, dtype=v.dtype)
    cond = (u - css / ind) > 0  # true on a prefix; j = 1 always qualifies
    rho = cond.to(torch.int64).cumsum(-1).amax(-1, keepdim=True).clamp_(min=1)  # [..., 1]
    mu = torch.gather(css, -1, rho - 1) / rho.to(v.dtype)
    return torch.clamp(v - mu, min=0)


def project_simplex_bisection(v: Tensor, iters: int = 100) -> Tensor:
    """Sort-free reference: ``(v − μ1)₊`` with ``μ`` found by bisection (Wang et al.,
    min-max framework, §1.3: the root lies in ``[min v − 1/K, max v − 1/K]``).

    The final ``μ`` is refined in closed form on the active set of the last bracket,
    ``μ = (Σ_{v_i > μ} v_i − 1) / #{v_i > μ}``, so it is exact up to rounding, not just to
    the bracket width. Shapes: ``v`` ``[..., K]`` -> ``[..., K]``.
    """
    _check(v)
    k = v.shape[-1]
    lo = v.amin(-1, keepdim=True) - 1.0 / k  # sum (v - lo)+ >= 1
    hi = v.amax(-1, keepdim=True) - 1.0 / k  # sum (v - hi)+ <= 1
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        s = torch.clamp(v - mid, min=0).sum(-1, keepdim=True)
        big = s > 1
        lo = torch.where(big, mid, lo)
        hi = torch.where(big, hi, mid)
    active = v > lo  # the support at the root (lo is just below μ)
    n = active.sum(-1, keepdim=True).clamp(min=1).to(v.dtype)
    mu = (torch.where(active, v, 0).sum(-1, keepdim=True) - 1) / n
    return torch.clamp(v - mu, min=0)


def on_simplex(w: Tensor, atol: float = 1e-5) -> Tensor:
    """Boolean ``[...]``: whether each row of ``w`` ``[..., K]`` is on the probability simplex
    (entries ≥ −atol and row sum within ``atol`` of 1). Used to validate user weights."""
    return (w >= -atol).all(-1) & ((w.sum(-1) - 1).abs() <= atol)
