"""Uncertainty of accuracies: Clopper–Pearson intervals and McNemar's paired test.

* :func:`clopper_pearson`: the exact binomial confidence interval of a proportion k/n
  (Clopper & Pearson, Biometrika 1934): lower = Beta⁻¹(α/2; k, n − k + 1) (0 for k = 0),
  upper = Beta⁻¹(1 − α/2; k + 1, n − k) (1 for k = n). Its coverage is at least 1 − α for
  every true proportion (conservative). Closed forms: k = 0 gives upper 1 − (α/2)^(1/n),
  k = n gives lower (α/2)^(1/n).
* :func:`mcnemar`: McNemar's test (McNemar, Psychometrika 1947) of two classifiers measured
  on the same examples, from the discordant pairs b (right under A only) and c (right under
  B only). The reported ``p_value`` is the exact two-sided binomial test:
  p = min(1, 2 · Σ_{i ≤ min(b, c)} C(b + c, i) / 2^(b + c)), computed with integers. Extras:
  ``mid_p`` (the exact p minus the point probability C(b+c, min)/2^(b+c), less conservative;
  Fagerland, Lydersen & Laake, BMC Med. Res. Methodol. 2013) and ``chi2`` with Edwards'
  continuity correction ((|b − c| − 1)² / (b + c), 1 degree of freedom) with its p-value.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

__all__ = ["accuracy_interval", "clopper_pearson", "mcnemar"]


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """The exact (Clopper–Pearson) ``1 − alpha`` interval ``(lower, upper)`` of a
    proportion with ``k`` successes in ``n`` trials; ``(nan, nan)`` for ``n = 0``."""
    k, n = int(k), int(n)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1); got {alpha}")
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"need 0 <= k <= n; got k={k}, n={n}")
    if n == 0:
        return float("nan"), float("nan")
    from scipy.stats import beta  # type: ignore[import-untyped]  # imported on first use

    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def accuracy_interval(accuracy: float, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """:func:`clopper_pearson` of an accuracy reported as a fraction of ``n`` examples
    (k = round(accuracy · n))."""
    if n == 0 or accuracy != accuracy:
        return float("nan"), float("nan")
    return clopper_pearson(round(float(accuracy) * n), n, alpha)


def mcnemar(b: int, c: int) -> dict[str, Any]:
    """McNemar's paired test on ``b`` and ``c`` discordant pairs (module docstring):
    ``{"b", "c", "p_value" (exact two-sided), "mid_p", "chi2", "chi2_p_value"}``; with no
    discordant pair the p-values are 1 and ``chi2`` is 0."""
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0; got b={b}, c={c}")
    m = b + c
    if m == 0:
        return {"b": b, "c": c, "p_value": 1.0, "mid_p": 1.0, "chi2": 0.0, "chi2_p_value": 1.0}
    from scipy.stats import chi2  # imported on first use

    low = min(b, c)
    tail = Fraction(sum(math.comb(m, i) for i in range(low + 1)), 2**m)
    point = Fraction(math.comb(m, low), 2**m)
    stat = (abs(b - c) - 1) ** 2 / m if abs(b - c) >= 1 else 0.0
    return {"b": b, "c": c, "p_value": float(min(Fraction(1), 2 * tail)),
            "mid_p": float(min(Fraction(1), 2 * tail - point)),
            "chi2": float(stat), "chi2_p_value": float(chi2.sf(stat, 1))}
