"""Wu & Yu's average-margin regulariser (AMR) and the LCR baseline.

Paper: K. Wu, Y. Yu, *Understanding adversarial robustness: the trade-off between minimum
and average margin* (``papers/002_61d840b9de2807a8.txt``; ``specs/trades-and-average-margin.md``
Part A). Standard training raises the minimum margin but lets the *average* margin shrink;
AMR rewards every correctly classified point's margin up to a threshold τ, and keeps the
network's Lipschitz constant near 1 with an orthogonality penalty so that a feature-space
margin bounds the input-space one.

The objective (eq. 15, per batch; the β term once per batch, not per sample)::

    loss = mean_i CE(f(x_i), y_i) + λ · mean_i R(α_i) + β · Σ_l ‖Ŵ_l Ŵ_lᵀ − I‖²_F

with ``α_i = min_{k≠y_i} s_ik`` the margin of example i w.r.t. its **true** label and
``Ŵ_l`` every conv / linear weight reshaped to ``(out, −1)`` (the final layer included).

Margin space (``margin_space``):

* ``"logits"`` (default; the released code): ``s_ik = z_iy − z_ik``, raw logit differences,
  bias included.
* ``"features"`` (eq. 14 literally): ``s_ik = (w_y − w_k)ᵀ Φ(x_i)`` with ``Φ`` the input of
  the final ``nn.Linear`` (captured with forward hooks; the model is not modified) and
  ``w_k`` its weight rows, **no bias**. ``normalize_last``: ``"none"`` (raw rows),
  ``"rows"`` (``w_k/‖w_k‖``, the paper's "(normalized) weight vector"), ``"pairs"``
  (``(w_y − w_k)ᵀΦ / ‖w_y − w_k‖``, the true feature-space distance to the bias-free
  pairwise boundary). Without the bias, ``α > 0`` no longer coincides exactly with "correctly
  classified".

Regulariser ``R`` (``variant``; the paper has no algorithm box and the authors' code changed,
see spec A3.4):

* ``"paper"`` (default, eq. 9/15): ``R(α) = −[α]_0^τ = −clamp(α, 0, τ)``. Zero for
  misclassified points; subgradient −1 on ``0 < α < τ`` and 0 elsewhere (also at the ends),
  through the arg-min runner-up class only.
* ``"dca_epoch"`` (the authors' earlier code): the DC split ``−[α]_0^τ = H_τ(α) − H_0(α) − τ``
  (spec A3.2; the paper prints ``+τ``) with ``H_s(t) = max(0, s − t)``. Each step minimises
  ``CE + λ·mean H_τ(α) + β·orth`` and subtracts a *stored* gradient ``λ·G`` of the concave
  part, ``G = ∇_θ mean_i H_0(α_i)`` linearised once per epoch. ``dca_linearization``:

  - ``"epoch_start"``: the earlier code exactly: ``G`` over the full training set at the
    weights of the epoch's start. The method interface does not hand a method the training
    data, so the caller must :meth:`AverageMargin.bind_train_data` before training; the
    full pass runs with the model in eval mode (no BatchNorm statistics updates, no
    dropout) and without augmentation.
  - ``"lagged"`` (default; works with the trainer as it is): **an approximation** — ``G``
    for epoch e is the per-example average of the ``H_0`` gradients computed on the
    batches of epoch e−1, each at the weights of its own step (one extra backward per
    step). In epoch 0, which has no previous epoch, each batch linearises at the current
    weights, which is exactly the ``"paper"`` subgradient.

  ``G`` (and the lagged accumulator) are kept in the run's per-example state as chunks of a
  flat vector (``ceil((P + 2) / N)`` fields each, P parameters, N examples), so a resumed
  run continues bit for bit. Cost: two parameter-sized vectors on the CPU, read and written
  every step (measured on cnn-small/Fashion-MNIST, 1 thread: ≈1.8× the CPU time of a
  ``"paper"`` step); meant for the paper's MNIST-sized models.
* ``"code_ramp"`` (the released code, final commit): ``R(α) = [−α]_0^τ = clamp(−α, 0, τ)``,
  the sign mirror of the paper: zero for **every correctly classified point**, a ramp on
  misclassified points with ``−τ < α < 0``.
* ``"hinge_tau"`` (commented out in the released code): ``R(α) = H_τ(α) = max(0, τ − α)``,
  a multi-class hinge with margin τ.

Whatever the variant, the loss *value* the method returns for ``"dca_epoch"`` equals the
``"paper"`` objective on the batch (the linear term has value 0); only its gradient differs.

Orthogonality penalty: ``Σ_l ‖Ŵ Ŵᵀ − I‖²_F`` over every ``nn.Conv*d`` and ``nn.Linear``
weight (transposed convs use ``(out, in, …)``). As in the paper and the code this is
``Ŵ Ŵᵀ`` of shape out×out, also for wide layers where ``out > in·k·k``: there ``ŴŴᵀ`` has
rank ≤ in·k·k, so the penalty is at least ``out − in·k·k`` and cannot reach zero (it still
pushes the nonzero singular values to 1). We follow the paper literally and compute it via
the smaller Gram matrix (``‖ŴᵀŴ‖²_F − 2‖Ŵ‖²_F + out``, the same number).

LCR (the paper's baseline, registered as ``"lcr"``) is the orthogonality penalty alone:
``CE + β·orth`` (``avg-margin`` with ``lam: 0`` is the same objective).

Hyperparameters (spec A3.3): λ = 0.1, β = 1e-3 for all models; τ = 5 (MNIST-LR, MNIST-MLP,
CIFAR-LR), 10 (MNIST-CNN, CIFAR-MLP, CIFAR-CNN), 40 (LeNet, LeNetSmall), 50 (ConvNet). The
authors' ``train.sh`` uses lr 0.002 for the regularised runs (the paper says 0.01).

Mode: the method does one clean forward with the model in the mode the trainer set (train
mode: dropout active, BatchNorm batch statistics), like standard training; no attack runs.

Per-epoch logs (``epoch_logs``, exact across resume: every value is stored per example in
the run's state, keyed by dataset index, and reduced at the epoch's end):

* ``amr_alpha_mean_correct``: mean α over the epoch's correctly classified examples
  (``argmax == y``, as the trainer's training accuracy; α as the regulariser sees it:
  train-mode forward, configured margin space, weights of each example's step);
* ``amr_active_fraction``: fraction of the epoch's examples with ``0 < α < τ`` (the set on
  which the paper's regulariser has a gradient);
* ``amr_reg``: mean of the per-example regulariser ``R(α_i)`` (before λ);
* ``amr_ortho``: mean orthogonality penalty over the epoch's batches, weighted by batch size
  (only when β > 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._modes import eval_mode
from ..config import ConfigError
from .base import Batch, Method, MethodParams, StepContext

if TYPE_CHECKING:  # pragma: no cover
    from ..data import IndexedTensors
    from ..example_state import ExampleState

__all__ = [
    "AverageMargin",
    "AverageMarginParams",
    "LCR",
    "LCRParams",
    "VARIANTS",
    "MARGIN_SPACES",
    "amr_regularizer",
    "clip_open",
    "feature_margin",
    "hinge",
    "logit_margin",
    "orthogonality_penalty",
    "penultimate",
]

VARIANTS = ("paper", "dca_epoch", "code_ramp", "hinge_tau")
MARGIN_SPACES = ("logits", "features")
NORMALIZE_LAST = ("none", "rows", "pairs")
DCA_LINEARIZATIONS = ("lagged", "epoch_start")

# per-example fields in the run's ExampleState
_ALPHA = "avg_margin.alpha"
_CORRECT = "avg_margin.correct"
_EPOCH = "avg_margin.epoch"
_REG = "avg_margin.reg"
_ORTHO = "avg_margin.ortho"
_DCA_G = "avg_margin.dca_g"
_DCA_ACC = "avg_margin.dca_acc"


# --------------------------------------------------------------------------------------
# Building blocks (usable by other methods)
# --------------------------------------------------------------------------------------


def clip_open(t: Tensor, lo: float, hi: float) -> Tensor:
    """``clamp(t, lo, hi)`` whose gradient is 1 on the open interval ``(lo, hi)`` and 0
    elsewhere, the ends included (``torch.clamp`` passes the gradient at the ends)."""
    inside = (t > lo) & (t < hi)
    outside = torch.full_like(t, lo).masked_fill(t >= hi, hi)
    return torch.where(inside, t, outside)


def hinge(t: Tensor, s: float) -> Tensor:
    """``H_s(t) = max(0, s − t)`` (spec A3.2); gradient −1 for ``t < s``, 0 for ``t ≥ s``."""
    return torch.where(t < s, s - t, torch.zeros_like(t))


def amr_regularizer(alpha: Tensor, tau: float, variant: str = "paper") -> Tensor:
    """Per-example regulariser value ``R(α)`` [B] of a variant (before the weight λ).

    ``"paper"`` and ``"dca_epoch"``: ``−[α]_0^τ``; ``"code_ramp"``: ``[−α]_0^τ``;
    ``"hinge_tau"``: ``max(0, τ − α)``. Subgradients use open intervals (see
    :func:`clip_open`). For ``"dca_epoch"`` this is the objective's value; its training
    gradient is built by :class:`AverageMargin`.
    """
    if variant in ("paper", "dca_epoch"):
        return -clip_open(alpha, 0.0, tau)
    if variant == "code_ramp":
        return clip_open(-alpha, 0.0, tau)
    if variant == "hinge_tau":
        return hinge(alpha, tau)
    raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")


def _gap_min(scores: Tensor, y: Tensor) -> Tensor:
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"expected scores [B, K] with K >= 2, got {list(scores.shape)}")
    true = scores.gather(1, y[:, None]).squeeze(1)
    onehot = F.one_hot(y, scores.shape[1]).bool()
    runner_up = scores.masked_fill(onehot, -math.inf).max(dim=1).values
    return true - runner_up


def logit_margin(logits: Tensor, y: Tensor) -> Tensor:
    """``α_i = z_iy − max_{k≠y} z_ik`` [B] (raw logit gap, bias included; the released code).

    Positive iff example i is correctly classified (ties count as wrong). The gradient flows
    through the true class and the arg-max runner-up only.
    """
    return _gap_min(logits, y)


def feature_margin(
    features: Tensor, weight: Tensor, y: Tensor, normalize: str = "none"
) -> Tensor:
    """Eq. 14 w.r.t. the true label: ``α_i = min_{k≠y} (w_y − w_k)ᵀ Φ(x_i)`` [B].

    Args:
        features: ``Φ(x)`` [B, D], the input of the final linear layer.
        weight: its weight [K, D] (the bias is not used, as in eq. 14).
        y: labels [B].
        normalize: ``"none"``; ``"rows"`` (each ``w_k`` divided by ``‖w_k‖``); ``"pairs"``
            (each gap divided by ``‖w_y − w_k‖``: the feature-space distance to the
            bias-free boundary between y and k).
    """
    if normalize not in NORMALIZE_LAST:
        raise ValueError(f"unknown normalize {normalize!r}; valid: {', '.join(NORMALIZE_LAST)}")
    if features.ndim != 2 or weight.ndim != 2 or features.shape[1] != weight.shape[1]:
        raise ValueError(
            f"features [B, D] and weight [K, D] do not match: {list(features.shape)} vs "
            f"{list(weight.shape)}"
        )
    if normalize == "rows":
        weight = weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
    scores = features @ weight.t()
    if normalize != "pairs":
        return _gap_min(scores, y)
    gap = scores.gather(1, y[:, None]) - scores  # [B, K]: (w_y - w_k)ᵀ Φ
    gram = weight @ weight.t()
    sq = gram.diagonal()[y][:, None] + gram.diagonal()[None, :] - 2.0 * gram[y]
    dist = gap / sq.clamp_min(1e-12).sqrt()
    onehot = F.one_hot(y, weight.shape[0]).bool()
    return dist.masked_fill(onehot, math.inf).min(dim=1).values


def penultimate(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, nn.Linear]:
    """One forward pass returning ``(logits, Φ(x), final_linear)``.

    ``Φ(x)`` is the input of the ``nn.Linear`` whose output *is* the model's output (found
    with temporary forward hooks on every ``nn.Linear``; the model is left unchanged).

    Raises:
        ValueError: the model has no ``nn.Linear``, or its output is not the output of one
            (something follows the last linear layer).
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"margin_space='features' needs the penultimate features Φ(x), the input of the "
            f"model's final nn.Linear, but {type(model).__name__} has no nn.Linear layer; "
            "use margin_space='logits'"
        )
    captured: list[tuple[nn.Linear, Tensor, Tensor]] = []

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        captured.append((module, inputs[0], output))  # type: ignore[arg-type]

    handles = [m.register_forward_hook(hook) for m in linears]
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    for module, inp, out in reversed(captured):
        if out is logits:
            return logits, inp.flatten(1), module
    raise ValueError(
        f"margin_space='features': the output of {type(model).__name__} is not the output of "
        "an nn.Linear layer (something follows its last linear layer), so Φ(x) and the "
        "final weights are not defined; use margin_space='logits'"
    )


