"""Tests for wideberth.attacks.carlini_wagner and .fast_minimum_norm: CW-ℓ2 and FMN
(ℓ2 / ℓ∞ / ℓ1) minimal-norm attacks.

Ground truth comes from linear classifiers, whose margins have closed forms (the distance
to a hyperplane in the dual norm): d(x) = min_{k≠y} (f_y − f_k) / ‖w_y − w_k‖_dual when the
box [0, 1] is inactive (ℓ2 and ℓ∞ here, checked), and a fractional-knapsack LP for ℓ1,
where the optimal perturbation is sparse and the box is active.

The result contract (shapes, found ⇒ misclassified, distances, already-misclassified
examples), batch independence, model-state restoration and bad-input errors of both
attacks are checked by tests/test_attack_contract.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from wideberth.attacks import (
    CWL2,
    FMN,
    MinimalNormResult,
    cw_l2,
    cw_l2_attack,
    fmn,
    fmn_attack,
)

D, K, B = 64, 10, 48
CW_STEPS = 300  # enough for < 1% on the linear problem (measured max rel. error ~0.3%)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    # tiny tensors: one thread avoids thread hand-off overhead on busy 2-core machines
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------------------
# a random linear 10-class model on 1×8×8 inputs near 0.5, with closed-form margins
# --------------------------------------------------------------------------------------


class Linear:
    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(D, K))
        with torch.no_grad():
            self.model[1].weight.copy_(torch.randn(K, D, generator=g))
            self.model[1].bias.copy_(torch.randn(K, generator=g))
        self.model.eval()
        self.x = 0.5 + 0.1 * (2 * torch.rand(B, 1, 8, 8, generator=g) - 1)
        with torch.no_grad():
            self.y = self.model(self.x).argmax(1)  # every point correctly classified
        # float64 copies for the ground truth
        self.W = self.model[1].weight.detach().double()
        self.b = self.model[1].bias.detach().double()
        self.xf = self.x.reshape(B, D).double()
        self.f = self.xf @ self.W.T + self.b

    def closed_form(self, norm: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(distance [B], optimal δ [B, D]) ignoring the box."""
        u = self.W[None, :, :] - self.W[self.y][:, None, :]  # [B, K, D]: ∇(f_k − f_y)
        gap = self.f.gather(1, self.y[:, None]) - self.f  # f_y − f_k ≥ 0
        dual = u.norm(dim=2) if norm == "l2" else u.abs().sum(2)
        r = gap / dual
        r[torch.arange(B), self.y] = math.inf
        d, k = r.min(1)
        uk = u[torch.arange(B), k]
        direction = uk / uk.norm(dim=1, keepdim=True) if norm == "l2" else uk.sign()
        return d, d[:, None] * direction

    def l1_box(self) -> torch.Tensor:
        """Exact minimal ℓ1 distance within the box (per class a fractional knapsack)."""
        out = torch.full((B,), math.inf, dtype=torch.float64)
        for i in range(B):
            for k in range(K):
                if k == int(self.y[i]):
                    continue
                u = self.W[k] - self.W[self.y[i]]
                need = float(self.f[i, self.y[i]] - self.f[i, k])
                cap = torch.where(u > 0, 1 - self.xf[i], self.xf[i])
                gained, cost = 0.0, 0.0
                for j in u.abs().argsort(descending=True).tolist():
                    a, c = float(u[j].abs()), float(cap[j])
                    if a * c >= need - gained:
                        cost += (need - gained) / a
                        gained = need
                        break
                    gained += a * c
                    cost += c
                if gained >= need:
                    out[i] = min(float(out[i]), cost)
        return out


@pytest.fixture(scope="module")
def lin() -> Linear:
    return Linear()


def _mlp(seed: int = 1, bn: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(D, 32)]
    if bn:
        layers += [nn.BatchNorm1d(32), nn.Dropout(0.3)]
    layers += [nn.ReLU(), nn.Linear(32, K)]
    return nn.Sequential(*layers)


ATTACKS = {
    "fmn-l2": lambda m, x, y: fmn(m, x, y, norm="l2"),
    "fmn-linf": lambda m, x, y: fmn(m, x, y, norm="linf"),
    "fmn-l1": lambda m, x, y: fmn(m, x, y, norm="l1"),
    "cw-l2": lambda m, x, y: cw_l2(m, x, y, steps=CW_STEPS),
}
NORM_OF = {"fmn-l2": "l2", "fmn-linf": "linf", "fmn-l1": "l1", "cw-l2": "l2"}


@pytest.fixture(scope="module")
def linear_results(lin: Linear) -> dict[str, MinimalNormResult]:
    return {name: atk(lin.model, lin.x, lin.y) for name, atk in ATTACKS.items()}


# --------------------------------------------------------------------------------------
# accuracy against the closed form
# --------------------------------------------------------------------------------------


def test_closed_form_box_inactive(lin: Linear):
    """The ℓ2 / ℓ∞ ground truth ignores the box: check the optimal points lie inside it."""
    for norm in ("l2", "linf"):
        _, delta = lin.closed_form(norm)
        z = lin.xf + delta
        assert float(z.min()) > 0 and float(z.max()) < 1


@pytest.mark.parametrize("name", list(ATTACKS))
def test_linear_margin_within_1_percent(lin: Linear, linear_results, name: str):
    res = linear_results[name]
    norm = NORM_OF[name]
    truth = lin.l1_box() if norm == "l1" else lin.closed_form(norm)[0]
    assert bool(res.found.all())
    rel = res.distance.double() / truth - 1
    # an attack can never beat the true minimum (up to float32 rounding) ...
    assert float(rel.min()) > -1e-4, f"{name}: below the exact margin by {float(rel.min()):.2e}"
    # ... and must come within 1% of it for every point
    assert float(rel.max()) < 0.01, f"{name}: max relative error {float(rel.max()):.4f}"


