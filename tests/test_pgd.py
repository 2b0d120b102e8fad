"""Tests for wideberth.attacks.projected_gradient: PGD / FGSM / FGM.

What is checked (each assertion is a fact that a wrong implementation would break):

- feasibility with a generator and a huge step; the requested ℓ2 projection is used;
- Ding et al. (MMA, ICLR 2020) Proposition 2.4: PGD with CE and with SLM give the same
  iterates (∇CE = σ(SLM)·∇SLM, a positive per-example multiple);
- closed-form margins of a linear model (d = min_{j≠y} (f_y − f_j)/‖w_y − w_j‖_*): PGD
  breaks (almost) every point just above the margin and none below it;
- best-iterate, restart, early-stop and targeted semantics on hand-built models whose
  trajectories are known;
- reproducibility, no in-place changes with PGD's options, option validation;
  FGSM equal to its closed form on a linear model.

The properties every attack shares (ε-ball ∩ box for every projection and start, scalar and
per-example ε, batch independence, model-state restoration, plain callables, bad-input
errors) are checked for PGD and FGSM by tests/test_attack_contract.py.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn

import wideberth.attacks.projected_gradient as pgd_module
from wideberth.attacks.projected_gradient import FGM, FGSM, PGD, fgm, fgsm, pgd
from wideberth.threat import get_threat

NORMS = ["linf", "l2", "l1"]
EPS = {"linf": 0.1, "l2": 0.5, "l1": 2.0}


# --------------------------------------------------------------------------------------
# helpers and small models
# --------------------------------------------------------------------------------------


def small_cnn(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A tiny conv net on [B, 1, 8, 8] inputs, 5 classes, no BatchNorm, eval mode."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 32),
        nn.ReLU(),
        nn.Linear(32, 5),
    )
    return model.to(dtype).eval()


def batch(n: int = 16, seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Images in [0, 1] with some pixels exactly on the box faces (so the box is active)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g, dtype=dtype)
    faces = torch.rand(n, 1, 8, 8, generator=g)
    x = torch.where(faces < 0.2, 0.0, torch.where(faces > 0.9, 1.0, x)).to(dtype)
    y = torch.randint(0, 5, (n,), generator=g)
    return x, y


class ExactLinear(nn.Module):
    """Logits ``x·Wᵀ + b`` computed as a broadcast product and a sum over the last axis.

    Unlike ``nn.Linear`` (a BLAS GEMM whose blocking, and hence its float rounding, depends
    on the batch size) every row is computed by the same elementwise operations whatever
    else is in the batch, so per-example results are bit-for-bit batch independent.
    """

    def __init__(self, d: int, k: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(k, d, generator=g))
        self.bias = nn.Parameter(0.1 * torch.randn(k, generator=g))

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], 1, -1)
        return (flat * self.weight).sum(-1) + self.bias


class Bump1D(nn.Module):
    """Two classes on a 1-D input ``x ∈ [0, 1]`` (shape [B, 1]).

    logit_0 = 0 and logit_1 = ``top − 100·(x − 0.55)²``: class 1 wins in a window around 0.55
    when ``top > 0`` and nowhere when ``top < 0``. The loss for ``y = 0`` is maximal at 0.55,
    so sign steps of 0.15 from 0.42 oscillate 0.42 → 0.57 → 0.42 → … (the 0.57 iterates
    are the good ones).
    """

    def __init__(self, top: float) -> None:
        super().__init__()
        self.top = top

    def forward(self, x: Tensor) -> Tensor:
        h = self.top - 100.0 * (x[:, 0] - 0.55) ** 2
        return torch.stack([torch.zeros_like(h), h], dim=1)


class Line3(nn.Module):
    """Three classes along a line: class k wins near ``c_k`` with c = (0.2, 0.5, 0.8)."""

    def forward(self, x: Tensor) -> Tensor:
        c = torch.tensor([0.2, 0.5, 0.8], dtype=x.dtype)
        return -50.0 * (x[:, :1] - c) ** 2


def dist(norm: str, x_adv: Tensor, x: Tensor) -> Tensor:
    return get_threat(norm).norm(x_adv - x)


def assert_feasible(norm: str, x_adv: Tensor, x: Tensor, eps: float | Tensor) -> None:
    e = eps if isinstance(eps, Tensor) else torch.full((x.shape[0],), float(eps))
    d = dist(norm, x_adv, x)
    assert bool((d <= e * (1 + 1e-5) + 1e-7).all()), f"outside the {norm} ball: {(d - e).max()}"
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0, "outside the [0, 1] box"
    zero = e == 0
    if bool(zero.any()):
        assert torch.equal(x_adv[zero], x[zero]), "an ε = 0 row moved"


def robust(model: nn.Module | object, x_adv: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) == y  # type: ignore[operator]


# --------------------------------------------------------------------------------------
# feasibility
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", NORMS)
def test_feasible_with_generator_and_huge_step(norm):
    model = small_cnn(1)
    x, y = batch(10, seed=3)
    g = torch.Generator().manual_seed(5)
    eps = EPS[norm] * torch.rand(10, generator=g)
    eps[0] = 0.0
    x_adv = pgd(model, x, y, norm=norm, eps=eps, steps=3, step_size=100.0, generator=g)
    assert_feasible(norm, x_adv, x, eps)


@pytest.mark.parametrize("projection", ["exact", "approx"])
def test_one_l2_step_uses_the_requested_projection(projection):
    # One step from x: δ = Π(α·g/‖g‖). With many pixels on the box faces the exact
    # projection onto ball ∩ box and "clip then shrink" (advertorch) differ.
    model = small_cnn(3)
    x, y = batch(16, seed=2)
    eps, alpha = 0.5, 1.5
    out = pgd(model, x, y, norm="l2", eps=eps, steps=1, step_size=alpha, init=None,
              return_best=False, projection=projection)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(xg), y, reduction="sum"), xg)
    step = alpha * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    th = get_threat("l2")
    exact, approx = x + th.project(step, x, eps), x + th.project_approx(step, x, eps)
    assert float((exact - approx).abs().max()) > 1e-3, "test needs an active box"
    torch.testing.assert_close(out, exact if projection == "exact" else approx, rtol=0, atol=1e-6)


def test_pgd_actually_moves_points():
    # Guards the feasibility test against a no-op attack (which would trivially pass it).
    model = small_cnn()
    x, y = batch(12)
    for norm in NORMS:
        # the final iterate (the best one may be an early iterate that already broke it)
        x_adv = pgd(model, x, y, norm=norm, eps=EPS[norm], steps=5, return_best=False)
        d = dist(norm, x_adv, x)
        assert bool((d > 0.5 * EPS[norm]).all()), norm


# --------------------------------------------------------------------------------------
# CE and SLM give the same iterates (Ding et al., ICLR 2020, Proposition 2.4)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_ce_equals_pgd_slm(norm):
    # float64 so that no gradient coordinate rounds to a different sign or underflows.
    model = small_cnn(2, torch.float64)
    x, y = batch(24, seed=1, dtype=torch.float64)
    kw = dict(norm=norm, eps=EPS[norm], steps=10, return_best=False, seed=3)
    a = pgd(model, x, y, loss="ce", **kw)
    b = pgd(model, x, y, loss="slm", **kw)
    c = pgd(model, x, y, loss="lm", **kw)
    if norm == "linf":
        assert torch.equal(a, b)  # sign steps of positive multiples: identical
    else:
        # the normalised step g/‖g‖ of c·g and of g agree to the last bits only
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert not torch.allclose(a, c, atol=1e-6), "LM should take another path (test is sharp)"


# --------------------------------------------------------------------------------------
# closed-form margin of a linear model: min_{j≠y} (f_y − f_j)/‖w_y − w_j‖_*
# --------------------------------------------------------------------------------------


def linear_margin(lin: nn.Linear, x: Tensor, y: Tensor, norm: str) -> Tensor:
    """min_{k≠y} (f_y − f_k) / ‖w_y − w_k‖_dual (dual of ℓ∞ is ℓ1, of ℓ2 is ℓ2)."""
    with torch.no_grad():
        f = lin(x)
    w = lin.weight.detach()
    dw = w[y].unsqueeze(1) - w.unsqueeze(0)  # [B, K, D]
    q = dw.abs().sum(-1) if norm == "linf" else dw.norm(dim=-1)
    d = (f.gather(1, y[:, None]) - f) / q
    d[torch.arange(x.shape[0]), y] = torch.inf
    return d.min(1).values


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_linear_model_closed_form_margin(norm):
    torch.manual_seed(0)
    lin = nn.Linear(20, 5).double()
    x = 0.25 + 0.5 * torch.rand(300, 20, dtype=torch.float64)  # box inactive for ε < 0.25
    with torch.no_grad():
        y = lin(x).argmax(1)
    d = linear_margin(lin, x, y, norm)
    keep = 1.1 * d < 0.25
    assert int(keep.sum()) > 100
    x, y, d = x[keep], y[keep], d[keep]
    kw = dict(norm=norm, steps=50, loss="lm")
    above = pgd(lin, x, y, eps=1.1 * d, step_size=0.11 * d, **kw)
    below = pgd(lin, x, y, eps=0.95 * d, step_size=0.095 * d, **kw)
    assert not bool(((above <= 0) | (above >= 1)).any()), "box should stay inactive"
    # LM ascends toward the currently runner-up class; for a few ℓ∞ points that class is
    # not the nearest one in ℓ∞ and the attack stalls, hence "almost every" point.
    assert float(robust(lin, above, y).double().mean()) <= 0.05
    assert not bool((~robust(lin, below, y)).any()), "broke a point inside its margin"


# --------------------------------------------------------------------------------------
# best iterate
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [2, 4])
def test_best_iterate_beats_oscillating_last_iterate(steps):
    model = Bump1D(top=1.0)  # class 1 (success) in |x − 0.55| < 0.1
    x = torch.full((3, 1), 0.42)
    y = torch.zeros(3, dtype=torch.long)
    kw = dict(norm="linf", eps=0.2, steps=steps, step_size=0.15, init=None)
    last = pgd(model, x, y, return_best=False, **kw)
    best = pgd(model, x, y, return_best=True, **kw)
    # trajectory 0.42 (fails), 0.57 (succeeds), 0.42, ...: even steps end on a failure
    torch.testing.assert_close(last, x)
    torch.testing.assert_close(best, torch.full((3, 1), 0.57))
    assert bool(robust(model, last, y).all()) and not bool(robust(model, best, y).any())


@pytest.mark.parametrize("steps", [1, 3])
def test_best_iterate_includes_the_last_iterate(steps):
    # Odd step counts end on the good point 0.57, which is never the input of a gradient
    # step: the best-iterate bookkeeping must judge the final iterate too.
    model = Bump1D(top=1.0)
    x = torch.full((2, 1), 0.42)
    y = torch.zeros(2, dtype=torch.long)
    kw = dict(norm="linf", eps=0.2, steps=steps, step_size=0.15, init=None)
    for return_best in (True, False):
        out = pgd(model, x, y, return_best=return_best, **kw)
        torch.testing.assert_close(out, torch.full((2, 1), 0.57))


def test_unbroken_examples_get_the_final_iterate():
    model = Bump1D(top=-0.5)  # class 1 never wins: nothing breaks, the final iterate returns
    x = torch.full((2, 1), 0.42)
    y = torch.zeros(2, dtype=torch.long)
    kw = dict(norm="linf", eps=0.2, steps=4, step_size=0.15, init=None)
    for return_best in (True, False):
        torch.testing.assert_close(pgd(model, x, y, return_best=return_best, **kw), x)
    kw["steps"] = 3  # 0.42, 0.57, 0.42, 0.57
    torch.testing.assert_close(pgd(model, x, y, **kw), torch.full((2, 1), 0.57))


class CountingModel(nn.Module):
    """Counts forward calls and the rows they carry."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls, self.rows = inner, 0, 0

    def forward(self, x):
        self.calls += 1
        self.rows += x.shape[0]
        return self.inner(x)


