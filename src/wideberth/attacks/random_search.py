"""Square attack: score-based black-box random search (ℓ∞ and ℓ2), untargeted.

Andriushchenko, Croce, Flammarion & Hein, *Square Attack: a query-efficient black-box
adversarial attack via random search*, ECCV 2020 (the fourth attack of AutoAttack). It never
differentiates the model: every step is one forward pass under ``torch.no_grad()``, so it is
the sanity check against gradient masking: a model that PGD cannot break but Square can
has gradients that lie about its robustness.

The search minimises the margin loss on logits (the paper's untargeted loss)

    L(x) = f_y(x) − max_{j≠y} f_j(x) = −LM        (LM: :func:`wideberth.losses.logit_margin`)

and an example is broken when ``L < 0``. Each iteration proposes one candidate per example
that is not yet broken, queries the model on it and keeps it only if ``L`` decreased
(Algorithm 1). The proposal changes a random square window of side ``s``; the fraction of
pixels ``p = s²/(H·W)`` follows the paper's piecewise-constant schedule: ``p_init`` halved
at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of a 10 000-query run,
rescaled to the actual budget (``i ↦ ⌊i·10000/n_queries⌋``, as in the reference code).

- **ℓ∞** (Algorithm 2): start from vertical stripes, ``δ[c, :, w] = ±ε`` with one random
  sign per (channel, column), clipped to the box. A candidate sets δ on a random ``s×s``
  window (``s = max(round(√(p·H·W)), 1)``) to ``±ε``, one random sign per channel, then
  projects onto ball ∩ box (a clamp). As in the authors' code, a sign draw that would leave
  the image unchanged is redrawn (it would waste a query).
- **ℓ2** (Algorithm 3): start from a grid of ``⌊H/5⌋``-sized "meta-squares", each holding
  the pattern η of Eq. (3) (two opposite-signed concentric-square bumps with weights
  ``Σ_k 1/(k+1)²``, so roughly ``1/|x|``-shaped, randomly transposed) with a random sign per
  channel, the whole perturbation rescaled to ``‖δ‖₂ = ε`` and clipped to the box. A
  candidate draws two windows W1, W2 of odd side ``s ≥ 3``; per channel it moves the mass
  of ``ν = x̂ − x`` on ``W1 ∪ W2`` plus an equal share of the unused budget
  ``ε² − ‖ν‖²`` into W1 (new content ∝ ``±η/‖η‖ + ν_W1/‖ν_W1‖``), zeroes W2, rescales the
  whole perturbation to ``‖δ‖₂ = ε`` and clips to the box.

Windows, signs and transposes are drawn per example (the paper's algorithm); the reference
code shares one window across the batch only to vectorise. Windows lie fully inside the
image (positions ``0 … H − s``, the paper's range) and ``s`` is capped at ``min(H, W)``.

Randomness comes from one :class:`torch.Generator` for the whole batch, so results are
reproducible for a fixed seed (or generator state) and device but **not batch
independent**: an example's draws depend on the other examples still being attacked.
"""

from __future__ import annotations

import math
from functools import lru_cache
from numbers import Integral

import torch
from torch import Tensor

from ..losses import logit_margin
from ..threat import ThreatModel, eps_vector, normalize_norm
from .base import Attack, ModelLike, attack_context, prepare

__all__ = ["square", "Square", "p_selection"]

_NORMS = ("linf", "l2")
#: iterations (of a 10 000-query run) after which p is halved
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
#: how many times an ℓ∞ sign draw that changes nothing is redrawn before querying anyway
_MAX_REDRAWS = 16


def p_selection(p_init: float, it: int, n_queries: int) -> float:
    """Fraction of pixels a Square iteration changes: the paper's schedule.

    ``it`` (0-based iteration) is rescaled to a 10 000-query run, ``i = ⌊it·10000/n_queries⌋``;
    ``p = p_init / 2^k`` with ``k`` the number of boundaries in
    ``(10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)`` strictly below ``i``.
    """
    i = int(it / max(n_queries, 1) * 10000)
    k = sum(1 for b in _HALVINGS if i > b)
    return p_init / 2**k


