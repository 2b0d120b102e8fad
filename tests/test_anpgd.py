"""Tests for AN-PGD (wideberth.attacks.anpgd): MMA's adaptive-norm PGD and its eval variant.

Ground truth comes from linear classifiers: along any ray the logit
margin is piecewise linear, so its zero crossing is known in closed form, and for two
classes the PGD direction is the optimal one, so AN-PGD must recover the exact margin
``d = −(uᵀx + c)/‖u‖_*`` to within the bisection tolerance.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from wideberth.attacks.anpgd import ANPGD, ANPGDResult, an_pgd
from wideberth.attacks.mma_margins import an_pgd_eval, average_margin
from wideberth.losses import logit_margin, soft_logit_margin
from wideberth.threat import get_threat

DT = torch.float64


def linear_model(k: int, d: int = 64, seed: int = 0, dtype=DT) -> tuple[nn.Module, nn.Linear]:
    """Linear classifier on 1×8×8 inputs whose logits are centred at x = 0.5."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d, k).to(dtype)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(k, d, generator=g, dtype=dtype))
        lin.bias.copy_(-0.5 * lin.weight.sum(1) + 0.05 * torch.randn(k, generator=g, dtype=dtype))
    return nn.Sequential(nn.Flatten(), lin), lin


def inputs(n: int, seed: int = 1, spread: float = 0.2, dtype=DT) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.5 + spread * (2 * torch.rand(n, 1, 8, 8, generator=g, dtype=dtype) - 1)


@torch.no_grad()
def exact_margin(lin: nn.Linear, x: torch.Tensor, y: torch.Tensor, norm: str) -> torch.Tensor:
    """min_{k≠y} (f_y − f_k)/‖w_y − w_k‖_* (box inactive)."""
    w, b = lin.weight.double(), lin.bias.double()
    f = x.double().flatten(1) @ w.T + b
    u = w[y][:, None, :] - w[None]
    den = u.abs().sum(-1) if norm == "linf" else u.norm(dim=-1)
    den[torch.arange(len(y)), y] = 1.0
    d = (f.gather(1, y[:, None]) - f) / den
    d[torch.arange(len(y)), y] = math.inf
    return d.amin(1)


