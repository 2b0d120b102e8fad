"""The threat-model base class and the shape helpers every norm shares.

:class:`ThreatModel` is the strategy object an iterative attack calls for what depends on
the norm (random start, steepest-ascent step, exact projection onto ball ∩ box, norms, the
feasibility judge :meth:`ThreatModel.contains`); the norms themselves live in
:mod:`wideberth.threat.linf`, :mod:`wideberth.threat.l2` and :mod:`wideberth.threat.l1`.

Helpers: :func:`eps_vector` / :func:`as_batch_eps` broadcast ε (a float or a per-example
``[B]`` tensor) to ``[B]`` / ``[B, 1, ..., 1]``; :func:`clip_to_box` projects onto
``[0, 1]``; :func:`flatten_batch`, :func:`batch_view_shape`, :func:`flat_box_bounds` and
:func:`rescale_into_ball` are the flat-view utilities the projections share.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from numbers import Real
from typing import ClassVar

import torch
from torch import Tensor

from ..noise import GeneratorNoise, Noise

__all__ = [
    "FEASIBILITY_RTOL",
    "ThreatModel",
    "as_batch_eps",
    "batch_view_shape",
    "clip_to_box",
    "eps_vector",
    "flat_box_bounds",
    "flatten_batch",
    "rescale_into_ball",
]

#: relative tolerance of :meth:`ThreatModel.contains` on ``‖x_adv − x‖ ≤ ε`` (the exact
#: projections guarantee ``‖δ‖ ≤ ε·(1 + 1e-6)``; float32 rounding of ``x + δ`` adds a little)
FEASIBILITY_RTOL = 1e-5


# --------------------------------------------------------------------------------------
# ε broadcasting and box helpers
# --------------------------------------------------------------------------------------


def batch_view_shape(x: Tensor) -> tuple[int, ...]:
    """``(B, 1, ..., 1)`` with ``x.dim()`` entries: broadcasts a ``[B]`` vector over ``x``."""
    return (x.shape[0],) + (1,) * (x.dim() - 1)


def eps_vector(eps: float | Tensor, x: Tensor) -> Tensor:
    """Return ε as a tensor of shape ``[B]`` with ``x``'s dtype and device.

    Args:
        eps: a Python number, a 0-dim tensor, or a per-example tensor of shape ``[B]``.
        x: a batch, shape ``[B, ...]``; supplies ``B``, dtype and device.

    Raises:
        ValueError: a tensor ``eps`` whose shape is neither ``[]`` nor ``[B]``.

    Only shapes are checked (no device synchronisation); use :func:`wideberth.threat.check_eps` for values.
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
    return eps_vector(eps, x).reshape(batch_view_shape(x))


def clip_to_box(x: Tensor, delta: Tensor) -> Tensor:
    """Return ``delta`` clamped so that ``x + delta`` lies in ``[0, 1]`` (i.e. to ``[-x, 1 - x]``).

    This is the exact Euclidean projection of ``x + delta`` onto the box, expressed as a
    perturbation. Shapes: ``x`` and ``delta`` are both ``[B, ...]`` (or broadcastable).
    """
    return torch.clamp(delta, min=-x, max=1 - x)


def flatten_batch(t: Tensor) -> Tensor:
    """``t`` [B, ...] viewed as ``[B, D]`` (D = the product of the non-batch sizes; 0 allowed)."""
    return t.reshape(t.shape[0], math.prod(t.shape[1:]))


def flat_box_bounds(v: Tensor, lo: Tensor | float, hi: Tensor | float) -> tuple[Tensor, Tensor]:
    """Box bounds ``lo``, ``hi`` (floats or tensors broadcastable to ``v`` [B, ...]) as flat
    ``[B, D]`` tensors of ``v``'s dtype and device."""
    lo_t = torch.as_tensor(lo, dtype=v.dtype, device=v.device).broadcast_to(v.shape)
    hi_t = torch.as_tensor(hi, dtype=v.dtype, device=v.device).broadcast_to(v.shape)
    return flatten_batch(lo_t), flatten_batch(hi_t)


