"""Wu & Yu's average-margin regulariser (AMR) and the LCR baseline.

Paper: K. Wu, Y. Yu, *Understanding adversarial robustness: the trade-off between minimum
and average margin* (2019), §4.2, eqs. 13–15, App. F. Standard training raises the minimum
margin but lets the *average* margin shrink; AMR rewards every correctly classified point's
margin up to a threshold τ, and keeps the network's Lipschitz constant near 1 with an
orthogonality penalty so that a feature-space margin bounds the input-space one.

The objective (eq. 15, per batch; the β term once per batch, not per sample)::

    loss = mean_i CE(f(x_i), y_i) + λ · mean_i R(α_i) + β · Σ_l ‖Ŵ_l Ŵ_lᵀ − I‖²_F

with ``α_i = min_{k≠y_i} s_ik`` the margin of example i w.r.t. its **true** label and
``Ŵ_l`` every conv / linear weight reshaped to ``(out, −1)`` (the final layer included).
The terms (margins, ``R``, the penalty) are in :mod:`wideberth.methods.margin_regularizer`.

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

Regulariser ``R`` (``variant``; the paper has no algorithm box and the authors' code changed
over time; which variant produced the paper's tables is not known):

* ``"paper"`` (default, eq. 9/15): ``R(α) = −[α]_0^τ = −clamp(α, 0, τ)``. Zero for
  misclassified points; subgradient −1 on ``0 < α < τ`` and 0 elsewhere (also at the ends),
  through the arg-min runner-up class only.
* ``"dca_epoch"`` (the authors' earlier code): the DC split ``−[α]_0^τ = H_τ(α) − H_0(α) − τ``
  (eq. 10, whose ``+τ`` should read ``−τ``) with ``H_s(t) = max(0, s − t)``. Each step minimises
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

LCR (the paper's baseline, registered as ``"lcr"``) is the orthogonality penalty alone:
``CE + β·orth`` (``avg-margin`` with ``lam: 0`` is the same objective).

Hyperparameters (Wu & Yu, App. F): λ = 0.1, β = 1e-3 for all models; τ = 5 (MNIST-LR, MNIST-MLP,
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

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._modes import eval_mode
from ..params import ConfigError, param
from .base import Batch, Method, MethodParams, StepContext
from .margin_regularizer import (
    MARGIN_SPACES,
    NORMALIZE_LAST,
    VARIANTS,
    amr_regularizer,
    clip_open,
    feature_margin,
    hinge,
    logit_margin,
    orthogonality_penalty,
    penultimate,
)
from .state_vector import StateVector, flat_grad

if TYPE_CHECKING:  # pragma: no cover
    from ..data import IndexedTensors
    from ..example_state import ExampleState

__all__ = [
    "AverageMargin",
    "AverageMarginParams",
    "DCA_LINEARIZATIONS",
    "LCR",
    "LCRParams",
    "VARIANTS",
    "MARGIN_SPACES",
    "NORMALIZE_LAST",
    "amr_regularizer",
    "clip_open",
    "feature_margin",
    "hinge",
    "logit_margin",
    "orthogonality_penalty",
    "penultimate",
]

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
# Parameters
# --------------------------------------------------------------------------------------


def _normalize_last_name(value: Any) -> Any:
    """``true`` means ``"rows"``, ``false`` ``"none"``; anything else is left as it is."""
    if isinstance(value, bool):
        return "rows" if value else "none"
    return value


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

    lam: float = param(0.1, ge=0, hint="λ, the weight of the average-margin term")
    tau: float = param(5.0, gt=0, hint="τ, the margin truncation")
    ortho_beta: float = param(1e-3, ge=0, hint="β, the weight of the orthogonality penalty")
    variant: str = param("paper", choices=VARIANTS)
    margin_space: str = param("logits", choices=MARGIN_SPACES)
    normalize_last: str | bool = param(
        "none", convert=_normalize_last_name, choices=NORMALIZE_LAST
    )
    ortho_include_last: bool = True
    dca_linearization: str = param("lagged", choices=DCA_LINEARIZATIONS)

    method_name: ClassVar[str] = "avg-margin"

    def check(self) -> None:
        """``normalize_last`` needs ``margin_space: features``; ``dca_linearization`` needs
        ``variant: dca_epoch``."""
        if self.margin_space == "logits" and self.normalize_last != "none":
            self.fail(
                "params.normalize_last applies to margin_space: features only "
                f"(got normalize_last={self.normalize_last!r} with margin_space: logits)"
            )
        if self.variant != "dca_epoch" and self.dca_linearization != "lagged":
            self.fail(
                "params.dca_linearization applies to variant: dca_epoch only "
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

    ortho_beta: float = param(1e-3, ge=0, hint="β, the weight of the orthogonality penalty")
    ortho_include_last: bool = True
    tau: float = param(5.0, gt=0, hint="τ, only for the logged AMR numbers")

    method_name: ClassVar[str] = "lcr"

    def to_avg_margin(self) -> AverageMarginParams:
        """The equivalent :class:`AverageMarginParams` (λ = 0)."""
        return AverageMarginParams(
            lam=0.0,
            tau=self.tau,
            ortho_beta=self.ortho_beta,
            ortho_include_last=self.ortho_include_last,
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
    Params: ClassVar[type[MethodParams]] = AverageMarginParams

    def __init__(self, params: MethodParams) -> None:
        super().__init__(params)
        if isinstance(params, LCRParams):
            params = params.to_avg_margin()
        if not isinstance(params, AverageMarginParams):
            raise TypeError(f"{type(self).__name__} needs AverageMarginParams or LCRParams, "
                            f"got {type(params).__name__}")
        self.amr: AverageMarginParams = params
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

    def _dca_vectors(self, model: nn.Module, state: ExampleState) -> tuple[StateVector, StateVector]:
        n = sum(q.numel() for q in self._params(model))
        # G: [gradient (n), epoch + 1 it is valid for (0: none), valid flag]
        # acc: [sum of per-example H_0 gradients (n), epoch + 1 accumulated, count]
        return StateVector(state, _DCA_G, n + 2), StateVector(state, _DCA_ACC, n + 2)

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
                total += flat_grad(hinge(alpha, 0.0).sum(), params, retain=False)
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
            step_grad = flat_grad(h0.sum(), params, retain=True).cpu()
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
