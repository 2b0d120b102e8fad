"""APGDA: alternating projected gradient descent (on δ) / ascent (on domain weights w).

Wang et al. (2021), *Adversarial attack generation empowered by min-max optimization*,
§3.1, Algorithm 1 (the 2020 preprint calls it "APGD", renamed APGDA here to avoid a clash
with Croce & Hein's Auto-PGD). Problem (12):

    min_{δ ∈ X} max_{w ∈ P}  Σ_i w_i F_i(δ) − (γ/2) ‖w − 1/K‖²,
    X = {δ : ‖δ‖_p ≤ ε, lo ≤ δ ≤ hi}   (lo = −x, hi = 1 − x by default)

``F_i`` is an **attack loss** (minimised over δ: small = attack success); its weight is
**maximised**, so the domain hardest to attack gets the largest weight. Algorithm 1, one
iteration t = 1..T (Gauss–Seidel order: the w-step uses the losses at the new δ(t)):

    δ(t) = proj_X(δ(t−1) − α·step(∇_δ Σ_i w_i(t−1) F_i(δ(t−1))))           (13)
    φ(t) = [F_1(δ(t)), ..., F_K(δ(t))]               (losses at the NEW δ)
    w(t) = proj_P(w(t−1) + β·(φ(t) − γ·(w(t−1) − 1/K)))                   (14)

The regulariser of (4) is centred at the uniform vector 1/K (not at 0), the simplex
projection in (14) is the exact Euclidean one, the projection onto X is the exact ball ∩ box
projection of Prop. 1 (:mod:`wideberth.threat`; not "project onto the ball, then clip").
Output: the **last** iterate δ(T) (no best-iterate selection, as the authors' code), the
final w(T), and the trajectories of w and of the per-domain losses.

Cost: one forward pass of ``domain_losses`` per iteration (T + 1 in all) and one backward:
the forward at δ(t) gives φ(t) for the w-step and, kept with its graph, the gradient
``∇_δ Σ_i w_i(t) F_i(δ(t))`` (w detached) for the next δ-step, so APGDA costs about what
PGD costs (§3.1).

Reuse by the applications (§2.2, eqs. (5)–(7); :mod:`wideberth.minmax.problem`): the core
only sees a function ``δ ↦ F(δ)`` of shape ``[B, K]``: B independent min-max problems
("rows", each with its own δ[b] and w[b]) and K domains. The ensemble attack has one row
per image and one domain per model; the universal perturbation one row per group (δ shared
by the group; pass the group's intersection box as ``lo``/``hi``) and one domain per group
member; the transformation attack one row per image and one domain per transformation
family.

Baselines of the paper that live in the core: ``update_w=False`` keeps ``w`` at ``w0``:
with ``w0=None`` (uniform) this is the **average-loss** attack (ensemble PGD / EOT / the
universal average baseline, problem (1) with ``w = 1/K``, the γ → ∞ limit; ``gamma=math.inf``
means the same); with given ``w0`` the **fixed-weight** variants (Table A4 ``w_prior``,
``w_static``, ``w_{c+d}``). See :func:`apgda_average` and :func:`apgda_fixed`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_eps, check_inputs
from ..noise import GeneratorNoise
from ..progress import progress_bar
from ..threat import ThreatModel, as_batch_eps, eps_vector, get_threat
from .simplex import on_simplex, project_simplex

__all__ = [
    "APGDAResult",
    "DomainLosses",
    "DELTA_MODES",
    "INITS",
    "apgda",
    "apgda_average",
    "apgda_fixed",
    "uniform_weights",
    "weight_step",
]

#: δ-step rules: the paper's raw gradient (13), the sign of the gradient, or the gradient
#: normalised as the authors' code's ``normalize`` option (ℓ∞: sign, ℓ2: g/‖g‖₂, ℓ1: g/‖g‖₁).
DELTA_MODES: tuple[str, ...] = ("raw", "sign", "normalized")

#: δ(0) choices (Algorithm 1 only says "given"): 0; N(0, 0.1²) i.i.d. *not* projected before
#: the first gradient (the authors' code for the ensemble/EOT attacks); uniform in the ball,
#: projected onto X.
INITS: tuple[str, ...] = ("zero", "normal0.1_raw", "uniform_proj")

_INIT_ALIASES = {"zero": "zero", "normal": "normal0.1_raw", "normal0.1_raw": "normal0.1_raw",
                 "uniform": "uniform_proj", "uniform_proj": "uniform_proj"}

#: ``δ ↦ F(δ)``: δ ``[B, ...]`` to the ``[B, K]`` attack losses of the K domains.
DomainLosses = Callable[[Tensor], Tensor]


@dataclass
class APGDAResult:
    """Output of :func:`apgda` (Wang et al. 2021, §3.1, Algorithm 1).

    Attributes:
        delta: final perturbation δ(T), shape of ``x`` ``[B, ...]`` (the last iterate; for
            ``steps = 0`` the start δ(0)). Detached.
        w: final domain weights w(T), ``[B, K]``, each row on the simplex.
        w_trajectory: ``[T + 1, B, K]``: w(0), w(1), …, w(T).
        loss_trajectory: ``[T + 1, B, K]``: φ(t) = F(δ(t)) for t = 0..T (the losses the
            w-step of iteration t used; φ(0) at the start).
        delta_trajectory: ``[T + 1, B, ...]`` δ(0..T) when ``record_delta=True``, else None.
    """

    delta: Tensor
    w: Tensor
    w_trajectory: Tensor
    loss_trajectory: Tensor
    delta_trajectory: Tensor | None = None

    @property
    def final_losses(self) -> Tensor:
        """φ(T) = F(δ(T)), ``[B, K]``."""
        return self.loss_trajectory[-1]


def uniform_weights(b: int, k: int, like: Tensor) -> Tensor:
    """The uniform weights ``1/K`` as a ``[B, K]`` tensor with ``like``'s dtype and device."""
    return torch.full((b, k), 1.0 / k, dtype=like.dtype, device=like.device)


