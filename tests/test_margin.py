"""Tests for wideberth.attacks.margin: margin estimators and statistics.

Ground truth: a linear K-class model has the closed-form margin
``d = min_{k≠y} (f_y − f_k)/‖w_y − w_k‖_*`` (dual norm: ℓ2 for ℓ2, ℓ1 for ℓ∞) whenever the
box [0, 1] is not active at the minimiser (Wu & Yu 2019, §4.1 and §5.1: Eq. (16) is exact
for linear models).
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from torch import nn

from wideberth.attacks.margin import (
    MarginResult,
    default_eps_max,
    estimate_margin,
    estimate_margin_result,
    gradient_margin_bound,
    margin_stats,
)
from wideberth.losses import logit_margin
from wideberth.threat import get_threat

DT = torch.float64
HAS_MINIMAL = importlib.util.find_spec("wideberth.attacks.minimal_norm") is not None


def linear_model(k: int = 10, d: int = 64, seed: int = 0) -> tuple[nn.Module, nn.Linear]:
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(d, k).to(DT)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(k, d, generator=g, dtype=DT))
        lin.bias.copy_(-0.5 * lin.weight.sum(1) + 0.05 * torch.randn(k, generator=g, dtype=DT))
    return nn.Sequential(nn.Flatten(), lin), lin


def inputs(n: int, seed: int = 1, spread: float = 0.3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.5 + spread * (2 * torch.rand(n, 1, 8, 8, generator=g, dtype=DT) - 1)


@torch.no_grad()
def boundary_distances(lin: nn.Linear, x: torch.Tensor, c: torch.Tensor, norm: str):
    """Sorted per-class distances (f_c − f_k)/‖w_c − w_k‖_* and the minimisers' δ*."""
    w, b = lin.weight, lin.bias
    f = x.flatten(1) @ w.T + b
    u = w[c][:, None, :] - w[None]  # [B, K, D]
    rows = torch.arange(len(c))
    den = u.abs().sum(-1) if norm == "linf" else u.norm(dim=-1)
    den[rows, c] = 1.0
    dist = (f.gather(1, c[:, None]) - f) / den
    dist[rows, c] = math.inf
    s = dist.sort(1)
    uk = u[rows, s.indices[:, 0]]
    d = s.values[:, 0:1]
    delta = -d * (uk / uk.norm(dim=1, keepdim=True) if norm == "l2" else torch.sign(uk))
    return s.values, delta


@pytest.fixture(scope="module")
def linear_case():
    """Correctly classified points of a random linear 10-class model whose nearest boundary
    is unambiguous (the second nearest is ≥ 1.2× farther; any local attack may return a
    near-tied class instead) and not vanishingly close, with the box inactive at δ*."""
    model, lin = linear_model()
    x = inputs(96)
    with torch.no_grad():
        y = model(x).argmax(1)
    cases = {}
    for norm, floor in (("l2", 0.02), ("linf", 0.003)):
        dist, delta = boundary_distances(lin, x, y, norm)
        keep = (dist[:, 1] >= 1.2 * dist[:, 0]) & (dist[:, 0] >= floor)
        xs = x.flatten(1) + delta
        keep &= ((xs > 0) & (xs < 1)).all(1)  # box inactive at the minimiser
        assert int(keep.sum()) >= 20
        cases[norm] = (x[keep], y[keep], dist[keep, 0])
    return model, lin, cases


# --------------------------------------------------------------------------------------
# closed-form margins
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_anpgd_margin_matches_closed_form(linear_case, norm):
    model, _, cases = linear_case
    x, y, d = cases[norm]
    res = estimate_margin_result(model, x, y, norm, "anpgd", n_search=20)
    assert res.method == "anpgd" and res.norm == norm
    assert bool(res.found.all())
    rel = res.distance / d - 1
    assert float(rel.abs().max()) < 0.01, rel.abs().max()
    assert float(rel.min()) > -1e-6  # an upper bound (a verified point) up to rounding
    # the reported distance is the norm of a verified misclassified point in the box
    assert torch.allclose(res.distance, get_threat(norm).norm(res.x_adv - x), rtol=1e-12)
    with torch.no_grad():
        assert torch.all(logit_margin(model(res.x_adv), y) >= 0)
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1


