"""Threat models: the ℓ∞, ℓ2 and ℓ1 balls intersected with the input box [0, 1].

A threat model is a small strategy object (in the style of MadryLab ``robustness``'s
``AttackerStep``) that an iterative attack calls for the four things that depend on the norm:

* :meth:`ThreatModel.random_init` – a uniform random start inside ball ∩ box;
* :meth:`ThreatModel.step` – the steepest-ascent step for a gradient (sign, normalised,
  sparse top-k);
* :meth:`ThreatModel.project` – the **exact** Euclidean projection onto ball ∩ box;
* :meth:`ThreatModel.norm` / :meth:`ThreatModel.dual_norm` – per-example norms.

Conventions used throughout:

* Perturbations ``delta`` have the shape of the inputs ``x``, ``[B, ...]``; norms are taken
  over all non-batch dimensions (C×H×W flattened), per example, and return shape ``[B]``.
* Inputs are in the box ``[0, 1]``, so a feasible perturbation satisfies
  ``-x <= delta <= 1 - x``.
* Every ε (and every step size) is a Python float or a per-example tensor of shape ``[B]``;
  :func:`as_batch_eps` broadcasts either to ``[B, 1, ..., 1]``.
* Nothing is tied to a device or dtype: everything is taken from the tensors passed in.
  Inputs are never modified in place.

Projection signature (one for all norms)::

    delta = threat.project(delta, x, eps)

returns the δ such that ``x + δ`` is the Euclidean projection of ``x + delta`` onto
``{x' : ‖x' − x‖_p ≤ ε} ∩ [0, 1]^d``. For ℓ∞ this is a clamp (the set is a product of
intervals). For ℓ2 and ℓ1 it is computed exactly as in Proposition 1 / Appendix B of the
unified min-max paper (specs/minmax.md §1.4) – **not** "project onto the ball, then clip",
which advertorch does and which is offered as :meth:`ThreatModel.project_approx`. The result
is always feasible: ``norm(delta) <= eps * (1 + 1e-5)`` and ``x + delta ∈ [0, 1]``.
For general box bounds (e.g. a universal perturbation whose box is the intersection over a
group of images) use :meth:`ThreatModel.project_box` with explicit ``lo <= 0 <= hi``.

Validation of user inputs (``x`` in [0, 1], labels, ε) lives in :mod:`wideberth._checks`
and is re-exported here as :func:`check_inputs`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from numbers import Real
from typing import ClassVar

import torch
from torch import Tensor

from wideberth._checks import check_eps, check_inputs
from wideberth.noise import GeneratorNoise, Noise

__all__ = [
    "NORMS",
    "L1Ball",
    "L2Ball",
    "LinfBall",
    "ThreatModel",
    "as_batch_eps",
    "check_eps",
    "check_inputs",
    "clip_to_box",
    "eps_vector",
    "get_threat",
    "normalize_norm",
    "project_l1_box",
    "project_l2_box",
    "project_linf_box",
]

#: canonical norm names accepted by :func:`get_threat`.
NORMS: tuple[str, ...] = ("linf", "l2", "l1")

_NORM_ALIASES: dict[str, str] = {
    "linf": "linf",
    "l_inf": "linf",
    "l-inf": "linf",
    "inf": "linf",
    "infinity": "linf",
    "l∞": "linf",
    "∞": "linf",
    "l2": "l2",
    "l_2": "l2",
    "2": "l2",
    "l1": "l1",
    "l_1": "l1",
    "1": "l1",
}


# --------------------------------------------------------------------------------------
# ε broadcasting and box helpers
# --------------------------------------------------------------------------------------


def _batch_view_shape(x: Tensor) -> tuple[int, ...]:
    return (x.shape[0],) + (1,) * (x.dim() - 1)


def eps_vector(eps: float | Tensor, x: Tensor) -> Tensor:
    """Return ε as a tensor of shape ``[B]`` with ``x``'s dtype and device.

    Args:
        eps: a Python number, a 0-dim tensor, or a per-example tensor of shape ``[B]``.
        x: a batch, shape ``[B, ...]``; supplies ``B``, dtype and device.

    Raises:
        ValueError: a tensor ``eps`` whose shape is neither ``[]`` nor ``[B]``.

    Only shapes are checked (no device synchronisation); use :func:`check_eps` for values.
    """
    if x.dim() < 1:
        raise ValueError("x must have a batch dimension: shape [B, ...]")
    b = x.shape[0]
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    if isinstance(eps, Tensor):
        if eps.dim() == 0:
            return eps.to(device=x.device, dtype=dtype).expand(b)
        if eps.dim() != 1 or eps.shape[0] != b:
            raise ValueError(
                f"per-example eps must be a tensor of shape [B] = [{b}]; got shape {list(eps.shape)}"
            )
        return eps.to(device=x.device, dtype=dtype)
    if isinstance(eps, bool) or not isinstance(eps, Real):
        raise TypeError(f"eps must be a float or a tensor of shape [B]; got {type(eps).__name__}")
    return torch.full((b,), float(eps), device=x.device, dtype=dtype)


def as_batch_eps(eps: float | Tensor, x: Tensor) -> Tensor:
    """Broadcast ε (float or ``[B]``) to shape ``[B, 1, ..., 1]`` matching ``x.dim()``.

    The result has ``x``'s dtype and device and multiplies/compares elementwise with any
    tensor of ``x``'s shape. Shape-only checks, cheap enough for every attack step.
    """
    return eps_vector(eps, x).reshape(_batch_view_shape(x))


def clip_to_box(x: Tensor, delta: Tensor) -> Tensor:
    """Return ``delta`` clamped so that ``x + delta`` lies in ``[0, 1]`` (i.e. to ``[-x, 1 - x]``).

    This is the exact Euclidean projection of ``x + delta`` onto the box, expressed as a
    perturbation. Shapes: ``x`` and ``delta`` are both ``[B, ...]`` (or broadcastable).
    """
    return torch.clamp(delta, min=-x, max=1 - x)


def _flat(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], math.prod(t.shape[1:]))


# --------------------------------------------------------------------------------------
# Exact projections onto {‖δ‖_p ≤ ε} ∩ {lo ≤ δ ≤ hi}   (lo ≤ 0 ≤ hi)
# --------------------------------------------------------------------------------------


def _prep_box(v: Tensor, lo: Tensor | float, hi: Tensor | float) -> tuple[Tensor, Tensor]:
    lo_t = torch.as_tensor(lo, dtype=v.dtype, device=v.device).broadcast_to(v.shape)
    hi_t = torch.as_tensor(hi, dtype=v.dtype, device=v.device).broadcast_to(v.shape)
    return _flat(lo_t), _flat(hi_t)


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
    return torch.clamp(torch.clamp(v, min=-e, max=e), min=lo, max=hi)


def _rescale_into_ball(delta_flat: Tensor, norms: Tensor, eps: Tensor) -> Tensor:
    # Shrinking a box-feasible δ toward 0 keeps it in the box (the box contains 0), so this
    # guard fixes the last ulp of ball infeasibility without touching the box constraint.
    # ε/0 = inf and 0/0 = NaN both mean "no shrinking": factor 1.
    factor = torch.nan_to_num(eps / norms, nan=1.0).clamp_(max=1)
    return delta_flat * factor.unsqueeze(1)


def project_l2_box(
    v: Tensor,
    lo: Tensor | float,
    hi: Tensor | float,
    eps: float | Tensor,
) -> Tensor:
    """Exact Euclidean projection of ``v`` onto ``{‖δ‖₂ ≤ ε} ∩ [lo, hi]``, per example.

    Method (specs/minmax.md §1.4, eq. 22): the answer is ``clip(s·v)`` with
    ``s = 1/(1+λ) ∈ [0, 1]``: ``s = 1`` if ``g(1) ≤ ε²``, where ``g(s) = ‖clip(s·v)‖₂²``,
    else the root of ``g(s) = ε²`` (``g`` is non-decreasing). Coordinate ``i`` is clipped
    at its bound for ``s ≥ τᵢ = |bound_i| / |v_i|``, so on each stretch between breakpoints
    ``g(s) = Σ_clipped bound² + s² Σ_free v²``, and the root is found by a monotone
    active-set iteration from below (:func:`_l2_box_scale`): exact, usually two to four
    vectorised passes, no loop over examples. The result is finally shrunk by at most an
    ulp so that ``‖δ‖₂ ≤ ε`` holds in floating point.

    Args:
        v: point to project, shape ``[B, ...]``.
        lo, hi: box bounds broadcastable to ``v`` with ``lo <= 0 <= hi`` (may be ±inf).
        eps: float or ``[B]``, finite and ``>= 0``.

    Returns:
        δ, shape of ``v``, with ``lo <= δ <= hi`` and ``‖δ‖₂ <= ε (1 + 1e-6)``.
    """
    lof, hif = _prep_box(v, lo, hi)
    return _project_l2_flat(_flat(v), lof, hif, eps_vector(eps, v)).reshape(v.shape)


def _project_l2_flat(vf: Tensor, lof: Tensor, hif: Tensor, e: Tensor) -> Tensor:
    """:func:`project_l2_box` on flat ``[B, D]`` tensors with ``e`` of shape ``[B]``."""
    with torch.no_grad():
        s = _l2_box_scale(vf.detach(), lof, hif, e)
    delta = torch.clamp(vf * s.unsqueeze(1), min=lof, max=hif)
    with torch.no_grad():
        n = torch.linalg.vector_norm(delta.detach(), dim=1)
    return _rescale_into_ball(delta, n, e)


def _l2_box_scale(vd: Tensor, lof: Tensor, hif: Tensor, e: Tensor) -> Tensor:
    """The scale s ∈ [0, 1] of :func:`project_l2_box`: 1 if ``‖clip(v)‖₂ ≤ ε``, else the
    root of ``g(s) = ‖clip(s·v)‖₂² = ε²``. Shapes: vd, lof, hif ``[B, D]``; e ``[B]``.

    Monotone active-set iteration from below, started at ``s₀ = min(1, ε/‖v‖₂)`` (the
    ball projection's scale; clipping only shortens, so ``g(s₀) ≤ ε²``): at a lower bound
    ``s_k``, freeze the set of coordinates already clipped (``τᵢ ≤ s_k``) and solve
    ``Σ_clipped bound² + s² Σ_free v² = ε²`` for ``s_{k+1}`` (capped at 1). Coordinates
    that clip later contribute ``bound² ≤ s²v²``, so this quadratic lies above g beyond
    ``s_k``: ``s_{k+1}`` is again a lower bound, the clipped set only grows, and once it
    stops growing s is exact (at most one pass per coordinate in theory; two to four in
    practice). Every row goes through the same few vectorised passes: no fast paths, no
    row indexing, few operations (what matters at small batches)."""
    v2 = vd * vd
    bound = torch.where(vd > 0, hif, lof)
    b2 = bound * bound
    tau = bound / vd  # = |bound|/|v| ≥ 0 (same signs); v = 0 gives ±inf or NaN: never clipped
    e2 = e * e
    zero = vd.new_zeros(())
    s = torch.nan_to_num(e / torch.linalg.vector_norm(vd, dim=1), nan=1.0).clamp_(max=1)
    count = None
    for _ in range(vd.shape[1] + 1):
        clipped = tau <= s.unsqueeze(1)  # NaN compares False
        new_count = clipped.sum(1)
        if count is not None and bool(torch.equal(new_count, count)):
            break
        count = new_count
        c2 = torch.where(clipped, b2, zero).sum(1)
        f2 = torch.where(clipped, zero, v2).sum(1)
        # f2 = 0 (everything clipped) gives inf or NaN: fmax keeps s, the cap keeps s ≤ 1
        s = torch.fmax(s, torch.sqrt((e2 - c2).clamp_(min=0) / f2)).clamp_(max=1)
    return s


def project_l1_box(
    v: Tensor,
    lo: Tensor | float,
    hi: Tensor | float,
    eps: float | Tensor,
    iters: int = 40,
) -> Tensor:
    """Exact Euclidean projection of ``v`` onto ``{‖δ‖₁ ≤ ε} ∩ [lo, hi]``, per example.

    Method (specs/minmax.md §1.4, eq. 21): if ``‖clip(v)‖₁ ≤ ε`` the answer is ``clip(v)``;
    otherwise it is soft-thresholding followed by the clip,
    ``δ(τ) = clip(sign(v)·max(|v| − τ, 0), lo, hi)``, with ``τ > 0`` the root of
    ``‖δ(τ)‖₁ = ε`` (non-increasing, piecewise linear in ``τ``). The root is bracketed by
    ``iters`` bisection steps on ``[0, max|v|]`` (parametrised relative to ``max|v|`` so that
    tiny budgets are resolved in float32), refined in closed form on the active set of
    the final bracket (``‖δ‖₁ = Σ_free (|v_i| − τ) + Σ_capped b_i``), then shrunk by at most an
    ulp so that ``‖δ‖₁ ≤ ε`` in floating point. Standard sign (−1 for negatives; the seed's
    0 is a typo, minmax.md §8.9). Fully vectorised; no loop over examples.

    Args:
        v: point to project, shape ``[B, ...]``.
        lo, hi: box bounds broadcastable to ``v`` with ``lo <= 0 <= hi`` (may be ±inf).
        eps: float or ``[B]``, finite and ``>= 0``.
        iters: bisection iterations.

    Returns:
        δ, shape of ``v``, with ``lo <= δ <= hi`` and ``‖δ‖₁ <= ε (1 + 1e-6)``.
    """
    shape = v.shape
    vf = _flat(v)
    lof, hif = _prep_box(v, lo, hi)
    e = eps_vector(eps, v)
    if vf.shape[1] == 0:
        return v.clone()
    with torch.no_grad():
        vd = vf.detach()
        a = vd.abs()
        # cap on |δ_i| in the direction of v_i (the box contains 0, so clip ∘ soft = this)
        b = torch.clamp(torch.where(vd > 0, hif, -lof), min=0)
        inside = torch.minimum(a, b).sum(1) <= e
        # Work with the threshold relative to a_max = max|v|: τ = a_max + u, u ∈ [−a_max, 0].
        # Near the top the differences |v_i| − a_max are exact, so budgets far below
        # ulp(max|v|) are still resolved.
        a_max = a.amax(1)
        sh = a - a_max.unsqueeze(1)
        u_lo = -a_max
        u_hi = torch.zeros_like(a_max)

        def g(u: Tensor) -> Tensor:
            return torch.minimum(torch.clamp(sh - u.unsqueeze(1), min=0), b).sum(1)

        for _ in range(iters):
            mid = 0.5 * (u_lo + u_hi)
            ok = g(mid) <= e
            u_hi = torch.where(ok, mid, u_hi)
            u_lo = torch.where(ok, u_lo, mid)
        # Closed-form refinement on the active set at the middle of the final bracket:
        # ‖δ(u)‖₁ = Σ_free (sh_i − u) + Σ_capped b_i = ε.
        mid = 0.5 * (u_lo + u_hi)
        r = sh - mid.unsqueeze(1)
        capped = r >= b
        free = (r > 0) & ~capped
        m = free.sum(1).to(vd.dtype)
        s_free = torch.where(free, sh, 0).sum(1)
        c = torch.where(capped, b, 0).sum(1)
        u_new = (s_free + c - e) / torch.where(m > 0, m, 1)
        u_new = torch.where(m > 0, u_new, u_hi)
        u = torch.minimum(torch.maximum(u_new, u_lo), u_hi)
        cap = torch.clamp(torch.where(vf.detach() > 0, hif, -lof), min=0)
    mag = torch.minimum(torch.clamp((vf.abs() - a_max.unsqueeze(1)) - u.unsqueeze(1), min=0), cap)
    delta = torch.where(
        inside.unsqueeze(1), torch.clamp(vf, min=lof, max=hif), torch.sign(vf) * mag
    )
    with torch.no_grad():
        n = delta.detach().abs().sum(1)
    return _rescale_into_ball(delta, n, e).reshape(shape)


# --------------------------------------------------------------------------------------
# Threat-model strategy objects
# --------------------------------------------------------------------------------------


class ThreatModel(ABC):
    """An ℓp ball of radius ε around ``x``, intersected with the box ``[0, 1]^d``.

    Subclasses: :class:`LinfBall`, :class:`L2Ball`, :class:`L1Ball`. Obtain one with
    :func:`get_threat`. All methods are pure functions of their arguments (no state is
    mutated, inputs are never modified in place) and work on any device and floating dtype.

    Shapes: ``x``, ``delta`` and ``grad`` are ``[B, ...]``; ``eps`` and ``step_size`` are floats
    or ``[B]`` tensors; norms return ``[B]``.
    """

    #: canonical name: "linf", "l2" or "l1".
    name: ClassVar[str]
    #: the exponent p of the norm (``math.inf`` for ℓ∞).
    p: ClassVar[float]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(vars(self).items()))))

    # -- norms --------------------------------------------------------------------------
    @abstractmethod
    def norm(self, delta: Tensor) -> Tensor:
        """ℓp norm of each example over all non-batch dims: ``[B, ...] -> [B]``."""

    @abstractmethod
    def dual_norm(self, g: Tensor) -> Tensor:
        """Dual norm ℓq (1/p + 1/q = 1) of each example: ``[B, ...] -> [B]``.

        ``max_{‖δ‖_p ≤ 1} ⟨g, δ⟩ = ‖g‖_q``; e.g. the distance of ``x`` to the hyperplane
        ``uᵀx + c = 0`` in ℓp is ``|uᵀx + c| / ‖u‖_q`` (specs/mma.md §1.6).
        """

    def normalize(self, delta: Tensor) -> Tensor:
        """``delta / ‖delta‖_p`` per example; an all-zero example stays zero (no NaN)."""
        n = self.norm(delta)
        n = torch.where(n > 0, n, torch.ones_like(n))
        return delta / n.reshape(_batch_view_shape(delta))

    # -- sampling -----------------------------------------------------------------------
    @abstractmethod
    def sample_ball(self, x: Tensor, eps: Tensor, noise: Noise) -> Tensor:
        """A perturbation ``[B, ...]`` drawn uniformly from the ε-ball (ε ``[B]`` or a
        scalar tensor), with the random numbers taken from ``noise`` (not yet clipped to
        the box)."""

    def random_init(
        self, x: Tensor, eps: float | Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """A random start: uniform in the ε-ball, then projected onto ball ∩ box.

        Args:
            x: clean inputs ``[B, ...]`` in ``[0, 1]`` (supplies shape, dtype and device).
            eps: float or ``[B]``.
            generator: optional :class:`torch.Generator` **on x's device**, for
                reproducibility; ``None`` uses the global RNG.

        Returns:
            δ of shape ``x.shape`` with ``norm(δ) <= eps`` and ``x + δ ∈ [0, 1]``.

        The sample is uniform over the ball (before the box projection, which for a point
        already inside the ball is just the clip to ``[-x, 1 - x]``).
        """
        e = as_batch_eps(eps, x)
        delta = self.sample_ball(x, e, GeneratorNoise(generator, x.device, x.dtype))
        return self.project(delta, x, eps)

    # -- steps --------------------------------------------------------------------------
    @abstractmethod
    def step(self, grad: Tensor, step_size: float | Tensor, x_adv: Tensor | None = None) -> Tensor:
        """Steepest-ascent step of ℓp length ``step_size`` for gradient ``grad``.

        ``delta + step(grad, alpha)`` increases a loss whose input-gradient is ``grad``.
        ``step_size`` is a float or ``[B]``. An all-zero gradient gives a zero step (no NaN).
        ``x_adv`` (the current adversarial input) is only used by :class:`L1Ball` to skip
        coordinates at the box boundary whose gradient points outward; the other norms
        accept and ignore it.
        """

    # -- projections --------------------------------------------------------------------
    def project(self, delta: Tensor, x: Tensor, eps: float | Tensor) -> Tensor:
        """Exact projection: returns δ' such that ``x + δ'`` is the Euclidean projection of
        ``x + delta`` onto ``{‖x' − x‖_p ≤ ε} ∩ [0, 1]^d``.

        Args:
            delta: current perturbation ``[B, ...]``.
            x: clean inputs ``[B, ...]`` in ``[0, 1]``.
            eps: float or ``[B]``.

        Returns:
            δ' of shape ``delta.shape``, feasible: ``norm(δ') <= eps·(1 + 1e-5)`` and
            ``x + δ' ∈ [0, 1]``. Idempotent up to float rounding.
        """
        return self.project_box(delta, -x, 1 - x, eps)

    @abstractmethod
    def project_box(
        self, delta: Tensor, lo: Tensor | float, hi: Tensor | float, eps: float | Tensor
    ) -> Tensor:
        """Exact projection of ``delta`` onto ``{‖δ‖_p ≤ ε} ∩ [lo, hi]`` for general bounds
        ``lo <= 0 <= hi`` broadcastable to ``delta`` (±inf allowed)."""

    def project_ball(self, delta: Tensor, eps: float | Tensor) -> Tensor:
        """Projection onto the ε-ball only, ignoring the box."""
        return self.project_box(delta, -math.inf, math.inf, eps)

    def projector(
        self, x: Tensor, eps: float | Tensor, exact: bool = True
    ) -> Callable[[Tensor], Tensor]:
        """``project(·, x, eps)`` (or ``project_approx`` when ``exact=False``) as a closure
        with the box bounds of ``x`` computed once, for loops that project many times
        around the same ``x`` (PGD). Shapes: x [B, ...], eps float or [B]; δ ↦ δ'."""
        if not exact:
            return lambda delta: self.project_approx(delta, x, eps)
        lo, hi = -x, 1 - x
        return lambda delta: self.project_box(delta, lo, hi, eps)

    def project_approx(self, delta: Tensor, x: Tensor, eps: float | Tensor) -> Tensor:
        """Cheap feasible (but not nearest) projection: clip to the box, then project the
        clipped δ onto the ball (for ℓ2 a rescale by ``min(1, ε/‖δ‖₂)``).

        This is advertorch's ``perturb_iterative`` order for ℓ2 (specs/mma.md §2.2) and the
        ``appro_proj`` mode of the min-max code. Shrinking toward 0 keeps the box, so the
        result is feasible. For ℓ∞ it coincides with :meth:`project`.
        """
        return self.project_ball(clip_to_box(x, delta), eps)


class LinfBall(ThreatModel):
    """ℓ∞ ball ∩ box. Step: ``α·sign(g)`` (FGSM/PGD, Madry et al. 2018).

    Projection is the clamp ``δ_i ∈ [max(−x_i, −ε), min(1 − x_i, ε)]``, exact because the
    set is a product of intervals. Random start: ``U(−ε, ε)`` per coordinate, then clamped.
    """

    name = "linf"
    p = math.inf

    def norm(self, delta: Tensor) -> Tensor:
        f = _flat(delta)
        if f.shape[1] == 0:
            return f.new_zeros(f.shape[0])
        return f.abs().amax(1)

    def dual_norm(self, g: Tensor) -> Tensor:
        return _flat(g).abs().sum(1)

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


class L2Ball(ThreatModel):
    """ℓ2 ball ∩ box. Step: ``α·g/‖g‖₂`` (zero gradient → zero step).

    Projection: exact ball ∩ box projection via :func:`project_l2_box` (sorted breakpoints,
    closed form, no iteration). Random start: uniform in the ball (Gaussian direction,
    radius ``ε·U^{1/d}``), then clipped to the box.
    """

    name = "l2"
    p = 2.0

    def norm(self, delta: Tensor) -> Tensor:
        return torch.linalg.vector_norm(_flat(delta), dim=1)

    def dual_norm(self, g: Tensor) -> Tensor:
        return torch.linalg.vector_norm(_flat(g), dim=1)

    def sample_ball(self, x: Tensor, eps: Tensor, noise: Noise) -> Tensor:
        b = x.shape[0]
        d = max(x[0].numel(), 1) if b > 0 else 1
        z = noise.randn(x.shape)
        u = noise.rand((b,))
        radius = eps * u.pow(1.0 / d).reshape(_batch_view_shape(x))
        return self.normalize(z) * radius

    def step(self, grad: Tensor, step_size: float | Tensor, x_adv: Tensor | None = None) -> Tensor:
        g = _flat(grad)
        if g.shape[1] == 0:
            return grad.clone()
        # scale by max|g| first so that neither tiny nor huge gradients under/overflow;
        # a zero gradient stays zero (0 / tiny)
        tiny = torch.finfo(g.dtype).tiny
        gs = g / g.abs().amax(1, keepdim=True).clamp_(min=tiny)
        n = torch.linalg.vector_norm(gs, dim=1, keepdim=True).clamp_(min=tiny)
        return (gs * (eps_vector(step_size, grad).unsqueeze(1) / n)).reshape(grad.shape)

    def project_box(
        self, delta: Tensor, lo: Tensor | float, hi: Tensor | float, eps: float | Tensor
    ) -> Tensor:
        return project_l2_box(delta, lo, hi, eps)

    def projector(
        self, x: Tensor, eps: float | Tensor, exact: bool = True
    ) -> Callable[[Tensor], Tensor]:
        if not exact:
            return super().projector(x, eps, exact)
        lof, hif, e = _flat(-x), _flat(1 - x), eps_vector(eps, x)
        return lambda delta: _project_l2_flat(_flat(delta), lof, hif, e).reshape(delta.shape)

    def project_ball(self, delta: Tensor, eps: float | Tensor) -> Tensor:
        """``delta · min(1, ε/‖delta‖₂)`` (closed form, no box)."""
        n = self.norm(delta)
        e = eps_vector(eps, delta)
        return _rescale_into_ball(_flat(delta), n, e).reshape(delta.shape)


class L1Ball(ThreatModel):
    """ℓ1 ball ∩ box. Step: sparse top-k steepest ascent.

    The ℓ1 steepest-ascent direction is a single coordinate, which makes PGD crawl; the
    standard fix (SLIDE, Tramèr & Boneh 2019; APGD-ℓ1, Croce & Hein 2021) spreads the step
    over the ``k`` coordinates with the largest ``|g_i|``:
    ``step_i = α·sign(g_i)/k`` on those coordinates, 0 elsewhere, so ``‖step‖₁ = α``.
    ``k = ceil((1 − l1_sparsity)·d)`` (at least 1), ``d`` the number of coordinates per
    example; the default ``l1_sparsity = 0.95`` (the 95th percentile of ``|g|``) moves the
    top 5% of coordinates. Coordinates with ``g_i = 0`` are never selected; if fewer than
    ``k`` are non-zero the step is spread over those, still with ``‖step‖₁ = α`` (zero
    gradient → zero step). Passing ``x_adv`` also excludes coordinates pinned at the box
    boundary with the gradient pointing outward (they could not move).

    Projection: exact ball ∩ box projection via :func:`project_l1_box`. Random start:
    uniform in the ℓ1 ball (Laplace coordinates normalised to the ℓ1 sphere, radius
    ``ε·U^{1/d}``), then clipped to the box.

    Args:
        l1_sparsity: quantile in ``[0, 1)`` of ``|g|`` above which coordinates are stepped.
        iters: bisection iterations of the exact projection.
    """

    name = "l1"
    p = 1.0

    def __init__(self, l1_sparsity: float = 0.95, iters: int = 40) -> None:
        if not (0.0 <= float(l1_sparsity) < 1.0):
            raise ValueError(f"l1_sparsity must be in [0, 1); got {l1_sparsity}")
        if iters < 1:
            raise ValueError(f"iters must be >= 1; got {iters}")
        self.l1_sparsity = float(l1_sparsity)
        self.iters = int(iters)

    def __repr__(self) -> str:
        return f"L1Ball(l1_sparsity={self.l1_sparsity}, iters={self.iters})"

    def top_k(self, d: int) -> int:
        """Number of coordinates a step moves for ``d`` coordinates per example."""
        return max(1, min(d, math.ceil((1.0 - self.l1_sparsity) * d - 1e-9)))

    def norm(self, delta: Tensor) -> Tensor:
        return _flat(delta).abs().sum(1)

    def dual_norm(self, g: Tensor) -> Tensor:
        f = _flat(g)
        if f.shape[1] == 0:
            return f.new_zeros(f.shape[0])
        return f.abs().amax(1)

    def sample_ball(self, x: Tensor, eps: Tensor, noise: Noise) -> Tensor:
        b = x.shape[0]
        d = max(x[0].numel(), 1) if b > 0 else 1
        u = noise.rand(x.shape)
        mag = -torch.log1p(-u)  # Exponential(1); u ∈ [0, 1) so no log(0)
        sgn = noise.rand(x.shape)
        lap = torch.where(sgn < 0.5, -mag, mag)
        r = noise.rand((b,))
        radius = eps * r.pow(1.0 / d).reshape(_batch_view_shape(x))
        return self.normalize(lap) * radius

    def step(self, grad: Tensor, step_size: float | Tensor, x_adv: Tensor | None = None) -> Tensor:
        g = _flat(grad)
        if x_adv is not None:
            xa = _flat(x_adv.detach().broadcast_to(grad.shape))
            blocked = ((xa >= 1) & (g > 0)) | ((xa <= 0) & (g < 0))
            g = torch.where(blocked, 0, g)
        d = g.shape[1]
        if d == 0:
            return torch.zeros_like(grad)
        k = self.top_k(d)
        a = g.abs()
        idx = a.topk(k, dim=1).indices
        sel = torch.zeros_like(a, dtype=torch.bool).scatter(1, idx, True) & (a > 0)
        k_eff = sel.sum(1, keepdim=True).clamp(min=1).to(g.dtype)
        out = torch.where(sel, torch.sign(g), 0) / k_eff
        return out.reshape(grad.shape) * as_batch_eps(step_size, grad)

    def project_box(
        self, delta: Tensor, lo: Tensor | float, hi: Tensor | float, eps: float | Tensor
    ) -> Tensor:
        return project_l1_box(delta, lo, hi, eps, iters=self.iters)


_THREATS: dict[str, type[ThreatModel]] = {"linf": LinfBall, "l2": L2Ball, "l1": L1Ball}


def normalize_norm(norm: str | float | int | ThreatModel) -> str:
    """Canonical norm name ``"linf" | "l2" | "l1"``.

    Accepts (case-insensitively) ``"linf"``, ``"Linf"``, ``"inf"``, ``"l_inf"``, ``"l2"``,
    ``"2"``, ``"l1"``, ``"1"``, the numbers ``2``, ``1``, ``float("inf")``, or a
    :class:`ThreatModel`. Anything else raises :class:`ValueError` listing the valid norms.
    """
    if isinstance(norm, ThreatModel):
        return norm.name
    key: str | None = None
    if isinstance(norm, str):
        key = _NORM_ALIASES.get(norm.strip().lower().replace(" ", ""))
    elif isinstance(norm, Real) and not isinstance(norm, bool):
        v = float(norm)
        key = {math.inf: "linf", 2.0: "l2", 1.0: "l1"}.get(v)
    if key is None:
        raise ValueError(
            f"unknown norm {norm!r}; valid norms are {', '.join(NORMS)}"
            " (also accepted: 'inf', 'Linf', 2, 1, float('inf'))"
        )
    return key


def get_threat(norm: str | float | int | ThreatModel, **kwargs: object) -> ThreatModel:
    """Return the threat model for ``norm`` (see :func:`normalize_norm` for accepted names).

    ``kwargs`` go to the constructor, e.g. ``get_threat("l1", l1_sparsity=0.99)`` or
    ``get_threat("l1", iters=60)``. A :class:`ThreatModel` instance is returned unchanged
    (``kwargs`` must then be empty).
    """
    if isinstance(norm, ThreatModel):
        if kwargs:
            raise ValueError("cannot pass constructor options together with a ThreatModel")
        return norm
    return _THREATS[normalize_norm(norm)](**kwargs)  # type: ignore[arg-type]