def weight_step(w: Tensor, phi: Tensor, beta: float, gamma: float) -> Tensor:
    """One projected-ascent step (14) of the inner maximisation (Wang et al. 2021, §3.1).

    ``w ← proj_P(w + β (φ − γ (w − 1/K)))``, row by row. With ``β = 1/γ`` it lands on the
    inner maximiser ``proj_P(1/K + φ/γ)`` from any ``w`` (the objective of (14) is
    γ-strongly concave in w, so that maximiser is unique).

    Args:
        w: current weights ``[B, K]`` (rows on the simplex).
        phi: domain losses at the current δ, ``[B, K]`` (detached).
        beta: step size β ≥ 0. gamma: regularisation γ ≥ 0 (finite).

    Returns:
        new weights ``[B, K]``.
    """
    k = w.shape[-1]
    return project_simplex(w + beta * (phi - gamma * (w - 1.0 / k)))


def _descent_direction(g: Tensor, mode: str, threat: ThreatModel) -> Tensor:
    if mode == "raw":
        return g
    if mode == "sign" or threat.name == "linf":
        return torch.sign(g)
    return threat.normalize(g)  # g / ‖g‖_p per row; a zero gradient gives a zero step


def _check_scalar(name: str, v: float, allow_inf: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{name} must be a non-negative number; got {v!r}")
    v = float(v)
    if math.isnan(v) or v < 0 or (math.isinf(v) and not allow_inf):
        raise ValueError(f"{name} must be a finite number >= 0; got {v!r}")
    return v


def _box(x: Tensor, lo: Tensor | None, hi: Tensor | None) -> tuple[Tensor, Tensor]:
    if (lo is None) != (hi is None):
        raise ValueError("give both lo and hi (the box for δ) or neither")
    if lo is None or hi is None:
        return -x, 1 - x
    try:
        lo_t = torch.as_tensor(lo, dtype=x.dtype, device=x.device).broadcast_to(x.shape)
        hi_t = torch.as_tensor(hi, dtype=x.dtype, device=x.device).broadcast_to(x.shape)
    except RuntimeError as err:
        raise ValueError(f"lo and hi must broadcast to x's shape {list(x.shape)}") from err
    if bool(torch.isnan(lo_t).any() | torch.isnan(hi_t).any()):
        raise ValueError("lo/hi contain NaN")
    if bool((lo_t > 0).any() | (hi_t < 0).any()):
        raise ValueError("the box must contain δ = 0: need lo <= 0 <= hi everywhere")
    return lo_t, hi_t


def _init_weights(w0: Tensor | None, b: int, k: int, like: Tensor) -> Tensor:
    if w0 is None:
        return uniform_weights(b, k, like)
    w = torch.as_tensor(w0, dtype=like.dtype, device=like.device)
    if w.dim() == 1:
        w = w.unsqueeze(0).expand(b, -1)
    if w.dim() != 2 or w.shape != (b, k):
        raise ValueError(
            f"w0 must have shape [K] = [{k}] or [B, K] = [{b}, {k}]; got {list(w.shape)}"
        )
    if not bool(on_simplex(w).all()):
        raise ValueError("w0 must lie on the probability simplex (w >= 0, rows summing to 1)")
    return w.clone()


def _start(x: Tensor, init: str, threat: ThreatModel, eps: Tensor, lo: Tensor, hi: Tensor,
           generator: torch.Generator) -> Tensor:
    if init == "zero":
        return torch.zeros_like(x)
    if init == "normal0.1_raw":
        return 0.1 * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    noise = GeneratorNoise(generator, x.device, x.dtype)
    return threat.project_box(threat.sample_ball(x, as_batch_eps(eps, x), noise), lo, hi, eps)


def _eval(domain_losses: DomainLosses, delta: Tensor, b: int, k: int | None,
          need_grad: bool) -> tuple[Tensor, Tensor | None]:
    """F(δ) ``[B, K]`` (detached) and, if ``need_grad``, a δ that carries its graph."""
    d = delta.detach().requires_grad_(need_grad)
    with torch.set_grad_enabled(need_grad):
        f = domain_losses(d)
    if not isinstance(f, Tensor) or f.dim() != 2 or f.shape[0] != b or f.shape[1] < 1:
        shape = list(f.shape) if isinstance(f, Tensor) else type(f).__name__
        raise ValueError(f"domain_losses(delta) must return a [B, K] = [{b}, K>=1] tensor; got {shape}")
    if k is not None and f.shape[1] != k:
        raise ValueError(f"domain_losses changed its number of domains: {k} -> {f.shape[1]}")
    return f, (d if need_grad else None)


def apgda(
    domain_losses: DomainLosses,
    x: Tensor,
    *,
    norm: str | float | ThreatModel = "linf",
    eps: float | Tensor,
    steps: int = 20,
    alpha: float | Tensor,
    beta: float = 1 / 50,
    gamma: float = 4.0,
    delta_mode: str = "raw",
    w0: Tensor | None = None,
    update_w: bool = True,
    init: str = "zero",
    seed: int = 0,
    generator: torch.Generator | None = None,
    lo: Tensor | None = None,
    hi: Tensor | None = None,
    record_delta: bool = False,
    progress: bool | None = None,
    progress_desc: str = "APGDA",
) -> APGDAResult:
    """APGDA (Wang et al. 2021, §3.1, Algorithm 1): min over δ ∈ ℓp-ball ∩ box,
    max over per-row domain weights w ∈ simplex of ``Σ_i w_i F_i(δ) − (γ/2)‖w − 1/K‖²``.

    Norms: ``"linf"``, ``"l2"``, ``"l1"`` (exact ball ∩ box projection, Prop. 1).

    Args:
        domain_losses: ``δ ↦ F(δ)``, δ of the shape of ``x`` ``[B, ...]``, returning the
            ``[B, K]`` matrix of attack losses (to **minimise**), differentiable in δ. Row b
            must depend only on δ[b] (the gradient of the weighted sum is then per row). It
            is called T + 1 times, with gradients enabled on all calls but the last; the
            caller is responsible for models' eval mode / frozen parameters
            (:func:`wideberth.attacks.base.attack_context`).
        x: ``[B, ...]``: supplies δ's shape, dtype and device and, unless ``lo``/``hi``
            are given, the box ``[−x, 1 − x]`` (x then must lie in [0, 1]). B is the number
            of independent problems (images, or groups for a universal perturbation).
        eps: ball radius, float or ``[B]``.
        steps: T ≥ 0 iterations.
        alpha: δ step size α (float or ``[B]``). For ``delta_mode="raw"`` the paper's values
            are reciprocals (e.g. α = 1/4; App. C.2 prints the denominators).
        beta: w step size β ≥ 0. gamma: regularisation γ ≥ 0; ``math.inf`` means the
            average problem (w ≡ 1/K; ``w0`` must then be None).
        delta_mode: ``"raw"`` (eq. 13, default, reproduces the paper), ``"sign"``, or
            ``"normalized"`` (ℓ∞ sign, ℓ2 g/‖g‖₂, ℓ1 g/‖g‖₁ per row, the authors' code's
            ``normalize`` option).
        w0: initial weights ``[K]`` or ``[B, K]`` on the simplex; default uniform 1/K.
        update_w: False keeps w at w0 (average-loss / fixed-weight baselines).
        init: ``"zero"`` (default), ``"normal0.1_raw"`` (N(0, 0.1²), unprojected before the
            first gradient, as the authors' code) or ``"uniform_proj"`` (uniform in the
            ball, projected onto X); aliases ``"normal"``, ``"uniform"``.
        seed, generator: randomness of the start (a generator on x's device wins).
        lo, hi: optional box for δ, broadcastable to x, with ``lo <= 0 <= hi`` (e.g. the
            intersection ``max_i(−x_i)``, ``min_i(1 − x_i)`` over a group, eq. (6)).
        record_delta: also return δ(0..T) (memory: T + 1 copies of δ).
        progress, progress_desc: a bar over the T iterations named ``progress_desc``
            (:func:`wideberth.progress.progress_bar`; None: when standard error is a terminal).

    Returns:
        :class:`APGDAResult` with δ(T) ``[B, ...]``, w(T) ``[B, K]`` and the trajectories
        ``[T + 1, B, K]``.

    Raises:
        ValueError: bad shapes, ε/α/β/γ < 0, unknown modes, w0 off the simplex, x outside
        [0, 1] (without explicit box), or a ``domain_losses`` output that is not [B, K].
    """
    if not isinstance(x, Tensor) or x.dim() < 1 or x.shape[0] == 0 or not x.is_floating_point():
        raise ValueError("x must be a non-empty floating tensor of shape [B, ...]")
    if not callable(domain_losses):
        raise ValueError("domain_losses must be a callable delta -> [B, K] tensor")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0; got {steps!r}")
    if delta_mode not in DELTA_MODES:
        raise ValueError(f"delta_mode must be one of {', '.join(DELTA_MODES)}; got {delta_mode!r}")
    if init not in _INIT_ALIASES:
        raise ValueError(f"init must be one of {', '.join(INITS)}; got {init!r}")
    init = _INIT_ALIASES[init]
    beta = _check_scalar("beta", beta)
    gamma = _check_scalar("gamma", gamma, allow_inf=True)
    threat = get_threat(norm)
    b = x.shape[0]
    x = x.detach()
    if lo is None and hi is None:
        check_inputs(x, None, eps)
    else:
        check_eps(eps, b)
    check_eps(alpha, b, name="alpha")
    lo_t, hi_t = _box(x, lo, hi)
    eps_t = eps_vector(eps, x)
    alpha_b = as_batch_eps(alpha, x)
    if math.isinf(gamma):
        if w0 is not None:
            raise ValueError("gamma=inf is the average problem (w = 1/K): w0 must be None")
        update_w = False
    gen = generator
    if gen is None:
        gen = torch.Generator(device=x.device)
        gen.manual_seed(int(seed))

    delta = _start(x, init, threat, eps_t, lo_t, hi_t, gen)
    f, d_graph = _eval(domain_losses, delta, b, None, need_grad=steps > 0)
    k = f.shape[1]
    w = _init_weights(w0, b, k, x)
    ws, phis = [w], [f.detach()]
    deltas = [delta.detach()] if record_delta else None

    with progress_bar(steps, progress_desc, enabled=progress, unit="step") as bar:
        for t in range(1, steps + 1):
            bar.update(1)
            # (13): descent on Σ_i w_i(t−1) F_i(δ(t−1)), w detached; per-row gradients
            assert d_graph is not None
            obj = (w.detach() * f).sum()
            (g,) = torch.autograd.grad(obj, d_graph, allow_unused=True)
            if g is None:  # F does not depend on δ
                g = torch.zeros_like(delta)
            delta = threat.project_box(
                delta.detach() - alpha_b * _descent_direction(g.detach(), delta_mode, threat),
                lo_t, hi_t, eps_t,
            ).detach()
            # losses at the NEW δ(t) (Gauss–Seidel); keep the graph for the next δ-step
            f, d_graph = _eval(domain_losses, delta, b, k, need_grad=t < steps)
            phi = f.detach()
            # (14): projected ascent on w, regulariser centred at 1/K
            if update_w:
                w = weight_step(w, phi, beta, gamma)
            ws.append(w)
            phis.append(phi)
            if deltas is not None:
                deltas.append(delta)

    return APGDAResult(
        delta=delta.detach(),
        w=w.detach(),
        w_trajectory=torch.stack(ws).detach(),
        loss_trajectory=torch.stack(phis),
        delta_trajectory=torch.stack(deltas) if deltas is not None else None,
    )


def apgda_average(domain_losses: DomainLosses, x: Tensor, **kwargs: object) -> APGDAResult:
    """Average-loss baseline (Wang et al. 2021: problem (1) with w ≡ 1/K, the γ → ∞ limit of the
    min-max problem; the "avg." of §4.1): :func:`apgda` with ``update_w=False`` and uniform
    ``w0``, so the same α, T, init, step rule and projection as the min-max run (as the
    authors' code, ``fixed_w=True``).
    Shapes as in :func:`apgda`."""
    if "w0" in kwargs or "update_w" in kwargs:
        raise ValueError("apgda_average fixes w0 = 1/K and update_w = False")
    return apgda(domain_losses, x, update_w=False, **kwargs)  # type: ignore[arg-type]


def apgda_fixed(
    domain_losses: DomainLosses, x: Tensor, weights: Tensor, **kwargs: object
) -> APGDAResult:
    """Fixed-weight baseline (Wang et al. 2021, App. D.2, Table A4 ``w_prior``,
    ``w_static``, ``w_{c+d}``): descent on ``Σ_i w_i F_i`` with the given weights ``[K]`` or
    ``[B, K]`` (on the simplex) held fixed. Shapes as in :func:`apgda`."""
    if "w0" in kwargs or "update_w" in kwargs:
        raise ValueError("apgda_fixed takes the weights positionally and never updates them")
    return apgda(domain_losses, x, w0=weights, update_w=False, **kwargs)  # type: ignore[arg-type]
