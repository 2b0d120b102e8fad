"""Applications of the unified min-max framework (Wang et al. 2021, §2.2 eqs. (6), (7)):
the universal perturbation over a group of K inputs and the robust attack over K data
transformations (APGDA vs the average-loss / EOT baselines)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from wideberth.minmax import (
    bind_generator,
    ensemble_attack,
    group_box,
    on_simplex,
    transform_attack,
    transform_metrics,
    universal_attack,
    universal_metrics,
)
from wideberth.transforms import (
    Compose,
    HFlip,
    Identity,
    RandomApply,
    RandomCenterCrop,
    paper_transforms,
)

TOL = 1e-5


def mlp(c: int = 1, s: int = 4, classes: int = 5, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(c * s * s, 16), nn.ReLU(), nn.Linear(16, classes))


def cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)
    )


def data(n: int, c: int = 1, s: int = 4, classes: int = 5, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, s, s, generator=g), torch.randint(0, classes, (n,), generator=g)


# --------------------------------------------------------------------------------------
# universal perturbation (eq. (6))
# --------------------------------------------------------------------------------------


def hard_pair():
    """One group of two images sharing δ: A (label 0) is easy, B (label 1) is hard. Pixel 0
    helps A and hurts B (and vice versa) with |∂m_A| = 50 > |∂m_B| = 20, so the average
    loss pushes pixel 0 the way A wants and B stays correct; B can still be fooled if pixel
    0 goes the other way (both margins < 0 at δ0 ≈ −0.23, δ1 = 0.3)."""
    lin = nn.Linear(16, 3)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.copy_(torch.tensor([10.0, -8.0, 0.0]))
        lin.weight[0, 0], lin.weight[1, 0], lin.weight[2, 1] = -50.0, 20.0, 100.0
        lin.weight[0, 2], lin.weight[1, 3] = 80.0, 80.0
    x = torch.full((1, 2, 1, 4, 4), 0.5)
    x[0, 0, 0, 0, 2], x[0, 0, 0, 0, 3] = 1.0, 0.0
    x[0, 1, 0, 0, 2], x[0, 1, 0, 0, 3] = 0.0, 1.0
    return nn.Sequential(nn.Flatten(), lin), x, torch.tensor([[0, 1]])


@pytest.mark.parametrize("norm,eps", [("linf", 0.2), ("l2", 0.8)])
def test_universal_delta_shared_and_feasible(norm, eps):
    model = mlp()
    x, y = data(12)
    r = universal_attack(model, x, y, group_size=4, norm=norm, eps=eps, steps=10, alpha=0.05,
                         record_delta=True)
    xg = x.reshape(3, 4, 1, 4, 4)
    assert r.delta.shape == (3, 1, 4, 4) and r.x_adv.shape == (3, 4, 1, 4, 4)
    assert r.w.shape == (3, 4) and r.w_trajectory.shape == (11, 3, 4)
    assert r.loss_trajectory.shape == (11, 3, 4)
    # the same δ for every image of its group
    assert torch.allclose(r.x_adv - xg, r.delta.unsqueeze(1).expand_as(xg), atol=1e-6)
    assert r.delta_trajectory is not None and r.delta_trajectory.shape == (11, 3, 1, 4, 4)
    lo, hi = group_box(xg)
    for d in r.delta_trajectory:
        flat = d.reshape(3, -1)
        n = flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)
        assert bool((n <= eps + TOL).all())
        assert bool((d >= lo - 1e-6).all() and (d <= hi + 1e-6).all())
        xa = xg + d.unsqueeze(1)
        assert bool((xa >= -1e-6).all() and (xa <= 1 + 1e-6).all())
    assert bool(on_simplex(r.w_trajectory.reshape(-1, 4)).all())
    assert not torch.equal(r.delta, torch.zeros_like(r.delta))
    # the [G, K, C, H, W] layout gives the same result
    r5 = universal_attack(model, xg, y.reshape(3, 4), norm=norm, eps=eps, steps=10, alpha=0.05)
    assert torch.equal(r5.delta, r.delta) and torch.equal(r5.w, r.w)


def test_group_box_is_intersection():
    x = torch.tensor([[[0.2, 0.9]], [[0.6, 0.1]]]).reshape(1, 2, 2)
    lo, hi = group_box(x)
    assert torch.allclose(lo, torch.tensor([[-0.2, -0.1]]))
    assert torch.allclose(hi, torch.tensor([[0.4, 0.1]]))


def test_universal_k1_is_per_image_apgda():
    model = mlp()
    x, y = data(6)
    kw = dict(norm="linf", eps=0.15, steps=8, alpha=0.1, beta=0.02, gamma=4.0)
    u = universal_attack(model, x, y, group_size=1, **kw)
    e = ensemble_attack([model], x, y, **kw)
    assert torch.allclose(u.x_adv[:, 0], e.x_adv, atol=1e-6)
    assert torch.allclose(u.w, torch.ones(6, 1))


def test_universal_gamma_inf_is_average_baseline():
    model = mlp()
    x, y = data(8)
    kw = dict(group_size=4, eps=0.2, steps=10, alpha=0.05)
    avg = universal_attack(model, x, y, method="avg", **kw)
    inf = universal_attack(model, x, y, gamma=math.inf, **kw)
    assert torch.equal(avg.delta, inf.delta)
    assert torch.allclose(avg.w, torch.full((2, 4), 0.25))
    big = universal_attack(model, x, y, gamma=1e7, beta=1e-7, **kw)  # β = 1/γ: w ≈ 1/K
    assert torch.allclose(big.w, avg.w, atol=1e-4)
    assert torch.allclose(big.delta, avg.delta, atol=1e-3)


def test_universal_hard_image_minmax_beats_average_and_weights_it():
    model, x, y = hard_pair()
    kw = dict(eps=0.3, steps=100, alpha=1e-3, gamma=1.0)
    mm = universal_attack(model, x, y, method="minmax", **kw)
    av = universal_attack(model, x, y, method="avg", **kw)
    m_mm, m_av = universal_metrics(model, mm.x_adv, y), universal_metrics(model, av.x_adv, y)
    assert m_av.fooled.tolist() == [[True, False]]  # the average baseline misses the hard one
    assert m_mm.asr_gp >= m_av.asr_gp and m_mm.asr_gp == 1.0
    assert float(mm.w[0, 1]) > 0.7 and float(mm.w[0, 1]) > float(mm.w[0, 0])
    assert m_mm.asr_avg == 1.0 and m_av.asr_avg == 0.5


def test_universal_metrics_definition():
    model = mlp()
    x, y = data(12)
    xg, yg = x.reshape(4, 3, 1, 4, 4), y.reshape(4, 3)
    m = universal_metrics(model, xg, yg)
    with torch.no_grad():
        fooled = (model(x).argmax(1) != y).reshape(4, 3)
    assert torch.equal(m.fooled, fooled)
    assert m.asr_gp == pytest.approx(float(fooled.all(1).float().mean()))
    assert m.asr_avg == pytest.approx(float(fooled.float().mean()))


def test_universal_bad_input():
    model = mlp()
    x, y = data(6)
    with pytest.raises(ValueError, match="multiple of group_size"):
        universal_attack(model, x, y, group_size=4, eps=0.1)
    with pytest.raises(ValueError, match=r"\[G, K, C, H, W\]"):
        universal_attack(model, x, y, eps=0.1)
    with pytest.raises(ValueError, match="y must have shape"):
        universal_attack(model, x.reshape(2, 3, 1, 4, 4), y, eps=0.1)
    with pytest.raises(ValueError, match="group_size"):
        universal_attack(model, x, y, group_size=0, eps=0.1)
    with pytest.raises(ValueError, match="method"):
        universal_attack(model, x, y, group_size=3, eps=0.1, method="max")
    with pytest.raises(ValueError):
        universal_attack(model, x * 3, y, group_size=3, eps=0.1)
    with pytest.raises(ValueError, match="eps"):
        universal_attack(model, x, y, group_size=3, eps=-0.1)


# --------------------------------------------------------------------------------------
# robust attack over transformations (eq. (7))
# --------------------------------------------------------------------------------------


def flip_case():
    """One 1×4×4 image, domains [identity, hflip]: the flipped view is much harder (margin
    91 vs 30) and pixels 0/3 conflict between the two views (∂z0 = −50/+20 vs +20/−50), so
    EOT (equal weights) leaves the flipped view correct; pushing pixel 0 down fools both."""
    lin = nn.Linear(16, 3)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.copy_(torch.tensor([145.0, 0.0, 0.0]))
        lin.weight[0, 0], lin.weight[0, 3], lin.weight[0, 8] = -50.0, 20.0, 61.0
        lin.weight[2, 5], lin.weight[2, 6] = 100.0, 100.0
    x = torch.full((1, 1, 4, 4), 0.5)
    x[0, 0, 2, 0], x[0, 0, 2, 3] = 0.0, 1.0
    return nn.Sequential(nn.Flatten(), lin), x, torch.tensor([0])


def test_identity_only_equals_single_domain_attack():
    model = mlp()
    x, y = data(5)
    kw = dict(norm="linf", eps=0.15, steps=8, alpha=0.1, beta=0.02, gamma=4.0)
    t = transform_attack(model, x, y, [Identity()], **kw)
    e = ensemble_attack([model], x, y, **kw)
    assert torch.allclose(t.x_adv, e.x_adv, atol=1e-6)
    assert torch.allclose(t.w, torch.ones(5, 1))


def test_paper_transforms_attack_feasible_and_weights_on_simplex():
    model = cnn()
    x, y = data(4, c=3, s=8, classes=10)
    for setting, k in [("table3", 6), ("tableA6", 7), ("tableA5", 5)]:
        r = transform_attack(model, x, y, setting, eps=0.03, steps=5, record_delta=True)
        assert r.delta.shape == x.shape and r.w.shape == (4, k)
        assert r.w_trajectory.shape == (6, 4, k) and r.loss_trajectory.shape == (6, 4, k)
        assert r.labels == [t.label for t in paper_transforms(setting)]
        assert bool(on_simplex(r.w_trajectory.reshape(-1, k)).all())
        assert r.delta_trajectory is not None
        for d in r.delta_trajectory:
            assert float(d.abs().max()) <= 0.03 + TOL
            assert bool(((x + d) >= -1e-6).all() and ((x + d) <= 1 + 1e-6).all())
        m = transform_metrics(model, r.x_adv, y, setting, generator=torch.Generator().manual_seed(0))
        assert m.fooled.shape == (4, k) and m.per_transform_asr.shape == (k,)
        assert m.asr_gp == pytest.approx(float(m.fooled.all(1).float().mean()))
        assert m.asr_avg == pytest.approx(float(1 - m.per_transform_acc.mean()))


def test_flip_case_minmax_beats_eot_and_weights_the_flip():
    model, x, y = flip_case()
    ts = [Identity(), HFlip()]
    kw = dict(eps=0.3, steps=100, alpha=1e-3, gamma=1.0)
    mm = transform_attack(model, x, y, ts, method="minmax", **kw)
    eot = transform_attack(model, x, y, ts, method="avg", **kw)
    m_mm, m_eot = transform_metrics(model, mm.x_adv, y, ts), transform_metrics(model, eot.x_adv, y, ts)
    assert m_eot.fooled.tolist() == [[True, False]]
    assert m_mm.asr_gp >= m_eot.asr_gp and m_mm.asr_gp == 1.0
    assert float(mm.w[0, 1]) > 0.7
    assert m_mm.per_transform_asr.tolist() == [1.0, 1.0]


def test_transform_gamma_inf_is_eot():
    model = cnn()
    x, y = data(3, c=3, s=8, classes=10)
    a = transform_attack(model, x, y, "table3", eps=0.03, steps=4, method="avg")
    b = transform_attack(model, x, y, "table3", eps=0.03, steps=4, gamma=math.inf)
    assert torch.equal(a.delta, b.delta)
    assert torch.allclose(a.w, torch.full((3, 6), 1 / 6))


def test_stochastic_variant_reproducible_with_seeded_generator():
    model = cnn()
    x, y = data(4, c=3, s=8, classes=10)
    kw = dict(eps=0.03, steps=5, n_samples=2, init="normal0.1_raw")

    def run(seed: int):
        return transform_attack(model, x, y, "stochastic", generator=torch.Generator().manual_seed(seed), **kw)

    r1, r2, r3 = run(3), run(3), run(4)
    assert torch.equal(r1.delta, r2.delta) and torch.equal(r1.w, r2.w)
    assert torch.equal(r1.loss_trajectory, r2.loss_trajectory)
    assert not torch.equal(r1.loss_trajectory, r3.loss_trajectory)
    # seed= alone is reproducible too (a seeded generator is made)
    s1 = transform_attack(model, x, y, "tableA5", eps=0.03, steps=3, seed=7)
    s2 = transform_attack(model, x, y, "tableA5", eps=0.03, steps=3, seed=7)
    assert torch.equal(s1.delta, s2.delta)
    # random transform objects with their own generators
    def own(seed: int):
        g = torch.Generator().manual_seed(seed)
        ts = [Identity(), RandomApply(HFlip(), 0.8, generator=g), RandomCenterCrop(0.6, 1.0, generator=g)]
        return transform_attack(model, x, y, ts, eps=0.03, steps=4)
    assert torch.equal(own(5).loss_trajectory, own(5).loss_trajectory)


def test_bind_generator_reaches_nested_random_members():
    g = torch.Generator().manual_seed(0)
    own = torch.Generator()
    t = Compose((RandomApply(HFlip(), 0.5), RandomCenterCrop(0.6, 1.0, generator=own)))
    b = bind_generator(t, g)
    assert b == t and b is not t
    assert b.transforms[0].generator is g and b.transforms[1].generator is own
    assert bind_generator(HFlip(), g) == HFlip()


def test_transform_bad_input():
    model = mlp()
    x, y = data(3)
    with pytest.raises(ValueError, match="at least one"):
        transform_attack(model, x, y, [], eps=0.1)
    with pytest.raises(ValueError, match="n_samples"):
        transform_attack(model, x, y, [Identity()], eps=0.1, n_samples=0)
    with pytest.raises(ValueError, match="method"):
        transform_attack(model, x, y, [Identity()], eps=0.1, method="eot")
    with pytest.raises(ValueError, match="setting"):
        transform_attack(model, x, y, "table9", eps=0.1)
    with pytest.raises(ValueError, match="Transform"):
        transform_attack(model, x, y, [Identity(), 3], eps=0.1)
    with pytest.raises(ValueError, match="y must be"):
        transform_attack(model, x, y[:2], [Identity()], eps=0.1)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        transform_attack(model, x[0], y, [Identity()], eps=0.1)
    with pytest.raises(ValueError):
        transform_attack(model, x, y, [Identity()], eps=0.1, loss="mse")
