"""Per-example input-space margins: distance to the decision boundary, and their statistics.

The margin of a correctly classified example (MMA, ICLR 2020, Eq. 1–2; specs/mma.md §1.2) is

    d(x, y) = min_δ ‖δ‖  s.t.  LM(x + δ, y) = max_{j≠y} f_j − f_y ≥ 0   (ties count as wrong),

and ``0`` for a misclassified one. Three estimators:

- :func:`estimate_margin` / :func:`estimate_margin_result` – attack-based **upper bounds**
  (every returned distance belongs to a verified misclassified point in [0, 1]):
  ``method="fmn"`` (Fast Minimum-Norm, Pintor et al. NeurIPS 2021; ``"auto"``),
  ``"cw"`` (Carlini–Wagner ℓ2, the MMA paper's Tables 2–3) or ``"anpgd"`` (repeated AN-PGD
  with a logit-margin bisection, see :func:`estimate_margin_result`).
- :func:`gradient_margin_bound` – Wu & Yu's sampled Lipschitz **lower-bound estimate**
  (specs/trades-and-average-margin.md A1 eq. 16, A4), exact for linear models.
- :func:`margin_stats` – mean, quartiles, fraction below thresholds, counts (MMA Tables 2–3
  count misclassified examples as 0).

All estimators run the model in eval mode (:func:`~wideberth.attacks.base.attack_context`)
and restore every submodule's mode and every parameter's ``requires_grad`` and ``.grad``;
inputs are never modified in place; devices come from ``x``; every example's result is
independent of the rest of its batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from ..losses import logit_margin
from ..noise import GeneratorNoise, example_keys
from ..threat import ThreatModel, get_threat
from .base import ModelLike, attack_context, prepare

__all__ = [
    "MarginResult",
    "default_eps_max",
    "estimate_margin",
    "estimate_margin_result",
    "gradient_margin_bound",
    "margin_stats",
]

Method = Literal["auto", "anpgd", "fmn", "cw"]
_METHODS = ("auto", "anpgd", "fmn", "cw")


@dataclass
class MarginResult:
    """Per-example margin estimates (``B`` examples).

    Attributes:
        distance: ``[B]`` ``‖x_adv − x‖`` of a verified misclassified ``x_adv`` (an upper
            bound of the margin); ``0`` where ``x`` is already misclassified (``LM ≥ 0``);
            ``+inf`` where no misclassified point was found.
        found: ``[B]`` bool, True where ``distance`` is finite.
        x_adv: ``[B, ...]`` the misclassified point (``x`` where misclassified or not found).
        method: the estimator that produced the numbers (``"anpgd"``, ``"fmn"``, ``"cw"``).
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
    """

    distance: Tensor
    found: Tensor
    x_adv: Tensor
    method: str
    norm: str


def _view(t: Tensor, like: Tensor) -> Tensor:
    return t.reshape((t.shape[0],) + (1,) * (like.dim() - 1))


def default_eps_max(norm: str | float | ThreatModel, x: Tensor) -> float:
    """The search limit of ``method="anpgd"`` when none is given: the diameter of the box
    [0, 1]^D in the norm (ℓ∞: 1, ℓ2: √D, ℓ1: D, D = values per example). Every point of the
    box lies within it of every other, so no margin inside the box can exceed it."""
    name = get_threat(norm).name
    d = max(int(x[0].numel()), 1) if x.shape[0] > 0 else 1
    return {"linf": 1.0, "l2": math.sqrt(d), "l1": float(d)}[name]


def _anpgd_margin(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    eps_max: float | Tensor | None = None,
    eps_init: float | Tensor | None = None,
    rounds: int = 5,
    steps: int = 50,
    step_scale: float = 12.5,
    n_search: int = 20,
    attack_loss: str = "lm",
    init: str = "advertorch",
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Repeated AN-PGD on correctly classified rows; returns (x_adv, distance, found)."""
    from .anpgd import an_pgd

    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1; got {rounds!r}")
    e_max_default = default_eps_max(threat, x)
    e_max = eps_max if eps_max is not None else e_max_default
    e_max_t = torch.as_tensor(e_max, dtype=x.dtype, device=x.device).expand(x.shape[0]).clone()
    if eps_init is None:
        e_cur = e_max_t / 100
    else:
        e_cur = torch.as_tensor(eps_init, dtype=x.dtype, device=x.device).expand(x.shape[0]).clone()
    best = torch.full_like(e_max_t, math.inf)
    x_best = x.clone()
    for r in range(rounds):
        res = an_pgd(
            model, x, y, norm=threat, eps_init=e_cur, eps_max=e_max_t, steps=steps,
            step_scale=step_scale, n_search=n_search, attack_loss=attack_loss,
            search_loss="lm", direction="actual_norm", return_mode="upper", clip_final=True,
            search_in_eval=True, init=init, seed=seed + r, check=False,
        )
        dist = threat.norm(res.x_adv - x)
        better = res.success & (dist < best)
        best = torch.where(better, dist, best)
        x_best = torch.where(_view(better, x), res.x_adv, x_best)
        # warm start: the best distance so far (an upper bound); ε_max where none yet
        e_cur = torch.where(torch.isfinite(best), torch.clamp(best, min=1e-12), e_max_t)
    return x_best, best, torch.isfinite(best)


