"""wb.evaluate: robust accuracy over an ε grid (closed forms, reuse, resume, JSON)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import wideberth as wb
from wideberth.evaluation.robustness import AttackSpec, suite_attacks


class Linear(nn.Module):
    """A linear classifier on flattened images: its margins have a closed form."""

    def __init__(self, d: int, k: int = 3, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = nn.Linear(d, k)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(k, d, generator=g))
            self.lin.bias.zero_()

    def forward(self, x):
        return self.lin(x.flatten(1))


def linear_margins(model: Linear, x, y, norm: str):
    """min over k≠y of |(w_y − w_k)ᵀx + b_y − b_k| / ‖w_y − w_k‖_dual; 0 if misclassified."""
    w, b = model.lin.weight.detach(), model.lin.bias.detach()
    f = x.flatten(1) @ w.T + b
    out = []
    for i in range(x.shape[0]):
        yi = int(y[i])
        if int(f[i].argmax()) != yi:
            out.append(0.0)
            continue
        dists = []
        for k in range(w.shape[0]):
            if k == yi:
                continue
            dw = w[yi] - w[k]
            dual = dw.norm() if norm == "l2" else dw.abs().sum()
            dists.append(float((f[i, yi] - f[i, k]) / dual))
        out.append(min(dists))
    return torch.tensor(out)


def data(n: int = 300, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = 0.4 + 0.2 * torch.rand(n, 1, 4, 4, generator=g)  # the box stays inactive at small ε
    return x


@pytest.mark.parametrize("norm,epsilons", [("l2", [0.01, 0.03, 0.06]), ("linf", [0.002, 0.005, 0.01])])
def test_linear_robust_accuracy_equals_fraction_of_margins_above_eps(norm, epsilons):
    torch.manual_seed(0)
    model = Linear(16)
    x = data()
    y = model(x).argmax(1)
    y[:30] = (y[:30] + 1) % 3  # some clean errors
    margins = linear_margins(model, x, y, norm)
    rep = wb.evaluate(model, x, y, norm=norm, epsilons=epsilons, suite="quick", batch_size=128)
    assert rep.clean_accuracy == pytest.approx(0.9)
    for e in epsilons:
        expected = float((margins > e).double().mean())
        assert rep.robust_accuracy[f"{e:g}"] == pytest.approx(expected, abs=0.02), e
        assert expected < 0.9  # the ε grid actually bites


def test_grid_reuse_never_reports_more_than_independent_runs():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
    x = torch.rand(200, 1, 4, 4)
    y = model(x).argmax(1)
    grid = [0.02, 0.05, 0.1, 0.2]
    rep = wb.evaluate(model, x, y, norm="linf", epsilons=grid, suite="quick", seed=3)
    rob = list(rep.robust_accuracy.values())
    assert rob == sorted(rob, reverse=True), "robust accuracy must not increase with ε"
    for e in grid:
        single = wb.evaluate(model, x, y, norm="linf", epsilons=[e], suite="quick", seed=3)
        assert rep.robust_accuracy[f"{e:g}"] <= single.robust_accuracy[f"{e:g}"] + 1e-12
    # success matrix: monotone in ε per example, clean errors broken everywhere
    s = rep.success
    assert s.shape == (4, 200)
    assert bool((s[:-1] <= s[1:]).all())


def test_summaries_and_json_schema():
    torch.manual_seed(2)
    model = Linear(16, seed=2)
    x = data(120, seed=2)
    y = model(x).argmax(1)
    rep = wb.evaluate(model, x, y, norm="l2", epsilons=[0.05, 0.01], suite="quick")
    d = json.loads(rep.to_json())
    for key in ("n", "norm", "suite", "clean_accuracy", "robust_accuracy", "avg_acc",
                "avg_rob_acc", "flags", "epsilons", "broken_by", "attacks"):
        assert key in d
    assert d["n"] == 120 and d["norm"] == "l2" and d["suite"] == "quick" and d["flags"] == []
    assert list(d["robust_accuracy"]) == ["0.01", "0.05"]  # increasing ε order
    rob = list(d["robust_accuracy"].values())
    assert d["avg_rob_acc"] == pytest.approx(sum(rob) / 2)
    assert d["avg_acc"] == pytest.approx((d["clean_accuracy"] + sum(rob)) / 3)
    # attribution: each example broken at ε by exactly one attack of the suite
    n_broken_first = {e: sum(v.values()) for e, v in d["broken_by"].items()}
    assert n_broken_first["0.01"] == round(120 * (d["clean_accuracy"] - rob[0]))
    assert n_broken_first["0.05"] == round(120 * (rob[0] - rob[1]))


def test_resume_after_interruption_gives_the_same_result(tmp_path):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.rand(90, 1, 4, 4)
    y = model(x).argmax(1)
    kw = dict(norm="linf", epsilons=[0.02, 0.08], suite="quick", batch_size=30, seed=1)
    full = wb.evaluate(model, x, y, **kw)
    state = tmp_path / "eval-state.json"
    seen = []

    def stop_after_two(line: str) -> None:
        seen.append(line)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        wb.evaluate(model, x, y, state_file=state, progress=stop_after_two, **kw)
    assert json.loads(state.read_text())["done_batches"] == 2
    lines = []
    resumed = wb.evaluate(model, x, y, state_file=state, progress=lines.append, **kw)
    assert lines == ["batch 3/3: 90/90 examples"]  # only the missing batch ran
    assert resumed.robust_accuracy == full.robust_accuracy
    assert torch.equal(resumed.success, full.success)
    with torch.no_grad():
        model[1].bias.add_(1.0)
    with pytest.raises(ValueError, match="different evaluation"):
        wb.evaluate(model, x, y, state_file=state, **kw)


def test_results_do_not_depend_on_the_batch_size():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.rand(64, 1, 4, 4)
    y = model(x).argmax(1)
    a = wb.evaluate(model, x, y, norm="l2", epsilons=[0.1, 0.3], suite="quick", batch_size=64)
    b = wb.evaluate(model, x, y, norm="l2", epsilons=[0.1, 0.3], suite="quick", batch_size=7)
    assert torch.equal(a.success, b.success)


def test_suites_follow_the_papers():
    paper = suite_attacks("paper", "linf", (1, 28, 28), restarts=50)
    assert [(s.loss, s.steps, s.restarts, s.step) for s in paper] == [("ce", 100, 25, 1 / 40), ("cw", 100, 25, 1 / 40)]
    paper = suite_attacks("paper", "l2", (3, 32, 32), restarts=5)
    assert [(s.loss, s.restarts, s.step) for s in paper] == [("ce", 3, 0.25), ("cw", 2, 0.25)]
    std = suite_attacks("standard", "linf", (3, 32, 32))
    assert [s.attack for s in std] == ["apgd-ce", "apgd-t", "pgd", "pgd"]
    assert [s.name for s in std[:2]] == ["apgd-ce-100x1", "apgd-t-100x1"]
    quick = suite_attacks("quick", "l2", (1, 8, 8))
    assert [(s.attack, s.loss, s.steps) for s in quick] == [("pgd", "ce", 20), ("pgd", "cw", 20)]
    with pytest.raises(ValueError, match="valid suites"):
        suite_attacks("strong", "linf", (1, 8, 8))


def test_custom_suite_and_flags_and_mode_restored():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.Dropout(0.5))
    model.train()
    x = torch.rand(40, 1, 4, 4)
    y = torch.randint(0, 3, (40,))
    rep = wb.evaluate(model, x, y, norm="linf", epsilons=[0.05],
                      suite=[AttackSpec("pgd", 5, 1, "ce", label="pgd5")])
    assert model.training and rep.attacks == ["pgd5"]
    assert any("train mode" in f for f in rep.flags)


def test_custom_suite_attacks_come_from_the_registry():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 5))
    x = torch.rand(12, 1, 4, 4)
    y = model(x).argmax(1)
    suite = [AttackSpec("fgsm", 1), AttackSpec("square", 50), AttackSpec("fmn", 10),
             AttackSpec("apgd-t", 5)]
    rep = wb.evaluate(model, x, y, norm="l2", epsilons=[0.3, 1.0], suite=suite, sanity=False)
    assert rep.attacks == ["fgsm-1x1", "square-50x1", "fmn-10x1", "apgd-t-5x1"]
    assert rep.flags == []  # every counted example was re-checked feasible
    assert sum(sum(v.values()) for v in rep.broken_by.values()) > 0
    with pytest.warns(DeprecationWarning, match="apgd-t"):
        old = wb.evaluate(model, x, y, norm="l2", epsilons=[0.3, 1.0], sanity=False,
                          suite=[AttackSpec("apgd-dlr", 5)])
    assert old.attacks == ["apgd-dlr-5x1"]
    assert torch.equal(old.success, wb.evaluate(model, x, y, norm="l2", epsilons=[0.3, 1.0],
                                                sanity=False, suite=[AttackSpec("apgd-t", 5)]).success)
    with pytest.raises(ValueError, match="unknown attack 'pgd2'"):
        wb.evaluate(model, x, y, norm="l2", epsilons=[0.3], suite=[AttackSpec("pgd2", 5)])
    with pytest.raises(ValueError, match="supports norm"):
        wb.evaluate(model, x, y, norm="l1", epsilons=[0.3], suite=[AttackSpec("apgd-ce", 5)])


def test_state_file_of_the_old_apgd_dlr_name_resumes(tmp_path):
    from wideberth.evaluation.state import EvalState, fingerprint

    torch.manual_seed(7)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    x = torch.rand(20, 1, 4, 4)
    y = model(x).argmax(1)
    kw = dict(norm="linf", epsilons=[0.05], suite="standard", restarts=1, batch_size=10,
              sanity=False)
    full = wb.evaluate(model, x, y, **kw)
    # the file an interrupted run wrote before the rename: fingerprinted with "apgd-dlr"
    specs = suite_attacks("standard", "linf", (1, 4, 4), 1)
    suite_meta = [{**{f: getattr(s, f) for f in ("attack", "steps", "restarts", "loss", "step",
                                                  "init", "label")},
                   "attack": "apgd-dlr" if s.attack == "apgd-t" else s.attack} for s in specs]
    meta = {"norm": "linf", "epsilons": [0.05], "seed": 0, "batch_size": 10, "n": 20,
            "reuse": "up", "suite": suite_meta}
    state = tmp_path / "old.json"
    saved = EvalState.start(20, 1, [], state, (fingerprint(model, x, y, meta),))
    saved.record(0, torch.where(full.success[0, :10], 0, 1), torch.full((10,), -1), 0)
    lines = []
    resumed = wb.evaluate(model, x, y, state_file=state, progress=lines.append, **kw)
    assert lines == ["batch 2/2: 20/20 examples"]
    assert torch.equal(resumed.success[:, 10:], full.success[:, 10:])
    assert json.loads(state.read_text())["fingerprint"] != saved.fingerprint  # rewritten


@pytest.mark.parametrize("kw,msg", [
    ({"epsilons": []}, "epsilons is empty"),
    ({"epsilons": [0.1, -0.1]}, "> 0"),
    ({"epsilons": [0.1], "batch_size": 0}, "batch_size"),
    ({"epsilons": [0.1], "suite": []}, "non-empty list"),
])
def test_bad_input_errors(kw, msg):
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(4, 1, 4, 4), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match=msg):
        wb.evaluate(model, x, y, norm="linf", **kw)
    with pytest.raises(ValueError):
        wb.evaluate(model, x * 2, y, norm="linf", epsilons=[0.1])  # outside [0, 1]


class CountingRows(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.rows = inner, 0

    def forward(self, x):
        self.rows += x.shape[0]
        return self.inner(x)


@pytest.mark.parametrize("norm,epsilons", [("l2", [0.01, 0.02, 0.03, 0.045, 0.06])])
def test_reuse_both_matches_the_closed_form_with_less_work(norm, epsilons):
    torch.manual_seed(0)
    model = Linear(16)
    x = data()
    y = model(x).argmax(1)
    margins = linear_margins(model, x, y, norm)
    kw = dict(norm=norm, epsilons=epsilons, suite="quick", sanity=False)
    up_model, both_model = CountingRows(model), CountingRows(model)
    up = wb.evaluate(up_model, x, y, reuse="up", **kw)
    both = wb.evaluate(both_model, x, y, reuse="both", **kw)
    assert bool((both.success[:-1] <= both.success[1:]).all())
    for e in epsilons:
        expected = float((margins > e).double().mean())
        assert both.robust_accuracy[f"{e:g}"] == pytest.approx(expected, abs=0.02), e
    assert both.clean_accuracy == up.clean_accuracy
    assert both_model.rows < 0.6 * up_model.rows
    with pytest.raises(ValueError, match="reuse"):
        wb.evaluate(model, x, y, reuse="down", **kw)


def test_min_perturbation_distance_on_a_linear_model():
    from wideberth.evaluation.margins import min_perturbation_distance

    torch.manual_seed(0)
    model = Linear(16)
    x = data(60)
    y = model(x).argmax(1)
    y[:6] = (y[:6] + 1) % 3  # misclassified: distance 0
    exact = linear_margins(model, x, y, "l2")
    out = min_perturbation_distance(model, x, y, norm="l2", methods=("fmn", "anpgd"),
                                    radii=[0.02, 0.05])
    d = out["distance"]
    assert bool((d[:6] == 0).all()) and out["failures"] == 0
    ok = exact > 0
    torch.testing.assert_close(d[ok], exact[ok], rtol=0.01, atol=1e-4)  # within 1 %
    assert bool((d[ok] >= exact[ok] * (1 - 1e-3)).all())  # attack distances bound from above
    assert out["stats"]["mean"] == pytest.approx(float(d.mean()))
    assert out["accuracy_at_radius"]["0.05"] == pytest.approx(float((d > 0.05).double().mean()))
    assert set(out["method"][6:]) <= {"fmn", "anpgd"}