def _ortho_modules(model: nn.Module, include_last: bool) -> list[nn.Module]:
    mods = [
        m
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and m.weight is not None
    ]
    if not include_last:
        linears = [m for m in mods if isinstance(m, nn.Linear)]
        if linears:
            mods = [m for m in mods if m is not linears[-1]]
    return mods


def orthogonality_penalty(model: nn.Module, include_last: bool = True) -> Tensor:
    """``Σ_l ‖Ŵ_l Ŵ_lᵀ − I‖²_F`` over every ``nn.Linear`` and ``nn.Conv{1,2,3}d`` (and
    transposed conv) weight, ``Ŵ`` the weight reshaped to ``(out, −1)`` (spec A3.3, A8 #6).

    For a layer with ``out > m`` columns ``ŴŴᵀ − I`` cannot vanish (rank ≤ m): the term is at
    least ``out − m``; it is computed as ``‖ŴᵀŴ‖²_F − 2‖Ŵ‖²_F + out`` (the same value). The
    final classifier is included unless ``include_last=False`` (then the last ``nn.Linear``
    in module order is skipped). Returns a 0-dim tensor (0 for a model without such layers).
    """
    total: Tensor | None = None
    for m in _ortho_modules(model, include_last):
        w = m.weight
        if isinstance(m, nn.modules.conv._ConvNd) and m.transposed:
            w = w.transpose(0, 1)
        w2 = w.reshape(w.shape[0], -1)
        out, cols = w2.shape
        if out <= cols:
            gram = w2 @ w2.t()
            eye = torch.eye(out, dtype=gram.dtype, device=gram.device)
            term = (gram - eye).pow(2).sum()
        else:
            gram = w2.t() @ w2
            term = gram.pow(2).sum() - 2.0 * gram.diagonal().sum() + out
        total = term if total is None else total + term
    if total is None:
        p = next(model.parameters(), None)
        return torch.zeros((), device=p.device if p is not None else None)
    return total


