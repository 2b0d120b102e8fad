"""Tests for wideberth.attacks.auto_pgd (APGD-CE, APGD-DLR, APGD-T; Croce & Hein, ICML 2020)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import wideberth as wb
from wideberth.attacks.apgd_iteration import _halve_mask
from wideberth.attacks.auto_pgd import (
    APGD,
    APGDT,
    apgd,
    apgd_ce,
    apgd_checkpoints,
    apgd_dlr,
    apgd_dlr_targeted,
)
from wideberth.threat import LinfBall, get_threat

TOL = 1e-5


# --------------------------------------------------------------------------------------
# models and data
# --------------------------------------------------------------------------------------


class RowwiseLinear(nn.Module):
    """``x W^T + b`` computed with broadcasting and a last-dim sum, which (unlike a BLAS
    matmul) gives bitwise the same row results whatever the batch size."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_out, d_in) / math.sqrt(d_in))
        self.bias = nn.Parameter(torch.zeros(d_out))

    def forward(self, x: Tensor) -> Tensor:
        return (x.unsqueeze(1) * self.weight).sum(-1) + self.bias


def _train(model: nn.Module, x: Tensor, y: Tensor, steps: int = 300) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (128,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def digits() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    xtr, ytr = wb.data.tensors("digits", "train")
    xte, yte = wb.data.tensors("digits", "test", n=120)
    return xtr, ytr, xte, yte


@pytest.fixture(scope="module")
def mlp(digits) -> nn.Module:
    """A small MLP trained for a few hundred Adam steps on sklearn digits (~96% test acc)."""
    torch.manual_seed(0)
    xtr, ytr, _, _ = digits
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    return _train(model, xtr, ytr)


@pytest.fixture(scope="module")
def rowwise_mlp(digits) -> nn.Module:
    torch.manual_seed(1)
    xtr, ytr, _, _ = digits
    model = nn.Sequential(nn.Flatten(), RowwiseLinear(64, 32), nn.ReLU(), RowwiseLinear(32, 10))
    return _train(model, xtr, ytr)


def _linear_problem(k: int, n: int, norm: str, seed: int = 0):
    """A random linear classifier on 1×8×8 inputs in [0.3, 0.7], labels = its predictions,
    and the closed-form distance to the decision boundary of each point:
    ``min_{j≠y} (f_y − f_j) / ‖w_y − w_j‖_dual`` (box inactive; checked by the caller)."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(64, k).double()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(k, 64, generator=g, dtype=torch.float64))
        lin.bias.copy_(torch.randn(k, generator=g, dtype=torch.float64))
    model = nn.Sequential(nn.Flatten(), lin)
    x = 0.3 + 0.4 * torch.rand(n, 1, 8, 8, generator=g, dtype=torch.float64)
    with torch.no_grad():
        f = model(x)
    y = f.argmax(1)
    w = lin.weight.detach()
    diff = w[y][:, None, :] - w[None, :, :]  # [n, k, 64]: w_y − w_j
    gap = f.gather(1, y[:, None]) - f  # [n, k]: f_y − f_j
    dual = diff.abs().sum(-1) if norm == "linf" else diff.norm(dim=-1)
    ratio = torch.where(gap > 0, gap / dual, torch.full_like(gap, math.inf))
    margin, nearest = ratio.min(1)
    # the optimal perturbation moves towards the nearest class; check the box stays inactive
    d_near = -diff[torch.arange(n), nearest]
    if norm == "linf":
        d_opt = margin[:, None] * d_near.sign()
    else:
        d_opt = margin[:, None] * d_near / d_near.norm(dim=1, keepdim=True)
    x_opt = x.flatten(1) + 1.05 * d_opt
    assert bool((x_opt >= 0).all() and (x_opt <= 1).all()), "box must be inactive for this test"
    return model, x, y, margin


def _broken(model: nn.Module, x_adv: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


def _assert_feasible(x_adv: Tensor, x: Tensor, eps, norm: str) -> None:
    e = torch.as_tensor(eps, dtype=x.dtype).expand(x.shape[0])
    n = get_threat(norm).norm(x_adv - x)
    assert bool((n <= e * (1 + TOL)).all()), float((n - e).max())
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device


# --------------------------------------------------------------------------------------
# checkpoints and the step-size schedule
# --------------------------------------------------------------------------------------


def _closed_form_checkpoints(n: int) -> list[int]:
    # p_j in hundredths (integers): p0 = 0, p1 = 22, p_{j+1} = p_j + max(p_j − p_{j−1} − 3, 6)
    prev, p, out = 0, 22, []
    while p <= 100:
        w = -(-p * n // 100)  # ceil(p_j · n) exactly
        if w >= 1 and (not out or w > out[-1]):
            out.append(w)
        prev, p = p, p + max(p - prev - 3, 6)
    return out


def test_checkpoints_closed_form():
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(100) == _closed_form_checkpoints(100)
    for n in (0, 1, 5, 10, 37, 250, 1000):
        w = apgd_checkpoints(n)
        assert w == _closed_form_checkpoints(n)
        assert w == sorted(set(w)) and all(1 <= v <= n for v in w)
    assert apgd_checkpoints(0) == []
    with pytest.raises(ValueError):
        apgd_checkpoints(-1)


class RecordingLinf(LinfBall):
    """ℓ∞ threat model that records the step size of every step."""

    def __init__(self) -> None:
        self.sizes: list[Tensor] = []

    def step(self, grad, step_size, x_adv=None):
        self.sizes.append(torch.as_tensor(step_size).clone())
        return super().step(grad, step_size, x_adv)


def test_step_size_halves_at_every_checkpoint_without_progress():
    # A constant model: the loss never increases, so condition 1 holds at every checkpoint
    # and each example's step size 2ε is halved there (and only there).
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        model[1].weight.zero_()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)  # all correctly classified, so all attacked
    eps = torch.tensor([0.1, 0.2, 0.0])
    threat = RecordingLinf()
    apgd(model, x, y, norm=threat, eps=eps, steps=100)
    assert len(threat.sizes) == 100
    ckpts = apgd_checkpoints(100)
    for k, size in enumerate(threat.sizes, start=1):
        halvings = sum(w < k for w in ckpts)
        torch.testing.assert_close(size, 2 * eps / 2**halvings, rtol=0, atol=0)


def test_checkpoint_conditions():
    # h = 22 steps since the last checkpoint, ρ = 0.75: condition 1 ⇔ increases < 16.5;
    # condition 2 ⇔ not halved last time and best loss not improved.
    n_incr = torch.tensor([0, 17, 16, 17, 17, 22])
    reduced_last = torch.tensor([False, False, False, True, False, True])
    best_at_last = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    best_loss = torch.tensor([1.0, 1.0, 2.0, 1.0, 1.5, 3.0])
    got = _halve_mask(n_incr, 22, 0.75, reduced_last, best_loss, best_at_last)
    assert got.tolist() == [True, True, True, False, False, False]
    # the paper's strict "<": exactly ρ·h increases (15 of 20) is enough to keep η
    got = _halve_mask(torch.tensor([15, 14]), 20, 0.75, torch.tensor([True, True]),
                      torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0]))
    assert got.tolist() == [False, True]


# --------------------------------------------------------------------------------------
# feasibility
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm,scale", [("linf", 0.1), ("l2", 1.0)])
@pytest.mark.parametrize("per_example", [False, True])
def test_untargeted_dlr_outputs_feasible(mlp, digits, norm, scale, per_example):
    _, _, x, y = digits
    x, y = x[:40], y[:40]
    x0 = x.clone()
    if per_example:
        eps = scale * (0.2 + 1.8 * torch.rand(40, generator=torch.Generator().manual_seed(3)))
        eps[0] = 0.0
    else:
        eps = scale
    # APGD-CE and APGD-T (registered as "apgd-ce" and "apgd-t"): tests/test_attack_contract.py
    for fn in (apgd_dlr,):
        x_adv = fn(mlp, x, y, norm=norm, eps=eps, steps=15, restarts=2)
        _assert_feasible(x_adv, x, eps, norm)
        if per_example:
            assert torch.equal(x_adv[0], x[0])  # ε = 0 leaves the example where it was
        assert torch.equal(x, x0)  # inputs never modified


def test_targeted_outputs_feasible(mlp, digits):
    _, _, x, y = digits
    x, y = x[:30], y[:30]
    t = (y + 1) % 10
    for norm, eps in (("linf", 0.2), ("l2", 1.5)):
        x_adv = apgd(mlp, x, y, norm=norm, eps=eps, steps=20, targeted=True, y_target=t)
        _assert_feasible(x_adv, x, eps, norm)


# --------------------------------------------------------------------------------------
# closed-form margins of linear classifiers
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_untargeted_binary_linear_closed_form(norm):
    # K = 2: the CE gradient points straight at the only other class, so APGD-CE must
    # break every point whose ε exceeds its margin and (feasibility) none below it.
    model, x, y, margin = _linear_problem(2, 100, norm)
    above = apgd_ce(model, x, y, norm=norm, eps=1.01 * margin, steps=30)
    below = apgd_ce(model, x, y, norm=norm, eps=0.99 * margin, steps=30)
    assert _broken(model, above, y).float().mean() >= 0.99
    assert not bool(_broken(model, below, y).any())
    _assert_feasible(above, x, 1.01 * margin, norm)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_targeted_dlr_linear_closed_form(norm):
    # K = 10: APGD-T runs towards every other class (n_target_classes = 9 = K − 1), the
    # nearest one included, so it reaches the closed-form margin.
    model, x, y, margin = _linear_problem(10, 60, norm, seed=1)
    above = apgd_dlr_targeted(model, x, y, norm=norm, eps=1.02 * margin, steps=100)
    below = apgd_dlr_targeted(model, x, y, norm=norm, eps=0.98 * margin, steps=30)
    assert _broken(model, above, y).float().mean() >= 0.99
    assert not bool(_broken(model, below, y).any())
    _assert_feasible(above, x, 1.02 * margin, norm)


def test_targeted_reaches_target_on_linear_model():
    model, x, y, _ = _linear_problem(10, 40, "linf", seed=2)
    with torch.no_grad():
        t = model(x).topk(2, dim=1).indices[:, 1]  # the runner-up class
    x_adv = apgd(model, x, y, norm="linf", eps=0.25, steps=50, targeted=True, y_target=t,
                 loss="dlr")
    with torch.no_grad():
        hit = model(x_adv).argmax(1) == t
    assert hit.float().mean() >= 0.95
    # and with ε = 0 nothing moves
    x0 = apgd(model, x, y, norm="linf", eps=0.0, steps=5, targeted=True, y_target=t)
    assert torch.equal(x0, x)


# --------------------------------------------------------------------------------------
# strength on a trained model
# --------------------------------------------------------------------------------------


def _fgm(model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str) -> Tensor:
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
    if norm == "linf":
        step = g.sign()
    else:
        step = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return get_threat(norm).project(eps * step, x, eps) + x


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.6)])
def test_apgd_ce_stronger_than_fgsm(mlp, digits, norm, eps):
    _, _, x, y = digits
    with torch.no_grad():
        clean = (mlp(x).argmax(1) == y).float().mean()
    fgm_acc = 1 - _broken(mlp, _fgm(mlp, x, y, eps, norm), y).float().mean()
    x_adv = apgd_ce(mlp, x, y, norm=norm, eps=eps)
    apgd_acc = 1 - _broken(mlp, x_adv, y).float().mean()
    apgdt_acc = 1 - _broken(mlp, apgd_dlr_targeted(mlp, x, y, norm=norm, eps=eps, steps=50),
                            y).float().mean()
    assert clean > 0.9
    assert apgd_acc <= fgm_acc
    assert apgd_acc <= clean - 0.3
    assert apgdt_acc <= clean - 0.3
    # more restarts never lose a success (restart 0 is the same run)
    more = apgd_ce(mlp, x, y, norm=norm, eps=eps, restarts=3)
    assert bool((_broken(mlp, more, y) >= _broken(mlp, x_adv, y)).all())


def test_early_stop_keeps_clean_errors(mlp, digits):
    _, _, x, y = digits
    y = y.clone()
    y[:3] = (y[:3] + 1) % 10  # make three examples misclassified already
    x_adv = apgd_ce(mlp, x[:10], y[:10], norm="linf", eps=0.2, steps=10)
    wrong = _broken(mlp, x[:10], y[:10])
    assert bool(wrong[:3].all())
    assert torch.equal(x_adv[wrong], x[:10][wrong])


def test_unbroken_examples_get_high_loss_points(mlp, digits):
    # with a tiny budget nothing breaks; the returned points must still have gained loss
    _, _, x, y = digits
    x, y = x[:30], y[:30]
    ok = ~_broken(mlp, x, y)
    x_adv = apgd_ce(mlp, x, y, norm="linf", eps=0.01, steps=30)
    with torch.no_grad():
        gain = F.cross_entropy(mlp(x_adv), y, reduction="none") - F.cross_entropy(
            mlp(x), y, reduction="none"
        )
    assert bool((gain[ok] > 0).all())


# --------------------------------------------------------------------------------------
# batch independence
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm,eps", [("linf", 0.06), ("l2", 0.45)])
@pytest.mark.parametrize("fn", [apgd_ce, apgd_dlr_targeted])
def test_batch_independence_exact(rowwise_mlp, digits, norm, eps, fn):
    # rowwise_mlp gives bitwise identical rows whatever the batch, so the attack's own
    # computations must too: a subset, and a permutation, give the same rows.
    _, _, x, y = digits
    x, y = x[:20], y[:20]
    kw = {"steps": 25, "restarts": 2} if fn is apgd_ce else {"steps": 15, "n_target_classes": 3}
    full = fn(rowwise_mlp, x, y, norm=norm, eps=eps, **kw)
    nb = int(_broken(rowwise_mlp, full, y).sum())
    assert 0 < nb < 20  # later restarts / targets attack a proper subset
    part = fn(rowwise_mlp, x[:5], y[:5], norm=norm, eps=eps, **kw)
    assert torch.equal(part, full[:5])
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    permuted = fn(rowwise_mlp, x[perm], y[perm], norm=norm, eps=eps, **kw)
    assert torch.equal(permuted, full[perm])


# --------------------------------------------------------------------------------------
# API, options (model state, bad inputs, BLAS-model batch independence of APGD-CE and
# APGD-T: tests/test_attack_contract.py)
# --------------------------------------------------------------------------------------


def test_class_api_matches_functions(mlp, digits):
    _, _, x, y = digits
    x, y = x[:12], y[:12]
    atk = APGD(mlp, norm="l2", eps=0.5, steps=10)
    assert torch.equal(atk(x, y), apgd(mlp, x, y, norm="l2", eps=0.5, steps=10))
    assert torch.equal(atk(x, y, eps=0.3), apgd(mlp, x, y, norm="l2", eps=0.3, steps=10))
    atk_t = APGDT(mlp, norm="linf", eps=0.1, steps=10, n_target_classes=2)
    assert torch.equal(
        atk_t(x, y),
        apgd_dlr_targeted(mlp, x, y, norm="linf", eps=0.1, steps=10, n_target_classes=2),
    )
    assert "APGD(" in repr(atk)


def test_generator_reproducible(mlp, digits):
    _, _, x, y = digits
    x, y = x[:16], y[:16]
    runs = [
        apgd_ce(mlp, x, y, norm="linf", eps=0.08, steps=10,
                generator=torch.Generator().manual_seed(5))
        for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])
    _assert_feasible(runs[0], x, 0.08, "linf")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda(mlp, digits):
    _, _, x, y = digits
    model = mlp.to("cuda")
    try:
        xc, yc = x[:32].cuda(), y[:32].cuda()
        for norm, eps in (("linf", 0.1), ("l2", 1.0)):
            xa = apgd_ce(model, xc, yc, norm=norm, eps=torch.full((32,), eps, device="cuda"))
            _assert_feasible(xa, xc, eps, norm)
            xt = apgd_dlr_targeted(model, xc, yc, norm=norm, eps=eps, steps=10)
            assert xt.device == xc.device
    finally:
        mlp.to("cpu")


def test_bad_options(mlp, digits):
    _, _, x, y = digits
    x, y = x[:8], y[:8]
    # x, labels and ε (apgd_ce, apgd_dlr_targeted): tests/test_attack_contract.py
    with pytest.raises(ValueError, match="pgd"):
        apgd_ce(mlp, x, y, norm="l1", eps=1.0)
    with pytest.raises(ValueError, match="pgd"):
        apgd_dlr_targeted(mlp, x, y, norm="l1", eps=1.0)
    with pytest.raises(ValueError, match="restarts"):
        apgd_ce(mlp, x, y, norm="linf", eps=0.1, restarts=0)
    with pytest.raises(ValueError, match="steps"):
        apgd_ce(mlp, x, y, norm="linf", eps=0.1, steps=-1)
    with pytest.raises(ValueError, match="rho"):
        apgd(mlp, x, y, norm="linf", eps=0.1, rho=0.0)
    with pytest.raises(ValueError, match="y_target"):
        apgd(mlp, x, y, norm="linf", eps=0.1, targeted=True)
    with pytest.raises(ValueError, match="differ"):
        apgd(mlp, x, y, norm="linf", eps=0.1, targeted=True, y_target=y)
    with pytest.raises(ValueError, match="labels"):
        apgd(mlp, x, y, norm="linf", eps=0.1, targeted=True, y_target=torch.full((8,), 12))
    with pytest.raises(ValueError, match="n_target_classes"):
        apgd_dlr_targeted(mlp, x, y, norm="linf", eps=0.1, n_target_classes=0)


@pytest.mark.parametrize("k", [2, 3])
def test_targeted_dlr_needs_four_classes(k):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, k))
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="at least 4 classes"):
        apgd_dlr_targeted(model, x, y, norm="linf", eps=0.1)
    with pytest.raises(ValueError, match="at least 4 classes"):
        apgd(model, x, y, norm="linf", eps=0.1, loss="dlr", targeted=True,
             y_target=torch.ones(4, dtype=torch.long))
    if k == 2:
        with pytest.raises(ValueError, match="at least 3 classes"):
            apgd_dlr(model, x, y, norm="linf", eps=0.1)
    # targeted CE works with any K >= 2
    out = apgd_dlr_targeted(model, x, y, norm="linf", eps=0.1, steps=5, loss="ce")
    assert out.shape == x.shape


class RecordingPoints(LinfBall):
    """ℓ∞ threat model that records the point each step starts from, and its step size."""

    def __init__(self) -> None:
        self.points: list[Tensor] = []
        self.sizes: list[Tensor] = []

    def step(self, grad, step_size, x_adv=None):
        self.points.append(x_adv.clone())
        self.sizes.append(torch.as_tensor(step_size).clone())
        return super().step(grad, step_size, x_adv)


def test_halving_restarts_from_best_point(mlp, digits):
    # After a halving at checkpoint w, the next step must start from x_max: a point at least
    # as good (in loss) as every earlier iterate.
    _, _, x, y = digits
    x, y = x[:40], y[:40]
    threat = RecordingPoints()
    apgd_ce(mlp, x, y, norm=threat, eps=0.05, steps=60, early_stop=False)
    with torch.no_grad():
        losses = torch.stack([F.cross_entropy(mlp(p), y, reduction="none") for p in threat.points])
    sizes = torch.stack(threat.sizes)
    n_checked = 0
    for k in range(1, len(sizes)):
        halved = sizes[k] < sizes[k - 1]
        if bool(halved.any()):
            before = losses[:k].amax(0)
            assert bool((losses[k][halved] >= before[halved] - 1e-5).all())
            n_checked += int(halved.sum())
    assert n_checked > 10


def test_targets_are_highest_non_true_classes():
    # With one target it must be the runner-up class (the highest non-true logit), never the
    # true class: on a linear model a large budget then breaks (nearly) every point.
    model, x, y, margin = _linear_problem(10, 40, "linf", seed=3)
    x_adv = apgd_dlr_targeted(model, x, y, norm="linf", eps=3 * margin, steps=20,
                              n_target_classes=1)
    assert _broken(model, x_adv, y).float().mean() >= 0.9
