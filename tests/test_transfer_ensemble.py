"""Majority-vote ensembles, the MMA ensemble attacks, transfer attacks and the combined set
(Ding et al., MMA training, ICLR 2020, §4 and App. C–D: whitebox, transfer and
ensemble evaluation; the ensemble tie-break is our reading)."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import wideberth as wb
from wideberth.attacks import pgd
from wideberth.evaluation.ensemble import (
    EnsembleLoss,
    MajorityVoteEnsemble,
    custom_ensemble_loss,
    ensemble_attacks,
    evaluate_ensemble,
    majority_vote_scores,
    naive_ensemble_loss,
)
from wideberth.evaluation.robustness import AttackSpec, suite_attacks
from wideberth.evaluation.transfer import combined_evaluation, transfer_examples, transfer_success

K = 3


class Const(nn.Module):
    """Returns fixed logits rows [B, K] (tied to x by a zero term so gradients exist)."""

    def __init__(self, rows):
        super().__init__()
        self.register_buffer("z", torch.tensor(rows, dtype=torch.float32))

    def forward(self, x):
        return self.z[: x.shape[0]] + 0.0 * x.flatten(1).sum(1, keepdim=True)


def mlp(seed: int, hidden: int = 16, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, hidden), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden, K))


def teacher_data(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(16, K, generator=torch.Generator().manual_seed(123))
    x = torch.rand(n, 1, 4, 4, generator=g)
    return x, ((x.flatten(1) - 0.5) @ w).argmax(1)


def trained(seed: int, noise: float = 0.0) -> nn.Module:
    """A 2-layer MLP fitted (briefly) to a noisy copy of a linear teacher."""
    x, y = teacher_data(600, seed)
    if noise:
        g = torch.Generator().manual_seed(1000 + seed)
        flip = torch.rand(600, generator=g) < noise
        y = torch.where(flip, torch.randint(0, K, (600,), generator=g), y)
    m = mlp(seed)
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()
    return m.eval()


@pytest.fixture(scope="module")
def pool():
    return [trained(s, noise=0.15) for s in range(3)]


@pytest.fixture(scope="module")
def held_out():
    return teacher_data(80, 99)


# --------------------------------------------------------------------------------------
# majority vote
# --------------------------------------------------------------------------------------


def test_tie_is_broken_by_summed_softmax_not_by_index():
    # member A votes 0 with p ≈ 0.79, member B votes 1 with p ≈ 0.99: a 1–1 tie
    a, b = [[2.0, 0.0, 0.0]], [[0.0, 5.0, 0.0]]
    ens = MajorityVoteEnsemble([Const(a), Const(b)])
    x = torch.rand(1, 1, 4, 4)
    p = lambda r: [math.exp(v) / sum(math.exp(u) for u in r) for v in r]  # noqa: E731
    s0, s1 = p(a[0])[0] + p(b[0])[0], p(a[0])[1] + p(b[0])[1]
    assert s1 > s0
    assert int(ens(x).argmax(1)) == 1  # the first index (0) would be argmax's own tie-break
    # the score is exactly votes + Σ softmax / (M + 1)
    votes = torch.tensor([[1.0, 1.0, 0.0]])
    expected = votes + (torch.tensor([p(a[0])]) + torch.tensor([p(b[0])])) / 3
    assert torch.allclose(ens(x), expected, atol=1e-6)
    # swap confidences: now label 0 wins the same tie
    ens2 = MajorityVoteEnsemble([Const([[5.0, 0.0, 0.0]]), Const([[0.0, 2.0, 0.0]])])
    assert int(ens2(x).argmax(1)) == 0


def test_clear_majority_beats_a_confident_minority():
    weak = [[0.1, 0.0, 0.0]]
    ens = MajorityVoteEnsemble([Const(weak), Const(weak), Const([[0.0, 20.0, 0.0]])])
    x = torch.rand(1, 1, 4, 4)
    z = ens.member_logits(x)
    assert int(z.softmax(2).mean(0).argmax(1)) == 1  # softmax averaging would say 1
    assert int(ens(x).argmax(1)) == 0  # two votes against one
    # a three-way tie goes to the largest summed probability
    ens3 = MajorityVoteEnsemble([Const([[1.0, 0.0, 0.0]]), Const([[0.0, 3.0, 0.0]]),
                                 Const([[0.0, 0.0, 2.0]])])
    assert int(ens3(x).argmax(1)) == 1


def test_one_member_ensemble_predicts_like_the_member():
    m = mlp(0)
    x = torch.rand(200, 1, 4, 4)
    ens = MajorityVoteEnsemble([m])
    assert torch.equal(ens(x).argmax(1), m(x).argmax(1))


def test_attack_view_layout_and_errors():
    members = [mlp(s) for s in range(3)]
    ens = MajorityVoteEnsemble(members)
    view = ens.attack_view()
    x = torch.rand(50, 1, 4, 4)
    out = view(x)
    assert out.shape == (50, 4 * K)
    votes, z = view.split(out)
    assert torch.equal(out.argmax(1), ens(x).argmax(1))  # argmax falls in the vote block
    assert torch.allclose(z, torch.stack([m(x) for m in members]))  # members' exact logits
    with pytest.raises(ValueError, match="at least one member"):
        MajorityVoteEnsemble([])
    with pytest.raises(ValueError, match="same shape"):
        MajorityVoteEnsemble([mlp(0), nn.Sequential(nn.Flatten(), nn.Linear(16, 5))])(x)


# --------------------------------------------------------------------------------------
# ensemble losses
# --------------------------------------------------------------------------------------


def test_custom_loss_hand_computed_both_branches():
    y = torch.tensor([0, 0])
    z = torch.tensor([
        # example 0: one of three members wrong (< half): Σ CW of the two correct ones
        # example 1: all wrong, label1 ×1 and label2 ×2 → label0 = 2
        [[3.0, 1.0, 0.0], [0.0, 3.0, 1.0]],
        [[2.0, 0.0, 1.0], [1.0, 0.0, 2.0]],
        [[0.0, 2.0, 1.0], [0.5, 1.0, 4.0]],
    ])  # [M=3, B=2, K=3]
    # CW (AdverTorch form, κ = 50) = max(max_{j≠y} z_j − z_y + 50, 0): (1 − 3 + 50) + (1 − 2 + 50)
    few = 48.0 + 49.0
    # logit0 = z[:, 2]: 1, 2, 4; logit1 = max over labels ≠ 2: 3, 1, 1
    toward = (1 - 3) + (2 - 1) + (4 - 1)
    got = custom_ensemble_loss(z, y)
    assert got.tolist() == pytest.approx([few, toward])
    assert custom_ensemble_loss(z, y, literal=True).tolist() == pytest.approx([few, -toward])
    assert custom_ensemble_loss(z, y, kappa=0.0).tolist() == pytest.approx([0.0, toward])


def test_custom_loss_exactly_half_wrong_and_label0_tie_break():
    # M = 4, two wrong (label 2 once, label 1 once): "otherwise" branch; the tie between the
    # wrong labels goes to label 2 (larger summed softmax), not to the lower index 1
    z = torch.tensor([[[2.0, 0.0, 0.0]], [[2.0, 0.0, 0.0]], [[0.0, 0.0, 3.0]], [[0.0, 1.0, 0.0]]])
    y = torch.tensor([0])
    s = z.softmax(2).sum(0)[0]
    assert s[2] > s[1]
    # label0 = 2: logit0 = 0, 0, 3, 0; logit1 = max over labels ≠ 2 = 2, 2, 0, 1
    assert custom_ensemble_loss(z, y).item() == pytest.approx(-2.0)
    # (label0 = 1 would give (0 − 2) + (0 − 2) + (0 − 3) + (1 − 0) = −6)


def test_ensemble_loss_reads_members_back_from_the_view():
    members = [mlp(s) for s in range(3)]
    view = MajorityVoteEnsemble(members).attack_view()
    x = torch.rand(20, 1, 4, 4)
    y = torch.randint(0, K, (20,))
    out = view(x)
    z = torch.stack([m(x) for m in members])
    for kind in ("ce", "cw"):
        want = sum(naive_ensemble_loss(z[i : i + 1], y, kind) for i in range(3))
        assert torch.allclose(EnsembleLoss(3, kind)(out, y), want, atol=1e-5)
    want_ce = sum(F.cross_entropy(m(x), y, reduction="none") for m in members)
    assert torch.allclose(EnsembleLoss(3, "ce")(out, y), want_ce, atol=1e-5)
    assert torch.allclose(EnsembleLoss(3, "custom")(out, y), custom_ensemble_loss(z, y), atol=1e-5)
    # usable as a PGD loss: stays in the ball and the box
    x_adv = pgd(view, x, y, norm="linf", eps=0.1, steps=5, loss=EnsembleLoss(3, "custom"))
    assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    with pytest.raises(ValueError, match="kind"):
        EnsembleLoss(3, "dlr")


# --------------------------------------------------------------------------------------
# evaluate_ensemble
# --------------------------------------------------------------------------------------


def test_ensemble_robust_accuracy_worst_case_and_monotone(pool, held_out):
    x, y = held_out
    eps = [0.05, 0.1, 0.2]
    kw = dict(norm="linf", epsilons=eps, restarts=2, steps=10, seed=1)
    rep = evaluate_ensemble(pool, x, y, **kw)
    rob = list(rep.robust_accuracy.values())
    assert rep.suite == "ensemble" and rep.attacks == ["naive-ce", "naive-cw", "custom"]
    clean = float((MajorityVoteEnsemble(pool)(x).argmax(1) == y).double().mean())
    assert rep.clean_accuracy == pytest.approx(clean)
    assert rob[0] <= clean and rob == sorted(rob, reverse=True)
    assert rob[-1] < clean  # the attacks bite
    assert rep.avg_acc == pytest.approx((clean + sum(rob)) / 4)
    assert rep.avg_rob_acc == pytest.approx(sum(rob) / 3)
    # the pointwise worst case is at least as strong as each attack alone
    for name in ("naive-ce", "naive-cw", "custom"):
        single = evaluate_ensemble(pool, x, y, attacks=(name,), **kw)
        for e in rep.robust_accuracy:
            assert rep.robust_accuracy[e] <= single.robust_accuracy[e] + 1e-12, (name, e)


def test_one_member_naive_attacks_reproduce_the_single_model_suite(held_out):
    x, y = held_out
    model = trained(7)
    eps = [0.05, 0.15]
    rep = evaluate_ensemble([model], x, y, norm="l2", epsilons=eps, restarts=2, steps=8,
                            attacks=("naive-ce", "naive-cw"))
    suite = [dataclasses.replace(s, steps=8) for s in suite_attacks("paper", "l2", (1, 4, 4), 2)]
    single = wb.evaluate(model, x, y, norm="l2", epsilons=eps, suite=suite)
    assert torch.equal(rep.success, single.success)


def test_ensemble_evaluation_restores_modes_and_grad_flags(held_out):
    x, y = held_out
    members = [mlp(s, dropout=0.5) for s in range(2)]
    members[0].train()
    members[1].eval()
    rep = evaluate_ensemble(members, x[:20], y[:20], norm="linf", epsilons=[0.1], restarts=2,
                            steps=3, attacks=("custom",))
    assert members[0].training and not members[1].training
    assert all(p.requires_grad for m in members for p in m.parameters())
    assert any("train mode" in f for f in rep.flags)


def test_ensemble_attack_specs():
    specs = ensemble_attacks(3, "linf", (1, 28, 28), restarts=5, steps=100)
    assert [(s.label, s.restarts) for s in specs] == [("naive-ce", 3), ("naive-cw", 2), ("custom", 5)]
    assert all(s.step == pytest.approx(1 / 40) and s.steps == 100 for s in specs)  # MNIST ℓ∞
    with pytest.raises(ValueError, match="subset"):
        ensemble_attacks(3, "linf", (1, 4, 4), attacks=("square",))
    with pytest.raises(ValueError, match="restarts >= 2"):
        ensemble_attacks(3, "linf", (1, 4, 4), restarts=1, attacks=("naive-cw",))


# --------------------------------------------------------------------------------------
# transfer
# --------------------------------------------------------------------------------------

QUICK = [AttackSpec("pgd", 10, 1, "ce", 0.25, "advertorch", "ce"),
         AttackSpec("pgd", 10, 1, "cw", 0.25, "advertorch", "cw")]


def test_identical_source_breaks_the_target_exactly_where_it_breaks_itself(pool, held_out):
    x, y = held_out
    target = pool[0]
    source = copy.deepcopy(target)
    eps = [0.03, 0.08, 0.15]
    succ = transfer_success(target, [source], x, y, norm="linf", epsilons=eps, suite=QUICK)
    assert succ.shape == (3, x.shape[0]) and succ.dtype == torch.bool
    with torch.no_grad():
        expected = target(x).argmax(1) != y  # clean errors: never robust
        rows = []
        for e in eps:
            for x_adv in transfer_examples(source, x, y, norm="linf", eps=e, suite=QUICK):
                expected = expected | (source(x_adv).argmax(1) != y)  # judged on the source
            rows.append(expected.clone())
    assert torch.equal(succ, torch.stack(rows))
    assert bool(succ[-1].sum() > succ[0].sum())  # non-vacuous


def test_transfer_is_broken_by_any_source(pool, held_out):
    x, y = held_out
    target, a, b = pool
    kw = dict(norm="l2", epsilons=[0.2, 0.5], suite=QUICK, batch_size=32)
    both = transfer_success(target, [a, b], x, y, **kw)
    only_a = transfer_success(target, [a], x, y, **kw)
    only_b = transfer_success(target, [b], x, y, **kw)
    assert torch.equal(both, only_a | only_b)
    assert bool((both[:-1] <= both[1:]).all())


class MaskedGradients(nn.Module):
    """The same function as ``inner`` with zero input gradients (a gradient-masking defence)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.detach() + 0.0 * x)


