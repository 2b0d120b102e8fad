"""Core of the unified min-max framework (Wang et al. 2021, *Adversarial attack generation
empowered by min-max optimization*, §2.1, §2.2 eq. (5), §3): simplex projection, APGDA
(Algorithm 1), the min-max driver and the robust ensemble attack."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from wideberth.attacks.projected_gradient import pgd
from wideberth.losses import ce
from wideberth.minmax import (
    DomainProblem,
    MinMaxResult,
    apgda,
    apgda_average,
    apgda_fixed,
    attack_loss,
    ensemble_attack,
    ensemble_metrics,
    lift,
    on_simplex,
    project_simplex,
    project_simplex_bisection,
    solve,
    weight_step,
)
from wideberth.threat import get_threat

# --------------------------------------------------------------------------------------
# simplex projection
# --------------------------------------------------------------------------------------


def brute_force_simplex(v: torch.Tensor) -> torch.Tensor:
    """Sort-free reference for one row: enumerate the support S; on S the KKT solution is
    w_S = v_S − (Σ v_S − 1)/|S| (needs w_S ≥ 0); keep the feasible candidate nearest to v."""
    k = v.numel()
    best, best_d = None, math.inf
    for r in range(1, k + 1):
        for s in itertools.combinations(range(k), r):
            idx = list(s)
            w = torch.zeros_like(v)
            w[idx] = v[idx] - (v[idx].sum() - 1) / r
            if bool((w >= -1e-12).all()):
                dd = float(((w - v) ** 2).sum())
                if dd < best_d:
                    best, best_d = w, dd
    assert best is not None
    return best


def _random_rows(n: int = 200, k: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, k, generator=g, dtype=torch.float64) * 2
    v[:20] = torch.round(v[:20])  # ties
    v[20:30] = 0.7  # all equal
    v[30:60] = torch.rand(30, k, generator=g, dtype=torch.float64).softmax(1)  # feasible
    v[60:70] = torch.eye(k, dtype=torch.float64)[torch.arange(10) % k]  # vertices
    v[70:80] *= 1e3  # large scale
    return v


def test_simplex_matches_brute_force_and_bisection():
    v = _random_rows()
    w = project_simplex(v)
    ref = torch.stack([brute_force_simplex(r) for r in v])
    torch.testing.assert_close(w, ref, atol=1e-9, rtol=0)
    torch.testing.assert_close(project_simplex_bisection(v), ref, atol=1e-9, rtol=0)


def test_simplex_feasible_idempotent_shift_invariant_batched():
    v = _random_rows(k=7, seed=1)
    w = project_simplex(v)
    assert bool((w >= 0).all())
    torch.testing.assert_close(w.sum(-1), torch.ones(v.shape[0], dtype=v.dtype))
    torch.testing.assert_close(project_simplex(w), w, atol=1e-12, rtol=0)
    torch.testing.assert_close(v[30:70], w[30:70], atol=1e-12, rtol=0)  # feasible rows kept
    torch.testing.assert_close(project_simplex(v + 3.25), w, atol=1e-9, rtol=0)
    # leading dims are batch dims; float32 works too
    v3 = v[:60].reshape(3, 4, 5, 7).float()
    torch.testing.assert_close(project_simplex(v3), w[:60].reshape(3, 4, 5, 7).float())
    assert project_simplex(torch.tensor([[-4.0]])).item() == 1.0  # K = 1


def test_simplex_bad_input():
    with pytest.raises(ValueError):
        project_simplex(torch.zeros(3, 0))
    with pytest.raises(ValueError):
        project_simplex(torch.ones(3, 2, dtype=torch.long))
    with pytest.raises(ValueError):
        project_simplex(torch.tensor([[float("nan"), 1.0]]))


# --------------------------------------------------------------------------------------
# inner max (14)
# --------------------------------------------------------------------------------------


def test_weight_step_with_beta_one_over_gamma_is_the_closed_form():
    g = torch.Generator().manual_seed(2)
    b, k, gamma = 50, 4, 3.0
    w = project_simplex(torch.randn(b, k, generator=g, dtype=torch.float64))
    phi = 3 * torch.randn(b, k, generator=g, dtype=torch.float64)
    star = project_simplex(1.0 / k + phi / gamma)
    torch.testing.assert_close(weight_step(w, phi, 1 / gamma, gamma), star)
    # order preserving, and the fixed point for any beta > 0 is the same w*
    big = phi.unsqueeze(2) > phi.unsqueeze(1)
    assert bool((star.unsqueeze(2) >= star.unsqueeze(1) - 1e-12)[big].all())
    for _ in range(300):
        w = weight_step(w, phi, 0.05, gamma)
    torch.testing.assert_close(w, star, atol=1e-8, rtol=0)
    # gamma = 0 and a large step: one-hot on argmax F
    onehot = weight_step(w, phi, 100.0, 0.0)
    torch.testing.assert_close(onehot, nn.functional.one_hot(phi.argmax(1), k).double())


# --------------------------------------------------------------------------------------
# APGDA
# --------------------------------------------------------------------------------------


def _mlp(seed: int, d: int = 16, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, classes)).eval()


def _data(b: int = 6, seed: int = 0, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 1, 4, 4, generator=g), torch.randint(0, classes, (b,), generator=g)


def _mlp_losses(models, x, y):
    def fn(delta):
        xa = (x + delta).clamp(0, 1)
        return torch.stack([-ce(m(xa), y) for m in models], 1)

    for m in models:
        for p in m.parameters():
            p.requires_grad_(False)
    return fn


def test_gauss_seidel_order_and_first_w_step():
    models = [_mlp(s) for s in range(3)]
    x, y = _data()
    fn = _mlp_losses(models, x, y)
    gamma = 2.0
    res = apgda(fn, x, eps=0.1, steps=3, alpha=0.02, beta=1 / gamma, gamma=gamma,
                delta_mode="sign", record_delta=True)
    assert res.w_trajectory.shape == (4, 6, 3) and res.loss_trajectory.shape == (4, 6, 3)
    assert res.delta_trajectory is not None
    for t in range(4):  # φ(t) is F at the recorded δ(t)
        torch.testing.assert_close(res.loss_trajectory[t], fn(res.delta_trajectory[t]))
    # w(1) uses φ(1) = F(δ(1)) (the NEW δ): with β = 1/γ it is proj(1/K + φ(1)/γ)
    torch.testing.assert_close(res.w_trajectory[1], project_simplex(1 / 3 + res.loss_trajectory[1] / gamma))
    torch.testing.assert_close(res.w_trajectory[0], torch.full((6, 3), 1 / 3))
    # δ(1) used w(0) = uniform: the average-loss run has the same first step
    avg = apgda_average(fn, x, eps=0.1, steps=1, alpha=0.02, delta_mode="sign")
    torch.testing.assert_close(avg.delta, res.delta_trajectory[1])


@pytest.mark.parametrize("norm,mode,alpha", [("linf", "sign", 0.03), ("l2", "normalized", 0.2)])
def test_k1_reduces_to_pgd(norm, mode, alpha):
    """K = 1: w ≡ [1], so APGDA is PGD descending F = −CE, i.e. PGD ascending CE. pgd with
    init="zero", return_best=False, step_size=α takes the same steps (ℓ∞ sign, ℓ2 g/‖g‖₂),
    the same exact projection and returns the last iterate; β, γ are irrelevant."""
    model = _mlp(5)
    x, y = _data(8, seed=3)
    eps, steps = (0.1, 7) if norm == "linf" else (0.8, 7)
    ref = pgd(model, x, y, norm=norm, eps=eps, steps=steps, step_size=alpha, loss="ce",
              init="zero", return_best=False)
    res = apgda(_mlp_losses([model], x, y), x, norm=norm, eps=eps, steps=steps, alpha=alpha,
                beta=0.3, gamma=1.0, delta_mode=mode)
    torch.testing.assert_close((x + res.delta).clamp(0, 1), ref, atol=1e-6, rtol=0)
    assert bool((res.w_trajectory == 1).all())


def test_large_gamma_is_the_average_loss_attack():
    models = [_mlp(s) for s in (7, 8, 9)]
    x, y = _data(6, seed=4)
    fn = _mlp_losses(models, x, y)
    kw = dict(norm="l2", eps=0.5, steps=10, alpha=0.5, delta_mode="raw")
    avg = apgda_average(fn, x, **kw)
    gamma = 1e9
    mm = apgda(fn, x, beta=1 / gamma, gamma=gamma, **kw)
    torch.testing.assert_close(mm.delta, avg.delta, atol=1e-6, rtol=0)
    torch.testing.assert_close(mm.w, torch.full((6, 3), 1 / 3), atol=1e-7, rtol=0)
    inf = apgda(fn, x, beta=0.5, gamma=math.inf, **kw)
    assert torch.equal(inf.delta, avg.delta)
    # fixed weights: a one-hot fixed weight equals attacking that model alone
    fixed = apgda_fixed(fn, x, torch.tensor([0.0, 1.0, 0.0]), **kw)
    alone = apgda(_mlp_losses([models[1]], x, y), x, beta=0.0, gamma=1.0, **kw)
    torch.testing.assert_close(fixed.delta, alone.delta)


@pytest.mark.parametrize("norm,eps", [("linf", 0.15), ("l2", 0.7), ("l1", 1.5)])
@pytest.mark.parametrize("init", ["zero", "uniform_proj", "normal0.1_raw"])
def test_feasible_iterates_and_simplex_weights(norm, eps, init):
    models = [_mlp(s) for s in (1, 2, 3, 4)]
    x, y = _data(5, seed=6)
    res = apgda(_mlp_losses(models, x, y), x, norm=norm, eps=eps, steps=6, alpha=0.5,
                beta=0.5, gamma=0.5, delta_mode="raw", init=init, record_delta=True, seed=3)
    threat = get_threat(norm)
    start = 1 if init == "normal0.1_raw" else 0  # the raw normal start is not projected
    for d in res.delta_trajectory[start:]:
        assert bool((threat.norm(d) <= eps * (1 + 1e-5)).all())
        assert bool(((x + d) >= -1e-7).all() and ((x + d) <= 1 + 1e-7).all())
    w = res.w_trajectory
    assert bool(on_simplex(w, atol=1e-6).all()) and bool((w >= 0).all())
    assert not torch.allclose(w[-1], w[0])  # the weights did move


def test_group_box_for_a_shared_delta():
    """Universal-style reuse: one δ per group of 3 images, box = intersection (eq. (6))."""
    model = _mlp(11)
    for p in model.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(5)
    xg = torch.rand(4, 3, 1, 4, 4, generator=g)  # 4 groups of 3
    yg = torch.randint(0, 3, (4, 3), generator=g)
    lo, hi = (-xg).amax(1), (1 - xg).amin(1)

    def fn(delta):  # delta [G, 1, 4, 4] -> F [G, 3]
        xa = (xg + delta.unsqueeze(1)).flatten(0, 1)
        return -ce(model(xa), yg.flatten()).reshape(4, 3)

    res = apgda(fn, xg[:, 0], norm="l2", eps=1.0, steps=5, alpha=1.0, beta=0.1, gamma=1.0,
                lo=lo, hi=hi, record_delta=True)
    for d in res.delta_trajectory:
        xa = xg + d.unsqueeze(1)
        assert bool((xa >= -1e-7).all() and (xa <= 1 + 1e-7).all())
        assert bool((torch.linalg.vector_norm(d.flatten(1), dim=1) <= 1.0 + 1e-5).all())
    assert res.w.shape == (4, 3)


def test_driver_is_one_apgda_call_with_the_baselines():
    """The driver (DomainProblem + solve) on a custom domain problem: the default (α, β, γ),
    the learned / uniform / fixed weights and the result are those of one apgda call."""
    models = [_mlp(s) for s in (1, 2, 3)]
    x, y = _data(5, seed=2)
    fn = _mlp_losses(models, x, y)
    problem = DomainProblem(models=models, rows=x, losses=lambda: fn, k=3,
                            defaults={"l2": (0.5, 0.25, 2.0)}, inputs=(x, y))
    kw = dict(norm="l2", eps=0.6, steps=5, alpha=None, beta=None, gamma=None, seed=4,
              init="uniform_proj", record_delta=True)
    core = dict(norm="l2", eps=0.6, steps=5, alpha=0.5, beta=0.25, gamma=2.0, seed=4,
                init="uniform_proj", record_delta=True)
    mm = solve(problem, method="minmax", **kw)
    ref = apgda(fn, x, **core)
    assert isinstance(mm, MinMaxResult) and mm.method == "minmax"
    assert torch.equal(mm.delta, ref.delta) and torch.equal(mm.w, ref.w)
    assert torch.equal(mm.w_trajectory, ref.w_trajectory)
    assert torch.equal(mm.loss_trajectory, ref.loss_trajectory)
    assert torch.equal(mm.delta_trajectory, ref.delta_trajectory)
    assert torch.equal(mm.x_adv, (x + ref.delta).clamp(0, 1))
    avg = solve(problem, method="avg", **kw)
    assert torch.equal(avg.delta, apgda_average(fn, x, **core).delta)
    assert torch.allclose(avg.w, torch.full((5, 3), 1 / 3))
    wf = torch.tensor([0.2, 0.3, 0.5])
    fixed = solve(dataclasses.replace(problem, weights=wf), method="fixed", **kw)
    assert torch.equal(fixed.delta, apgda_fixed(fn, x, wf, **core).delta)
    with pytest.raises(ValueError, match="weights"):
        solve(dataclasses.replace(problem, weights=[0.5, 0.5]), method="fixed", **kw)
    single = solve(dataclasses.replace(problem, single_domain=True), method="avg", **kw)
    assert single.w is None and single.w_trajectory is None


def test_apgda_bad_input():
    model = _mlp(0)
    x, y = _data(4)
    fn = _mlp_losses([model, model], x, y)
    ok = dict(eps=0.1, steps=2, alpha=0.1)
    with pytest.raises(ValueError, match="simplex"):
        apgda(fn, x, w0=torch.tensor([0.7, 0.7]), **ok)
    with pytest.raises(ValueError, match="w0"):
        apgda(fn, x, w0=torch.tensor([0.2, 0.3, 0.5]), **ok)
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        apgda(lambda d: d.sum(), x, **ok)
    with pytest.raises(ValueError, match="beta"):
        apgda(fn, x, beta=-1.0, **ok)
    with pytest.raises(ValueError, match="delta_mode"):
        apgda(fn, x, delta_mode="adam", **ok)
    with pytest.raises(ValueError, match="init"):
        apgda(fn, x, init="gauss", **ok)
    with pytest.raises(ValueError):
        apgda(fn, x * 3, **ok)  # outside [0, 1]
    with pytest.raises(ValueError, match="lo <= 0"):
        apgda(fn, x, lo=torch.ones_like(x), hi=torch.ones_like(x), **ok)
    with pytest.raises(ValueError, match="w0 must be None"):
        apgda(fn, x, gamma=math.inf, w0=torch.tensor([0.5, 0.5]), **ok)
    with pytest.raises(ValueError, match="steps"):
        apgda(fn, x, eps=0.1, steps=-1, alpha=0.1)
    with pytest.raises(ValueError):
        apgda(fn, x, eps=-0.1, steps=1, alpha=0.1)


# --------------------------------------------------------------------------------------
# ensemble attack (eq. (5))
# --------------------------------------------------------------------------------------


class _Margin2(nn.Module):
    """2 classes, logits [0, s·(u·(x − 0.5) − t)]: class 0 (the label) until u·(x−0.5) > t."""

    def __init__(self, u: torch.Tensor, s: float, t: float) -> None:
        super().__init__()
        self.lin = nn.Linear(u.numel(), 1)
        with torch.no_grad():
            self.lin.weight.copy_(s * u.reshape(1, -1))
            self.lin.bias.fill_(-s * (0.5 * u.sum() + t))

    def forward(self, x):
        m = self.lin(x.flatten(1)).squeeze(1)
        return torch.stack([torch.zeros_like(m), m], 1)


def _hard_ensemble():
    """A and B are easy (steep: scale 10) and C is hard (scale 1, larger threshold). C wants
    coordinates 0–3 and 8–11 to decrease, which A and B want (weakly) to increase: the
    averaged gradient follows A and B there, so the average-loss attack never fools C. All
    three are fooled by δ = −ε on 0–3, 8–11 and +ε on 4–7, 12–15 (ε = 0.25)."""
    d = 16
    ua, ub, uc = torch.zeros(d), torch.zeros(d), torch.zeros(d)
    ua[0:4], ua[4:8] = 0.2, 1.0
    ub[8:12], ub[12:16] = 0.2, 1.0
    uc[0:4], uc[8:12] = -1.0, -1.0
    return [_Margin2(ua, 10.0, 0.5), _Margin2(ub, 10.0, 0.5), _Margin2(uc, 1.0, 1.5)]


def test_ensemble_minmax_beats_average_and_weights_hardest_model():
    models = _hard_ensemble()
    g = torch.Generator().manual_seed(0)
    x = 0.5 + 0.02 * (2 * torch.rand(12, 1, 4, 4, generator=g) - 1)
    y = torch.zeros(12, dtype=torch.long)
    clean = ensemble_metrics(models, x, y)
    assert clean.asr_all == 0.0 and float(clean.per_model_asr.max()) == 0.0
    kw = dict(norm="linf", eps=0.25, steps=50)  # MNIST ℓ∞ readings: α 1/4, β 1/50, γ 3
    avg = ensemble_attack(models, x, y, method="avg", **kw)
    mm = ensemble_attack(models, x, y, method="minmax", **kw)
    m_avg, m_mm = ensemble_metrics(models, avg.x_adv, y), ensemble_metrics(models, mm.x_adv, y)
    assert m_mm.asr_all >= m_avg.asr_all
    assert m_avg.asr_all == 0.0 and m_mm.asr_all == 1.0  # the constructed gap
    assert m_avg.per_model_asr.tolist() == [1.0, 1.0, 0.0]
    assert mm.w is not None and mm.w_trajectory is not None
    assert bool((mm.w.argmax(1) == 2).all())  # most mass on the hard model C
    assert mm.w_trajectory.shape == (51, 12, 3)
    assert bool(on_simplex(mm.w_trajectory, atol=1e-6).all())
    assert bool(((mm.x_adv - x).abs() <= 0.25 + 1e-6).all())
    assert lift(m_mm.asr_all, 0.5) == 1.0
    # the baselines run and are feasible; fixed weights that favour C also succeed
    for method in ("clip", "avg_logit", "avg_prob"):
        r = ensemble_attack(models, x, y, method=method, **kw)
        assert bool(((r.x_adv - x).abs() <= 0.25 + 1e-6).all())
    fx = ensemble_attack(models, x, y, method="fixed", weights=[0.1, 0.1, 0.8], **kw)
    assert ensemble_metrics(models, fx.x_adv, y).asr_all == 1.0
    assert torch.equal(fx.w, torch.tensor([[0.1, 0.1, 0.8]]).expand(12, 3))


def test_ensemble_metrics_and_cw_loss_form():
    models = _hard_ensemble()
    x = torch.full((2, 1, 4, 4), 0.5)
    x[1, 0, 1] = 0.75  # coords 4-7 up: fools A only
    y = torch.zeros(2, dtype=torch.long)
    m = ensemble_metrics(models, x, y)
    assert m.fooled.tolist() == [[False, False, False], [True, False, False]]
    assert m.asr_all == 0.0 and m.asr_avg == pytest.approx(1 / 6)
    z = torch.tensor([[3.0, 1.0, -2.0]])  # margin Z_y − max_other = 2 (y = 0)
    assert attack_loss(z, torch.tensor([0])).item() == pytest.approx(52.0)
    assert attack_loss(z, torch.tensor([2])).item() == pytest.approx(45.0)
    assert attack_loss(100 * z, torch.tensor([2])).item() == 0.0  # relu(· + κ) saturates


def test_ensemble_bad_input():
    models = _hard_ensemble()
    x = torch.full((2, 1, 4, 4), 0.5)
    y = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="at least one"):
        ensemble_attack([], x, y, eps=0.1)
    with pytest.raises(ValueError, match="list"):
        ensemble_attack(models[0], x, y, eps=0.1)
    with pytest.raises(ValueError, match="method"):
        ensemble_attack(models, x, y, eps=0.1, method="max")
    with pytest.raises(ValueError, match="weights"):
        ensemble_attack(models, x, y, eps=0.1, method="fixed")
    with pytest.raises(ValueError, match="weights"):
        ensemble_attack(models, x, y, eps=0.1, method="fixed", weights=[0.5, 0.5])
    with pytest.raises(ValueError, match="simplex"):
        ensemble_attack(models, x, y, eps=0.1, method="fixed", weights=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="clip"):
        ensemble_attack(models, x, y, eps=0.1, method="clip", loss="ce")
    with pytest.raises(ValueError):
        ensemble_attack(models, x + 1, y, eps=0.1)
    with pytest.raises(ValueError):
        ensemble_attack(models, x, torch.full((2,), 5), eps=0.1)
    with pytest.raises(ValueError):
        ensemble_metrics(models, x, y[:1])


# --------------------------------------------------------------------------------------
# property test: the sort-based projection against the bisection reference (hypothesis)
# --------------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=-50, max_value=50, allow_nan=False, width=64), min_size=1, max_size=12))
def test_simplex_projection_property(values):
    from wideberth.minmax.simplex import project_simplex, project_simplex_bisection

    v = torch.tensor(values, dtype=torch.float64)
    w = project_simplex(v)
    assert float(w.min()) >= 0 and abs(float(w.sum()) - 1) < 1e-9
    torch.testing.assert_close(w, project_simplex_bisection(v), rtol=0, atol=1e-7)
    torch.testing.assert_close(project_simplex(w), w, rtol=0, atol=1e-12)  # idempotent
    # optimality: no other simplex point (a vertex) is closer
    for k in range(v.numel()):
        e = torch.zeros_like(v)
        e[k] = 1
        assert float((w - v).norm()) <= float((e - v).norm()) + 1e-9