def test_fmn_linf_distance_is_linf(lin: Linear, linear_results):
    """ℓ∞ and ℓ2 margins differ a lot; a wrong norm in the bookkeeping would show here."""
    d_inf = lin.closed_form("linf")[0]
    d_2 = lin.closed_form("l2")[0]
    assert bool((d_2 > 2 * d_inf).all())
    assert torch.allclose(linear_results["fmn-linf"].distance.double(), d_inf, rtol=0.01)


# --------------------------------------------------------------------------------------
# contract of every result
# --------------------------------------------------------------------------------------


def test_ties_count_as_misclassified():
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, K))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.zero_()  # every logit 0: a tie, which counts as wrong
    x = torch.full((3, 1, 8, 8), 0.5)
    y = torch.tensor([0, 4, 9])
    for res in (fmn(model, x, y), cw_l2(model, x, y, steps=5)):
        assert bool(res.found.all()) and bool((res.distance == 0).all())
        assert torch.equal(res.x_adv, x)


def test_not_found_reported(lin: Linear):
    """A constant too small and a single round: CW cannot reach the boundary."""
    x, y = lin.x[:6], lin.y[:6]
    res = cw_l2(lin.model, x, y, steps=20, binary_search_steps=1, initial_const=1e-3)
    assert not bool(res.found.any())
    assert bool(torch.isinf(res.distance).all())
    assert torch.equal(res.x_adv, x)
    res = fmn(lin.model, x, y, steps=1, alpha_init=1e-6)
    assert not bool(res.found.any())
    assert bool(torch.isinf(res.distance).all())
    assert torch.equal(res.x_adv, x)


def test_cw_binary_search_improves(lin: Linear):
    """One round at a large c finds a (looser) adversarial; the search tightens it."""
    x, y = lin.x[:8], lin.y[:8]
    one = cw_l2(lin.model, x, y, steps=CW_STEPS, binary_search_steps=1, initial_const=100.0)
    full = cw_l2(lin.model, x, y, steps=CW_STEPS, binary_search_steps=9, initial_const=100.0)
    assert bool(one.found.all()) and bool(full.found.all())
    assert bool((full.distance <= one.distance * (1 + 1e-6)).all())
    assert bool((full.distance < 0.999 * one.distance).any())
    # ten or more rounds take AdverTorch's "repeat the upper bound" path
    ten = cw_l2(lin.model, x, y, steps=20, binary_search_steps=10, initial_const=100.0)
    assert bool(ten.found.all())


def test_float64_and_classes(lin: Linear):
    model = _mlp().double().eval()
    x = lin.x[:4].double()
    with torch.no_grad():
        y = model(x).argmax(1)
    for res in (fmn(model, x, y, steps=30), cw_l2(model, x, y, steps=20, binary_search_steps=2)):
        assert res.x_adv.dtype == torch.float64 and res.distance.dtype == torch.float64
    atk = FMN(model, norm="linf", steps=30)
    assert torch.equal(atk(x, y), fmn(model, x, y, norm="linf", steps=30).x_adv)
    assert torch.equal(atk.result(x, y).x_adv, atk(x, y))
    assert torch.equal(fmn_attack(model, x, y, steps=30), fmn(model, x, y, steps=30).x_adv)
    cw = CWL2(model, steps=20, binary_search_steps=2)
    ref = cw_l2(model, x, y, steps=20, binary_search_steps=2)
    assert torch.equal(cw(x, y), ref.x_adv)
    assert torch.equal(cw.result(x, y).distance, ref.distance)
    assert torch.equal(cw_l2_attack(model, x, y, steps=20, binary_search_steps=2), ref.x_adv)


@pytest.mark.parametrize("attack", [fmn, cw_l2])
def test_bad_steps(lin: Linear, attack):
    x, y = lin.x[:4], lin.y[:4]
    with pytest.raises(ValueError, match="steps"):
        attack(lin.model, x, y, steps=0)


def test_bad_hyperparameters(lin: Linear):
    x, y = lin.x[:2], lin.y[:2]
    with pytest.raises(ValueError, match="norm"):
        fmn(lin.model, x, y, norm="l3")
    with pytest.raises(ValueError, match="gamma_init"):
        fmn(lin.model, x, y, gamma_init=1.5)
    with pytest.raises(ValueError, match="alpha_init"):
        fmn(lin.model, x, y, alpha_init=0.0)
    with pytest.raises(ValueError, match="kappa"):
        cw_l2(lin.model, x, y, kappa=-1.0)
    with pytest.raises(ValueError, match="initial_const"):
        cw_l2(lin.model, x, y, initial_const=0.0)
    with pytest.raises(ValueError, match="binary_search_steps"):
        cw_l2(lin.model, x, y, binary_search_steps=0)


def test_cw_and_fmn_agree_on_relu_mlp():
    """No closed form for a ReLU network; two different algorithms must still agree."""
    model = _mlp().eval()
    x = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = model(x).argmax(1)
    a = fmn(model, x, y, norm="l2")
    b = cw_l2(model, x, y, steps=200)
    assert bool(a.found.all()) and bool(b.found.all())
    assert float((b.distance / a.distance - 1).abs().max()) < 0.05
