"""Generalised AT over several perturbation types (Wang et al., min-max framework, §2d):
the AMPGD weights stay on the simplex and follow eq. (14), γ = ∞ is the avg baseline, max
picks the worst type, DPAR matches its closed form, perturbations are feasible, the
multi-norm metrics equal closed forms on a linear model, and a digits run resumes exactly
and is more robust (Acc^max_adv) than standard training."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import wideberth as wb
from wideberth.config import ConfigError, MethodConfig, apply_overrides, load_recipe
from wideberth.example_state import ExampleState
from wideberth.methods import build_method, list_methods
from wideberth.methods.base import Batch, StepContext
from wideberth.methods.minmax_at import (
    AMPGDResult,
    MinMaxAT,
    MinMaxATParams,
    ampgd,
    dpar_logdet,
    max_type_weights,
)
from wideberth.minmax.metrics import (
    combine_correct,
    multi_norm_metrics,
    trapezoid_area,
    worst_case_auc,
)
from wideberth.minmax.simplex import project_simplex
from wideberth.models import build_model
from wideberth.threat import get_threat
from wideberth.train import load_checkpoint, resume, train


def _digits(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    return wb.data.tensors("digits", split="train", n=n)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn-small", (1, 8, 8), 10, channels=(4, 8), hidden=16)


def _method(**kw) -> MinMaxAT:
    params = {"eps": [0.1, 0.5], "steps": 5, "clean_weight": 0.0, **kw}
    return build_method(MethodConfig(name="minmax-at", params=params))  # type: ignore[return-value]


def _ctx(seed: int = 7, state=None) -> StepContext:
    return StepContext(epoch=0, step=0, total_steps=10, steps_per_epoch=10, state=state,
                       generator=torch.Generator().manual_seed(seed), num_classes=10)


# --------------------------------------------------------------------------- inner loop

def test_weights_on_simplex_and_first_step_is_eq14_at_the_start_losses():
    x, y = _digits()
    model = _model()
    m = _method(beta=0.5, gamma=1.0)  # large β so that w moves visibly
    res = m.inner(model, x, y, torch.Generator().manual_seed(3))
    traj = res.w_trajectory
    assert traj.shape == (6, 16, 2)
    assert bool((traj >= 0).all()) and torch.allclose(traj.sum(-1), torch.ones(6, 16))
    assert torch.equal(traj[0], torch.full((16, 2), 0.5))
    assert not torch.allclose(res.w, torch.full((16, 2), 0.5))
    # w_1 = proj_P(1/K + β φ_0), φ_0 the CE at the (reproduced) random starts δ_{i,0}
    g = torch.Generator().manual_seed(3)
    starts = [get_threat(n).random_init(x, e, generator=g) for n, e in (("linf", 0.1), ("l2", 0.5))]
    with torch.no_grad():
        model.eval()
        phi0 = torch.stack([F.cross_entropy(model(x + d), y, reduction="none") for d in starts], 1)
    torch.testing.assert_close(traj[1], project_simplex(0.5 + 0.5 * phi0), rtol=1e-5, atol=1e-6)


def test_gamma_infinity_is_uniform_and_equals_avg_variant():
    x, y = _digits()
    model = _model()
    model.train()
    losses, ws = {}, {}
    for name, kw in {"inf": {"gamma": math.inf}, "avg": {"variant": "avg"},
                     "big": {"gamma": 1e6, "beta": 1e-6}}.items():
        m = _method(**kw)
        res = m.inner(model, x, y, torch.Generator().manual_seed(5))
        loss, _, w = m.outer_loss(model, x, y, res)
        losses[name], ws[name] = loss, w
    assert torch.equal(ws["inf"], torch.full((16, 2), 0.5))
    assert torch.equal(losses["inf"], losses["avg"])
    torch.testing.assert_close(ws["big"], torch.full((16, 2), 0.5), rtol=0, atol=1e-5)
    torch.testing.assert_close(losses["big"], losses["avg"], rtol=1e-4, atol=1e-5)


def test_max_variant_picks_the_worst_type_per_example():
    x, y = _digits()
    model = _model()
    model.train()
    m = _method(variant="max", norms=["linf", "l2", "l1"], eps=[0.1, 0.5, 2.0])
    res = m.inner(model, x, y, torch.Generator().manual_seed(1))
    loss, logits, w = m.outer_loss(model, x, y, res)
    with torch.no_grad():
        ce = torch.stack([F.cross_entropy(model(x + d), y, reduction="none")
                          for d in res.deltas], 1)
    idx = ce.argmax(1)
    assert torch.equal(w, F.one_hot(idx, 3).float())
    torch.testing.assert_close(loss, ce.max(1).values.mean())
    with torch.no_grad():
        expect = torch.stack([model(x + d) for d in res.deltas], 1)[torch.arange(16), idx]
    torch.testing.assert_close(logits, expect)
    assert torch.equal(max_type_weights(torch.tensor([[1.0, 3.0, 2.0], [5.0, 5.0, 0.0]])),
                       torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))


def test_minmax_outer_loss_uses_learned_weights_and_clean_mix():
    x, y = _digits()
    model = _model()
    model.train()
    m = _method(beta=0.3, gamma=2.0, clean_weight=0.5)
    res = m.inner(model, x, y, torch.Generator().manual_seed(2))
    loss, _, w = m.outer_loss(model, x, y, res)
    with torch.no_grad():
        ce = torch.stack([F.cross_entropy(model(x + d), y, reduction="none")
                          for d in res.deltas], 1)
        expect = 0.5 * (res.w * ce).sum(1).mean() + 0.5 * F.cross_entropy(model(x), y)
    assert torch.equal(w, res.w)
    torch.testing.assert_close(loss, expect)


@pytest.mark.parametrize("mode", ["steepest", "raw"])
def test_perturbations_feasible_for_their_own_ball_and_box(mode):
    x, y = _digits()
    model = _model()
    model.eval()
    norms, eps = ["linf", "l2", "l1"], [0.15, 0.6, 2.0]
    res = ampgd(model, x, y, norms=norms, eps=eps, steps=6,
                step_sizes=[0.1, 0.5, 2.0] if mode == "steepest" else 50.0,
                delta_mode=mode, generator=torch.Generator().manual_seed(0))
    for n, e, d in zip(norms, eps, res.deltas, strict=True):
        assert bool((get_threat(n).norm(d) <= e * (1 + 1e-5)).all()), n
        assert bool(((x + d) >= -1e-7).all() & ((x + d) <= 1 + 1e-7).all()), n
        assert d.abs().sum() > 0, n


def test_dpar_closed_form():
    g1 = torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    g2 = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 5.0], [0.0, 1.0, 0.0]])
    h = dpar_logdet([g1, g2], eps=0.0)
    # cos² = 1/2, 0 (orthogonal), 1 (parallel -> -inf)
    torch.testing.assert_close(h[:2], torch.tensor([math.log(0.5), 0.0]))
    assert h[2] == -math.inf
    e = 0.01
    he = dpar_logdet([g1, g2], eps=e)
    torch.testing.assert_close(
        he, torch.tensor([math.log((1 + e) ** 2 - 0.5), 2 * math.log(1 + e),
                          math.log((1 + e) ** 2 - 1)]))


def test_dpar_enters_the_outer_loss_with_double_backprop():
    x, y = _digits(8)
    model = _model()
    model.train()
    m0, m1 = _method(), _method(dpar_lambda=0.1, dpar_eps=1e-6)
    res = m0.inner(model, x, y, torch.Generator().manual_seed(0))
    l0, _, _ = m0.outer_loss(model, x, y, res)
    l1, _, _ = m1.outer_loss(model, x, y, res)
    grads = []
    for d in res.deltas:
        xa = (x + d).requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)
        grads.append(g)
    torch.testing.assert_close(l1, l0 + 0.1 * dpar_logdet(grads, 1e-6).mean(),
                               rtol=1e-5, atol=1e-6)
    l1.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_params_are_validated_with_clear_errors():
    def build(**p):
        return build_method(MethodConfig(name="minmax-at", params=p))

    assert "minmax-at" in list_methods()
    with pytest.raises(ConfigError, match="needs params.eps"):
        build()
    with pytest.raises(ConfigError, match="one entry per norm"):
        build(eps=[0.1])
    with pytest.raises(ConfigError, match="variant must be one of"):
        build(eps=[0.1, 1.0], variant="mean")
    with pytest.raises(ConfigError, match="params.norm"):
        build(norms=["linf", "l7"], eps=[0.1, 1.0])
    with pytest.raises(ConfigError, match="gamma must be >= 0"):
        build(eps=[0.1, 1.0], gamma=-1)
    with pytest.raises(ConfigError, match="clean_weight must be in"):
        build(eps=[0.1, 1.0], clean_weight=2)
    with pytest.raises(ConfigError, match="unknown parameter method.params.foo"):
        build(eps=[0.1, 1.0], foo=1)
    p = build(eps=[0.2, 2.0], gamma="inf").params
    assert isinstance(p, MinMaxATParams) and p.gamma == math.inf
    assert p.step_sizes() == [2.5 * 0.2 / 20, 2.5 * 2.0 / 20]
    assert p.weight_keys() == ["w_linf", "w_l2"]


def test_weights_logged_per_epoch_from_example_state():
    x, y = _digits(10)
    model = _model()
    model.train()
    m = _method(beta=0.5, gamma=1.0)
    state = ExampleState(20)
    m.setup(model, state, 20)
    assert m.epoch_logs(state, 0) == {}
    m.loss(model, Batch(x, y, torch.arange(10)), _ctx(state=state))
    logs = m.epoch_logs(state, 0)
    assert set(logs) == {"w_linf", "w_l2"}
    assert logs["w_linf"] + logs["w_l2"] == pytest.approx(1.0, abs=1e-6)


# --------------------------------------------------------------------------- metrics

class _Linear(nn.Module):
    """Two classes, logits [0, s(x)] with s(x) = Σ_j x_j − 2 on 4 pixels (u = 1): the
    distance to the boundary of a point with s = m is |m|/‖u‖₁ = |m|/4 in ℓ∞ and
    |m|/‖u‖₂ = |m|/2 in ℓ2 (the box is never active for the data below)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).sum(1) - 2.0
        return torch.stack([torch.zeros_like(s), s], 1)


