"""Generalised adversarial training over several perturbation types (``minmax-at``).

Paper: Wang et al., *Towards a unified min-max framework for adversarial exploration and
robustness* (the min-max framework; later *Adversarial attack generation empowered by
min-max optimization*), §2.3, §3.2, §4.2, App. C.2, E.

K perturbation types ``X_i = {δ : ‖δ‖_{p_i} ≤ ε_i} ∩ [−x, 1 − x]`` (ℓ∞, ℓ2, ℓ1 balls
intersected with the [0, 1] box; the paper uses K = 2: ℓ∞ ε = 0.2 and ℓ2 ε = 2.0 on MNIST).
With ``f_tr`` the per-example cross-entropy, the proposed problem (15) is

    min_θ E_(x,y) max_{w ∈ P, {δ_i ∈ X_i}}  ψ,   ψ = Σ_i w_i f_tr(θ, δ_i; x, y) − (γ/2)‖w − 1/K‖²

(P the probability simplex; the regulariser is centred at the uniform vector 1/K).

Inner maximisation (``variant: minmax``, AMPGD, Algorithm 2 step 4, per batch): one weight
vector ``w ∈ P`` **per example** (``[B, K]``) and one perturbation **per type and example**
(``δ_i`` of the shape of x). Start ``w = 1/K``, δ_i random in X_i (or 0). Then R steps of
**Jacobi** projected ascent, both updates using the iterates of step r − 1::

    φ_{r−1} = [f_tr(δ_{1,r−1}), ..., f_tr(δ_{K,r−1})]                          [B, K]
    w_r     = proj_P(w_{r−1} + β (φ_{r−1} − γ (w_{r−1} − 1/K)))                   (14)
    δ_{i,r} = proj_{X_i}(δ_{i,r−1} + α_i · step(w_{i,r−1} ∇_{δ_i} f_tr(δ_{i,r−1})))

``∇_{δ_i} ψ = w_i ∇ f_tr`` (``scale_delta_grad_by_w``, default true, the seed's math; with raw
steps a zero-weight type freezes its δ). One forward and one backward per type per step.
Outer minimisation: one optimiser step on θ for the batch loss

    L = (1 − c)·mean_b Σ_i w_bi CE(f(x_b + δ_bi), y_b) + c·CE(f(x), y) + λ·mean_b h_b

with w and δ fixed (the regulariser is constant in θ). ``c = clean_weight`` (default 0.5:
App. C.2's "ratio 0.5", Table A8's "adversarial:benign = 1.0"), λ the DPAR weight.

Baselines (``variant``):

* ``avg``: problem (9): the same R-step loop with w fixed at 1/K (K independent attacks,
  identical α, R, init and projections), outer loss the mean of the K adversarial losses;
* ``max``: problem (10), Tramèr & Boneh 2019: the same independent attacks as ``avg``, then
  per example the type with the **largest** adversarial training loss (one-hot w, ties to the
  first type): the γ → 0 limit;
* ``minmax``: the proposed AMPGD above (γ = 4, β = 1/50, R = 20 in the paper);
  ``gamma: inf`` is exactly ``avg``.

Universal adversarial training (UAT, Shafahi et al. 2018, App. E.2) is **not** implemented
here (it needs a perturbation carried across batches in checkpointed method state).

DPAR (diversity-promoting attack regulariser, eqs. (16)–(17)), ``dpar_lambda = λ`` (paper
0.1; default 0 = off): ``h = log det(GᵀG + ε_det I)`` per example, G ∈ R^{d×K} whose
columns are the ℓ2-normalised input gradients ``∇_{δ_i} f_tr(θ, δ_i)`` (train-mode forward,
computed with ``create_graph=True``: θ gets gradients through them, double backprop). The
defender minimises ``ψ + λh`` (h ≤ 0, = 0 iff the gradients are orthogonal). h enters the
outer θ-loss only; the δ-updates do not include it (that would need Hessian-vector
products; not implemented).

δ-step rule (``delta_mode``): ``"raw"`` is the seed's raw gradient step ``α_i·w_i∇f`` with
α_i = ``alpha`` (paper: 1/6; its OCR-garbled step sizes are reciprocals, as in the
authors' scripts); ``"steepest"`` (default, the library's choice)
is the library's steepest-ascent step of ℓp length α_i (:meth:`ThreatModel.step`: ℓ∞ sign,
ℓ2 unit ℓ2 direction, ℓ1 sparse top-k) with α_i = ``step_size`` or ``step_scale·ε_i/steps``
(the raw step's strength depends on the scale of the input gradient, which changes during
training). Projections are the exact ball ∩ box projections of :mod:`wideberth.threat`.

BatchNorm during the attack (``attack_bn``, as :mod:`wideberth.methods.pgd_at`): ``"eval"``
(default; the paper's attacks run the models in eval mode): BN uses its running
statistics, dropout off, parameters frozen, modes restored after; the outer loss is then
computed in train mode (K + 1 separate forwards, never concatenated, so each adversarial
batch is normalised by its own statistics). ``"train"``: the attack calls the model in
train mode (batch statistics, every forward updates the running statistics, dropout noise).

Logging: per epoch ``w_<norm>`` (``w_<i>_<norm>`` if a norm repeats) is the mean over the
training examples seen so far of each example's last final weight of that type (kept in
the per-example state, so exact across resume; for ``max`` the fraction of examples whose
worst type it was, for ``avg`` 1/K). ``train_accuracy`` is computed on the returned logits:
per example those of the type with the largest adversarial training loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..minmax.descent_ascent import weight_step
from ..params import param
from ..threat import ThreatModel, get_threat, normalize_norm
from .base import Batch, Method, MethodParams, StepContext
from .common import BN_MODES, attack_forward

__all__ = [
    "MINMAX_VARIANTS",
    "AMPGDResult",
    "MinMaxAT",
    "MinMaxATParams",
    "ampgd",
    "dpar_logdet",
    "max_type_weights",
]

MINMAX_VARIANTS: tuple[str, ...] = ("minmax", "avg", "max")
_DELTA_MODES = ("raw", "steepest")
_INITS = ("uniform", "zero")
_WEIGHT_PREFIX = "minmax_at_w"


# --------------------------------------------------------------------------- inner loop

@dataclass
class AMPGDResult:
    """Output of :func:`ampgd` (Wang et al., min-max framework, Algorithm 2 step 4).

    Attributes:
        deltas: the K final perturbations δ_{i,R}, each of x's shape ``[B, ...]``, detached.
        w: final per-example domain weights w_R ``[B, K]`` (rows on the simplex).
        losses: φ at the last evaluated iterate δ_{·,R−1} ``[B, K]`` (the losses w_R used;
            for R = 0 the losses at the start), detached.
        w_trajectory: ``[R + 1, B, K]``: w_0 = 1/K, ..., w_R.
    """

    deltas: list[Tensor]
    w: Tensor
    losses: Tensor
    w_trajectory: Tensor = field(repr=False)


def _per_type(name: str, value: float | Sequence[float], k: int) -> list[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)] * k
    assert not isinstance(value, (int, float)), f"{name}: expected a number or {k} numbers"
    vals = [float(v) for v in value]
    if len(vals) != k:
        raise ValueError(f"{name} must have one entry per perturbation type ({k}); got {len(vals)}")
    return vals


def ampgd(
    forward: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    *,
    norms: Sequence[str | ThreatModel],
    eps: Sequence[float],
    steps: int = 20,
    step_sizes: float | Sequence[float],
    delta_mode: str = "steepest",
    beta: float = 1 / 50,
    gamma: float = 4.0,
    update_w: bool = True,
    scale_delta_grad_by_w: bool = True,
    init: str = "uniform",
    generator: torch.Generator | None = None,
) -> AMPGDResult:
    """AMPGD inner maximisation of Wang et al. (min-max framework), problem (15), per batch.

    Maximises ``Σ_i w_i CE(forward(x + δ_i), y) − (γ/2)‖w − 1/K‖²`` jointly over per-example
    weights ``w ∈ P`` ``[B, K]`` and one perturbation per type ``δ_i ∈ {‖δ‖_{p_i} ≤ ε_i} ∩
    [−x, 1 − x]`` by R Jacobi steps (both updates from the step r − 1 iterates; see the
    module docstring). ``update_w=False`` keeps w = 1/K (the ``avg``/``max`` attacks);
    ``gamma = inf`` means the same.

    Args:
        forward: ``[B, ...] -> logits [B, C]``, called as is (the caller sets eval mode and
            freezes parameters, e.g. :func:`wideberth.methods.pgd_at.attack_forward`); row
            b must depend only on input b (per-example gradients).
        x: clean inputs ``[B, ...]`` in [0, 1]. y: labels ``[B]``.
        norms: K norms (``"linf"``, ``"l2"``, ``"l1"``); eps: K radii.
        steps: R ≥ 0 inner steps (paper: 20).
        step_sizes: α_i, one float for all types or K floats (raw: multiplier of the raw
            gradient; steepest: ℓp length of the step).
        delta_mode: ``"raw"`` (seed) or ``"steepest"`` (:meth:`ThreatModel.step`).
        beta, gamma: w step size β and regulariser γ ≥ 0 (paper: 1/50 and 4).
        scale_delta_grad_by_w: use ``∇_{δ_i}ψ = w_i∇f`` (true, the seed) or ``∇f``.
        init: ``"uniform"`` (uniform in the ball, projected onto ball ∩ box; from
            ``generator``) or ``"zero"``.

    Returns:
        :class:`AMPGDResult` (K perturbations ``[B, ...]``, w ``[B, K]``, losses ``[B, K]``).
    """
    k = len(norms)
    if k < 1 or len(eps) != k:
        raise ValueError(f"need K >= 1 norms and as many eps; got {len(norms)} and {len(eps)}")
    if delta_mode not in _DELTA_MODES:
        raise ValueError(f"delta_mode must be one of {', '.join(_DELTA_MODES)}; got {delta_mode!r}")
    if init not in _INITS:
        raise ValueError(f"init must be one of {', '.join(_INITS)}; got {init!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0; got {steps!r}")
    if beta < 0 or gamma < 0 or math.isnan(beta) or math.isnan(gamma):
        raise ValueError(f"beta and gamma must be >= 0; got {beta}, {gamma}")
    alphas = _per_type("step_sizes", step_sizes, k)
    threats = [get_threat(n) for n in norms]
    if math.isinf(gamma):
        update_w = False
    x = x.detach()
    lo, hi = -x, 1 - x
    b = x.shape[0]
    deltas: list[Tensor] = []
    for t, e in zip(threats, eps, strict=True):
        if init == "zero" or e == 0:
            deltas.append(torch.zeros_like(x))
        else:
            deltas.append(t.random_init(x, float(e), generator=generator))
    w = torch.full((b, k), 1.0 / k, dtype=x.dtype, device=x.device)
    ws = [w]

    def losses(ds: list[Tensor], need_grad: bool) -> tuple[Tensor, list[Tensor]]:
        leaves = [d.detach().requires_grad_(need_grad) for d in ds]
        with torch.set_grad_enabled(need_grad):
            phi = torch.stack(
                [F.cross_entropy(forward(x + d), y, reduction="none") for d in leaves], 1
            )
        return phi, leaves

    phi, leaves = losses(deltas, steps > 0)
    for r in range(steps):
        weights = w.detach() if scale_delta_grad_by_w else torch.ones_like(w)
        grads = torch.autograd.grad((weights * phi).sum(), leaves, allow_unused=True)
        w_new = weight_step(w, phi.detach(), beta, gamma) if update_w else w
        new: list[Tensor] = []
        for i, (t, d, g) in enumerate(zip(threats, deltas, grads, strict=True)):
            g = torch.zeros_like(d) if g is None else g.detach()
            if delta_mode == "raw":
                stepped = d + alphas[i] * g
            else:
                stepped = d + t.step(g, alphas[i], x_adv=x + d)
            new.append(t.project_box(stepped, lo, hi, float(eps[i])).detach())
        deltas, w = new, w_new
        ws.append(w)
        if r < steps - 1:
            phi, leaves = losses(deltas, True)
    return AMPGDResult(
        deltas=[d.detach() for d in deltas],
        w=w.detach(),
        losses=phi.detach(),
        w_trajectory=torch.stack(ws).detach(),
    )


def max_type_weights(losses: Tensor) -> Tensor:
    """Tramèr & Boneh's 'max' strategy as weights: per example the one-hot vector of the type
    with the largest loss (ties: the first). ``losses`` ``[B, K]`` -> ``[B, K]``."""
    idx = losses.argmax(dim=1)
    return F.one_hot(idx, losses.shape[1]).to(losses.dtype)


def dpar_logdet(grads: Sequence[Tensor], eps: float = 0.0) -> Tensor:
    """DPAR term ``h = log det(GᵀG + eps·I)`` per example (Wang et al., min-max, eq. (16)).

    Args:
        grads: K input gradients, each ``[B, ...]`` (column i of G ∈ R^{d×K} is the
            flattened gradient of type i, ℓ2-normalised here; a zero gradient stays zero).
        eps: ε_det ≥ 0 added to the diagonal for numerical stability.

    Returns:
        ``[B]``: h ≤ log((1 + eps)^K), with h = K·log(1 + eps) iff the normalised gradients
        are orthogonal; for K = 2 and eps = 0, ``h = log(1 − cos²(g_1, g_2))``.
    """
    if len(grads) < 1:
        raise ValueError("dpar_logdet needs at least one gradient")
    cols = []
    for g in grads:
        flat = g.reshape(g.shape[0], -1)
        n = torch.linalg.vector_norm(flat, dim=1, keepdim=True)
        cols.append(flat / torch.where(n > 0, n, torch.ones_like(n)))
    gmat = torch.stack(cols, dim=2)  # [B, d, K]
    gram = gmat.transpose(1, 2) @ gmat  # [B, K, K]
    if eps:
        gram = gram + eps * torch.eye(len(grads), dtype=gram.dtype, device=gram.device)
    return torch.logdet(gram)


# --------------------------------------------------------------------------- parameters

@dataclass
class MinMaxATParams(MethodParams):
    """Parameters of generalised AT over several perturbation types (``minmax-at``).

    Attributes:
        variant: ``"minmax"`` (AMPGD, the paper's), ``"avg"`` or ``"max"``.
        norms: the K perturbation types, e.g. ``[linf, l2]`` (default).
        eps: K radii (required), e.g. ``[0.2, 2.0]`` (paper, MNIST).
        steps: R inner steps (paper: 20).
        delta_mode: ``"steepest"`` (default) or ``"raw"`` (the seed's raw gradient).
        alpha: raw-mode δ step(s) α_i (float or K floats; paper 1/6).
        step_size: steepest-mode ℓp step length(s); ``None`` → ``step_scale·ε_i/steps``.
        step_scale: default 2.5.
        beta: w step size β (paper ≈ 1/50). gamma: regulariser γ (paper 4; ``inf`` = avg).
        scale_delta_grad_by_w: δ_i gradient ``w_i∇f`` (true, the seed) or ``∇f``.
        init: δ start, ``"uniform"`` in X_i (default) or ``"zero"``.
        clean_weight: c in ``(1 − c)·adv + c·clean`` (default 0.5, the paper's ratio).
        dpar_lambda: λ of DPAR (paper 0.1 for the "+ DPAR" rows; 0 = off).
        dpar_eps: ε_det added to GᵀG's diagonal.
        attack_bn: ``"eval"`` (default) or ``"train"`` (see the module docstring).
    """

    variant: str = param("minmax", choices=MINMAX_VARIANTS)
    norms: list[str] = param(default_factory=lambda: ["linf", "l2"], convert=normalize_norm)
    eps: list[float] | None = param(
        None, required=True, ge=0,
        hint="one radius per norm, e.g. [0.2, 2.0] for MNIST ℓ∞/ℓ2",
    )
    steps: int = param(20, ge=0)
    delta_mode: str = param("steepest", choices=_DELTA_MODES)
    alpha: float | list[float] = param(1 / 6, ge=0)
    step_size: float | list[float] | None = param(None, ge=0)
    step_scale: float = param(2.5, ge=0)
    beta: float = param(1 / 50, ge=0)
    gamma: float = param(4.0, ge=0, finite=False)
    scale_delta_grad_by_w: bool = True
    init: str = param("uniform", choices=_INITS)
    clean_weight: float = param(0.5, ge=0, le=1)
    dpar_lambda: float = param(0.0, ge=0)
    dpar_eps: float = param(1e-6, ge=0)
    attack_bn: str = param("eval", choices=BN_MODES)

    method_name: ClassVar[str] = "minmax-at"

    def check(self) -> None:
        """One radius (and step) per norm; DPAR needs two norms or more."""
        if not self.norms:
            self.fail("params.norms must be a non-empty list such as [linf, l2], got []")
        k = len(self.norms)
        assert self.eps is not None
        if len(self.eps) != k:
            self.fail(f"params.eps needs one entry per norm ({k}: {self.norms}), "
                      f"got {len(self.eps)}")
        self.alpha = self._per_norm("alpha", self.alpha)
        if self.step_size is not None:
            self.step_size = self._per_norm("step_size", self.step_size)
        if self.dpar_lambda > 0 and k < 2:
            self.fail("DPAR (params.dpar_lambda > 0) needs at least 2 norms")

    def _per_norm(self, name: str, value: float | list[float]) -> list[float]:
        k = len(self.norms)
        if not isinstance(value, list):
            return [value] * k
        if len(value) != k:
            self.fail(f"params.{name} needs one entry per norm ({k}), got {len(value)}")
        return value

    def step_sizes(self) -> list[float]:
        """α_i per type for the configured ``delta_mode``."""
        assert self.eps is not None
        if self.delta_mode == "raw":
            assert isinstance(self.alpha, list)
            return list(self.alpha)
        if self.step_size is not None:
            assert isinstance(self.step_size, list)
            return list(self.step_size)
        return [self.step_scale * e / max(self.steps, 1) for e in self.eps]

    def weight_keys(self) -> list[str]:
        """Epoch-log names of the per-type mean weights: ``w_<norm>`` (``w_<i>_<norm>`` when a
        norm repeats)."""
        unique = len(set(self.norms)) == len(self.norms)
        return [f"w_{n}" if unique else f"w_{i}_{n}" for i, n in enumerate(self.norms)]


# --------------------------------------------------------------------------- method

class MinMaxAT(Method):
    """Generalised AT over K perturbation types (Wang et al., min-max framework, §2d):
    ``variant`` ``minmax`` (AMPGD, eq. (15)), ``avg`` (eq. (9)) or ``max`` (eq. (10)), with
    optional DPAR (eq. (17)). Batch x ``[B, C, H, W]`` in [0, 1], y ``[B]``; see the module
    docstring for the loss. Random starts draw from ``ctx.generator`` (resume-exact)."""

    name = "minmax-at"
    Params = MinMaxATParams
    params: MinMaxATParams

    def _fields(self) -> list[str]:
        return [f"{_WEIGHT_PREFIX}_{i}" for i in range(len(self.params.norms))]

    def setup(self, model: nn.Module, state: Any, num_train: int) -> None:
        for f in self._fields():
            state.register(f, default=math.nan)

    def inner(self, model: nn.Module, x: Tensor, y: Tensor,
              generator: torch.Generator | None) -> AMPGDResult:
        """The inner maximisation for ``(x, y)`` (AMPGD for ``minmax``; w fixed at 1/K for
        ``avg`` and ``max``), run in ``attack_bn`` mode with frozen parameters."""
        p = self.params
        assert p.eps is not None
        with attack_forward(model, p.attack_bn) as fwd:
            return ampgd(
                fwd, x, y, norms=p.norms, eps=p.eps, steps=p.steps,
                step_sizes=p.step_sizes(), delta_mode=p.delta_mode, beta=p.beta,
                gamma=p.gamma, update_w=p.variant == "minmax",
                scale_delta_grad_by_w=p.scale_delta_grad_by_w, init=p.init,
                generator=generator,
            )

    def outer_loss(self, model: nn.Module, x: Tensor, y: Tensor, res: AMPGDResult
                   ) -> tuple[Tensor, Tensor, Tensor]:
        """``(L, logits, w)``: the θ-loss (module docstring), per-example logits of the type
        with the largest adversarial loss ``[B, C]``, and the weights used ``[B, K]``."""
        p = self.params
        dpar = p.dpar_lambda > 0
        logits, ces, grads = [], [], []
        for d in res.deltas:
            xa = (x + d).detach()
            if dpar:
                xa.requires_grad_(True)
            z = model(xa)
            ce = F.cross_entropy(z, y, reduction="none")
            if dpar:
                (g,) = torch.autograd.grad(ce.sum(), xa, create_graph=True)
                grads.append(g)
            logits.append(z)
            ces.append(ce)
        ce_mat = torch.stack(ces, 1)  # [B, K]
        if p.variant == "max":
            w = max_type_weights(ce_mat.detach())
        elif p.variant == "avg":
            w = torch.full_like(ce_mat, 1.0 / ce_mat.shape[1]).detach()
        else:
            w = res.w.to(ce_mat.dtype)
        loss = (w * ce_mat).sum(1).mean()
        if p.clean_weight > 0:
            loss = (1 - p.clean_weight) * loss + p.clean_weight * F.cross_entropy(model(x), y)
        if dpar:
            loss = loss + p.dpar_lambda * dpar_logdet(grads, p.dpar_eps).mean()
        worst = ce_mat.detach().argmax(1)
        out = torch.stack(logits, 1)[torch.arange(x.shape[0], device=x.device), worst]
        return loss, out, w.detach()

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> tuple[Tensor, Tensor]:
        x, y = batch.x, batch.y
        res = self.inner(model, x, y, ctx.generator)
        loss, logits, w = self.outer_loss(model, x, y, res)
        if ctx.state is not None:
            for i, f in enumerate(self._fields()):
                if f in ctx.state:
                    ctx.state.set(f, batch.index, w[:, i])
        return loss, logits

    def epoch_logs(self, state: Any, epoch: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if state is None:
            return out
        for key, f in zip(self.params.weight_keys(), self._fields(), strict=True):
            if f in state:
                v = state.all(f)
                seen = ~torch.isnan(v)
                if bool(seen.any()):
                    out[key] = float(v[seen].mean())
        return out
