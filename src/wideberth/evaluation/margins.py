"""Minimal-perturbation distances over several estimators: MMA Tables 2–3, TRADES' AVC metric.

:func:`min_perturbation_distance` runs every margin estimator of ``methods``
(:func:`wideberth.attacks.estimate_margin_result`: each returns verified misclassified
points), keeps per example the smallest distance found, and summarises it:

* MMA Tables 2–3 (Ding et al., ICLR 2020, App. F.1: CW-ℓ2 on the first 1000 test
  examples): mean, quartiles and median over the first N test examples, a misclassified
  example counting as 0 (the tables' 25th percentile is exactly 0 for the less accurate
  models);
* TRADES' AVC metric (Zhang et al., ICML 2019, §5.4, the NeurIPS 2018 Adversarial Vision
  Challenge): the mean minimal ℓ2 distance, with a ``failure_value`` registered where no
  estimator found a misclassified point (the challenge's "worst-case adversarial"), and
  the number of such failures;
* the optimistic robust-accuracy curve the distances imply: ``Pr[d > r]`` at each radius
  (an upper bound of the true robust accuracy, since attack distances bound margins from
  above).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..attacks import estimate_margin_result, margin_stats
from ..progress import progress_bar
from .clean import model_device
from .streaming import as_stream

__all__ = ["min_perturbation_distance"]


def min_perturbation_distance(
    model: nn.Module,
    x: Tensor | Any,
    y: Tensor | None = None,
    *,
    norm: str = "l2",
    methods: Sequence[str] = ("fmn", "anpgd"),
    radii: Sequence[float] = (),
    failure_value: float | None = None,
    batch_size: int = 500,
    **kwargs: Any,
) -> dict[str, Any]:
    """Per-example smallest distance to a misclassified point over several estimators.

    Papers: MMA (Ding et al., ICLR 2020) Tables 2–3; TRADES (Zhang et al., ICML 2019) §5.4,
    the NeurIPS 2018 AVC metric. Norms: ``"l2"`` (the papers'), ``"linf"``, ``"l1"``.

    Args:
        model: maps ``[B, C, H, W]`` in [0, 1] to logits ``[B, K]``.
        x: ``[N, C, H, W]`` in [0, 1]; y: ``[N]``; or a ``Dataset`` / ``DataLoader`` with
            ``y`` omitted (:mod:`wideberth.evaluation.streaming`), streamed.
        batch_size: examples per batch (the estimators are per example, so batching does
            not change the distances).
        methods: estimators of :func:`wideberth.attacks.estimate_margin_result`
            (``"fmn"``, ``"anpgd"``, ``"cw"``); the minimum over them is kept.
        radii: radii ``r`` of the curve ``accuracy_at_radius[r] = Pr[d > r]``.
        failure_value: distance registered where nothing was found (``None``: +inf,
            which makes the mean infinite; AVC registers a worst-case distance).
        **kwargs: passed to every estimator.

    Returns:
        ``{"distance": [N] tensor, "method": [N] list of the estimator that found it (None
        for misclassified or not found), "failures": count, "stats": margin_stats(...)
        (mean, median, q1, q3, ...), "accuracy_at_radius": {str(r): fraction}}``.
    """
    if not methods:
        raise ValueError("methods is empty: name at least one estimator, e.g. ('fmn',)")
    stream = as_stream(x, y, batch_size)
    device = model_device(model)
    parts: list[Tensor] = []
    source: list[str | None] = []
    total = None if stream.n_batches is None else stream.n_batches * len(methods)
    with progress_bar(total, "margins", unit="batch") as bar:
        for b in stream.batches():
            d_b, src_b = _batch_minimum(model, b.x.to(device), b.y.to(device), norm, methods,
                                        kwargs, bar.update)
            parts.append(d_b)
            source += src_b
    best = torch.cat(parts) if parts else torch.zeros(0)
    failures = int(torch.isinf(best).sum())
    if failure_value is not None:
        best = torch.where(torch.isinf(best), torch.full_like(best, float(failure_value)), best)
    stats = margin_stats(best, thresholds=list(radii))
    curve = {f"{r:g}": float((best > r).double().mean()) for r in radii}
    return {"distance": best, "method": source, "failures": failures, "stats": stats,
            "accuracy_at_radius": curve}


def _batch_minimum(
    model: nn.Module, x: Tensor, y: Tensor, norm: str, methods: Sequence[str],
    kwargs: dict[str, Any], tick: Callable[[int], object],
) -> tuple[Tensor, list[str | None]]:
    """The smallest verified distance per example of one batch over ``methods`` ([B] on
    the CPU) and the estimator that found it."""
    best: Tensor | None = None
    source: list[str | None] = [None] * x.shape[0]
    for method in methods:
        res = estimate_margin_result(model, x, y, norm, method, **kwargs)
        d = res.distance.detach().cpu()
        tick(1)
        if best is None:
            best = d.clone()
            for i in torch.nonzero(res.found.cpu() & (d > 0)).flatten().tolist():
                source[i] = method
            continue
        better = d < best
        best = torch.where(better, d, best)
        for i in torch.nonzero(better).flatten().tolist():
            source[i] = method
    assert best is not None
    return best, source