@pytest.mark.parametrize("return_best", [True, False])
def test_pgd_k_costs_exactly_k_forward_backward_passes(return_best):
    counted = CountingModel(small_cnn(4))
    x, y = batch(16, seed=2)
    pgd(counted, x, y, eps=0.1, steps=7, check=False, return_best=return_best)
    assert (counted.calls, counted.rows) == (7, 7 * 16)


def test_restarts_judge_only_the_unbroken_rows_of_all_but_the_last_run():
    inner = small_cnn(4)
    x, y = batch(32, seed=3)
    counted = CountingModel(inner)
    pgd(counted, x, y, eps=0.05, steps=3, restarts=2, check=False)
    robust_after_first = CountingModel(inner)
    first = pgd(robust_after_first, x, y, eps=0.05, steps=3, restarts=1, check=False)
    n_unbroken_by_iterates = int(robust(inner, first, y).sum())
    # run 1: 3 passes over 32 rows + a judging pass over the rows no iterate broke;
    # run 2: 3 passes over the rows still unbroken; no judging pass after the last run
    assert counted.calls == 3 + 1 + 3
    assert counted.rows >= 3 * 32 + 3 * 1
    assert counted.rows <= 3 * 32 + 32 + 3 * n_unbroken_by_iterates


def test_best_iterate_never_worse_than_last_on_a_cnn():
    inner = small_cnn(4)
    x, y = batch(64, seed=4)
    broken_by_some_iterate = torch.zeros(64, dtype=torch.bool)

    def recording(z):
        logits = inner(z)
        if z.shape[0] == 64:  # the attack's passes (prepare's check uses 8 rows)
            broken_by_some_iterate.logical_or_(logits.argmax(1) != y)
        return logits

    kw = dict(norm="linf", eps=0.02, steps=10, step_size=0.04, seed=1)  # large, oscillating
    best = pgd(recording, x, y, return_best=True, **kw)
    last = pgd(inner, x, y, return_best=False, **kw)
    rb, rl = robust(inner, best, y), robust(inner, last, y)
    assert bool((rb <= rl).all()), "an example broken by the last iterate is not broken by the best"
    assert not bool((rb & broken_by_some_iterate).any()), "an iterate broke it, the best does not"
    assert 0 < int(rb.sum()) < int((robust(inner, x, y)).sum())