def test_anpgd_margin_first_round_alone_is_coarser(linear_case):
    """The warm-started rounds matter: one AN-PGD round from a far radius overestimates."""
    model, _, cases = linear_case
    x, y, d = cases["l2"]
    one = estimate_margin(model, x, y, "l2", "anpgd", rounds=1, eps_init=8.0)
    five = estimate_margin(model, x, y, "l2", "anpgd", rounds=5, eps_init=8.0)
    assert float((one / d - 1).max()) > 0.1
    assert float((five / d - 1).abs().max()) < 0.01


@pytest.mark.parametrize(
    "method, norm",
    [
        ("fmn", "l2"),
        ("fmn", "linf"),
        ("cw", "l2"),
        ("auto", "l2"),
    ],
)
def test_minimal_norm_methods_match_closed_form(linear_case, method, norm):
    if not HAS_MINIMAL:
        pytest.skip("wideberth.attacks.minimal_norm (FMN, CW-l2) is not available")
    model, _, cases = linear_case
    x, y, d = cases[norm]
    kw = {"lr": 1e-3} if method == "cw" else {}  # CW's Adam step limits its precision
    res = estimate_margin_result(model, x, y, norm, method, **kw)
    assert res.method == ("fmn" if method == "auto" else method)
    assert bool(res.found.all()), f"{int((~res.found).sum())} not found"
    rel = res.distance / d - 1
    assert float(rel.abs().max()) < 0.01, rel.abs().max()


def test_misclassified_examples_get_zero_and_are_not_attacked():
    model, lin = linear_model()
    x = inputs(10)
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = pred.clone()
    y[::2] = (pred[::2] + 3) % 10
    res = estimate_margin_result(model, x, y, "linf", "anpgd", rounds=2, steps=10)
    assert torch.all(res.distance[::2] == 0) and bool(res.found[::2].all())
    assert torch.equal(res.x_adv[::2], x[::2])
    assert torch.all(res.distance[1::2] > 0)


def test_not_found_is_inf_not_capped():
    model, lin = linear_model()
    x = inputs(12)
    with torch.no_grad():
        y = model(x).argmax(1)
    dist, _ = boundary_distances(lin, x, y, "linf")
    eps_max = 0.5 * float(dist[:, 0].min())
    res = estimate_margin_result(model, x, y, "linf", "anpgd", eps_max=eps_max, rounds=2,
                                 steps=10)
    assert not bool(res.found.any())
    assert torch.all(torch.isposinf(res.distance))
    assert torch.equal(res.x_adv, x)


def test_default_eps_max_is_box_diameter():
    x = torch.rand(3, 1, 8, 8)
    assert default_eps_max("linf", x) == 1.0
    assert default_eps_max("l2", x) == pytest.approx(8.0)
    assert default_eps_max("l1", x) == 64.0


# --------------------------------------------------------------------------------------
# Wu & Yu gradient bound
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_gradient_bound_exact_for_linear_model(norm):
    model, lin = linear_model()
    x = inputs(40)
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = pred.clone()
    y[:8] = (pred[:8] + 1) % 10  # misclassified rows
    dist, _ = boundary_distances(lin, x, pred, norm)  # from the predicted class
    d = dist[:, 0]
    # samples only (the paper's procedure), the centre only, and both
    for kw in (dict(n_samples=1, include_center=False), dict(n_samples=0), dict(n_samples=3)):
        est = gradient_margin_bound(model, x, y, norm, radius=100.0, **kw)
        assert torch.allclose(est[8:], d[8:], rtol=1e-10)
        assert torch.all(est[:8] == 0)
    signed = gradient_margin_bound(model, x, y, norm, radius=100.0, signed=True)
    assert torch.allclose(signed[:8], -d[:8], rtol=1e-10)
    assert torch.allclose(signed[8:], d[8:], rtol=1e-10)
    capped = gradient_margin_bound(model, x, y, norm, radius=float(d[8:].median()))
    assert torch.allclose(capped[8:], torch.clamp(d[8:], max=float(d[8:].median())), rtol=1e-10)