def estimate_margin_result(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    norm: str | float | ThreatModel = "l2",
    method: Method = "auto",
    *,
    check: bool = True,
    **kwargs: Any,
) -> MarginResult:
    """Per-example distance to the decision boundary (an attack-based upper bound).

    Misclassified examples (``LM(x, y) ≥ 0``, ties count as wrong) get distance 0 and are
    not attacked; the others are attacked, every candidate is re-verified with one forward
    pass (``LM ≥ 0`` at the returned point), and unverified or missing ones get ``+inf``
    and ``found=False``.

    Methods:

    * ``"fmn"`` (``"auto"``): :func:`wideberth.attacks.minimal.fmn` (ℓ2, ℓ∞, ℓ1);
      ``kwargs`` go to it (``steps`` …).
    * ``"cw"``: :func:`wideberth.attacks.minimal.cw_l2` (ℓ2 only); ``kwargs`` go to it.
    * ``"anpgd"``: ``rounds`` repetitions of :func:`wideberth.attacks.anpgd.an_pgd` with a
      **logit-margin** PGD (``attack_loss="lm"``), the paper's direction ``δ1/‖δ1‖``, an
      ``n_search``-step LM bisection on ``[0, eps_max]`` and ``return_mode="upper"``, so the
      returned point is verified. Round 1 attacks at ``eps_init`` (default
      ``eps_max/100``); every later round warm-starts at the best distance found so far
      (as MMA warm-starts each epoch), with a fresh random start (``seed + round``).
      ``kwargs``: ``eps_max`` (default :func:`default_eps_max`, the box diameter: ℓ∞ 1,
      ℓ2 √D), ``eps_init``, ``rounds=5``, ``steps=50``, ``step_scale=12.5`` (PGD step ε/4,
      as in MMA's evaluation PGD), ``n_search=20`` (resolution ``eps_max/2^20``),
      ``attack_loss="lm"``, ``init="advertorch"``, ``seed=0``. Examples whose boundary lies
      beyond ``eps_max`` (or is never hit) are reported as not found (``+inf``), never
      capped at ``eps_max``. Like any PGD, it can settle on a locally optimal boundary: a
      class whose boundary is only slightly farther than the nearest one may be returned.

    Args:
        model: ``nn.Module`` or callable, ``[B, ...]`` in [0, 1] → logits ``[B, K]``.
        x: inputs ``[B, ...]`` in [0, 1] (never modified).
        y: integer labels ``[B]``.
        norm: ``"l2"`` (default), ``"linf"``, ``"l1"`` (aliases accepted).
        method: ``"auto"`` (= ``"fmn"``), ``"fmn"``, ``"cw"`` or ``"anpgd"``.
        check: validate inputs once (range, NaN, labels).

    Returns:
        :class:`MarginResult` (``distance`` ``[B]``, ``found`` ``[B]``, ``x_adv``).
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, _METHODS))}; got {method!r}")
    if check:
        threat, _ = prepare(model, x, y, None, norm)
        assert threat is not None
    else:
        threat = get_threat(norm)
    if method == "cw" and threat.name != "l2":
        raise ValueError(f"method='cw' (Carlini-Wagner) is an l2 attack; got norm={threat.name!r}")
    name = "fmn" if method == "auto" else method
    x = x.detach()
    y = y.to(x.device)
    if name in ("fmn", "cw"):
        from . import minimal

        if name == "fmn":
            r = minimal.fmn(model, x, y, norm=threat.name, check=False, **kwargs)
        else:
            r = minimal.cw_l2(model, x, y, check=False, **kwargs)
        return MarginResult(
            distance=r.distance, found=r.found, x_adv=r.x_adv, method=name, norm=threat.name
        )

    with torch.no_grad(), attack_context(model):
        mis = logit_margin(model(x), y) >= 0
    distance = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    x_adv = x.clone()
    idx = torch.nonzero(~mis).squeeze(1)
    if idx.numel() > 0:
        eps_max = kwargs.get("eps_max")
        eps_init = kwargs.get("eps_init")
        for key, val in (("eps_max", eps_max), ("eps_init", eps_init)):
            if isinstance(val, Tensor) and val.dim() == 1:
                if val.shape[0] != x.shape[0]:
                    raise ValueError(f"per-example {key} must have shape [{x.shape[0]}]")
                kwargs[key] = val.to(x.device)[idx]
        for key in ("eps_max", "eps_init"):
            val = kwargs.get(key)
            if val is not None:
                from .._checks import check_eps

                check_eps(val, None, name=key)
                if bool((torch.as_tensor(val) <= 0).any()):
                    raise ValueError(f"{key} must be > 0")
        xa, da, fa = _anpgd_margin(model, x[idx], y[idx], threat, **kwargs)
        with torch.no_grad(), attack_context(model):
            ok = logit_margin(model(xa), y[idx]) >= 0
        fa = fa & ok
        x_adv[idx] = torch.where(_view(fa, xa), xa, x[idx])
        distance[idx] = torch.where(fa, da, torch.full_like(da, math.inf))
    found = torch.isfinite(distance)
    return MarginResult(distance=distance, found=found, x_adv=x_adv, method=name, norm=threat.name)


def estimate_margin(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    norm: str | float | ThreatModel = "l2",
    method: Method = "auto",
    **kwargs: Any,
) -> Tensor:
    """Per-example distance to the decision boundary ``[B]``: 0 where already misclassified,
    ``+inf`` where the attack found no misclassified point (see
    :func:`estimate_margin_result` for the methods, their options and ``found``).

    Shapes: x ``[B, ...]`` in [0, 1], y ``[B]``. The values are attack-based upper bounds of
    the true margin (minimal-norm attacks never prove robustness).
    """
    return estimate_margin_result(model, x, y, norm, method, **kwargs).distance


# --------------------------------------------------------------------------------------
# Wu & Yu: sampled Lipschitz lower bound (eq. 16)
# --------------------------------------------------------------------------------------


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
    """Wu & Yu's first-order (Lipschitz) margin estimate, eq. 16 (specs/trades-and-average-margin.md A1, A4).

    Paper: Wu & Yu, *Understanding the trade-off between minimum and average margin*
    (Hein & Andriushchenko's bound, CLEVER-style sampling); norms ℓ2 (the paper), ℓ∞, ℓ1.
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
    if check:
        threat, _ = prepare(model, x, y, None, norm)
        assert threat is not None
    else:
        threat = get_threat(norm)
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


# --------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------


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
    """Summary statistics of per-example margins (MMA Tables 2–3, Fig. 4; TRADES B6).

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