def rescale_into_ball(delta_flat: Tensor, norms: Tensor, eps: Tensor) -> Tensor:
    """``delta_flat`` [B, D] shrunk by ``min(1, ε/norm)`` per row (ε, norms ``[B]``)."""
    # Shrinking a box-feasible δ toward 0 keeps it in the box (the box contains 0), so this
    # guard fixes the last ulp of ball infeasibility without touching the box constraint.
    # ε/0 = inf and 0/0 = NaN both mean "no shrinking": factor 1.
    factor = torch.nan_to_num(eps / norms, nan=1.0).clamp_(max=1)
    return delta_flat * factor.unsqueeze(1)


# --------------------------------------------------------------------------------------
# Threat-model strategy objects
# --------------------------------------------------------------------------------------


class ThreatModel(ABC):
    """An ℓp ball of radius ε around ``x``, intersected with the box ``[0, 1]^d``.

    Subclasses: :class:`~wideberth.threat.LinfBall`, :class:`~wideberth.threat.L2Ball`,
    :class:`~wideberth.threat.L1Ball`. Obtain one with :func:`wideberth.threat.get_threat`.
    All methods are pure functions of their arguments (no state is mutated, inputs are never
    modified in place) and work on any device and floating dtype.

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

        ``max_{‖δ‖_p ≤ 1} ⟨g, δ⟩ = ‖g‖_q`` (Hölder); e.g. the ℓp distance of ``x`` to the
        hyperplane ``uᵀx + c = 0`` is ``|uᵀx + c| / ‖u‖_q``, the closed-form margin of a
        linear classifier (Ding et al., MMA training, ICLR 2020, §2: the margin is the
        shortest successful perturbation).
        """

    def normalize(self, delta: Tensor) -> Tensor:
        """``delta / ‖delta‖_p`` per example; an all-zero example stays zero (no NaN)."""
        n = self.norm(delta)
        n = torch.where(n > 0, n, torch.ones_like(n))
        return delta / n.reshape(batch_view_shape(delta))

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
        ``x_adv`` (the current adversarial input) is only used by
        :class:`~wideberth.threat.L1Ball` to skip coordinates at the box boundary whose
        gradient points outward; the other norms accept and ignore it.
        """

    # -- feasibility ------------------------------------------------------------------
    def contains(
        self, x: Tensor, x_adv: Tensor, eps: float | Tensor, rtol: float = FEASIBILITY_RTOL,
        *, distance: Tensor | None = None,
    ) -> Tensor:
        """Whether each ``x_adv`` lies in its ε-ball around ``x`` and in the box ``[0, 1]``.

        The judge of an attack's output: ``‖x_adv − x‖_p ≤ ε·(1 + rtol)`` (a relative
        tolerance for float rounding, :data:`FEASIBILITY_RTOL` by default) and every
        coordinate of ``x_adv`` in ``[0, 1]``; NaN anywhere counts as outside.

        Args:
            x: clean inputs ``[B, ...]``.
            x_adv: candidate points ``[B, ...]`` (same shape and device as ``x``).
            eps: float or per-example ``[B]``.
            rtol: relative tolerance on the radius.
            distance: ``‖x_adv − x‖_p`` ``[B]`` when the caller has it already (it is not
                computed again).

        Returns:
            bool ``[B]``.
        """
        d = self.norm(x_adv - x) if distance is None else distance
        if isinstance(eps, Tensor):
            bound: Tensor | float = eps_vector(eps, d) * (1 + rtol)
        else:
            bound = float(eps) * (1 + rtol)
        flat = flatten_batch(x_adv)
        in_box = (flat >= 0).all(1) & (flat <= 1).all(1)
        return (d <= bound) & in_box

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

        This is AdverTorch's ``perturb_iterative`` order for ℓ2 (the PGD of Ding et al.,
        MMA training, ICLR 2020, App. C–D, which uses AdverTorch) and the ``appro_proj``
        mode of the min-max framework's released code (Wang et al., "Towards a unified
        min-max framework for adversarial exploration and robustness", 2019, whose exact
        projection, Prop. 1 / App. B, is :meth:`project`). Shrinking toward 0 keeps the box,
        so the result is feasible. For ℓ∞ it coincides with :meth:`project`.
        """
        return self.project_ball(clip_to_box(x, delta), eps)
