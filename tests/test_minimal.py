"""Tests for wideberth.attacks.carlini_wagner and .fast_minimum_norm: CW-ℓ2 and FMN (ℓ2 / ℓ∞ / ℓ1) minimal-norm attacks.

Ground truth comes from linear classifiers, whose margins have closed forms
(specs/mma.md §1.6 fact 4): d(x) = min_{k≠y} (f_y − f_k) / ‖w_y − w_k‖_dual when the box
[0, 1] is inactive (ℓ2 and ℓ∞ here, checked), and a fractional-knapsack LP for ℓ1, where
the optimal perturbation is sparse and the box is active.
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
from wideberth.losses import logit_margin
from wideberth.threat import get_threat

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


@pytest.mark.parametrize("name", list(ATTACKS))
def test_result_contract(lin: Linear, linear_results, name: str):
    res = linear_results[name]
    threat = get_threat(NORM_OF[name])
    assert res.x_adv.shape == lin.x.shape and res.x_adv.dtype == lin.x.dtype
    assert res.distance.shape == (B,) and res.found.shape == (B,)
    assert res.found.dtype == torch.bool
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    with torch.no_grad():
        lm = logit_margin(lin.model(res.x_adv), lin.y)
    assert bool((lm[res.found] >= 0).all()), "a found x_adv is not misclassified"
    d = threat.norm(res.x_adv - lin.x)
    assert torch.allclose(res.distance[res.found], d[res.found], rtol=1e-6, atol=1e-7)


def _mixed_batch(lin: Linear) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """First 12 points, every third relabelled to a wrong class (already misclassified)."""
    x, y = lin.x[:12], lin.y[:12].clone()
    wrong = torch.zeros(12, dtype=torch.bool)
    wrong[::3] = True
    y[wrong] = (y[wrong] + 1) % K
    return x, y, wrong


@pytest.mark.parametrize("name", list(ATTACKS))
def test_already_misclassified(lin: Linear, name: str):
    x, y, wrong = _mixed_batch(lin)
    steps = {"cw-l2": lambda m, a, b: cw_l2(m, a, b, steps=30, binary_search_steps=3)}
    res = steps.get(name, ATTACKS[name])(lin.model, x, y)
    assert bool(res.found[wrong].all())
    assert bool((res.distance[wrong] == 0).all())
    assert torch.equal(res.x_adv[wrong], x[wrong])
    assert bool((res.distance[~wrong] > 0).all())


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


# --------------------------------------------------------------------------------------
# batch independence, modes, gradients, inputs
# --------------------------------------------------------------------------------------

FAST = {
    "fmn-l2": lambda m, x, y: fmn(m, x, y, norm="l2", steps=40),
    "fmn-linf": lambda m, x, y: fmn(m, x, y, norm="linf", steps=40),
    "fmn-l1": lambda m, x, y: fmn(m, x, y, norm="l1", steps=40),
    # abort-early fires here: a batch-level abort test would make the results batch-dependent
    "cw-l2": lambda m, x, y: cw_l2(
        m, x, y, steps=100, binary_search_steps=3, initial_const=10.0, lr=0.05
    ),
}


def _close(a: MinimalNormResult, b: MinimalNormResult) -> None:
    assert torch.equal(a.found, b.found)
    assert torch.allclose(a.x_adv, b.x_adv, atol=1e-5)
    fin = torch.isfinite(a.distance)
    assert torch.equal(fin, torch.isfinite(b.distance))
    assert torch.allclose(a.distance[fin], b.distance[fin], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", list(FAST))
def test_batch_independence(name: str):
    model = _mlp().eval()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(20, 1, 8, 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[2] = (y[2] + 1) % K  # one already-misclassified example in the mix
    atk = FAST[name]
    whole = atk(model, x, y)
    part = atk(model, x[:5], y[:5])
    _close(part, MinimalNormResult(whole.x_adv[:5], whole.distance[:5], whole.found[:5]))
    perm = torch.randperm(20, generator=g)
    shuffled = atk(model, x[perm], y[perm])
    _close(shuffled, MinimalNormResult(whole.x_adv[perm], whole.distance[perm], whole.found[perm]))
    assert bool(whole.found.sum() >= 10)  # the comparison is about actual adversarials


@pytest.mark.parametrize("name", list(FAST))
def test_modes_grads_and_inputs_untouched(name: str):
    model = _mlp(bn=True)
    model.train()
    model[2].eval()  # a BatchNorm frozen on its own must come back frozen
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    y = torch.arange(6) % K
    model[-1].weight.requires_grad_(False)
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.25)
    modes = [m.training for m in model.modules()]
    req = [p.requires_grad for p in model.parameters()]
    x0, y0 = x.clone(), y.clone()
    seen: list[bool] = []
    hook = model[2].register_forward_hook(lambda m, i, o: seen.append(model.training))
    FAST[name](model, x, y)
    hook.remove()
    assert seen and not any(seen), "the attack must run the model in eval mode"
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == req
    for p in model.parameters():
        assert torch.equal(p.grad, torch.full_like(p, 0.25))
    assert torch.equal(x, x0) and torch.equal(y, y0)


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
def test_bad_inputs(lin: Linear, attack):
    x, y = lin.x[:4], lin.y[:4]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attack(lin.model, x + 1.0, y)
    with pytest.raises(ValueError, match="labels"):
        attack(lin.model, x, torch.tensor([0, 1, 2, K]))
    with pytest.raises(ValueError, match="labels"):
        attack(lin.model, x, torch.tensor([0, -1, 2, 3]))
    with pytest.raises(ValueError):
        attack(lin.model, x, y[:3])
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