# --------------------------------------------------------------------------------------
# restarts and early stop
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("return_best", [True, False])
def test_restarts_union_of_breaks(return_best):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 5)).eval()
    x = torch.rand(300, 16)
    with torch.no_grad():
        y = model(x).argmax(1)
    kw = dict(norm="linf", eps=0.1, steps=2, step_size=0.1, return_best=return_best, seed=7)
    broken = [~robust(model, pgd(model, x, y, restarts=r, **kw), y) for r in range(1, 6)]
    for prev, cur in zip(broken[:-1], broken[1:], strict=True):
        # restart r uses the same streams as before plus one more: breaks only accumulate
        assert bool((cur | ~prev).all()), "an example broken with fewer restarts came back"
    counts = [int(b.sum()) for b in broken]
    assert counts[-1] > counts[0], f"restarts had no visible effect: {counts}"
    assert sum(c2 > c1 for c1, c2 in zip(counts[:-1], counts[1:], strict=True)) >= 2, counts


def test_restarts_only_attack_unbroken_examples(monkeypatch):
    model = small_cnn(5)
    x, y = batch(32, seed=5)
    sizes: list[int] = []
    real_run = pgd_module._run

    def spy(model, threat, x, *args, **kwargs):
        sizes.append(x.shape[0])
        return real_run(model, threat, x, *args, **kwargs)

    monkeypatch.setattr(pgd_module, "_run", spy)
    x_adv = pgd(model, x, y, norm="linf", eps=0.05, steps=3, restarts=3)
    n_broken_first = 32 - sizes[1] if len(sizes) > 1 else 32
    assert sizes[0] == 32 and 0 < n_broken_first
    assert all(a >= b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    assert int((~robust(model, x_adv, y)).sum()) >= n_broken_first


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_early_stop_same_robust_accuracy(norm):
    model = small_cnn(6)
    x, y = batch(48, seed=6)
    kw = dict(norm=norm, eps=EPS[norm] / 2, steps=10, seed=2)
    full = pgd(model, x, y, **kw)
    early = pgd(model, x, y, early_stop=True, **kw)
    rf, re = robust(model, full, y), robust(model, early, y)
    assert 0 < int((~rf).sum()) < 48, "test needs some broken and some robust examples"
    assert torch.equal(rf, re)
    # the still-robust examples were attacked over the same trajectory
    torch.testing.assert_close(early[re], full[rf], rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------
# targeted
# --------------------------------------------------------------------------------------


def test_targeted_success_means_predicting_the_target():
    model = Line3()
    x = torch.full((2, 1), 0.2)  # class 0
    y = torch.zeros(2, dtype=torch.long)
    t = torch.full((2,), 2)
    # The path to class 2 crosses class 1 (0.35 < x < 0.65) after 2 steps: with success
    # = "misclassified" early stop would halt there; with success = "predicts y_target" it
    # goes on to 0.7.
    kw = dict(norm="linf", eps=0.6, steps=8, step_size=0.1, init=None, early_stop=True)
    x_t = pgd(model, x, y, targeted=True, y_target=t, **kw)
    x_u = pgd(model, x, y, **kw)
    with torch.no_grad():
        assert torch.equal(model(x_t).argmax(1), t)
        assert torch.equal(model(x_u).argmax(1), torch.ones(2, dtype=torch.long))
    torch.testing.assert_close(x_t, torch.full((2, 1), 0.7))
    torch.testing.assert_close(x_u, torch.full((2, 1), 0.4))


def test_targeted_reaches_targets_and_needs_y_target():
    model = ExactLinear(64, 5)
    x, y = batch(32, seed=7)
    t = (y + 1) % 5
    kw = dict(norm="linf", eps=0.2, steps=20)
    with torch.no_grad():
        hit_t = float((model(pgd(model, x, y, targeted=True, y_target=t, **kw)).argmax(1) == t).float().mean())
        hit_u = float((model(pgd(model, x, y, **kw)).argmax(1) == t).float().mean())
    assert hit_t > 0.9 and hit_u < 0.6, (hit_t, hit_u)
    with pytest.raises(ValueError, match="y_target"):
        pgd(model, x, y, norm="linf", eps=0.3, steps=2, targeted=True)
    with pytest.raises(ValueError, match="y_target"):
        fgsm(model, x, y, eps=0.3, targeted=True)


# --------------------------------------------------------------------------------------
# reproducibility (batch independence: tests/test_attack_contract.py)
# --------------------------------------------------------------------------------------


def test_seed_changes_start_and_is_reproducible():
    model = small_cnn(9)
    x, y = batch(8, seed=9)
    a = pgd(model, x, y, norm="l2", eps=0.5, steps=0, init="radial", seed=1)
    b = pgd(model, x, y, norm="l2", eps=0.5, steps=0, init="radial", seed=1)
    c = pgd(model, x, y, norm="l2", eps=0.5, steps=0, init="radial", seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("init", ["uniform", "advertorch"])
def test_generator_path_reproducible(init):
    model = small_cnn(10)
    x, y = batch(16, seed=10)
    kw = dict(norm="l2", eps=0.5, steps=3, init=init, restarts=2)
    a = pgd(model, x, y, generator=torch.Generator().manual_seed(11), **kw)
    b = pgd(model, x, y, generator=torch.Generator().manual_seed(11), **kw)
    c = pgd(model, x, y, generator=torch.Generator().manual_seed(12), **kw)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # the generator is used (not the global RNG): global draws don't change the result
    torch.manual_seed(123)
    d = pgd(model, x, y, generator=torch.Generator().manual_seed(11), **kw)
    assert torch.equal(a, d)


# --------------------------------------------------------------------------------------
# the inputs are left as found, with PGD's own options (the model, plain callables, ε = 0:
# tests/test_attack_contract.py)
# --------------------------------------------------------------------------------------


def test_inputs_not_modified_by_pgd_options():
    model = small_cnn(13)
    x, y = batch(10, seed=13)
    eps = torch.full((10,), 0.3)
    step = torch.full((10,), 0.05)
    t = (y + 2) % 5
    saved = [v.clone() for v in (x, y, eps, step, t)]
    for kw in ({}, {"targeted": True, "y_target": t}, {"early_stop": True, "restarts": 3}):
        pgd(model, x, y, norm="l2", eps=eps, step_size=step, steps=3, **kw)
        for a, b in zip((x, y, eps, step, t), saved, strict=True):
            assert torch.equal(a, b)


# --------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------


def test_bad_options_raise():
    model = small_cnn(14)
    x, y = batch(6, seed=14)
    for kw, match in [
        ({"norm": "l3"}, "unknown norm"),
        ({"init": "gaussian"}, "init must be"),
        ({"projection": "fast"}, "projection must be"),
        ({"steps": -1}, "steps must be"),
        ({"restarts": 0}, "restarts"),
        ({"step_size": -0.1}, "step_size"),
        ({"step_size": torch.full((4,), 0.1)}, r"step_size must have shape \[B\] = \[6\]"),
        ({"loss": "hinge"}, "unknown loss"),
    ]:
        with pytest.raises(ValueError, match=match):
            pgd(model, x, y, **{"norm": "linf", "eps": 0.1, "steps": 2, **kw})


def test_softmax_model_warns():
    net = small_cnn(15)
    x, y = batch(6, seed=15)
    with pytest.warns(UserWarning, match="probabilities"):
        pgd(lambda z: net(z).softmax(1), x, y, norm="linf", eps=0.1, steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pgd(net, x, y, norm="linf", eps=0.1, steps=1)  # logits: no warning


# --------------------------------------------------------------------------------------
# FGSM / FGM closed forms and the class API
# --------------------------------------------------------------------------------------


def test_fgsm_closed_form_linear_model():
    torch.manual_seed(1)
    lin = nn.Linear(30, 4).double().eval()
    x = torch.rand(50, 30, dtype=torch.float64)
    x[:5, :10] = 0.0
    x[5:10, :10] = 1.0
    y = torch.randint(0, 4, (50,))
    eps = 0.2
    with torch.no_grad():
        p = torch.softmax(lin(x), 1)
    grad = (p - nn.functional.one_hot(y, 4).double()) @ lin.weight.detach()  # ∇ₓ CE
    expected = (x + eps * grad.sign()).clamp(0, 1)
    assert torch.equal(fgsm(lin, x, y, eps=eps), expected)
    assert torch.equal(FGSM(lin, eps=eps)(x, y), expected)
    # per-example ε
    e = torch.linspace(0, 0.3, 50, dtype=torch.float64)
    assert torch.equal(fgsm(lin, x, y, eps=e), (x + e[:, None] * grad.sign()).clamp(0, 1))
    # FGM ℓ2: one normalised step of length ε, then projected onto ball ∩ box
    x_mid = 0.3 + 0.4 * x  # box inactive for ε = 0.2
    with torch.no_grad():
        p = torch.softmax(lin(x_mid), 1)
    g = (p - nn.functional.one_hot(y, 4).double()) @ lin.weight.detach()
    expected_l2 = x_mid + eps * g / g.norm(dim=1, keepdim=True)
    torch.testing.assert_close(fgm(lin, x_mid, y, norm="l2", eps=eps), expected_l2, rtol=0, atol=1e-12)
    torch.testing.assert_close(FGM(lin, norm="l2", eps=eps)(x_mid, y), expected_l2, rtol=0, atol=1e-12)


def test_pgd_class_matches_function():
    model = small_cnn(16)
    x, y = batch(8, seed=16)
    atk = PGD(model, norm="l2", eps=0.5, steps=3)
    assert torch.equal(atk(x, y), pgd(model, x, y, norm="l2", eps=0.5, steps=3))
    assert torch.equal(atk(x, y, eps=0.2), pgd(model, x, y, norm="l2", eps=0.2, steps=3))
    assert "eps=0.5" in repr(atk)


def test_radial_start_spreads_the_radius_and_auto_starts():
    from wideberth.attacks.projected_gradient import _start
    from wideberth.threat import get_threat

    x = torch.full((2000, 1, 8, 8), 0.5)
    x = x + 1e-3 * torch.arange(2000).view(-1, 1, 1, 1) / 2000  # distinct examples, distinct keys
    eps = torch.full((2000,), 0.5)
    threat = get_threat("l2")
    radial = _start(threat, x, eps, "radial", None, seed=0, restart=0)
    r = threat.norm(radial) / 0.5
    assert float(r.max()) <= 1 + 1e-6
    assert abs(float(r.mean()) - 0.5) < 0.03 and abs(float(r.var()) - 1 / 12) < 0.01  # U(0, 1)
    uniform = _start(threat, x, eps, "uniform", None, seed=0, restart=0)
    assert float((threat.norm(uniform) / 0.5).min()) > 0.85  # D = 64: r ~ U^(1/64), near 1
    # "auto": the first run from x, later restarts radial (ℓ2) or uniform (ℓ∞)
    assert not bool(_start(threat, x, eps, "auto", None, seed=0, restart=0).any())
    torch.testing.assert_close(
        _start(threat, x, eps, "auto", None, seed=0, restart=1),
        _start(threat, x, eps, "radial", None, seed=0, restart=1),
    )
    linf = get_threat("linf")
    torch.testing.assert_close(
        _start(linf, x, eps, "auto", None, seed=0, restart=2),
        _start(linf, x, eps, "uniform", None, seed=0, restart=2),
    )