def test_gradient_bound_below_attack_upper_bound_on_relu_net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).to(DT)
    x = inputs(24, spread=0.4)
    with torch.no_grad():
        y = model(x).argmax(1)
    lower = gradient_margin_bound(model, x, y, "l2", radius=2.0, n_samples=256)
    upper = estimate_margin(model, x, y, "l2", "anpgd", rounds=3, steps=20)
    assert torch.all(lower > 0) and torch.all(lower <= upper * (1 + 1e-9))
    # more samples can only raise the Lipschitz estimate, i.e. lower the bound
    few = gradient_margin_bound(model, x, y, "l2", radius=2.0, n_samples=4, include_center=False)
    assert torch.all(lower <= few * (1 + 1e-12))


def test_gradient_bound_batch_independent_and_seeded():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10)).to(DT)
    x = inputs(10, spread=0.4)
    with torch.no_grad():
        y = model(x).argmax(1)
    kw = dict(radius=1.0, n_samples=16, n_batches=2, include_center=False, chunk_size=20)
    full = gradient_margin_bound(model, x, y, "l2", **kw)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(gradient_margin_bound(model, x[perm], y[perm], "l2", **kw), full[perm],
                          rtol=1e-12)
    assert torch.allclose(gradient_margin_bound(model, x[3:4], y[3:4], "l2", **kw), full[3:4],
                          rtol=1e-12)
    assert not torch.equal(gradient_margin_bound(model, x, y, "l2", seed=5, **kw), full)


# --------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------


def test_margin_stats_hand_made_vector():
    d = torch.tensor([0.0, 0.0, 0.5, 1.0, 2.0, 4.0, math.inf])
    s = margin_stats(d, thresholds=[0.1, 1.0, 3.0])
    assert s["n"] == 7
    assert s["count_misclassified"] == 2 and s["count_not_found"] == 1
    assert s["mean"] == math.inf
    assert s["mean_found"] == pytest.approx(7.5 / 6)
    assert s["median"] == 1.0
    assert s["q1"] == pytest.approx(0.25)  # position 1.5: between 0.0 and 0.5
    assert s["q3"] == pytest.approx(3.0)  # position 4.5: between 2.0 and 4.0
    assert s["min"] == 0.0 and s["max"] == math.inf
    assert s["fraction_below"] == {0.1: pytest.approx(2 / 7), 1.0: pytest.approx(3 / 7),
                                   3.0: pytest.approx(5 / 7)}
    f = margin_stats(d, failure_value=8.0)
    assert f["mean"] == pytest.approx(15.5 / 7) and f["max"] == 8.0
    assert f["count_not_found"] == 1 and f["mean_found"] == pytest.approx(7.5 / 6)
    # numpy's linear interpolation on finite data
    v = [0.3, 0.1, 0.9, 0.4]
    s2 = margin_stats(v)
    assert s2["q1"] == pytest.approx(0.25) and s2["median"] == pytest.approx(0.35)
    assert s2["q3"] == pytest.approx(0.525) and s2["mean"] == pytest.approx(0.425)
    assert s2["fraction_below"] == {}


@pytest.mark.parametrize("bad, match", [([], "empty"), ([0.1, -1.0], ">= 0"), ([math.nan], "NaN")])
def test_margin_stats_bad_inputs(bad, match):
    with pytest.raises(ValueError, match=match):
        margin_stats(torch.tensor(bad, dtype=DT))


# --------------------------------------------------------------------------------------
# conventions: modes, gradients, batch independence, validation
# --------------------------------------------------------------------------------------


def bn_net() -> nn.Module:
    torch.manual_seed(2)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(),
                        nn.Dropout(0.3), nn.Linear(16, 10)).to(DT)
    with torch.no_grad():
        net.train()
        net(inputs(32, seed=5, spread=0.5))
    return net


