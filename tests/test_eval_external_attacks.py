"""External attacks in a suite: re-verified, attributed, seeded; torchattacks' PGD."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import wideberth as wb
from wideberth.attacks import pgd
from wideberth.evaluation import AttackSpec


def setup(n: int = 60, seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))
    x = 0.3 + 0.4 * torch.rand(n, 1, 4, 4)
    y = model(x).argmax(1)
    y[:6] = (y[:6] + 1) % 3  # six clean errors
    return model, x, y


KW = dict(norm="linf", epsilons=[0.03, 0.1], batch_size=25, sanity=False)


def cheat(model, x, y, eps):
    """Out of the ball: another example of the batch (misclassified when its class differs)."""
    return x.roll(1, 0)


def test_a_cheating_attack_is_rejected_flagged_and_does_not_lower_robust_accuracy():
    model, x, y = setup()
    rep = wb.evaluate(model, x, y, suite=[AttackSpec.external(cheat, label="cheat")], **KW)
    assert rep.robust_accuracy == {"0.03": rep.clean_accuracy, "0.1": rep.clean_accuracy}
    assert rep.clean_accuracy == pytest.approx(54 / 60)
    assert any("cheat:" in f and "left their ε-ball" in f for f in rep.flags), rep.flags
    assert sum(rep.broken_by["0.03"].values()) == 0
    # NaN outputs are rejected too; a wrong shape is an error naming the attack
    nan = AttackSpec.external(lambda m, x, y, e: x * float("nan"), label="nan")
    assert wb.evaluate(model, x, y, suite=[nan], **KW).robust_accuracy["0.1"] == rep.clean_accuracy
    bad = AttackSpec.external(lambda m, x, y, e: x[:1], label="short")
    with pytest.raises(ValueError, match="input's shape"):
        wb.evaluate(model, x, y, suite=[bad], **KW)


def test_function_attack_equals_the_registered_one_and_is_attributed():
    model, x, y = setup(seed=1)
    ours = wb.evaluate(model, x, y, suite=[AttackSpec("pgd", 10, 1, "ce", 0.25, "zero")], **KW)
    fn = AttackSpec.external(
        lambda m, xb, yb, eps: pgd(m, xb, yb, norm="linf", eps=eps, steps=10,
                                   step_size=eps / 4, init="zero", check=False),
        label="my-pgd")
    theirs = wb.evaluate(model, x, y, suite=[fn, AttackSpec("fgsm", 1)], **KW)
    assert torch.equal(ours.success, theirs.success)
    assert theirs.attacks == ["my-pgd", "fgsm-1x1"]
    broken = {e: sum(c.values()) for e, c in theirs.broken_by.items()}
    assert theirs.broken_by["0.1"]["my-pgd"] == broken["0.1"] > 0  # it broke them first
    with pytest.raises(ValueError, match="label"):
        AttackSpec.external(cheat, label="")
    with pytest.raises(ValueError, match="supports l2"):
        wb.evaluate(model, x, y, suite=[AttackSpec.external(cheat, label="c", norms=("l2",))], **KW)


def test_random_external_attack_is_seeded_per_batch_so_streams_match():
    model, x, y = setup(seed=0)

    def noisy(m, xb, yb, eps):  # a random-sign attack using torch's global generator
        return (xb + eps * torch.randn_like(xb).sign()).clamp(0, 1)

    suite = [AttackSpec.external(noisy, label="noisy")]
    state = torch.random.get_rng_state()
    a = wb.evaluate(model, x, y, suite=suite, **KW)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG untouched
    b = wb.evaluate(model, DataLoader(TensorDataset(x, y), batch_size=7), suite=suite, **KW)
    assert torch.equal(a.success, b.success)
    assert a.robust_accuracy["0.1"] < a.clean_accuracy  # it does break some


def test_torchattacks_pgd_in_a_suite_is_reverified_and_attributed():
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = setup(seed=0)
    atk = torchattacks.PGD(model, eps=0.5, alpha=0.0125, steps=10, random_start=False)
    spec = AttackSpec.external(atk, label="torchattacks-pgd")
    assert spec.fn is not None and spec.fn.style == "object"
    rep = wb.evaluate(model, x, y, suite=[spec], **{**KW, "epsilons": [0.05]})
    assert atk.eps == 0.5  # restored after every call
    assert not any("left their" in f for f in rep.flags)  # eps was set to the grid's
    # same algorithm as our PGD from the clean point with a step of 0.0125 = ε/4
    ours = wb.evaluate(model, x, y, suite=[AttackSpec("pgd", 10, 1, "ce", 0.25, "zero")],
                       **{**KW, "epsilons": [0.05]})
    assert abs(rep.robust_accuracy["0.05"] - ours.robust_accuracy["0.05"]) <= 2 / 60
    assert rep.broken_by["0.05"]["torchattacks-pgd"] == round(
        60 * (rep.clean_accuracy - rep.robust_accuracy["0.05"]))
    assert rep.broken_by["0.05"]["torchattacks-pgd"] > 0
    factory = AttackSpec.external(
        lambda eps: torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=10), label="ta-f")
    assert factory.fn is not None and factory.fn.style == "factory"
    r1 = wb.evaluate(model, x, y, suite=[factory], **KW)
    r2 = wb.evaluate(model, x, y, suite=[factory], **KW)
    assert torch.equal(r1.success, r2.success)  # its random start is seeded
    assert r1.robust_accuracy["0.1"] < r1.clean_accuracy
