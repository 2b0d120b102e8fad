"""Tests for wideberth.losses: formulas on toy batches, the MMA identities (Ding et al., ICLR 2020,
Props. 2.3–2.4), TRADES KL direction (Zhang et al., ICML 2019, Eq. 5) and reductions, DLR."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from wideberth.losses import (
    LOSSES,
    ce,
    cw_loss,
    dlr_loss,
    dlr_targeted_loss,
    get_loss,
    is_misclassified,
    logit_margin,
    soft_logit_margin,
    trades_kl,
)

LOGITS = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [5.0, -1.0, 2.0]], dtype=torch.float64)
Y = torch.tensor([0, 2, 0])
E = math.e


def lse(*vals: float) -> float:
    return math.log(sum(math.exp(v) for v in vals))


# --------------------------------------------------------------------------------------
# formulas on a hand-computed toy batch
# --------------------------------------------------------------------------------------


def test_logit_margin_toy():
    expected = torch.tensor([3.0 - 1.0, 0.0 - 0.0, 2.0 - 5.0], dtype=torch.float64)
    torch.testing.assert_close(logit_margin(LOGITS, Y), expected)


def test_soft_logit_margin_toy():
    expected = torch.tensor([lse(2, 3) - 1, math.log(2), lse(-1, 2) - 5], dtype=torch.float64)
    torch.testing.assert_close(soft_logit_margin(LOGITS, Y), expected)


def test_ce_toy():
    expected = torch.tensor([lse(1, 2, 3) - 1, math.log(3), lse(5, -1, 2) - 5], dtype=torch.float64)
    torch.testing.assert_close(ce(LOGITS, Y), expected)


def test_cw_forms_toy():
    # LM = [2, 0, -3]
    torch.testing.assert_close(cw_loss(LOGITS, Y), torch.tensor([0.0, 0.0, -3.0]).double())
    torch.testing.assert_close(
        cw_loss(LOGITS, Y, kappa=1.0, form="min"), torch.tensor([1.0, 0.0, -3.0]).double()
    )
    torch.testing.assert_close(
        cw_loss(LOGITS, Y, form="advertorch"), torch.tensor([52.0, 50.0, 47.0]).double()
    )
    torch.testing.assert_close(
        cw_loss(LOGITS, Y, kappa=2.0, form="advertorch"), torch.tensor([4.0, 2.0, 0.0]).double()
    )
    # the min-max code's minimised relu(f_y − max_{j≠y} f_j + κ) equals κ − cw_min(κ)
    kappa = 50.0
    relu_form = torch.relu(-logit_margin(LOGITS, Y) + kappa)
    torch.testing.assert_close(relu_form, kappa - cw_loss(LOGITS, Y, kappa=kappa, form="min"))
    with pytest.raises(ValueError, match="form"):
        cw_loss(LOGITS, Y, form="max")


def test_dlr_toy():
    # row 0: sorted [3,2,1], LM 2, den 2 → 1; row 1: all equal → 0; row 2: sorted [5,2,-1],
    # LM −3, den 6 → −0.5
    torch.testing.assert_close(dlr_loss(LOGITS, Y), torch.tensor([1.0, 0.0, -0.5]).double())
    z = torch.tensor([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 0.0, 1.0]], dtype=torch.float64)
    # row 0: −(1 − 4)/(4 − (2 + 1)/2) = 1.2 ; row 1 (y=0, t=1): −(4 − 3)/(4 − (1 + 0)/2) = −2/7
    out = dlr_targeted_loss(z, torch.tensor([0, 0]), torch.tensor([3, 1]))
    torch.testing.assert_close(out, torch.tensor([1.2, -1.0 / 3.5]).double())


def test_trades_kl_toy():
    la = torch.tensor([[0.0, 0.0]], dtype=torch.float64)  # p_adv = (1/2, 1/2)
    lc = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)  # p_clean = (3/4, 1/4)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # KL(p_clean‖p_adv)
    reverse = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # KL(p_adv‖p_clean)
    assert abs(expected - reverse) > 1e-3  # the case distinguishes the two directions
    assert float(trades_kl(la, lc)) == pytest.approx(expected, rel=1e-12)
    assert float(trades_kl(lc, la)) == pytest.approx(reverse, rel=1e-12)


# --------------------------------------------------------------------------------------
# identities (MMA, Ding et al., ICLR 2020, §2.2, Props. 2.3–2.4)
# --------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, database=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    b=st.integers(1, 6),
    k=st.integers(2, 12),
    scale=st.sampled_from([1e-3, 1.0, 10.0, 300.0]),
)
def test_prop_2_3_and_softplus_identity(seed, b, k, scale):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, k, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, k, (b,), generator=g)
    lm, sl = logit_margin(z, y), soft_logit_margin(z, y)
    assert torch.isfinite(sl).all()
    assert (lm <= sl + 1e-9).all()
    assert (sl <= lm + math.log(k - 1) + 1e-9).all()
    # CE = log(1 + exp(SLM))
    torch.testing.assert_close(ce(z, y), F.softplus(sl), rtol=1e-10, atol=1e-10)
    # SLM < 0  ⇔  p_y > 1/2
    p_y = z.softmax(1).gather(1, y[:, None]).squeeze(1)
    far = (p_y - 0.5).abs() > 1e-9
    assert torch.equal((sl < 0)[far], (p_y > 0.5)[far])


def test_slm_equals_lm_for_two_classes_and_is_stable():
    z = torch.tensor([[3.0, -1.0], [0.5, 0.7]])
    y = torch.tensor([1, 0])
    torch.testing.assert_close(soft_logit_margin(z, y), logit_margin(z, y))
    big = torch.tensor([[1e4, -1e4, 5e3], [-3e4, 2e4, 2e4]])
    out = soft_logit_margin(big, torch.tensor([0, 1]))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.tensor([5e3 - 1e4, 2e4 - 2e4]))


def _linear_model(seed: int = 0, d: int = 7, k: int = 5) -> torch.nn.Linear:
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(d, k).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(k, d, generator=g, dtype=torch.float64))
        model.bias.copy_(torch.randn(k, generator=g, dtype=torch.float64))
    return model


def test_ce_gradient_parallel_to_slm_gradient_in_input_and_parameters():
    """Prop. 2.4: ∇CE = (1 − p_y) ∇SLM, in x and in θ (cosine 1, exact ratio)."""
    model = _linear_model()
    g = torch.Generator().manual_seed(1)
    for i in range(5):
        x = torch.randn(1, 7, generator=g, dtype=torch.float64, requires_grad=True)
        y = torch.tensor([i % 5])
        logits = model(x)
        p_y = float(logits.detach().softmax(1)[0, y])
        grads = {}
        for name, fn in [("ce", ce), ("slm", soft_logit_margin)]:
            model.zero_grad()
            x.grad = None
            fn(model(x), y).sum().backward()
            grads[name] = (
                x.grad.clone().flatten(),
                torch.cat([p.grad.flatten() for p in model.parameters()]),
            )
        for j in range(2):  # input, parameters
            a, b = grads["ce"][j], grads["slm"][j]
            cos = F.cosine_similarity(a, b, dim=0)
            assert float(cos) == pytest.approx(1.0, abs=1e-12)
            torch.testing.assert_close(a, (1 - p_y) * b, rtol=1e-10, atol=1e-12)


def test_ce_input_gradient_underflows_where_slm_does_not():
    """MMA §2.2 (why the attack uses SLM): in float32, 1 − p_y underflows for confident examples."""
    z = torch.tensor([[120.0, 0.0, 0.0]], requires_grad=True)
    y = torch.tensor([0])
    (g_ce,) = torch.autograd.grad(ce(z, y).sum(), z)
    (g_slm,) = torch.autograd.grad(soft_logit_margin(z, y).sum(), z)
    assert g_ce.abs().max() == 0
    assert g_slm.abs().max() > 0.4


def test_cw_min_has_lm_gradient_when_correct():
    z = torch.tensor([[3.0, 1.0, 2.0], [0.0, 4.0, 1.0]], requires_grad=True)
    y = torch.tensor([0, 0])  # row 0 correct, row 1 wrong
    (g_cw,) = torch.autograd.grad(cw_loss(z, y).sum(), z)
    (g_lm,) = torch.autograd.grad(logit_margin(z, y).sum(), z)
    torch.testing.assert_close(g_cw[0], g_lm[0])
    assert (g_cw[1] == 0).all()  # min{LM, 0} stops pushing after misclassification
    (g_adv,) = torch.autograd.grad(cw_loss(z, y, form="advertorch").sum(), z)
    torch.testing.assert_close(g_adv, g_lm)  # advertorch form keeps pushing (LM > −50)


def test_is_misclassified_ties_count_wrong():
    z = torch.tensor([[1.0, 1.0, 0.0], [2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    y = torch.tensor([0, 0, 0])
    assert is_misclassified(z, y).tolist() == [True, False, True]


# --------------------------------------------------------------------------------------
# TRADES KL
# --------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, database=None)
@given(seed=st.integers(0, 2**31 - 1), b=st.integers(1, 5), k=st.integers(2, 10))
def test_trades_kl_nonnegative_zero_and_matches_torch(seed, b, k):
    g = torch.Generator().manual_seed(seed)
    la = torch.randn(b, k, generator=g, dtype=torch.float64) * 3
    lc = torch.randn(b, k, generator=g, dtype=torch.float64) * 3
    kl = trades_kl(la, lc)
    assert kl.shape == (b,)
    assert (kl >= -1e-12).all()
    torch.testing.assert_close(trades_kl(lc, lc), torch.zeros(b, dtype=torch.float64))
    # explicit Σ p_clean (log p_clean − log p_adv)
    pc = lc.softmax(1)
    explicit = (pc * (lc.log_softmax(1) - la.log_softmax(1))).sum(1)
    torch.testing.assert_close(kl, explicit)
    # the TRADES code: KLDivLoss(size_average=False)(log_softmax(adv), softmax(clean)) / B
    ref = F.kl_div(F.log_softmax(la, 1), F.softmax(lc, 1), reduction="sum") / b
    torch.testing.assert_close(trades_kl(la, lc, reduction="batchmean"), ref)
    torch.testing.assert_close(trades_kl(la, lc, reduction="mean"), ref)
    torch.testing.assert_close(trades_kl(la, lc, reduction="sum"), ref * b)


def test_trades_kl_mean_is_not_torch_elementwise_mean():
    """specs C3.6: torch's reduction='mean' divides by K as well; ours must not."""
    g = torch.Generator().manual_seed(0)
    la, lc = torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g)
    # what torch's reduction="mean" computes: the mean over all B·K elements
    torch_mean = F.kl_div(F.log_softmax(la, 1), F.softmax(lc, 1), reduction="none").mean()
    torch.testing.assert_close(trades_kl(la, lc, reduction="batchmean"), torch_mean * 10)