def test_combined_evaluation_catches_masked_gradients(pool, held_out):
    x, y = held_out
    source = pool[1]
    target = MaskedGradients(copy.deepcopy(source))
    eps = [0.05, 0.1, 0.2]
    rep = combined_evaluation(target, [source, pool[2]], x, y, norm="linf", epsilons=eps,
                              suite=QUICK, source_names=["twin", "other"])
    keys = [f"{e:g}" for e in eps]
    wbx, comb, gap = rep.robust_accuracy_whitebox, rep.robust_accuracy_combined, rep.transfer_gap
    for key in keys:
        assert comb[key] <= wbx[key]
        assert gap[key] == wbx[key] - comb[key]
    assert gap[keys[-1]] > 0.2  # the white-box attacks are blind, the twin's examples are not
    assert sum(v["twin"] for v in rep.broken_by_source.values()) > 0
    # closed forms: AvgAcc has k + 1 terms, AvgRobAcc k
    c = rep.clean_accuracy
    assert rep.avg_acc_whitebox == pytest.approx((c + sum(wbx.values())) / 4)
    assert rep.avg_acc_combined == pytest.approx((c + sum(comb.values())) / 4)
    assert rep.avg_rob_acc_whitebox == pytest.approx(sum(wbx.values()) / 3)
    assert rep.avg_rob_acc_combined == pytest.approx(sum(comb.values()) / 3)
    assert rep.avg_acc_gap == pytest.approx(rep.avg_acc_whitebox - rep.avg_acc_combined)
    assert rep.avg_rob_acc_gap == pytest.approx(sum(gap.values()) / 3)
    # combined = white-box OR transfer; success matrices agree with the reported accuracies
    transfer = transfer_success(target, [source, pool[2]], x, y, norm="linf", epsilons=eps,
                                suite=QUICK)
    assert torch.equal(rep.success_combined, rep.success_whitebox | transfer)
    for i, key in enumerate(keys):
        assert comb[key] == pytest.approx(float((~rep.success_combined[i]).double().mean()))
    assert "success_combined" not in rep.to_json()


