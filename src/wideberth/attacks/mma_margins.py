"""MMA's margin estimates built on AN-PGD: the test-time monitor and a margin search.

Paper: Ding, Sharma, Lui & Huang, *MMA Training: Direct Input Space Margin Maximization
through Adversarial Training*, ICLR 2020; code ``BorealisAI/mma_training``.

- :func:`an_pgd_eval` – the code's ``ANPGDForTest``: AN-PGD at a fixed test ε with a
  logit-margin bisection, per example (norms ℓ∞ and ℓ2 as in the paper, ℓ1 also runs);
- :func:`average_margin` – its mean over a data set, MMA's model-selection metric
  (App. C: the checkpoint with the largest validation average margin is kept);
- :func:`anpgd_margin` – a minimal-norm search: repeated AN-PGD with a logit-margin PGD and
  bisection, warm-started at the best distance so far, every returned point verified; the
  registry's ``"anpgd"`` minimal-norm attack and
  ``estimate_margin(method="anpgd")``;
- :func:`default_eps_max` – its default search limit, the diameter of the box.

All run the model in eval mode (:func:`~wideberth.attacks.base.attack_context`) unless
``search_in_eval=False`` is asked for, restore every submodule's mode and every
parameter's ``requires_grad`` and ``.grad``, never modify their inputs, take devices from
``x``, and give an example the same result whatever else is in its batch.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from .._checks import check_eps
from ..losses import logit_margin
from ..threat import ThreatModel, eps_vector, get_threat
from .anpgd import (
    RETURN_MODES,
    ANPGDResult,
    ReturnMode,
    an_pgd,
    pgd_then_bisect,
    positive_eps_vector,
)
from .base import (
    LossLike,
    ModelLike,
    attack_context,
    batch_view,
    check_choice,
    check_int,
    prepare,
    threat_for,
)
from .minimal_norm import MinimalNormResult

__all__ = [
    "EVAL_STARTS",
    "an_pgd_eval",
    "anpgd_margin",
    "average_margin",
    "default_eps_max",
]

EvalStart = Literal["half_eps_max", "test_eps"]
#: the values of :func:`an_pgd_eval`'s ``start``
EVAL_STARTS = ("half_eps_max", "test_eps")


def an_pgd_eval(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    norm: str | float | ThreatModel,
    test_eps: float | Tensor,
    eps_max: float | Tensor,
    steps: int,
    test_step: float | Tensor | None = None,
    n_search: int = 10,
    attack_loss: LossLike = "slm",
    search_loss: LossLike = "lm",
    start: EvalStart = "half_eps_max",
    return_mode: ReturnMode = "last_mid",
    clip_final: bool = True,
    search_in_eval: bool = True,
    init: str = "advertorch",
    projection: str = "approx",
    seed: int = 0,
    generator: torch.Generator | None = None,
    check: bool = True,
) -> ANPGDResult:
    """Test/validation-time AN-PGD (the MMA code's ``ANPGDForTest``; Ding et al., ICLR 2020,
    App. C: "we monitor the average margin from AN-PGD on the validation set").

    MMA's model-selection monitor: PGD at a fixed ``test_eps`` (SLM, random start,
    ``steps`` = the training value), ``u = (x_pgd − x)/test_eps``, then ``n_search``
    bisection steps of the **logit margin** (LM ≥ 0 ⇔ misclassified) on ``[0, ε_max]``.
    Runs on all examples; misclassified ones end near 0 (``ε_max/2^(n_search+1)``; not
    exactly 0).

    The code's quirk (default ``start="half_eps_max"``): the bisection starts at
    ``cur = 0.5·ε_max`` but with the loss measured at ``test_eps``, i.e. the first bracket
    update treats the PGD outcome at ``test_eps`` as if it had been observed at
    ``0.5·ε_max``. ``start="test_eps"`` attributes it to ``test_eps`` (consistent bisection).

    Per-setting values (the authors' configurations): MNIST-ℓ∞ ``test_eps=0.3, test_step=0.01``;
    MNIST-ℓ2 ``2.0, 0.125``; CIFAR10-ℓ∞ ``8/255, 2/255``; CIFAR10-ℓ2 ``1.0, 0.25``;
    ``eps_max = 1.05·d_max``; ``steps`` 40 (MNIST) / 10 (CIFAR-10).

    Args:
        model, x, y, norm: as in :func:`an_pgd` (x ``[B, ...]``, y ``[B]``).
        test_eps: PGD radius, float or ``[B]`` (> 0).
        eps_max: search upper end, float or ``[B]``.
        steps: PGD iterations.
        test_step: PGD step, float or ``[B]``; default ``2.5·test_eps/steps``.
        n_search: bisection steps.
        attack_loss, search_loss: PGD loss (SLM) and bisection loss (LM).
        start: ``"half_eps_max"`` (code quirk, default) or ``"test_eps"``.
        return_mode, clip_final, search_in_eval, init, projection, seed, generator, check:
            as in :func:`an_pgd` (direction is always ``test_eps`` units, as in the code).

    Returns:
        :class:`ANPGDResult`; ``eps`` ``[B]`` are the per-example margin estimates.
    """
    check_int(steps, "steps", 0)
    check_int(n_search, "n_search", 0)
    check_choice(start, "start", EVAL_STARTS)
    check_choice(return_mode, "return_mode", RETURN_MODES)
    if check:
        threat, _ = prepare(model, x, y, test_eps, norm)
        assert threat is not None
    else:
        threat = get_threat(norm)
    y = y.to(x.device)
    e_test = positive_eps_vector(test_eps, x, "test_eps", check)
    e_max = positive_eps_vector(eps_max, x, "eps_max", check)
    if test_step is None:
        step = 2.5 * e_test / max(steps, 1)
    else:
        if check:
            check_eps(test_step, x.shape[0], name="test_step")
        step = eps_vector(test_step, x).detach()
    return pgd_then_bisect(
        model, x, y, threat,
        pgd_eps=e_test, pgd_step=step, eps_max=e_max, steps=steps, n_search=n_search,
        attack_loss=attack_loss, search_loss=search_loss, direction="eps_init",
        return_mode=return_mode, clip_final=clip_final, search_in_eval=search_in_eval,
        init=init, projection=projection, seed=seed, generator=generator,
        start=0.5 * e_max if start == "half_eps_max" else None,
    )


def average_margin(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int | None = None,
    **kwargs: Any,
) -> float:
    """MMA's model-selection metric: the mean of :func:`an_pgd_eval`'s ε* over ``x``.

    ``kwargs`` go to :func:`an_pgd_eval` (``norm``, ``test_eps``, ``eps_max``, ``steps`` …).
    ``batch_size`` splits ``x`` into chunks (results are batch independent with the default
    per-example random streams and ``search_in_eval=True``). Shapes: x ``[N, ...]``,
    y ``[N]``; returns a Python float.
    """
    n = x.shape[0]
    if n == 0:
        raise ValueError("x is an empty batch; the average margin is undefined")
    if batch_size is None or batch_size >= n:
        return float(an_pgd_eval(model, x, y, **kwargs).eps.double().mean())
    check_int(batch_size, "batch_size", 1)
    total = 0.0
    for i in range(0, n, batch_size):
        total += float(an_pgd_eval(model, x[i : i + batch_size], y[i : i + batch_size], **kwargs).eps.double().sum())
    return total / n



def default_eps_max(norm: str | float | ThreatModel, x: Tensor) -> float:
    """The search limit of :func:`anpgd_margin` when none is given: the diameter of the box
    [0, 1]^D in the norm (ℓ∞: 1, ℓ2: √D, ℓ1: D, D = values per example of x [B, ...]).
    Every point of the box lies within it of every other, so no margin inside the box can
    exceed it."""
    name = get_threat(norm).name
    d = max(int(x[0].numel()), 1) if x.shape[0] > 0 else 1
    return {"linf": 1.0, "l2": math.sqrt(d), "l1": float(d)}[name]


def _repeated_anpgd(
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
    check_int(rounds, "rounds", 1)
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
        x_best = torch.where(batch_view(better, x), res.x_adv, x_best)
        # warm start: the best distance so far (an upper bound); ε_max where none yet
        e_cur = torch.where(torch.isfinite(best), torch.clamp(best, min=1e-12), e_max_t)
    return x_best, best, torch.isfinite(best)


def anpgd_margin(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    norm: str | float | ThreatModel = "l2",
    *,
    check: bool = True,
    **kwargs: Any,
) -> MinimalNormResult:
    """Per-example distance to the decision boundary by repeated AN-PGD (an upper bound).

    Adaptive-norm PGD (Ding et al., *MMA Training*, ICLR 2020, §2, Algorithm 1) used as a
    minimal-norm attack: ``rounds`` repetitions of :func:`~wideberth.attacks.an_pgd` with a
    **logit-margin** PGD (``attack_loss="lm"``), the paper's direction ``δ1/‖δ1‖``, an
    ``n_search``-step LM bisection on ``[0, eps_max]`` and ``return_mode="upper"``, so the
    returned point is verified. Round 1 attacks at ``eps_init`` (default ``eps_max/100``);
    every later round warm-starts at the best distance found so far (as MMA warm-starts each
    epoch), with a fresh random start (``seed + round``). Examples whose boundary lies
    beyond ``eps_max`` (or is never hit) are reported as not found (``+inf``), never capped
    at ``eps_max``. Like any PGD, it can settle on a locally optimal boundary: a class whose
    boundary is only slightly farther than the nearest one may be returned.

    Misclassified examples (``LM(x, y) ≥ 0``, ties count as wrong) get distance 0 and are
    not attacked; every candidate is re-verified with one forward pass (``LM ≥ 0`` at the
    returned point), unverified or missing ones get ``+inf`` and ``found=False``.

    Args:
        model: ``nn.Module`` or callable, ``[B, ...]`` in [0, 1] → logits ``[B, K]``.
        x: inputs ``[B, ...]`` in [0, 1] (never modified).
        y: integer labels ``[B]``.
        norm: ``"l2"`` (default), ``"linf"``, ``"l1"`` (aliases accepted).
        check: validate inputs once (range, NaN, labels).
        kwargs: ``eps_max`` (float or per-example ``[B]``; default :func:`default_eps_max`,
            the box diameter: ℓ∞ 1, ℓ2 √D), ``eps_init`` (float or ``[B]``),
            ``rounds=5``, ``steps=50``, ``step_scale=12.5`` (PGD step ε/4, as in MMA's
            evaluation PGD), ``n_search=20`` (resolution ``eps_max/2^20``),
            ``attack_loss="lm"``, ``init="advertorch"``, ``seed=0``.

    Returns:
        :class:`~wideberth.attacks.minimal_norm.MinimalNormResult` (``distance`` ``[B]`` in
        ``norm``, ``found`` ``[B]``, ``x_adv`` ``[B, ...]``).
    """
    threat = threat_for(model, x, y, norm, check)
    x = x.detach()
    y = y.to(x.device)
    with torch.no_grad(), attack_context(model):
        mis = logit_margin(model(x), y) >= 0
    distance = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    x_adv = x.clone()
    idx = torch.nonzero(~mis).squeeze(1)
    if idx.numel() > 0:
        for key in ("eps_max", "eps_init"):
            val = kwargs.get(key)
            if isinstance(val, Tensor) and val.dim() == 1:
                if val.shape[0] != x.shape[0]:
                    raise ValueError(f"per-example {key} must have shape [{x.shape[0]}]")
                kwargs[key] = val.to(x.device)[idx]
        for key in ("eps_max", "eps_init"):
            val = kwargs.get(key)
            if val is not None:
                check_eps(val, None, name=key)
                if bool((torch.as_tensor(val) <= 0).any()):
                    raise ValueError(f"{key} must be > 0")
        xa, da, fa = _repeated_anpgd(model, x[idx], y[idx], threat, **kwargs)
        with torch.no_grad(), attack_context(model):
            ok = logit_margin(model(xa), y[idx]) >= 0
        fa = fa & ok
        x_adv[idx] = torch.where(batch_view(fa, xa), xa, x[idx])
        distance[idx] = torch.where(fa, da, torch.full_like(da, math.inf))
    return MinimalNormResult(x_adv=x_adv, distance=distance, found=torch.isfinite(distance))
