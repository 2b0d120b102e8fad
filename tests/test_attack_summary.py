"""wideberth.evaluation.attack_summary: one attack over a split, summarised."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from wideberth.attacks import run_attack
from wideberth.evaluation.attack_summary import AttackSummary, norm_quartiles, summarize_attack

N = 20
FLIPPED = 4  # labels made wrong on purpose: clean accuracy is exactly (N - FLIPPED) / N


def _problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 5)).eval()
    x = torch.rand(N, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:FLIPPED] = (y[:FLIPPED] + 1) % 5
    return model, x, y


class Counting(nn.Module):
    """Counts forward passes of the wrapped model."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


def test_norm_quartiles():
    q = norm_quartiles(torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0]))
    assert q == pytest.approx({"mean": 3.0, "q1": 2.0, "median": 3.0, "q3": 4.0, "max": 5.0})
    assert norm_quartiles(torch.tensor([])) is None


@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.5)])
def test_pgd_summary_facts(norm, eps):
    model, x, y = _problem()
    s = summarize_attack(model, x, y, attack="pgd", norm=norm, eps=eps, steps=10, batch_size=7)
    assert isinstance(s, AttackSummary)
    assert s.n == N and s.x_adv.shape == x.shape and s.y.tolist() == y.tolist()
    assert s.clean_accuracy == pytest.approx((N - FLIPPED) / N)
    assert s.robust_accuracy <= s.clean_accuracy
    assert s.robust_accuracy < s.clean_accuracy  # the budget breaks some examples
    assert int(s.broken.sum()) > 0
    assert not bool((s.broken & ~s.clean_correct).any())
    # every perturbation is in the ball, so are the broken ones; the distances are the norm's
    ref = (s.x_adv - x).flatten(1)
    ref = ref.abs().amax(1) if norm == "linf" else ref.norm(dim=1)
    assert torch.allclose(s.distances, ref, atol=1e-6)
    assert float(s.distances.max()) <= eps + 1e-5
    assert float(s.distances[s.broken].max()) <= eps + 1e-5
    assert float(s.x_adv.min()) >= 0 and float(s.x_adv.max()) <= 1
    for q in (s.quartiles_all, s.quartiles_broken):
        assert q is not None
        assert q["q1"] <= q["median"] <= q["q3"] <= q["max"] <= eps + 1e-5
        assert q["mean"] <= q["max"]
    # batching changes nothing: one direct run_attack call on the whole split agrees
    direct = run_attack("pgd", model, x, y, norm=norm, eps=eps, steps=10)
    assert torch.allclose(s.x_adv, direct, atol=1e-6)
    with torch.no_grad():
        robust = (model(direct).argmax(1) == y).float().mean().item()
    assert s.robust_accuracy == pytest.approx(robust)


def test_minimal_norm_attack_counts_only_within_budget():
    model, x, y = _problem()
    eps = 0.3
    s = summarize_attack(model, x, y, attack="fmn", norm="l2", eps=eps, steps=30, batch_size=8)
    assert s.robust_accuracy <= s.clean_accuracy
    assert float(s.distances[s.broken].max()) <= eps + 1e-5
    assert float(s.distances.max()) <= eps + 1e-5  # beyond ε the clean point is kept


def test_to_dict_and_save(tmp_path):
    from safetensors import safe_open

    model, x, y = _problem()
    s = summarize_attack(model, x, y, attack="fgsm", norm="linf", eps=0.05)
    d = json.loads(json.dumps(s.to_dict()))
    assert d["attack"] == "fgsm" and d["n"] == N and d["eps"] == 0.05
    assert d["broken"] == int(s.broken.sum())
    assert d["robust_accuracy"] <= d["clean_accuracy"]
    assert d["perturbation_norm"]["all"]["max"] <= 0.05 + 1e-6
    out = s.save(tmp_path / "adv.safetensors", metadata={"note": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adv.safetensors"]  # no temp left
    with safe_open(str(out), "pt") as f:
        assert torch.equal(f.get_tensor("x_adv"), s.x_adv)
        assert torch.equal(f.get_tensor("y"), y)
        assert json.loads(f.metadata()["wideberth"]) == {"note": "1"}


def test_alias_resolves_and_bad_input_fails_before_any_work():
    model, x, y = _problem()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = summarize_attack(model, x, y, attack="apgd-dlr", norm="linf", eps=0.05, steps=5)
    assert s.attack == "apgd-t"
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    counting = Counting(model)
    with pytest.raises(ValueError, match="supports norm"):
        summarize_attack(counting, x, y, attack="square", norm="l1", eps=0.05)
    with pytest.raises(ValueError, match="unknown attack"):
        summarize_attack(counting, x, y, attack="nope", eps=0.05)
    assert counting.calls == 0


def test_model_modes_are_restored():
    model, x, y = _problem()
    model.train()
    summarize_attack(model, x, y, attack="fgsm", eps=0.05)
    assert model.training