def test_combined_evaluation_of_an_ensemble_target(pool, held_out):
    x, y = held_out
    ens = MajorityVoteEnsemble(pool[:2])
    wbx = evaluate_ensemble(ens, x, y, norm="linf", epsilons=[0.1], restarts=2, steps=5)
    rep = combined_evaluation(ens, [pool[2]], x, y, norm="linf", epsilons=[0.1], suite=QUICK,
                              whitebox=wbx)
    assert rep.robust_accuracy_whitebox == wbx.robust_accuracy
    assert rep.robust_accuracy_combined["0.1"] <= wbx.robust_accuracy["0.1"]
    with pytest.raises(ValueError, match="evaluate_ensemble"):
        combined_evaluation(ens, [pool[2]], x, y, norm="linf", epsilons=[0.1], suite=QUICK)
    with pytest.raises(ValueError, match="members as separate sources"):
        transfer_success(pool[2], [ens], x, y, norm="linf", epsilons=[0.1], suite=QUICK)
    with pytest.raises(ValueError, match="does not match"):
        combined_evaluation(ens, [pool[2]], x, y, norm="linf", epsilons=[0.2], suite=QUICK,
                            whitebox=wbx)


def test_bad_inputs_raise_clear_errors(pool, held_out):
    x, y = held_out
    kw = dict(norm="linf", suite=QUICK)
    with pytest.raises(ValueError, match="sources is empty"):
        transfer_success(pool[0], [], x, y, epsilons=[0.1], **kw)
    with pytest.raises(ValueError, match="ε must be a finite number > 0"):
        transfer_success(pool[0], [pool[1]], x, y, epsilons=[0.1, 0.0], **kw)
    with pytest.raises(ValueError, match="ε must be a finite number > 0"):
        combined_evaluation(pool[0], [pool[1]], x, y, epsilons=[-0.1], **kw)
    with pytest.raises(ValueError, match="labels but x has batch size"):
        transfer_success(pool[0], [pool[1]], x, y[:-1], epsilons=[0.1], **kw)
    with pytest.raises(ValueError, match="same K classes"):
        transfer_success(pool[0], [nn.Sequential(nn.Flatten(), nn.Linear(16, 5))], x, y,
                         epsilons=[0.1], **kw)
    with pytest.raises(ValueError, match="shape"):
        transfer_success(pool[0], [pool[1]], x.flatten(1), y, epsilons=[0.1], **kw)
    with pytest.raises(ValueError, match="member logits"):
        custom_ensemble_loss(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one radius"):
        evaluate_ensemble(pool, x, y, norm="linf", epsilons=[], restarts=2, steps=2)


def test_majority_vote_scores_shape_check():
    with pytest.raises(ValueError, match=r"\[M, B, K\]"):
        majority_vote_scores(torch.zeros(4, 3))