# --------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------


def _number(method: str, name: str, value: Any) -> float:
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"method {method!r}: params.{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"method {method!r}: params.{name} must be finite, got {value}")
    return value


def _choice(method: str, name: str, value: Any, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise ConfigError(
            f"method {method!r}: unknown params.{name} {value!r}; valid: {', '.join(valid)}"
        )
    return str(value)


@dataclass
class AverageMarginParams(MethodParams):
    """Parameters of :class:`AverageMargin` (defaults: the paper's MNIST-MLP setting).

    Attributes:
        lam: λ ≥ 0, weight of the average-margin term (``mu`` in the authors' code).
        tau: τ > 0, margin truncation (5 for MNIST-LR/MLP, 10 for MNIST-/CIFAR-CNN).
        ortho_beta: β ≥ 0, weight of the orthogonality penalty (added once per batch).
        variant: ``"paper"``, ``"dca_epoch"``, ``"code_ramp"`` or ``"hinge_tau"``.
        margin_space: ``"logits"`` (raw logit gaps) or ``"features"`` (eq. 14).
        normalize_last: for ``"features"``: ``"none"``, ``"rows"`` or ``"pairs"``
            (``true`` means ``"rows"``, ``false`` ``"none"``).
        ortho_include_last: include the final classifier in the penalty (paper, code: yes).
        dca_linearization: for ``"dca_epoch"``: ``"lagged"`` or ``"epoch_start"``.
    """

    lam: float = 0.1
    tau: float = 5.0
    ortho_beta: float = 1e-3
    variant: str = "paper"
    margin_space: str = "logits"
    normalize_last: str | bool = "none"
    ortho_include_last: bool = True
    dca_linearization: str = "lagged"

    def __post_init__(self) -> None:
        m = "avg-margin"
        self.lam = _number(m, "lam", self.lam)
        self.tau = _number(m, "tau", self.tau)
        self.ortho_beta = _number(m, "ortho_beta", self.ortho_beta)
        if self.lam < 0:
            raise ConfigError(f"method {m!r}: params.lam (λ) must be >= 0, got {self.lam}")
        if self.tau <= 0:
            raise ConfigError(f"method {m!r}: params.tau (τ) must be > 0, got {self.tau}")
        if self.ortho_beta < 0:
            raise ConfigError(
                f"method {m!r}: params.ortho_beta (β) must be >= 0, got {self.ortho_beta}"
            )
        self.variant = _choice(m, "variant", self.variant, VARIANTS)
        self.margin_space = _choice(m, "margin_space", self.margin_space, MARGIN_SPACES)
        if isinstance(self.normalize_last, bool):
            self.normalize_last = "rows" if self.normalize_last else "none"
        self.normalize_last = _choice(m, "normalize_last", self.normalize_last, NORMALIZE_LAST)
        if self.margin_space == "logits" and self.normalize_last != "none":
            raise ConfigError(
                f"method {m!r}: params.normalize_last applies to margin_space: features only "
                f"(got normalize_last={self.normalize_last!r} with margin_space: logits)"
            )
        if not isinstance(self.ortho_include_last, bool):
            raise ConfigError(
                f"method {m!r}: params.ortho_include_last must be true or false, "
                f"got {self.ortho_include_last!r}"
            )
        self.dca_linearization = _choice(
            m, "dca_linearization", self.dca_linearization, DCA_LINEARIZATIONS
        )
        if self.variant != "dca_epoch" and self.dca_linearization != "lagged":
            raise ConfigError(
                f"method {m!r}: params.dca_linearization applies to variant: dca_epoch only "
                f"(got variant {self.variant!r})"
            )


@dataclass
class LCRParams(MethodParams):
    """Parameters of :class:`LCR` (the orthogonality penalty alone).

    Attributes:
        ortho_beta: β ≥ 0 (paper: 1e-3).
        ortho_include_last: include the final classifier in the penalty.
        tau: τ > 0, used **only** for the logged ``amr_active_fraction`` and ``amr_reg``
            (the value the AMR term would have); it does not enter the loss.
    """

    ortho_beta: float = 1e-3
    ortho_include_last: bool = True
    tau: float = 5.0

    def __post_init__(self) -> None:
        inner = AverageMarginParams(
            lam=0.0,
            tau=self.tau,
            ortho_beta=self.ortho_beta,
            ortho_include_last=self.ortho_include_last,
        )
        self.ortho_beta, self.tau = inner.ortho_beta, inner.tau

    def to_avg_margin(self) -> AverageMarginParams:
        """The equivalent :class:`AverageMarginParams` (λ = 0)."""
        return AverageMarginParams(
            lam=0.0,
            tau=self.tau,
            ortho_beta=self.ortho_beta,
            ortho_include_last=self.ortho_include_last,
        )


# --------------------------------------------------------------------------------------
# A flat vector kept in the per-example state (so checkpoints carry it)
# --------------------------------------------------------------------------------------


class _StateVector:
    """A float32 vector of fixed ``length`` stored in an ExampleState as
    ``ceil(length / state.size)`` fields ``{prefix}.{j}``: the trainer saves and restores only
    the model, the optimiser and this state, so this is how method-level state survives a
    resume bit for bit. The fields are not per-example values."""

    def __init__(self, state: ExampleState, prefix: str, length: int) -> None:
        self.state, self.length = state, int(length)
        n_fields = max(1, -(-self.length // state.size))
        self.names = [f"{prefix}.{j:04d}" for j in range(n_fields)]
        for name in self.names:
            state.register(name, 0.0)

    def read(self) -> Tensor:
        return torch.cat([self.state.all(n) for n in self.names])[: self.length].clone()

    def write(self, values: Tensor) -> None:
        size = self.state.size
        flat = torch.zeros(len(self.names) * size, dtype=torch.float32)
        flat[: self.length] = values.detach().to("cpu", torch.float32).reshape(-1)
        rows = torch.arange(size)
        for j, name in enumerate(self.names):
            self.state.set(name, rows, flat[j * size : (j + 1) * size])


def _flat_grad(loss: Tensor, params: list[nn.Parameter], retain: bool) -> Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=retain, allow_unused=True)
    return torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).reshape(-1)
            for p, g in zip(params, grads, strict=True)
        ]
    )