def _linear_data(margins: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    # shift one coordinate so that s(x) = m, keeping every coordinate inside [0.2, 0.8]
    x = torch.full((len(margins), 1, 2, 2), 0.5)
    for i, m in enumerate(margins):
        x[i].view(-1).add_(m / 4)
    y = torch.ones(len(margins), dtype=torch.long)
    return x, y


def test_metrics_equal_closed_forms_on_a_linear_model():
    # ε∞ = 0.1 breaks margins < 0.4; ε2 = 0.3 breaks margins < 0.6
    margins = [-0.3, 0.2, 0.5, 0.8, 1.0]
    x, y = _linear_data(margins)
    model = _Linear()
    r = multi_norm_metrics(model, x, y, {"linf": 0.1, "l2": 0.3}, steps=20)
    assert r.clean == pytest.approx(4 / 5)
    assert r.per_norm == pytest.approx({"linf": 3 / 5, "l2": 2 / 5})
    assert r.max_adv == pytest.approx(2 / 5)
    assert r.avg_adv == pytest.approx(0.5)
    # S: Acc^max over ε2 ∈ {0.1, 0.2, 0.3, 0.45}: ℓ2 breaks margins < 2ε2 = 0.2, 0.4, 0.6, 0.9
    grid = [0.1, 0.2, 0.3, 0.45]
    s, accs = worst_case_auc(model, x, y, eps_linf=0.1, eps_l2_grid=grid)
    assert accs == pytest.approx([3 / 5, 3 / 5, 2 / 5, 1 / 5])
    expect = 0.1 * (0.6 + 0.6) / 2 + 0.1 * (0.6 + 0.4) / 2 + 0.15 * (0.4 + 0.2) / 2
    assert s == pytest.approx(expect)
    s_n, _ = worst_case_auc(model, x, y, eps_linf=0.1, eps_l2_grid=grid, normalize=True)
    assert s_n == pytest.approx(expect / 0.35)


def test_combine_correct_is_per_example_worst_case():
    clean = torch.tensor([1, 1, 1, 1, 0], dtype=torch.bool)
    a = torch.tensor([1, 0, 1, 1, 0], dtype=torch.bool)
    b = torch.tensor([0, 1, 1, 1, 1], dtype=torch.bool)
    r = combine_correct(clean, {"linf": a, "l2": b})
    assert (r.per_norm["linf"], r.per_norm["l2"]) == pytest.approx((0.6, 0.8))
    assert r.max_adv == pytest.approx(0.4)  # < min(0.6, 0.8): not min of the accuracies
    assert r.avg_adv == pytest.approx(0.7)
    assert trapezoid_area([0.0, 1.0, 3.0], [1.0, 0.5, 0.5]) == pytest.approx(1.75)
    with pytest.raises(ValueError):
        trapezoid_area([1.0, 1.0], [0.0, 0.0])


# --------------------------------------------------------------------------- recipes

def test_recipes_validate_and_carry_the_papers_settings():
    for name in ("mnist-minmax-at", "mnist-minmax-at-avg", "mnist-minmax-at-max",
                 "fashion-mnist-minmax-at", "fashion-mnist-minmax-at-avg", "digits-minmax-at"):
        cfg = load_recipe(name)
        assert cfg.description
        assert build_method(cfg.method).name == "minmax-at"
    for name, variant in (("mnist-minmax-at", "minmax"), ("mnist-minmax-at-avg", "avg"),
                          ("mnist-minmax-at-max", "max")):
        cfg = load_recipe(name)
        p = build_method(cfg.method).params
        assert (p.variant, p.norms, p.eps, p.steps, p.gamma) == (
            variant, ["linf", "l2"], [0.2, 2.0], 20, 4.0)
        assert (p.delta_mode, p.alpha, p.beta, p.clean_weight) == ("raw", [1 / 6, 1 / 6],
                                                                    0.02, 0.5)
        assert (cfg.optim.name, cfg.optim.lr, cfg.run.epochs, cfg.data.batch_size) == (
            "adam", 0.001, 350, 128)
        assert cfg.model.name == "mlp" and list(cfg.model.params["hidden"]) == [128, 128, 64]


# --------------------------------------------------------------------------- trainer runs

def _lines(run):
    return [{k: v for k, v in json.loads(line).items() if k != "epoch_time"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_short_digits_run_finishes_and_resumes_exactly(tmp_path, interrupt_after):
    cfg = apply_overrides(load_recipe("digits-minmax-at"), [
        "data.val_size=100", "data.train_subset=200", "data.batch_size=50",
        "method.params.steps=3", "run.epochs=2",
        "model.params={channels: [8, 16], hidden: 32, batchnorm: true}",
    ])
    full = train(cfg, tmp_path / "full", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", progress=False,
              callbacks=[interrupt_after(epoch=1, batch_in_epoch=0)])
    resumed = resume(tmp_path / "cut", progress=False)
    a = load_checkpoint(full.run_dir / "checkpoints/last.safetensors")
    b = load_checkpoint(resumed.run_dir / "checkpoints/last.safetensors")
    for k in a.model:
        assert torch.equal(a.model[k], b.model[k]), k
    for k in a.example_state:
        torch.testing.assert_close(a.example_state[k], b.example_state[k], rtol=0, atol=0,
                                   equal_nan=True)
    lines = _lines(full.run_dir)
    assert lines == _lines(resumed.run_dir)
    epochs = [r for r in lines if r["event"] == "epoch"]
    assert len(epochs) == 2 and all(math.isfinite(r["train_loss"]) for r in epochs)
    assert epochs[-1]["w_linf"] + epochs[-1]["w_l2"] == pytest.approx(1.0, abs=1e-6)


def test_minmax_at_beats_standard_training_on_worst_case_accuracy(tmp_path):
    x, y = wb.data.tensors("digits", split="test")
    robust = {}
    for name, recipe in (("standard", "digits-standard"), ("minmax-at", "digits-minmax-at")):
        cfg = apply_overrides(load_recipe(recipe), ["run.epochs=15", "run.threads=1"])
        model = wb.load_model(train(cfg, tmp_path / name, progress=False).run_dir)
        robust[name] = multi_norm_metrics(model, x, y, {"linf": 0.1, "l2": 0.3}, steps=10)
    print({k: (v.clean, v.per_norm, v.max_adv) for k, v in robust.items()})
    assert robust["minmax-at"].max_adv > robust["standard"].max_adv + 0.05


def test_ampgd_result_type():
    x, y = _digits(4)
    res = ampgd(_model().eval(), x, y, norms=["linf", "l2"], eps=[0.1, 0.3], steps=0,
                step_sizes=0.1, init="zero")
    assert isinstance(res, AMPGDResult) and res.losses.shape == (4, 2)
    assert all(torch.equal(d, torch.zeros_like(x)) for d in res.deltas)
