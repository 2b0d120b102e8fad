"""Summary statistics of per-example margins, as the papers' tables report them.

:func:`margin_stats` gives the mean, quartiles, fraction below thresholds and counts of a
vector of distances to the decision boundary (Ding et al., *MMA Training*, ICLR 2020,
App. F.1, Tables 2–3, where misclassified examples count as distance 0; Zhang et al.,
*TRADES*, ICML 2019, §5.4, Fig. 3: the NeurIPS 2018 Adversarial Vision Challenge's mean
"minimal ℓ2 perturbation distance").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["margin_stats"]


def _quantile(sorted_vals: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) that handles +inf entries."""
    n = len(sorted_vals)
    pos = q * (n - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    a, b = sorted_vals[lo], sorted_vals[hi]
    if frac == 0 or a == b:
        return a
    return a + (b - a) * frac


def margin_stats(
    distances: Tensor | Sequence[float],
    thresholds: Sequence[float] | None = None,
    *,
    failure_value: float | None = None,
) -> dict[str, Any]:
    """Summary statistics of per-example margins (Ding et al. 2020, Tables 2–3, Fig. 4;
    Zhang et al. 2019, §5.4, Fig. 3).

    Misclassified examples (distance 0) count as 0 in every statistic, as in the MMA
    paper's tables. Not-found examples (``+inf``) count as ``+inf`` (so ``mean`` is
    ``inf`` if there is any, and quantiles may be) unless ``failure_value`` replaces them;
    ``mean_found`` averages the finite values only.

    Args:
        distances: ``[N]`` non-negative distances (``+inf`` allowed), tensor or sequence.
        thresholds: radii ``t`` for ``fraction_below[t] = #{d < t}/N`` (the "accuracy at
            radius t" curve is ``1 − fraction_below[t]``).
        failure_value: value substituted for ``+inf`` (e.g. the search limit).

    Returns:
        ``dict`` with ``n``, ``mean``, ``median``, ``q1``, ``q3`` (25%/75%, linear
        interpolation), ``min``, ``max``, ``mean_found``, ``fraction_below`` (``{t: frac}``),
        ``count_misclassified`` (distance 0), ``count_not_found`` (``+inf`` before
        substitution). Python floats and ints (JSON-friendly).
    """
    d = torch.as_tensor(distances).detach().to("cpu", torch.float64).reshape(-1)
    if d.numel() == 0:
        raise ValueError("distances is empty; statistics are undefined")
    if bool(torch.isnan(d).any()):
        raise ValueError("distances contain NaN")
    if bool((d < 0).any()):
        raise ValueError(f"distances must be >= 0; found minimum {float(d.min()):.6g}")
    if bool(torch.isneginf(d).any()):
        raise ValueError("distances contain -inf")
    not_found = torch.isposinf(d)
    if failure_value is not None:
        d = torch.where(not_found, torch.full_like(d, float(failure_value)), d)
    vals = sorted(d.tolist())
    n = len(vals)
    found = d[~not_found]
    return {
        "n": n,
        "mean": float(d.mean()),
        "median": _quantile(vals, 0.5),
        "q1": _quantile(vals, 0.25),
        "q3": _quantile(vals, 0.75),
        "min": vals[0],
        "max": vals[-1],
        "mean_found": float(found.mean()) if found.numel() > 0 else math.nan,
        "fraction_below": {float(t): float((d < float(t)).double().mean()) for t in (thresholds or [])},
        "count_misclassified": int((found == 0).sum()),
        "count_not_found": int(not_found.sum()),
    }