def test_trades_kl_zero_input_gradient_at_clean_point():
    """specs C3.5: at x' = x the KL and its input gradient are exactly 0 (why TRADES needs
    the 0.001·N(0, I) start)."""
    model = _linear_model()
    x = torch.randn(3, 7, dtype=torch.float64)
    xa = x.clone().requires_grad_(True)
    with torch.no_grad():
        lc = model(x)
    kl = trades_kl(model(xa), lc, reduction="sum")
    (g,) = torch.autograd.grad(kl, xa)
    assert float(kl.detach()) == pytest.approx(0.0, abs=1e-14)
    assert g.abs().max() < 1e-14


def test_trades_kl_gradient_flows_through_both_branches():
    la = torch.randn(2, 4, requires_grad=True)
    lc = torch.randn(2, 4, requires_grad=True)
    trades_kl(la, lc, reduction="sum").backward()
    assert la.grad.abs().sum() > 0 and lc.grad.abs().sum() > 0


def test_trades_kl_shape_errors():
    with pytest.raises(ValueError, match="shape"):
        trades_kl(torch.zeros(2, 3), torch.zeros(2, 4))


# --------------------------------------------------------------------------------------
# DLR properties and K errors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("c", [1e-2, 0.5, 7.0, 1e3])
def test_dlr_scale_and_shift_invariant(c):
    g = torch.Generator().manual_seed(2)
    z = torch.randn(16, 10, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (16,), generator=g)
    t = (y + 1 + torch.randint(0, 9, (16,), generator=g)) % 10
    torch.testing.assert_close(dlr_loss(z * c, y), dlr_loss(z, y), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(dlr_loss(z + 3.0, y), dlr_loss(z, y), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(
        dlr_targeted_loss(z * c, y, t), dlr_targeted_loss(z, y, t), rtol=1e-8, atol=1e-8
    )
    # positive ⇔ misclassified (same sign as LM)
    assert torch.equal(dlr_loss(z, y) > 0, logit_margin(z, y) > 0)


def test_class_count_errors():
    z2, z3 = torch.zeros(2, 2), torch.zeros(2, 3)
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="at least 3 classes"):
        dlr_loss(z2, y)
    with pytest.raises(ValueError, match="at least 4 classes"):
        dlr_targeted_loss(z3, y, torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="at least 2 classes"):
        logit_margin(torch.zeros(2, 1), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="at least 2 classes"):
        soft_logit_margin(torch.zeros(2, 1), torch.tensor([0, 0]))


def test_label_shape_and_dtype_errors():
    with pytest.raises(ValueError, match=r"shape \[B\]"):
        logit_margin(torch.zeros(3, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integer"):
        ce(torch.zeros(2, 4), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        soft_logit_margin(torch.zeros(2, 4, 1), torch.tensor([0, 1]))


# --------------------------------------------------------------------------------------
# reductions, batch independence, registry
# --------------------------------------------------------------------------------------

PER_EXAMPLE = [
    ("ce", lambda z, y: ce(z, y, reduction="none")),
    ("lm", lambda z, y: logit_margin(z, y)),
    ("slm", lambda z, y: soft_logit_margin(z, y)),
    ("cw", lambda z, y: cw_loss(z, y)),
    ("dlr", lambda z, y: dlr_loss(z, y)),
]


@pytest.mark.parametrize("name", ["ce", "lm", "slm", "cw", "dlr"])
def test_reductions(name):
    fn = get_loss(name)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (6,), generator=g)
    per = fn(z, y)
    assert per.shape == (6,)
    torch.testing.assert_close(fn(z, y, reduction="mean"), per.mean())
    torch.testing.assert_close(fn(z, y, reduction="sum"), per.sum())
    with pytest.raises(ValueError, match="reduction"):
        fn(z, y, reduction="batchmean_typo")


@pytest.mark.parametrize("name", ["ce", "lm", "slm", "cw", "dlr"])
def test_batch_independence(name):
    fn = get_loss(name)
    g = torch.Generator().manual_seed(4)
    z = torch.randn(5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 6, (5,), generator=g)
    full = fn(z, y)
    (grad_full,) = torch.autograd.grad(full.sum(), z)
    for i in range(5):
        zi = z[i : i + 1].detach().requires_grad_(True)
        one = fn(zi, y[i : i + 1])
        (gi,) = torch.autograd.grad(one.sum(), zi)
        torch.testing.assert_close(one[0], full[i].detach())
        torch.testing.assert_close(gi[0], grad_full[i])


def test_registry():
    assert set(LOSSES) >= {"ce", "lm", "slm", "cw", "dlr", "dlr_t", "kl"}
    assert get_loss("CE") is ce
    assert get_loss("soft_logit_margin") is soft_logit_margin
    assert get_loss("kl") is trades_kl
    assert get_loss(ce) is ce
    cw50 = get_loss("cw", form="advertorch", kappa=50)
    torch.testing.assert_close(cw50(LOGITS, Y), torch.tensor([52.0, 50.0, 47.0]).double())
    with pytest.raises(ValueError, match="ce, lm, slm"):
        get_loss("hinge")


def test_losses_do_not_modify_inputs_and_keep_dtype():
    z = torch.randn(3, 5, dtype=torch.float64)
    y = torch.tensor([0, 4, 2])
    z0, y0 = z.clone(), y.clone()
    for _, fn in PER_EXAMPLE:
        out = fn(z, y)
        assert out.dtype == torch.float64
    trades_kl(z, z.flip(0))
    assert torch.equal(z, z0) and torch.equal(y, y0)