@torch.no_grad()
def lm_crossing(lin: nn.Linear, x: torch.Tensor, y: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """Smallest s >= 0 with LM(x + s·u, y) >= 0 for a linear model (no clipping): inf if none."""
    w, b = lin.weight.double(), lin.bias.double()
    f0 = x.double().flatten(1) @ w.T + b
    df = unit.double().flatten(1) @ w.T
    a = f0 - f0.gather(1, y[:, None])  # LM_k(0) = f_k − f_y
    s = df - df.gather(1, y[:, None])
    cross = torch.where(a >= 0, torch.zeros_like(a), torch.where(s > 0, -a / s, math.inf))
    cross[torch.arange(len(y)), y] = math.inf
    return cross.amin(1)


def slm_crossing(model, x, y, unit, hi: float = 10.0) -> torch.Tensor:
    """Zero crossing of SLM along the ray by a 100-step float64 bisection (SLM is monotone
    along a ray for a two-class linear model)."""
    lo = torch.zeros(len(y), dtype=DT)
    up = torch.full((len(y),), hi, dtype=DT)
    with torch.no_grad():
        for _ in range(100):
            mid = (lo + up) / 2
            m = soft_logit_margin(model(x + mid.view(-1, 1, 1, 1) * unit), y)
            lo = torch.where(m < 0, mid, lo)
            up = torch.where(m < 0, up, mid)
    return (lo + up) / 2


def predict(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def mlp(seed: int = 0, bn: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(64, 32)]
    if bn:
        layers.append(nn.BatchNorm1d(32))
    layers += [nn.ReLU(), nn.Linear(32, 10)]
    return nn.Sequential(*layers).to(DT)


# --------------------------------------------------------------------------------------
# closed form: two classes (SLM = LM, the PGD direction is optimal)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("init_factor", [0.5, 2.0])
def test_binary_linear_recovers_exact_margin(norm, init_factor):
    model, lin = linear_model(2)
    x = inputs(24)
    y = predict(model, x)
    d = exact_margin(lin, x, y, norm)
    eps_max = 1.05 * float(d.max()) * max(1.0, init_factor)
    # ℓ2 from a zero start: the first step is along w, so PGD ends exactly on the optimal ray
    # (a random start needs step_scale ≫ 1 to forget its angle, see the next test)
    res = an_pgd(
        model, x, y, norm=norm, eps_init=init_factor * d, eps_max=eps_max, steps=20,
        n_search=10, init="zero" if norm == "l2" else "advertorch",
    )
    first = torch.where(res.pgd_success, init_factor * d, eps_max - init_factor * d)
    tol = first / 2**10 + 1e-9
    assert torch.all((res.eps - d).abs() <= tol), (res.eps - d).abs().max()
    assert torch.all(res.lo <= d + 1e-12) and torch.all(d <= res.hi + 1e-12)


def test_binary_linear_l2_random_start_needs_large_steps():
    """advertorch's ℓ2 start is a random direction; PGD's angle to w shrinks roughly like
    exp(−step_scale), so MMA's 2.5 leaves a ~1% overestimate while 12.5 is exact."""
    model, lin = linear_model(2)
    x = inputs(24)
    y = predict(model, x)
    d = exact_margin(lin, x, y, "l2")
    kw = dict(norm="l2", eps_init=d, eps_max=2 * float(d.max()), steps=50, n_search=20,
              direction="actual_norm")
    coarse = an_pgd(model, x, y, step_scale=2.5, **kw)
    fine = an_pgd(model, x, y, step_scale=12.5, **kw)
    resolution = 2 * float(d.max()) / 2**20
    assert float((coarse.eps / d - 1).median()) > 1e-3
    assert torch.all((fine.eps - d).abs() <= resolution * 1.01 + 1e-6 * d)


# --------------------------------------------------------------------------------------
# bisection invariants (Ding et al., ICLR 2020, Algorithm 1; the authors' bisection_search)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("direction", ["eps_init", "actual_norm"])
def test_bracket_contains_true_lm_crossing(norm, direction):
    model, lin = linear_model(10)
    x = inputs(32)
    y = predict(model, x)
    d = exact_margin(lin, x, y, norm)
    eps_init = d * torch.linspace(0.3, 3.0, len(y), dtype=DT)  # both branches of Alg. 1
    eps_max = 4.0 * float(d.max())
    n = 12
    res = an_pgd(
        model, x, y, norm=norm, eps_init=eps_init, eps_max=eps_max, steps=10,
        n_search=n, search_loss="lm", direction=direction,
    )
    c = lm_crossing(lin, x, y, res.unit)
    assert torch.all(res.lo <= c + 1e-10) and torch.all(c <= res.hi + 1e-10)
    assert torch.all(res.eps <= eps_max) and torch.all(res.hi <= eps_max)
    assert torch.all((res.eps == res.lo) | (res.eps == res.hi))  # the last midpoint
    first = torch.where(res.pgd_success, torch.minimum(res.scale, torch.full_like(d, eps_max)),
                        eps_max - res.scale)
    assert torch.all(res.hi - res.lo <= first / 2**n * (1 + 1e-9))
    assert torch.equal(res.pgd_success, res.scale >= c)
    # Algorithm 1 interval choice: success at the PGD point ⇒ searched below it, else above
    assert torch.all(torch.where(res.pgd_success, res.hi <= res.scale, res.lo >= res.scale))
    assert bool(res.found.all())  # every example's crossing is below eps_max


def test_bracket_contains_slm_crossing():
    model, lin = linear_model(2)
    x = inputs(16)
    y = predict(model, x)
    d = exact_margin(lin, x, y, "l2")
    res = an_pgd(model, x, y, norm="l2", eps_init=d, eps_max=3 * float(d.max()), steps=10)
    c = slm_crossing(model, x, y, res.unit, hi=10 * float(d.max()))
    assert torch.all(res.lo <= c + 1e-10) and torch.all(c <= res.hi + 1e-10)
    # SLM-margin <= margin (Remark 2.2): with two classes SLM = LM
    assert torch.allclose(c, lm_crossing(lin, x, y, res.unit), rtol=1e-9)


def test_bracket_endpoints_fail_and_succeed_on_nonlinear_model():
    model = mlp(3)
    x = inputs(40, spread=0.4)
    y = predict(model, x)
    res = an_pgd(model, x, y, norm="l2", eps_init=0.3, eps_max=4.0, steps=10, n_search=10)
    with torch.no_grad():
        m_lo = soft_logit_margin(model((x + res.lo.view(-1, 1, 1, 1) * res.unit).clamp(0, 1)), y)
        m_hi = soft_logit_margin(model((x + res.hi.view(-1, 1, 1, 1) * res.unit).clamp(0, 1)), y)
    assert torch.all(m_lo[res.lo > 0] < 0)
    known = res.hi < 4.0
    assert torch.all(m_hi[known] >= 0)
    assert torch.equal(known, res.found)


def test_unsuccessful_search_lands_above_d_max():
    model, lin = linear_model(2)
    x = inputs(16)
    y = predict(model, x)
    d = exact_margin(lin, x, y, "linf")
    d_max = 0.5 * float(d.min())  # every margin exceeds d_max: nothing to find up to 1.05 d_max
    eps_max = 1.05 * d_max
    eps_init = 0.2 * d_max
    res = an_pgd(model, x, y, norm="linf", eps_init=eps_init, eps_max=eps_max, steps=10,
                 n_search=10)
    assert not bool(res.found.any()) and not bool(res.pgd_success.any())
    assert torch.all(res.eps > d_max) and torch.all(res.eps <= eps_max)
    expected = eps_max - (eps_max - eps_init) / 2**10
    assert torch.allclose(res.eps, torch.full_like(res.eps, expected), rtol=1e-12)
    # "upper" reports the search limit and says it is not known to succeed
    up = an_pgd(model, x, y, norm="linf", eps_init=eps_init, eps_max=eps_max, steps=10,
                return_mode="upper")
    assert torch.all(up.eps == eps_max) and not bool(up.success.any())


def test_eps_init_above_eps_max_keeps_eps_star_below_eps_max():
    model, lin = linear_model(2)
    x = inputs(8)
    y = predict(model, x)
    d = exact_margin(lin, x, y, "linf")
    eps_max = 0.5 * float(d.min())
    res = an_pgd(model, x, y, norm="linf", eps_init=3 * eps_max, eps_max=eps_max, steps=5)
    assert torch.all(res.lo <= res.hi) and torch.all(res.eps <= eps_max)


# --------------------------------------------------------------------------------------
# flags do what they claim
# --------------------------------------------------------------------------------------


def test_direction_flag_units():
    """One PGD step of half the radius from zero ends inside the ℓ2 ball: the code's
    ε_init units overstate ‖δ*‖ by ε_init/‖δ1‖; the paper's unit direction does not."""
    model, lin = linear_model(2)
    x = inputs(12)
    y = predict(model, x)
    d = exact_margin(lin, x, y, "l2")
    kw = dict(norm="l2", eps_init=2 * d, eps_max=6 * float(d.max()), steps=1, step_scale=0.5,
              init="zero", n_search=30)
    code = an_pgd(model, x, y, direction="eps_init", **kw)
    paper = an_pgd(model, x, y, direction="actual_norm", **kw)
    thr = get_threat("l2")
    assert torch.allclose(thr.norm(paper.unit), torch.ones(12, dtype=DT))
    assert torch.allclose(thr.norm(code.unit), torch.full((12,), 0.5, dtype=DT))
    assert torch.allclose(code.scale, 2 * d) and torch.allclose(paper.scale, d)
    assert torch.allclose(paper.eps, d, rtol=1e-6)
    assert torch.allclose(code.eps, 2 * d, rtol=1e-6)  # twice the true norm
    assert torch.allclose(code.x_adv, paper.x_adv, atol=1e-6)  # the same point


def test_return_mode_upper_is_known_to_succeed():
    model = mlp(5)
    x = inputs(48, spread=0.4)
    y = predict(model, x)
    kw = dict(norm="linf", eps_init=0.05, eps_max=0.6, steps=10, n_search=6, search_loss="lm")
    mid = an_pgd(model, x, y, return_mode="last_mid", **kw)
    up = an_pgd(model, x, y, return_mode="upper", **kw)
    assert torch.equal(mid.hi, up.hi) and torch.equal(mid.lo, up.lo)  # same search
    assert torch.equal(up.eps, up.hi) and torch.equal(up.success, up.found)
    with torch.no_grad():
        lm_up = logit_margin(model(up.x_adv), y)
        lm_mid = logit_margin(model(mid.x_adv), y)
    assert bool(up.found.any())
    assert torch.all(lm_up[up.found] >= 0)  # known to succeed (LM >= 0 ⇔ misclassified)
    assert torch.equal(mid.success, lm_mid >= 0)
    # the last midpoint is on the failing side for some examples; upper never is
    assert bool((~mid.success & up.found).any())
    assert torch.all(up.eps >= mid.eps)
    # the returned point is exactly clip(x + ε*·u)
    assert torch.equal(up.x_adv, (x + up.eps.view(-1, 1, 1, 1) * up.unit).clamp(0, 1))


def test_clip_final_flag():
    """Near the box faces x + ε*·u leaves [0, 1]: the code's unclipped output does too."""
    model, lin = linear_model(2)
    g = torch.Generator().manual_seed(7)
    x = torch.where(torch.rand(16, 1, 8, 8, generator=g, dtype=DT) < 0.5, 0.02, 0.98).to(DT)
    y = predict(model, x)
    kw = dict(norm="linf", eps_init=0.1, eps_max=1.0, steps=10)
    clipped = an_pgd(model, x, y, clip_final=True, **kw)
    raw = an_pgd(model, x, y, clip_final=False, **kw)
    assert torch.equal(clipped.eps, raw.eps)
    assert clipped.x_adv.min() >= 0 and clipped.x_adv.max() <= 1
    assert raw.x_adv.min() < 0 or raw.x_adv.max() > 1
    assert torch.equal(raw.x_adv, x + raw.eps.view(-1, 1, 1, 1) * raw.unit)
    assert torch.equal(clipped.x_adv, raw.x_adv.clamp(0, 1))


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("direction", ["eps_init", "actual_norm"])
def test_output_within_ball_and_box(norm, direction):
    model = mlp(1)
    x = inputs(24, spread=0.5)
    y = predict(model, x)
    res = an_pgd(model, x, y, norm=norm, eps_init=torch.linspace(0.05, 1.0, 24, dtype=DT),
                 eps_max=2.0, steps=10, direction=direction)
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    thr = get_threat(norm)
    assert torch.all(thr.norm(res.x_adv - x) <= res.eps * (1 + 1e-6) + 1e-12)
    assert torch.all(thr.norm(res.x_pgd - x) <= torch.linspace(0.05, 1.0, 24, dtype=DT) * (1 + 1e-6))


class ModeRecorder(nn.Module):
    """Identity that records (training, input requires grad) at every forward."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.log.append((self.training, x.requires_grad))
        return x


def bn_model() -> tuple[nn.Module, ModeRecorder]:
    rec = ModeRecorder()
    model = nn.Sequential(rec, mlp(2, bn=True))
    with torch.no_grad():  # non-trivial running statistics
        model.train()
        model(inputs(64, seed=9, spread=0.5))
    return model, rec


# search_in_eval=True (the default; every forward in eval mode, modes, flags, gradients,
# BatchNorm statistics and inputs left as found): tests/test_attack_contract.py
@pytest.mark.parametrize("search_in_eval", [False])
def test_modes_restored_and_pgd_in_eval(search_in_eval):
    model, rec = bn_model()
    model.train()
    model[1][2].eval()  # a BatchNorm frozen by the caller must come back frozen
    bn = model[1][2]
    modes = [m.training for m in model.modules()]
    stats = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    model[1][1].weight.requires_grad_(False)
    req = [p.requires_grad for p in model.parameters()]
    x = inputs(16, spread=0.4)
    x0 = x.clone()
    with torch.no_grad():
        model.eval()
        y = model(x).argmax(1)
        model.train()
        model[1][2].eval()
    rec.log.clear()
    n = 5
    an_pgd(model, x, y, norm="l2", eps_init=0.3, eps_max=3.0, steps=4, n_search=n,
           search_in_eval=search_in_eval)
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == req
    assert all(torch.equal(p.grad, torch.full_like(p, 3.0)) for p in model.parameters())
    assert torch.equal(x, x0)
    assert all(not training for training, grad in rec.log if grad)  # PGD: eval mode
    searched_in_train = sum(training for training, grad in rec.log if not grad)
    assert searched_in_train == (0 if search_in_eval else n + 1)
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])


def test_search_in_train_mode_updates_batchnorm_stats():
    """The authors' code searches in train mode: BatchNorm running stats move (A6)."""
    model, _ = bn_model()
    bn = model[1][2]
    x = inputs(16, spread=0.4)
    with torch.no_grad():
        model.eval()
        y = model(x).argmax(1)
    for search_in_eval, changes in [(True, False), (False, True)]:
        model.train()
        before = bn.running_mean.clone()
        an_pgd(model, x, y, norm="linf", eps_init=0.05, eps_max=0.5, steps=3, n_search=4,
               search_in_eval=search_in_eval)
        assert model.training and bn.training
        assert (not torch.equal(bn.running_mean, before)) == changes


# --------------------------------------------------------------------------------------
# per-example ε, batch independence, reproducibility
# --------------------------------------------------------------------------------------


def test_batch_independence_and_per_example_eps():
    model = mlp(4)
    x = inputs(12, spread=0.4)
    y = predict(model, x)
    eps_init = torch.linspace(0.1, 1.0, 12, dtype=DT)
    kw = dict(norm="l2", eps_max=3.0, steps=8, n_search=8, seed=3)
    full = an_pgd(model, x, y, eps_init=eps_init, **kw)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    shuffled = an_pgd(model, x[perm], y[perm], eps_init=eps_init[perm], **kw)
    assert torch.allclose(shuffled.eps, full.eps[perm], rtol=0, atol=1e-12)
    for i in (0, 5, 11):
        one = an_pgd(model, x[i : i + 1], y[i : i + 1], eps_init=float(eps_init[i]), **kw)
        assert torch.allclose(one.eps, full.eps[i : i + 1], rtol=0, atol=1e-12)
        assert torch.allclose(one.x_adv, full.x_adv[i : i + 1], rtol=0, atol=1e-12)
    again = an_pgd(model, x, y, eps_init=eps_init, **kw)
    assert torch.equal(again.eps, full.eps)
    other = an_pgd(model, x, y, eps_init=eps_init, **{**kw, "seed": 4})
    assert not torch.equal(other.x_pgd, full.x_pgd)


def test_per_example_eps_max():
    model, lin = linear_model(2)
    x = inputs(8)
    y = predict(model, x)
    d = exact_margin(lin, x, y, "linf")
    eps_max = torch.where(torch.arange(8) % 2 == 0, 2 * d, 0.5 * d)  # odd rows: unreachable
    res = an_pgd(model, x, y, norm="linf", eps_init=0.25 * d, eps_max=eps_max, steps=10,
                 n_search=20, return_mode="upper")
    assert torch.equal(res.found, torch.arange(8) % 2 == 0)
    assert torch.allclose(res.eps[::2], d[::2], rtol=1e-5)
    assert torch.equal(res.eps[1::2], eps_max[1::2])


def test_generator_path_runs_and_is_reproducible():
    model = mlp(4)
    x = inputs(6)
    y = predict(model, x)
    kw = dict(norm="l2", eps_init=0.5, eps_max=3.0, steps=4)
    a = an_pgd(model, x, y, generator=torch.Generator().manual_seed(1), **kw)
    b = an_pgd(model, x, y, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(a.eps, b.eps)


# --------------------------------------------------------------------------------------
# test-time variant and average margin
# --------------------------------------------------------------------------------------


def test_eval_variant_misclassified_examples_near_zero():
    model, lin = linear_model(10)
    x = inputs(40)
    pred = predict(model, x)
    y = (pred + 1) % 10  # every example misclassified
    eps_max = 2.0
    res = an_pgd_eval(model, x, y, norm="l2", test_eps=0.5, eps_max=eps_max, steps=10)
    assert torch.all(res.eps <= eps_max / 2**10)
    res_t = an_pgd_eval(model, x, y, norm="l2", test_eps=0.5, eps_max=eps_max, steps=10,
                        start="test_eps")
    assert torch.all(res_t.eps <= 0.5 / 2**9)


def test_eval_variant_start_quirk():
    """The code attributes the PGD outcome at test_eps to 0.5·ε_max: a margin between
    test_eps and 0.5·ε_max is then overestimated; start="test_eps" finds it."""
    model, lin = linear_model(2)
    x = inputs(16)
    y = predict(model, x)
    d = exact_margin(lin, x, y, "linf")
    test_eps = 0.5 * float(d.min())
    eps_max = 4.0 * float(d.max())
    kw = dict(norm="linf", test_eps=test_eps, eps_max=eps_max, steps=10, n_search=20)
    quirk = an_pgd_eval(model, x, y, **kw)
    fixed = an_pgd_eval(model, x, y, start="test_eps", **kw)
    assert torch.all(quirk.eps >= 0.5 * eps_max)
    assert torch.all((fixed.eps - d).abs() <= eps_max / 2**20 * 1.01)
    # LM is the search loss: the fixed variant's last point sits on the boundary
    assert torch.all(fixed.lo <= d + 1e-12) and torch.all(d <= fixed.hi + 1e-12)


def test_eval_variant_uses_lm_and_test_step():
    model, lin = linear_model(10)
    x = inputs(16)
    y = predict(model, x)
    d = exact_margin(lin, x, y, "linf")
    res = an_pgd_eval(model, x, y, norm="linf", test_eps=float(d.max()) * 2,
                      test_step=float(d.max()) / 2, eps_max=4 * float(d.max()), steps=10,
                      start="test_eps", n_search=20, return_mode="upper")
    with torch.no_grad():
        assert torch.all(logit_margin(model(res.x_adv), y) >= 0)  # LM success = misclassified
    assert torch.all(res.eps >= d * (1 - 1e-9))


def test_average_margin_is_mean_and_chunking_agrees():
    model = mlp(6)
    x = inputs(20, spread=0.4)
    y = predict(model, x)
    y[:5] = (y[:5] + 1) % 10  # some misclassified examples count too
    kw = dict(norm="linf", test_eps=0.1, eps_max=0.5, steps=5)
    full = an_pgd_eval(model, x, y, **kw)
    avg = average_margin(model, x, y, **kw)
    assert avg == pytest.approx(float(full.eps.mean()), rel=1e-12)
    assert average_margin(model, x, y, batch_size=7, **kw) == pytest.approx(avg, rel=1e-9)
    assert float(full.eps[:5].max()) <= 0.5 / 2**10


# --------------------------------------------------------------------------------------
# class form and input validation
# --------------------------------------------------------------------------------------


def test_callable_class():
    model = mlp(4)
    x = inputs(6)
    y = predict(model, x)
    atk = ANPGD(model, norm="linf", eps_init=0.05, eps_max=0.5, steps=5)
    x_adv = atk(x, y)
    res = atk.result(x, y)
    assert isinstance(res, ANPGDResult)
    assert torch.equal(x_adv, res.x_adv) and x_adv.shape == x.shape
    assert "eps_init=0.05" in repr(atk)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(eps_init=0.0), "eps_init must be > 0"),
        (dict(eps_init=-0.1), ">= 0"),
        (dict(eps_init=torch.ones(3, dtype=DT)), r"shape \[B\]"),
        (dict(eps_max=0.0), "eps_max must be > 0"),
        (dict(eps_max=math.nan), "finite"),
        (dict(direction="unit"), "direction"),
        (dict(return_mode="best"), "return_mode"),
        (dict(n_search=-1), "n_search"),
        (dict(steps=1.5), "steps"),
        (dict(norm="l3"), "unknown norm"),
        (dict(step_scale=-1.0), "step_scale"),
    ],
)
def test_bad_inputs(kwargs, match):
    model = mlp(0)
    x = inputs(4)
    y = predict(model, x)
    kw = dict(norm="l2", eps_init=0.1, eps_max=1.0, steps=2, **{})
    kw.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        an_pgd(model, x, y, **kw)


def test_bad_data_and_eval_options():
    model = mlp(0)
    x = inputs(4)
    y = predict(model, x)
    with pytest.raises(ValueError, match=r"box \[0, 1\]"):
        an_pgd(model, x + 2, y, norm="l2", eps_init=0.1, eps_max=1.0, steps=2)
    with pytest.raises(ValueError, match="labels"):
        an_pgd(model, x, y + 100, norm="l2", eps_init=0.1, eps_max=1.0, steps=2)
    with pytest.raises(ValueError, match="start"):
        an_pgd_eval(model, x, y, norm="l2", test_eps=0.1, eps_max=1.0, steps=2, start="zero")
    with pytest.raises(ValueError, match="test_eps must be > 0"):
        an_pgd_eval(model, x, y, norm="l2", test_eps=0.0, eps_max=1.0, steps=2)
    with pytest.raises(ValueError, match="empty"):
        average_margin(model, x[:0], y[:0], norm="l2", test_eps=0.1, eps_max=1.0, steps=2)