class _Rng:
    """Draws from one generator (on its own device), delivered on ``device``."""

    def __init__(self, generator: torch.Generator, device: torch.device) -> None:
        self.g, self.device = generator, device

    def uniform(self, shape: tuple[int, ...]) -> Tensor:
        return torch.rand(shape, generator=self.g, device=self.g.device).to(self.device)

    def sign(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        return torch.where(self.uniform(shape) < 0.5, -1.0, 1.0).to(dtype)

    def coin(self, n: int) -> Tensor:
        return self.uniform((n,)) < 0.5

    def randint(self, high: int, n: int) -> Tensor:
        """``n`` integers uniform in ``{0, …, high − 1}``."""
        return torch.randint(high, (n,), generator=self.g, device=self.g.device).to(self.device)


def _margin(model: ModelLike, x: Tensor, y: Tensor) -> Tensor:
    """The paper's margin loss ``f_y − max_{j≠y} f_j`` [B] (one query per row)."""
    return -logit_margin(model(x), y)


def _window_mask(r: Tensor, c: Tensor, s: int, h: int, w: int) -> Tensor:
    """Boolean [n, 1, h, w]: the ``s×s`` window with top-left corner ``(r[i], c[i])``."""
    rows = torch.arange(h, device=r.device)
    cols = torch.arange(w, device=r.device)
    in_r = (rows >= r[:, None]) & (rows < r[:, None] + s)
    in_c = (cols >= c[:, None]) & (cols < c[:, None] + s)
    return (in_r[:, :, None] & in_c[:, None, :]).unsqueeze(1)


# --------------------------------------------------------------------------------------
# ℓ2 patterns (Eq. 3)
# --------------------------------------------------------------------------------------


def _bump(a: int, b: int) -> Tensor:
    """An ``a×b`` bump of concentric rectangles around ``(⌊a/2⌋, ⌊b/2⌋)``, unit ℓ2 norm.

    A pixel at Chebyshev distance ``d`` from the centre gets ``Σ_{k=d}^{K−1} 1/(k+1)²``,
    ``K = max(⌊a/2⌋, ⌊b/2⌋) + 1``: the paper's η^{(a,b)} (Eq. 3), which decays like 1/d.
    """
    i = (torch.arange(a) - a // 2).abs()
    j = (torch.arange(b) - b // 2).abs()
    d = torch.maximum(i[:, None], j[None, :])
    k = max(a // 2, b // 2) + 1
    weights = 1.0 / (torch.arange(k, dtype=torch.float64) + 1) ** 2
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[d] = Σ_{k ≥ d} weights[k]
    out = tail[d]
    return out / out.norm()


@lru_cache(maxsize=64)
def _eta(s: int) -> Tensor:
    """The ``s×s`` update pattern η (float64, unit ℓ2 norm): the upper ``⌊s/2⌋`` rows hold a
    bump, the lower rows a bump of the opposite sign (the paper's two-sub-square η)."""
    top = s // 2
    eta = torch.zeros(s, s, dtype=torch.float64)
    if top > 0:
        eta[:top] = _bump(top, s)
    eta[top:] = -_bump(s - top, s)
    return eta / eta.norm()


def _placed_eta(
    s: int, r: Tensor, c: Tensor, transpose: Tensor, h: int, w: int, dtype: torch.dtype
) -> Tensor:
    """[n, 1, h, w]: η (or ηᵀ where ``transpose``) placed at ``(r[i], c[i])``, 0 elsewhere."""
    dev = r.device
    eta = _eta(s).to(device=dev, dtype=dtype)
    pair = torch.stack([eta, eta.t()])  # [2, s, s]
    rel_r = torch.arange(h, device=dev)[None, :] - r[:, None]  # [n, h]
    rel_c = torch.arange(w, device=dev)[None, :] - c[:, None]  # [n, w]
    inside = ((rel_r >= 0) & (rel_r < s))[:, :, None] & ((rel_c >= 0) & (rel_c < s))[:, None, :]
    vals = pair[
        transpose.long()[:, None, None],
        rel_r.clamp(0, s - 1)[:, :, None],
        rel_c.clamp(0, s - 1)[:, None, :],
    ]
    return torch.where(inside, vals, 0).unsqueeze(1)


def _sum_hw(t: Tensor) -> Tensor:
    return t.sum(dim=(2, 3))


def _to_sphere(delta: Tensor, eps: Tensor) -> Tensor:
    """``delta · ε/‖delta‖₂`` per example (a zero ``delta`` stays zero)."""
    n = torch.linalg.vector_norm(delta.flatten(1), dim=1)
    tiny = torch.finfo(delta.dtype).tiny
    return delta * (eps / n.clamp(min=tiny)).view(-1, 1, 1, 1)


# --------------------------------------------------------------------------------------
# initialisations and proposals
# --------------------------------------------------------------------------------------


def _init_linf(x: Tensor, eps: Tensor, rng: _Rng) -> Tensor:
    n, c, _, w = x.shape
    stripes = rng.sign((n, c, 1, w), x.dtype) * eps.view(-1, 1, 1, 1)
    return (x + stripes).clamp(0, 1)


def _init_l2(x: Tensor, eps: Tensor, rng: _Rng) -> Tensor:
    n, c, h, w = x.shape
    s = max(min(h, w) // 5, 1)
    off_h, off_w = max((h - 5 * s) // 2, 0), max((w - 5 * s) // 2, 0)
    delta = torch.zeros_like(x)
    for top in range(off_h, h, s):
        for left in range(off_w, w, s):
            # meta-squares that would stick out of the image are cut at its edge
            r = torch.full((n,), top, device=x.device)
            q = torch.full((n,), left, device=x.device)
            tile = _placed_eta(s, r, q, rng.coin(n), h, w, x.dtype)
            delta = delta + tile * rng.sign((n, c, 1, 1), x.dtype)
    return (x + _to_sphere(delta, eps)).clamp(0, 1)


def _side(p: float, h: int, w: int, minimum: int) -> int:
    return min(max(int(round(math.sqrt(p * h * w))), minimum), h, w)


def _propose_linf(x: Tensor, x_best: Tensor, eps: Tensor, p: float, rng: _Rng) -> Tensor:
    n, c, h, w = x.shape
    s = _side(p, h, w, 1)
    win = _window_mask(rng.randint(h - s + 1, n), rng.randint(w - s + 1, n), s, h, w)
    e = eps.view(-1, 1, 1, 1)
    lo, hi = torch.maximum(-x, -e), torch.minimum(1 - x, e)
    delta = x_best - x
    sign = rng.sign((n, c, 1, 1), x.dtype)
    cand = torch.where(win, sign * e, delta).clamp(min=lo, max=hi)
    for _ in range(_MAX_REDRAWS):
        same = (cand - delta).abs().flatten(1).amax(1) < 1e-7
        if not bool(same.any()):
            break
        sign = torch.where(same.view(-1, 1, 1, 1), rng.sign((n, c, 1, 1), x.dtype), sign)
        cand = torch.where(win, sign * e, delta).clamp(min=lo, max=hi)
    return x + cand


def _propose_l2(x: Tensor, x_best: Tensor, eps: Tensor, p: float, rng: _Rng) -> Tensor:
    n, c, h, w = x.shape
    s = _side(p, h, w, 3)
    if s % 2 == 0 and s < min(h, w):
        s += 1
    r1, c1 = rng.randint(h - s + 1, n), rng.randint(w - s + 1, n)
    r2, c2 = rng.randint(h - s + 1, n), rng.randint(w - s + 1, n)
    w1 = _window_mask(r1, c1, s, h, w)
    w2 = _window_mask(r2, c2, s, h, w)
    nu = x_best - x
    nu2 = nu * nu
    unused = (eps**2 - nu2.sum(dim=(1, 2, 3))).clamp(min=0)  # ε² − ‖ν‖², [n]
    norm_w1 = _sum_hw(nu2 * w1).sqrt()  # ‖ν_{W1,i}‖, [n, c]
    norm_w12 = _sum_hw(nu2 * (w1 | w2)).sqrt()  # ‖ν_{W1∪W2,i}‖, [n, c]
    avail = (norm_w12**2 + unused[:, None] / c).sqrt()  # ε^i_avail, [n, c]
    eta = _placed_eta(s, r1, c1, rng.coin(n), h, w, x.dtype)  # unit norm, on W1
    rho = rng.sign((n, c, 1, 1), x.dtype)
    temp = rho * eta + nu * w1 / (norm_w1[:, :, None, None] + 1e-10)
    tiny = torch.finfo(x.dtype).tiny
    temp_norm = _sum_hw(temp * temp).sqrt().clamp(min=tiny)
    new_w1 = temp * (avail / temp_norm)[:, :, None, None]
    nu_new = torch.where(w1, new_w1, torch.where(w2, 0, nu))
    return (x + _to_sphere(nu_new, eps)).clamp(0, 1)


# --------------------------------------------------------------------------------------
# the attack
# --------------------------------------------------------------------------------------


def square(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    norm: str | float | ThreatModel = "linf",
    eps: float | Tensor,
    n_queries: int = 5000,
    p_init: float = 0.8,
    seed: int = 0,
    generator: torch.Generator | None = None,
    check: bool = True,
) -> Tensor:
    """Square attack (untargeted, margin loss) within the ``norm`` ball of radius ``eps`` ∩ [0, 1].

    Paper: Andriushchenko, Croce, Flammarion & Hein, *Square Attack: a query-efficient
    black-box adversarial attack via random search* (ECCV 2020), Algorithms 1–3. Norms:
    ``"linf"`` and ``"l2"``. Score-based: only forward passes, all under ``torch.no_grad()``
    (the model is never asked for a gradient). See the module docstring for the proposals.

    Args:
        model: an ``nn.Module`` or callable mapping [B, C, H, W] in [0, 1] to logits [B, K];
            queried in eval mode with its modes and parameter gradients restored after.
        x: clean images [B, C, H, W] in [0, 1] (never modified).
        y: labels [B] (int64).
        eps: radius, a float or a per-example tensor [B].
        n_queries: the query budget per example. One forward pass on the whole batch at
            ``x`` comes first (examples already misclassified there, ``L < 0``, are
            returned unchanged and never queried again); every other example then gets at
            most ``n_queries`` queries: the initialisation and up to ``n_queries − 1``
            candidates, stopping as soon as ``L < 0``. So at most ``n_queries + 1``
            forward rows per example (``check=True`` adds one validation forward on up to
            8 examples). The p-schedule is rescaled to this budget.
        p_init: initial fraction of pixels a candidate changes, in (0, 1] (0.8 is
            AutoAttack's standard setting; the schedule then shrinks it).
        seed, generator: randomness; with ``generator`` the batch draws from it, else from
            ``torch.Generator(x.device).manual_seed(seed)`` (the two agree for the same
            state). Reproducible, but not batch independent: an example's draws depend on
            the other examples in the batch (those still attacked at each iteration).
        check: validate inputs (range, NaN, labels, ε) first.

    Returns:
        x_adv [B, C, H, W] with ``‖x_adv − x‖ ≤ eps`` and ``x_adv ∈ [0, 1]``: per example the
        queried point with the lowest margin loss (``x`` itself if no candidate beat it;
        the first point found with ``L < 0`` for a broken example). An example counts as
        broken only if ``L < 0`` strictly, so ties never count, whatever ``argmax`` does.
    """
    name = normalize_norm(norm)
    if name not in _NORMS:
        raise ValueError(f"the Square attack supports norms {', '.join(_NORMS)}; got {name!r}")
    if isinstance(n_queries, bool) or not isinstance(n_queries, Integral) or n_queries < 1:
        raise ValueError(f"n_queries must be an integer >= 1; got {n_queries!r}")
    if not (0.0 < float(p_init) <= 1.0):
        raise ValueError(f"p_init must be in (0, 1]; got {p_init!r}")
    if check:
        prepare(model, x, y, eps, norm)
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"Square needs images of shape [B, C, H, W]; got {shape}")
    if x.shape[0] == 0:
        return x.detach().clone()
    n_queries = int(n_queries)
    x = x.detach()
    y = y.to(x.device)
    eps_t = eps_vector(eps, x)
    if generator is None:
        generator = torch.Generator(device=x.device).manual_seed(int(seed))
    rng = _Rng(generator, x.device)
    init, propose = (_init_linf, _propose_linf) if name == "linf" else (_init_l2, _propose_l2)

    with torch.no_grad(), attack_context(model):
        loss_clean = _margin(model, x, y)
        # search state: x_cur (the current accepted iterate) and its loss
        x_cur = x.clone()
        loss_cur = loss_clean.clone()
        act = (loss_clean >= 0).nonzero().squeeze(1)
        if act.numel() > 0:
            x0 = init(x[act], eps_t[act], rng)  # accepted unconditionally (Algorithm 1)
            x_cur[act] = x0
            loss_cur[act] = _margin(model, x0, y[act])
        for it in range(n_queries - 1):
            act = act[loss_cur[act] >= 0]
            if act.numel() == 0:
                break
            p = p_selection(p_init, it, n_queries)
            xa = x[act]
            cand = propose(xa, x_cur[act], eps_t[act], p, rng)
            loss = _margin(model, cand, y[act])
            better = loss < loss_cur[act]
            idx = act[better]
            x_cur[idx] = cand[better]
            loss_cur[idx] = loss[better]
        # the search accepts its start unconditionally; report x where it is still better
        keep_clean = loss_clean <= loss_cur
        out = torch.where(keep_clean.view(-1, 1, 1, 1), x, x_cur)
    return out.detach()


class Square(Attack):
    """``Square(model, norm="linf", eps=0.03, n_queries=5000)(x, y)``: see :func:`square`."""

    fn = staticmethod(square)