# fn="anpgd" (the minimal-norm search estimate_margin runs): tests/test_attack_contract.py
@pytest.mark.parametrize("fn", ["bound"])
def test_modes_grads_and_inputs_untouched(fn):
    net = bn_net()
    net.train()
    net[4].eval()
    modes = [m.training for m in net.modules()]
    stats = (net[2].running_mean.clone(), net[2].running_var.clone())
    for p in net.parameters():
        p.grad = torch.full_like(p, 2.0)
    net[1].bias.requires_grad_(False)
    req = [p.requires_grad for p in net.parameters()]
    x = inputs(12, spread=0.4)
    x0 = x.clone()
    with torch.no_grad():
        net.eval()
        y = net(x).argmax(1)
        net.train()
        net[4].eval()
    if fn == "anpgd":
        estimate_margin(net, x, y, "linf", "anpgd", rounds=2, steps=5)
    else:
        gradient_margin_bound(net, x, y, "l2", n_samples=8)
    assert [m.training for m in net.modules()] == modes
    assert [p.requires_grad for p in net.parameters()] == req
    assert all(torch.equal(p.grad, torch.full_like(p, 2.0)) for p in net.parameters())
    assert torch.equal(net[2].running_mean, stats[0]) and torch.equal(net[2].running_var, stats[1])
    assert torch.equal(x, x0)


def test_anpgd_margin_batch_independent():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).to(DT)
    x = inputs(10, spread=0.4)
    with torch.no_grad():
        y = net(x).argmax(1)
    y[0] = (y[0] + 1) % 10
    kw = dict(rounds=2, steps=10, n_search=12)
    full = estimate_margin(net, x, y, "l2", "anpgd", **kw)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(estimate_margin(net, x[perm], y[perm], "l2", "anpgd", **kw),
                          full[perm], rtol=1e-9)
    assert torch.allclose(estimate_margin(net, x[4:6], y[4:6], "l2", "anpgd", **kw), full[4:6],
                          rtol=1e-9)


def test_per_example_eps_max_for_anpgd(linear_case):
    model, _, cases = linear_case
    x, y, d = cases["linf"]
    x, y, d = x[:6], y[:6], d[:6]
    eps_max = torch.where(torch.arange(6) < 3, 2 * d, 0.5 * d)
    res = estimate_margin_result(model, x, y, "linf", "anpgd", eps_max=eps_max,
                                 eps_init=0.5 * d)
    assert bool(res.found[:3].all()) and not bool(res.found[3:].any())
    assert torch.allclose(res.distance[:3], d[:3], rtol=1e-3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="deepfool"), "method"),
        (dict(method="cw", norm="linf"), "l2 attack"),
        (dict(norm="l5"), "unknown norm"),
        (dict(method="anpgd", rounds=0), "rounds"),
        (dict(method="anpgd", eps_max=-1.0), ">= 0"),
        (dict(method="anpgd", eps_max=0.0), "eps_max must be > 0"),
        (dict(method="anpgd", eps_init=torch.ones(2)), r"shape \[4\]"),
    ],
)
def test_bad_arguments(kwargs, match):
    model, _ = linear_model()
    x = inputs(4)
    with torch.no_grad():
        y = model(x).argmax(1)
    kw = dict(norm="l2", method="anpgd")
    kw.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        estimate_margin(model, x, y, **kw)


def test_bad_data():
    model, _ = linear_model()
    x = inputs(4)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"box \[0, 1\]"):
        estimate_margin(model, x - 1, y, "l2", "anpgd")
    with pytest.raises(ValueError, match="labels"):
        estimate_margin(model, x, y[:3], "l2", "anpgd")
    with pytest.raises(ValueError, match="radius"):
        gradient_margin_bound(model, x, y, "l2", radius=0.0)
    with pytest.raises(ValueError, match="no gradient sample"):
        gradient_margin_bound(model, x, y, "l2", n_samples=0, include_center=False)
    assert isinstance(estimate_margin_result(model, x, y, "l2", "anpgd", rounds=1, steps=2),
                      MarginResult)
