"""The terms of Wu & Yu's average-margin objective: margins, the regulariser R(α) and the
orthogonality penalty (used by :mod:`wideberth.methods.avg_margin`).

Paper: K. Wu, Y. Yu, *Understanding adversarial robustness: the trade-off between minimum
and average margin* (2019), §4.2, eqs. 9–15.

Margins w.r.t. the **true** label ``y`` (eq. 15), ``α_i = min_{k≠y_i} s_ik``:

* :func:`logit_margin`: ``s_ik = z_iy − z_ik``, raw logit differences, bias included (the
  authors' released code);
* :func:`feature_margin` (eq. 14): ``s_ik = (w_y − w_k)ᵀ Φ(x_i)`` with ``Φ`` the input of the
  final ``nn.Linear`` (:func:`penultimate` captures it with forward hooks) and ``w_k`` its
  weight rows, **no bias**; optionally rows normalised (``"rows"``, the paper's "(normalized)
  weight vector") or each gap divided by ``‖w_y − w_k‖`` (``"pairs"``, the true feature-space
  distance to the bias-free pairwise boundary).

Regulariser ``R(α)`` per example (:func:`amr_regularizer`; the paper has no algorithm box and
the authors' code changed over time):

* ``"paper"`` (eq. 9/15): ``R(α) = −[α]_0^τ = −clamp(α, 0, τ)``; subgradient −1 on
  ``0 < α < τ`` and 0 elsewhere (:func:`clip_open`);
* ``"dca_epoch"`` (the authors' earlier code): the same value, trained through the DC split
  ``−[α]_0^τ = H_τ(α) − H_0(α) − τ`` with ``H_s(t) = max(0, s − t)`` (:func:`hinge`; the
  paper's eq. 10 prints ``+τ``, but at ``t ≤ 0`` the left side is 0 and ``H_τ − H_0 = τ``);
* ``"code_ramp"`` (the released code, final commit): ``R(α) = [−α]_0^τ``, the sign mirror;
* ``"hinge_tau"`` (commented out in the released code): ``R(α) = H_τ(α)``.

Orthogonality penalty (:func:`orthogonality_penalty`): ``Σ_l ‖Ŵ Ŵᵀ − I‖²_F`` over every
``nn.Conv*d`` and ``nn.Linear`` weight, ``Ŵ`` reshaped to ``(out, −1)`` (transposed convs use
``(out, in, …)``). As in the paper and the code this is ``Ŵ Ŵᵀ`` of shape out×out, also for
wide layers where ``out > in·k·k``: there ``ŴŴᵀ`` has rank ≤ in·k·k, so the penalty is at
least ``out − in·k·k`` and cannot reach zero (it still pushes the nonzero singular values to
1). It is computed via the smaller Gram matrix (``‖ŴᵀŴ‖²_F − 2‖Ŵ‖²_F + out``, the same number).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
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

VARIANTS = ("paper", "dca_epoch", "code_ramp", "hinge_tau")
MARGIN_SPACES = ("logits", "features")
NORMALIZE_LAST = ("none", "rows", "pairs")


def clip_open(t: Tensor, lo: float, hi: float) -> Tensor:
    """``clamp(t, lo, hi)`` whose gradient is 1 on the open interval ``(lo, hi)`` and 0
    elsewhere, the ends included (``torch.clamp`` passes the gradient at the ends)."""
    inside = (t > lo) & (t < hi)
    outside = torch.full_like(t, lo).masked_fill(t >= hi, hi)
    return torch.where(inside, t, outside)


def hinge(t: Tensor, s: float) -> Tensor:
    """``H_s(t) = max(0, s − t)`` (Wu & Yu 2019, eq. 10); gradient −1 for ``t < s``, 0 for ``t ≥ s``."""
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
    mods: list[nn.Module] = [
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
    transposed conv) weight, ``Ŵ`` the weight reshaped to ``(out, −1)`` (Wu & Yu 2019, §4.2
    and eq. 15; the authors' code flattens with ``view(out_channels, -1)``).

    For a layer with ``out > m`` columns ``ŴŴᵀ − I`` cannot vanish (rank ≤ m): the term is at
    least ``out − m``; it is computed as ``‖ŴᵀŴ‖²_F − 2‖Ŵ‖²_F + out`` (the same value). The
    final classifier is included unless ``include_last=False`` (then the last ``nn.Linear``
    in module order is skipped). Returns a 0-dim tensor (0 for a model without such layers).
    """
    total: Tensor | None = None
    for m in _ortho_modules(model, include_last):
        w = m.weight
        assert isinstance(w, Tensor)
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
