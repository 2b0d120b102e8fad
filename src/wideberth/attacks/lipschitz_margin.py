"""Wu & Yu's sampled Lipschitz margin estimate (a lower-bound estimate of the margin).

Paper: K. Wu and Y. Yu, *Understanding Adversarial Robustness: The Trade-off between
Minimum and Average Margin* (2019), §5.1 Eq. (16): with ``ŷ`` the predicted class and
``L_k`` the local Lipschitz constant of ``f_ŷ − f_k`` over the ball ``B(x, r)``,

    d(x, bd F_ŷ) ≥ min{ min_{k≠ŷ} (f_ŷ(x) − f_k(x)) / L_k ,  r },

exact for linear models. :func:`gradient_margin_bound` estimates ``L_k`` by the largest
dual norm of the gradient over random samples in the ball, as the paper does. The model
runs in eval mode (:func:`~wideberth.attacks.base.attack_context`) with every submodule's
mode and every parameter's ``requires_grad`` and ``.grad`` restored; each example draws
its samples from its own stream, so its estimate does not depend on its batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..losses import logit_margin
from ..noise import GeneratorNoise, example_keys
from ..threat import ThreatModel
from .base import ModelLike, attack_context, threat_for

__all__ = ["gradient_margin_bound"]


def _ball_samples(
    threat: ThreatModel, x: Tensor, radius: float, n: int, generators: list[torch.Generator]
) -> Tensor:
    """``n`` points uniform in the ``radius``-ball around each example: ``[B·n, ...]``
    (not clipped to the box). Example ``i`` draws from ``generators[i]``."""
    rows = []
    for i, g in enumerate(generators):
        xi = x[i : i + 1].expand(n, *x.shape[1:])
        e = torch.full((n,) + (1,) * (x.dim() - 1), float(radius), dtype=x.dtype, device=x.device)
        rows.append(xi + threat.sample_ball(xi, e, GeneratorNoise(g, x.device, x.dtype)))
    return torch.cat(rows)


def _dual_norms_per_class(
    model: ModelLike, threat: ThreatModel, pts: Tensor, c: Tensor, chunk: int
) -> Tensor:
    """``‖∇ₓ(f_c − f_k)(pts)‖_dual`` for every class ``k``: ``[N, K]`` (row ``i`` uses ``c[i]``)."""
    out = []
    for s in range(0, pts.shape[0], chunk):
        p = pts[s : s + chunk].detach().requires_grad_(True)
        cs = c[s : s + chunk]
        with torch.enable_grad():
            logits = model(p)
            fc = logits.gather(1, cs.unsqueeze(1)).squeeze(1)
            cols = []
            k_classes = logits.shape[1]
            for k in range(k_classes):
                (g,) = torch.autograd.grad(
                    (fc - logits[:, k]).sum(), p, retain_graph=k < k_classes - 1
                )
                cols.append(threat.dual_norm(g))
        out.append(torch.stack(cols, 1).detach())
    return torch.cat(out)


def gradient_margin_bound(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    norm: str | float | ThreatModel = "l2",
    *,
    radius: float = 5.0,
    n_samples: int = 128,
    n_batches: int = 1,
    include_center: bool = True,
    clip_samples: bool = False,
    signed: bool = False,
    chunk_size: int = 4096,
    seed: int = 0,
    check: bool = True,
) -> Tensor:
    """Wu & Yu's first-order (Lipschitz) margin estimate, §5.1 Eq. (16).

    Paper: K. Wu and Y. Yu, *Understanding Adversarial Robustness: The Trade-off between
    Minimum and Average Margin* (2019), §5.1 Eq. (16) and the appendix "Approximating
    Distance" (Hein & Andriushchenko's bound, CLEVER-style sampling: the local Lipschitz
    constant is the largest sampled gradient norm); norms ℓ2 (the paper), ℓ∞, ℓ1.
    With ``c = argmax_k f_k(x)`` (the **predicted** class) and, for each ``k ≠ c``,
    ``L_k = max ‖∇ₓ(f_c − f_k)(z)‖_*`` over sample points ``z`` (``‖·‖_*`` the dual norm: ℓ2
    for ℓ2, ℓ1 for ℓ∞):

        d(x) = min_{k≠c} min{ (f_c(x) − f_k(x)) / L_k ,  radius }.

    The samples are ``n_batches × n_samples`` points uniform in the ``radius``-ball around
    ``x`` (not clipped to [0, 1] unless ``clip_samples``, as in the authors' code), plus
    ``x`` itself when ``include_center`` (an addition: it can only lower the estimate, and
    makes a linear model exact without samples). Paper settings: ``radius=5``,
    ``n_samples=1024``, ``n_batches=50`` (expensive: K−1 backward passes per sample batch);
    linear models need one sample. For a linear model ``L_k = ‖w_c − w_k‖_*`` and the
    estimate is the exact margin ``min_k (f_c − f_k)/‖w_c − w_k‖_*`` (when below
    ``radius``). For non-linear models it is a *sampled* estimate of a lower bound: the
    true Lipschitz constant may exceed the sampled maximum.

    Args:
        model: ``nn.Module`` or callable, ``[B, ...]`` → logits ``[B, K]``; run in eval mode.
        x: inputs ``[B, ...]`` in [0, 1]; y: integer labels ``[B]``.
        norm: ``"l2"`` (default), ``"linf"`` or ``"l1"``.
        radius: the ball radius ``r`` of eq. 16 (also the cap of the estimate).
        n_samples, n_batches: sample points per batch and number of batches per example.
        include_center: also use the gradient at ``x`` itself.
        clip_samples: clip sample points to [0, 1].
        signed: return Wu & Yu's signed margin (``−d`` for misclassified examples, ``d``
            measured from the predicted class) instead of 0 for misclassified ones.
        chunk_size: sample points per forward/backward.
        seed: per-example sample streams keyed by ``(seed, content of x[i])``.
        check: validate inputs once.

    Returns:
        ``[B]`` estimates: ``d`` for correctly classified examples (``LM(x, y) < 0``); ``0``
        (or ``−d`` with ``signed``) for misclassified ones.
    """
    for name, v in (("n_samples", n_samples), ("n_batches", n_batches), ("chunk_size", chunk_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "chunk_size" else 0):
            raise ValueError(f"{name} must be a non-negative integer; got {v!r}")
    if not (math.isfinite(float(radius)) and float(radius) > 0):
        raise ValueError(f"radius must be finite and > 0; got {radius!r}")
    if not include_center and n_samples * n_batches == 0:
        raise ValueError("no gradient sample: set include_center=True or n_samples, n_batches >= 1")
    threat = threat_for(model, x, y, norm, check)
    x = x.detach()
    y = y.to(x.device)
    b = x.shape[0]
    with attack_context(model):
        with torch.no_grad():
            logits = model(x)
        k = logits.shape[1]
        c = logits.argmax(1)
        mis = logit_margin(logits, y) >= 0
        gaps = logits.gather(1, c.unsqueeze(1)) - logits  # [B, K], >= 0
        lip = torch.zeros(b, k, dtype=x.dtype, device=x.device)
        if include_center:
            lip = torch.maximum(lip, _dual_norms_per_class(model, threat, x, c, chunk_size))
        if n_samples * n_batches > 0:
            gens = []
            for key in example_keys(x):
                g = torch.Generator(device=x.device)
                g.manual_seed((key ^ (seed * 1_000_003 + 104_729)) & ((1 << 63) - 1))
                gens.append(g)
            c_rep = c.repeat_interleave(n_samples)
            for _ in range(n_batches):
                pts = _ball_samples(threat, x, radius, n_samples, gens)
                if clip_samples:
                    pts = pts.clamp(0, 1)
                dn = _dual_norms_per_class(model, threat, pts, c_rep, chunk_size)
                lip = torch.maximum(lip, dn.reshape(b, n_samples, k).amax(1))
    safe = torch.where(lip > 0, lip, torch.ones_like(lip))
    d_k = torch.where(lip > 0, gaps / safe, torch.where(gaps > 0, math.inf, 0.0))
    d_k = torch.clamp(d_k, max=float(radius))
    d_k = d_k.scatter(1, c.unsqueeze(1), math.inf)  # exclude k = c
    d = d_k.amin(1) if k > 1 else torch.full((b,), float(radius), dtype=x.dtype, device=x.device)
    if signed:
        return torch.where(mis, -d, d)
    return torch.where(mis, torch.zeros_like(d), d)