# --------------------------------------------------------------------------------------
# The methods
# --------------------------------------------------------------------------------------


class AverageMargin(Method):
    """Average-margin regularised training (Wu & Yu, eq. 15); ``name = "avg-margin"``.

    ``loss = mean CE + λ · mean R(α) + β · Σ_l ‖ŴŴᵀ − I‖²_F`` with the variants, margin
    spaces and logs described in the module docstring. Returns ``(loss, clean logits)``.

    For ``variant: dca_epoch`` with ``dca_linearization: epoch_start`` call
    :meth:`bind_train_data` with the training split before the first step.
    """

    name = "avg-margin"
    Params = AverageMarginParams

    def __init__(self, params: MethodParams) -> None:
        super().__init__(params)
        self.amr: AverageMarginParams = (
            params.to_avg_margin() if isinstance(params, LCRParams) else params  # type: ignore[assignment]
        )
        self._train_data: tuple[Any, int] | None = None

    # ------------------------------------------------------------------ setup
    def bind_train_data(self, data: IndexedTensors | tuple[Tensor, Tensor], batch_size: int = 512) -> None:
        """Give the method the training split, for ``dca_linearization: epoch_start``.

        ``data`` is an :class:`~wideberth.data.IndexedTensors` (un-augmented) or ``(x, y)``;
        the full pass at each epoch's start runs in chunks of ``batch_size``.
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self._train_data = (data, int(batch_size))

    def setup(self, model: nn.Module, state: Any, num_train: int) -> None:
        """Check the model fits the margin space and register the per-example fields."""
        p = self.amr
        if p.margin_space == "features" and not any(
            isinstance(m, nn.Linear) for m in model.modules()
        ):
            raise ConfigError(
                f"method {self.name!r}: margin_space: features needs a model whose output is "
                f"produced by a final nn.Linear (Φ(x) is its input); {type(model).__name__} "
                "has no nn.Linear. Use margin_space: logits"
            )
        if state is not None:
            self._register(state)
            if p.variant == "dca_epoch":
                self._dca_vectors(model, state)

    def _register(self, state: ExampleState) -> None:
        state.register(_ALPHA, 0.0)
        state.register(_CORRECT, 0.0, dtype=torch.bool)
        state.register(_EPOCH, -1.0, dtype=torch.int64)
        state.register(_REG, 0.0)
        state.register(_ORTHO, 0.0)

    @staticmethod
    def _params(model: nn.Module) -> list[nn.Parameter]:
        return [q for q in model.parameters() if q.requires_grad]

    def _dca_vectors(self, model: nn.Module, state: ExampleState) -> tuple[_StateVector, _StateVector]:
        n = sum(q.numel() for q in self._params(model))
        # G: [gradient (n), epoch + 1 it is valid for (0: none), valid flag]
        # acc: [sum of per-example H_0 gradients (n), epoch + 1 accumulated, count]
        return _StateVector(state, _DCA_G, n + 2), _StateVector(state, _DCA_ACC, n + 2)

    # ------------------------------------------------------------------ margins
    def _forward(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        p = self.amr
        if p.margin_space == "logits":
            logits = model(x)
            return logits, logit_margin(logits, y)
        logits, phi, last = penultimate(model, x)
        return logits, feature_margin(phi, last.weight, y, str(p.normalize_last))

    # ------------------------------------------------------------------ DC (dca_epoch)
    def _full_h0_grad(self, model: nn.Module, params: list[nn.Parameter]) -> Tensor:
        assert self._train_data is not None
        data, bs = self._train_data
        if isinstance(data, tuple):
            x_all, y_all = data

            def get(rows: Tensor) -> tuple[Tensor, Tensor]:
                return x_all[rows], y_all[rows]

            n = int(y_all.shape[0])
        else:

            def get(rows: Tensor) -> tuple[Tensor, Tensor]:
                xb, yb, _ = data.get_batch(rows)
                return xb, yb

            n = len(data)
        device = params[0].device
        total = torch.zeros(sum(q.numel() for q in params), device=device)
        with eval_mode(model):
            for start in range(0, n, bs):
                xb, yb = get(torch.arange(start, min(start + bs, n)))
                _, alpha = self._forward(model, xb.to(device), yb.to(device))
                total += _flat_grad(hinge(alpha, 0.0).sum(), params, retain=False)
        return total / max(n, 1)

    def _dca_term(
        self, model: nn.Module, alpha: Tensor, ctx: StepContext
    ) -> Tensor:
        """The step's DC term: value ``mean(−[α]_0^τ)``, gradient ``∇ mean H_τ(α) − G``."""
        p = self.amr
        if ctx.state is None:
            raise ValueError("variant 'dca_epoch' needs the run's per-example state (ctx.state)")
        params = self._params(model)
        n = sum(q.numel() for q in params)
        g_vec, acc_vec = self._dca_vectors(model, ctx.state)
        g_all = g_vec.read()
        epoch_tag = float(ctx.epoch + 1)
        if g_all[n] != epoch_tag:  # first step of this epoch: linearise the concave part
            if p.dca_linearization == "epoch_start":
                if self._train_data is None:
                    raise RuntimeError(
                        "avg-margin variant 'dca_epoch' with dca_linearization 'epoch_start' "
                        "needs the training data: call method.bind_train_data(train_split) "
                        "before training (the trainer does not pass data to methods), or use "
                        "dca_linearization: lagged"
                    )
                g = self._full_h0_grad(model, params).cpu()
                g_all = torch.cat([g, torch.tensor([epoch_tag, 1.0])])
            else:
                acc = acc_vec.read()
                count = float(acc[n + 1])
                if acc[n] == float(ctx.epoch) and count > 0:  # accumulated in epoch − 1
                    g_all = torch.cat([acc[:n] / count, torch.tensor([epoch_tag, 1.0])])
                else:
                    g_all = torch.cat([torch.zeros(n), torch.tensor([epoch_tag, 0.0])])
                acc_vec.write(torch.cat([torch.zeros(n), torch.tensor([epoch_tag, 0.0])]))
            g_vec.write(g_all)
        h0 = hinge(alpha, 0.0)
        h_tau = hinge(alpha, p.tau)
        if p.dca_linearization == "lagged":
            acc = acc_vec.read()
            step_grad = _flat_grad(h0.sum(), params, retain=True).cpu()
            acc[:n] += step_grad
            acc[n + 1] += float(alpha.shape[0])
            acc_vec.write(acc)
        if g_all[n + 1] == 0:  # no stored linearisation (lagged, epoch 0): current weights
            return (h_tau - h0).mean() - p.tau
        g = g_all[:n].to(params[0].device)
        linear = torch.zeros((), device=g.device)
        offset = 0
        for q in params:
            k = q.numel()
            linear = linear + (g[offset : offset + k].view_as(q) * (q - q.detach())).sum()
            offset += k
        return h_tau.mean() - h0.mean().detach() - p.tau - linear

    # ------------------------------------------------------------------ loss
    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> tuple[Tensor, Tensor]:
        """``(mean CE + λ·mean R(α) + β·orth, logits)`` on the clean batch (see the module
        docstring); records α, correctness and the terms per example in ``ctx.state``."""
        p = self.amr
        logits, alpha = self._forward(model, batch.x, batch.y)
        loss = F.cross_entropy(logits, batch.y)
        reg = amr_regularizer(alpha, p.tau, p.variant)
        if p.lam > 0:
            if p.variant == "dca_epoch":
                loss = loss + p.lam * self._dca_term(model, alpha, ctx)
            else:
                loss = loss + p.lam * reg.mean()
        orth: Tensor | None = None
        if p.ortho_beta > 0:
            orth = orthogonality_penalty(model, include_last=p.ortho_include_last)
            loss = loss + p.ortho_beta * orth
        state = ctx.state
        if state is not None:
            self._register(state)
            idx = batch.index
            state.set(_ALPHA, idx, alpha.detach())
            state.set(_CORRECT, idx, logits.detach().argmax(1) == batch.y)
            state.set(_EPOCH, idx, torch.full_like(idx, ctx.epoch))
            state.set(_REG, idx, reg.detach())
            if orth is not None:
                state.set(_ORTHO, idx, orth.detach().expand(idx.shape[0]))
        return loss, logits

    # ------------------------------------------------------------------ logs
    def epoch_logs(self, state: Any, epoch: int) -> dict[str, Any]:
        """Epoch means over the examples seen in ``epoch`` (see the module docstring)."""
        if state is None or _EPOCH not in state:
            return {}
        seen = state.all(_EPOCH) == epoch
        n = int(seen.sum())
        if n == 0:
            return {}
        alpha = state.all(_ALPHA).double()
        correct = seen & state.all(_CORRECT)
        tau = self.amr.tau
        out: dict[str, Any] = {
            "amr_active_fraction": int((seen & (alpha > 0) & (alpha < tau)).sum()) / n,
            "amr_reg": float(state.all(_REG).double()[seen].mean()),
        }
        if int(correct.sum()) > 0:
            out["amr_alpha_mean_correct"] = float(alpha[correct].mean())
        if self.amr.ortho_beta > 0:
            out["amr_ortho"] = float(state.all(_ORTHO).double()[seen].mean())
        return out


class LCR(AverageMargin):
    """The LCR baseline of Wu & Yu: ``mean CE + β · Σ_l ‖ŴŴᵀ − I‖²_F`` (no margin term);
    ``name = "lcr"``. Equivalent to ``avg-margin`` with ``lam: 0``; logs the same numbers."""

    name = "lcr"
    Params = LCRParams
