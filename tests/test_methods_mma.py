"""MMA / OMMA training (Ding et al., ICLR 2020, §2.3–2.5 and Algorithm 1).

The loss tests replace AN-PGD by a stub that returns fixed (x*, ε*), so the §3.1/§3.7
closed form, the per-example weights, the hinge and the store update are checked exactly.
Then: exact resume through the trainer, a toy-2-D smoke test (the average margin grows),
and MMA beating standard training under PGD on digits.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import wideberth as wb
import wideberth.methods.mma as mma_mod
from wideberth.attacks import average_margin, pgd
from wideberth.config import ConfigError, MethodConfig, apply_overrides, load_recipe
from wideberth.data import make_toy2d
from wideberth.losses import soft_logit_margin
from wideberth.methods import Batch, StepContext, build_method, register_method
from wideberth.methods.mma import MMA, OMMA, MMAParams
from wideberth.train import ExampleState, load_checkpoint, resume, train

register_method(MMA)
register_method(OMMA)

# --------------------------------------------------------------------------------------
# A toy batch whose per-example terms can be isolated
# --------------------------------------------------------------------------------------
# Inputs are scaled basis vectors x_i = 0.5·e_i in R^D and the model is a bias-free linear
# layer, so row i's logits (clean and adversarial, since the stub keeps x*_i on e_i) depend
# only on the column W[:, i]: the gradient on W[:, i] is exactly row i's contribution.

D, K = 6, 3
Y = torch.tensor([0, 1, 2, 0, 1, 2])
# rows 0-3 correct (big true-class weight), rows 4-5 wrong (true class pushed down)
TRUE_W = torch.tensor([8.0, 8.0, 8.0, 8.0, -4.0, -4.0])
# ε* the stub returns per active coordinate: row 0 kept, row 1 dropped (= d_max, strict),
# row 2 dropped (> d_max), row 3 kept; rows 4-5 are never attacked
D_MAX = 0.3
EPS_STAR = torch.tensor([0.1, D_MAX, 0.31, 0.25, -1.0, -1.0])
ADV_SCALE = 1.8  # x*_i = 1.8·x_i = 0.9·e_i
INDEX = torch.tensor([7, 3, 11, 0, 5, 9])  # dataset indices, deliberately unordered


def _toy_model() -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, K, bias=False))
    with torch.no_grad():
        w = torch.full((K, D), 0.5)
        for i in range(D):
            w[Y[i], i] = TRUE_W[i]
        model[1].weight.copy_(w)
    return model


def _toy_batch() -> Batch:
    x = 0.5 * torch.eye(D).reshape(D, 1, 1, D)
    return Batch(x=x, y=Y.clone(), index=INDEX.clone())


def _ctx(state: ExampleState, epoch: int = 0) -> StepContext:
    return StepContext(
        epoch=epoch, step=0, total_steps=1, steps_per_epoch=1, state=state,
        generator=torch.Generator().manual_seed(0), num_classes=K,
    )


class StubANPGD:
    """Stands in for ``an_pgd``: x* = 1.8·x, ε* from EPS_STAR by active coordinate."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, model, x, y, **kw):
        self.calls.append({"x": x.clone(), "y": y.clone(), **kw})
        rows = x.flatten(1).argmax(1)
        return SimpleNamespace(x_adv=(ADV_SCALE * x).clamp(0, 1), eps=EPS_STAR[rows].clone())


def _method(clean_coeff: float = 1 / 3, name: str = "mma", **params) -> MMA:
    p = {"d_max": D_MAX, "norm": "linf", "eps_min": 0.05, "steps": 7, **params}
    if name == "mma":
        p["clean_coeff"] = clean_coeff
    return build_method(MethodConfig(name=name, params=p))  # type: ignore[return-value]


def _run_step(monkeypatch, method: MMA, stored: dict[int, float] | None = None):
    stub = StubANPGD()
    monkeypatch.setattr(mma_mod, "an_pgd", stub)
    model = _toy_model()
    model.train()
    state = ExampleState(16)
    method.setup(model, state, 16)
    for i, v in (stored or {}).items():
        state.set("mma_eps", torch.tensor([i]), torch.tensor([v]))
    batch = _toy_batch()
    ctx = _ctx(state)
    loss, logits = method.loss(model, batch, ctx)
    return stub, model, state, batch, ctx, loss, logits


def _per_example_grad(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """∇_{W[:, i]} CE(W x, y) for x = a·e_i: (softmax − onehot)·a, a column [K]."""
    logits = (w @ x.flatten()).unsqueeze(0)
    p = torch.softmax(logits, 1)[0]
    onehot = F.one_hot(y, K).to(p)
    return (p - onehot) * x.flatten().max()


def test_toy_split_is_as_designed():
    model = _toy_model()
    b = _toy_batch()
    slm = soft_logit_margin(model(b.x), b.y)
    assert (slm[:4] < 0).all() and (slm[4:] >= 0).all()


@pytest.mark.parametrize("c", [1 / 3, 0.0, 0.5])
def test_loss_equals_closed_form(monkeypatch, c):
    method = _method(clean_coeff=c)
    stub, model, state, batch, ctx, loss, logits = _run_step(monkeypatch, method)
    m = D
    x, y = batch.x, batch.y
    with torch.no_grad():
        ce_cln = F.cross_entropy(model(x), y, reduction="none")
        ce_adv = F.cross_entropy(model(ADV_SCALE * x), y, reduction="none")
    kept = [0, 3]  # correct and ε* < d_max
    wrong = [4, 5]
    l_mma = (ce_adv[kept].sum() + ce_cln[wrong].sum()) / m
    expected = (1 - c) * l_mma + c * ce_cln.mean()
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-6, abs=1e-7)
    assert torch.allclose(logits.detach(), model(x).detach())


def test_per_example_weights_and_hinge_gradients(monkeypatch):
    c = 1 / 3
    method = _method(clean_coeff=c)
    _, model, _, batch, _, loss, _ = _run_step(monkeypatch, method)
    loss.backward()
    w = model[1].weight.detach()
    grad = model[1].weight.grad  # [K, D]; column i is row i's contribution
    m = D
    for i in range(D):
        g_cln = _per_example_grad(batch.x[i], batch.y[i], w) / m
        g_adv = _per_example_grad(ADV_SCALE * batch.x[i], batch.y[i], w) / m
        if i in (4, 5):  # misclassified: clean CE with total weight 1/3 + 2/3 = 1
            expected = g_cln
        elif i in (1, 2):  # hinge-dropped (ε* = d_max and > d_max): only the 1/3 clean term
            expected = c * g_cln
        else:  # kept: 1/3 clean + 2/3 adversarial
            expected = c * g_cln + (1 - c) * g_adv
        assert torch.allclose(grad[:, i], expected, atol=1e-7), i


def test_omma_drops_clean_term_and_dropped_rows_get_zero_gradient(monkeypatch):
    method = _method(name="omma")
    assert isinstance(method, OMMA) and method.params.clean_coeff == 0.0
    _, model, _, batch, _, loss, _ = _run_step(monkeypatch, method)
    loss.backward()
    grad = model[1].weight.grad
    w = model[1].weight.detach()
    assert torch.equal(grad[:, 1], torch.zeros(K)) and torch.equal(grad[:, 2], torch.zeros(K))
    # wrong rows still get their full clean CE; kept rows only the adversarial CE
    for i in (4, 5):
        assert torch.allclose(grad[:, i], _per_example_grad(batch.x[i], batch.y[i], w) / D, atol=1e-7)
    for i in (0, 3):
        expected = _per_example_grad(ADV_SCALE * batch.x[i], batch.y[i], w) / D
        assert torch.allclose(grad[:, i], expected, atol=1e-7)
    # and OMMA's loss equals MMA's L_MMA term alone
    with torch.no_grad():
        ce_cln = F.cross_entropy(model(batch.x), batch.y, reduction="none")
        ce_adv = F.cross_entropy(model(ADV_SCALE * batch.x), batch.y, reduction="none")
    assert float(loss.detach()) == pytest.approx(float((ce_adv[[0, 3]].sum() + ce_cln[[4, 5]].sum()) / D))


def test_anpgd_gets_the_correct_subset_floor_and_settings(monkeypatch):
    # stored values: index 7 (row 0) at 0 → floor ε_min; index 3 (row 1) at 0.2; index 11
    # (row 2) left at its default ε_min; index 0 (row 3) at 0.01 < ε_min → floor
    method = _method(steps=7, step_scale=2.0, n_search=4, direction="actual_norm",
                     return_mode="upper", clip_final=False, search_in_eval=False)
    stub, model, state, batch, ctx, _, _ = _run_step(
        monkeypatch, method, stored={7: 0.0, 3: 0.2, 0: 0.01, 5: 0.4}
    )
    assert len(stub.calls) == 1  # one batched call over the whole correct subset
    call = stub.calls[0]
    assert torch.equal(call["x"], batch.x[:4]) and torch.equal(call["y"], batch.y[:4])
    assert torch.allclose(call["eps_init"], torch.tensor([0.05, 0.2, 0.05, 0.05]))
    assert call["eps_max"] == pytest.approx(1.05 * D_MAX)
    assert call["steps"] == 7 and call["step_scale"] == 2.0 and call["n_search"] == 4
    assert call["attack_loss"] == "slm" and call["search_loss"] == "slm"
    assert call["direction"] == "actual_norm" and call["return_mode"] == "upper"
    assert call["clip_final"] is False and call["search_in_eval"] is False
    assert call["generator"] is ctx.generator and call["norm"] == "linf"


def test_store_update_at_dataset_indices(monkeypatch):
    method = _method()
    _, _, state, _, _, _, _ = _run_step(monkeypatch, method, stored={5: 0.4, 9: 0.2, 1: 0.123})
    eps = state.all("mma_eps")
    # correct rows 0..3 at indices 7, 3, 11, 0 get ε*; wrong rows at 5, 9 get 0
    assert torch.allclose(eps[INDEX[:4]], EPS_STAR[:4])
    assert torch.equal(eps[INDEX[4:]], torch.zeros(2))
    # untouched indices keep their values (ε_min default, or what was stored)
    assert eps[1] == pytest.approx(0.123) and eps[2] == pytest.approx(0.05)
    assert torch.equal(state.all("mma_epoch")[INDEX], torch.zeros(D, dtype=torch.int64))
    status = state.all("mma_status")[INDEX].tolist()
    assert status == [0, 1, 1, 0, 2, 2]  # trained, dropped (=d_max), dropped (>d_max), trained, wrong x2
    logs = method.epoch_logs(state, 0)
    assert logs["mma_visited"] == D
    assert logs["mma_dropped_frac"] == pytest.approx(2 / D)
    assert logs["mma_wrong_frac"] == pytest.approx(2 / D)
    expected_mean = float(torch.cat([EPS_STAR[:4], torch.zeros(2)]).double().mean())
    assert logs["mma_eps_mean"] == pytest.approx(expected_mean)
    assert sum(logs["mma_eps_hist"]) == D and len(logs["mma_eps_hist"]) == 10
    # bins of width 0.0315 over [0, 0.315]: 0, 0 | 0.1 | 0.25 | 0.3, 0.31
    assert logs["mma_eps_hist"] == [2, 0, 0, 1, 0, 0, 0, 1, 0, 2]
    assert method.epoch_logs(state, 1)["mma_visited"] == 0


def test_correct_by_flags(monkeypatch):
    # a row with p_y < 1/2 that argmax/LM call correct but SLM calls wrong
    logits = torch.tensor([[1.0, 0.9, 0.9], [2.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    y = torch.tensor([0, 0, 0])
    for by, expected in [("slm", [False, False, True]), ("lm", [True, False, True]),
                         ("argmax", [True, True, True])]:
        method = _method(correct_by=by)
        assert method._correct(logits, y).tolist() == expected, by


def test_no_correct_examples_skips_the_attack(monkeypatch):
    stub = StubANPGD()
    monkeypatch.setattr(mma_mod, "an_pgd", stub)
    model = _toy_model()
    with torch.no_grad():
        for i in range(D):  # everything wrong
            model[1].weight[Y[i], i] = -4.0
    state = ExampleState(16)
    method = _method()
    method.setup(model, state, 16)
    b = _toy_batch()
    loss, _ = method.loss(model, b, _ctx(state))
    assert stub.calls == []
    with torch.no_grad():
        expected = float(F.cross_entropy(model(b.x), b.y))
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    assert torch.equal(state.all("mma_eps")[INDEX], torch.zeros(D))


def test_real_anpgd_step_runs_and_restores_modes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.rand(20, 1, 2, 2)
    y = torch.randint(0, 3, (20,))
    with torch.no_grad():  # make a few rows correct
        model(x)
    state = ExampleState(40)
    method = _method(d_max=0.5, eps_min=0.05, steps=3, norm="l2", correct_by="argmax")
    method.setup(model, state, 40)
    model.train()
    index = torch.arange(20) * 2
    loss, logits = method.loss(model, Batch(x, y, index), _ctx(state))
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    correct = logits.argmax(1) == y
    eps = state.all("mma_eps")[index]
    assert torch.equal(eps[~correct], torch.zeros(int((~correct).sum())))
    assert (eps[correct] > 0).all() and (eps[correct] <= 1.05 * 0.5 + 1e-6).all()


@pytest.mark.parametrize(
    "params, match",
    [
        ({"d_max": 0.0}, "d_max must be > 0"),
        ({"d_max": 0.3, "eps_min": 0.0}, "eps_min must be > 0"),
        ({"d_max": 0.3, "eps_min": -0.1}, "eps_min must be > 0"),
        ({"d_max": 0.1, "eps_min": 0.2}, "eps_min .* must be below eps_max"),
        ({"d_max": 0.3, "clean_coeff": 1.5}, "clean_coeff must be in"),
        ({"d_max": 0.3, "clean_coeff": -0.1}, "clean_coeff must be in"),
        ({"d_max": 0.3, "correct_by": "prob"}, "correct_by must be one of"),
        ({"d_max": 0.3, "norm": "l3"}, "unknown norm"),
        ({"d_max": 0.3, "steps": 0}, "steps must be an integer"),
        ({"d_max": 0.3, "direction": "x"}, "direction must be one of"),
        ({"d_max": 0.3, "clip_final": "yes"}, "clip_final must be true or false"),
        ({"d_max": 0.3, "attack_loss": "nope"}, "unknown loss"),
        ({"d_max": 0.3, "dmax": 0.3}, "unknown parameter method.params.dmax"),
        ({}, "d_max"),
    ],
)
def test_params_are_validated(params, match):
    with pytest.raises(ConfigError, match=match):
        build_method(MethodConfig(name="mma", params=params))


def test_params_defaults_and_omma():
    p = MMAParams(d_max=2)
    assert p.d_max == 2.0 and isinstance(p.d_max, float) and p.eps_max == pytest.approx(2.1)
    assert p.clean_coeff == pytest.approx(1 / 3) and p.correct_by == "slm"
    assert (p.direction, p.return_mode, p.clip_final, p.search_in_eval) == (
        "eps_init", "last_mid", True, True)
    assert MMAParams(d_max=1, norm="L2").norm == "l2"
    with pytest.raises(ConfigError, match="omma.*clean_coeff 0"):
        build_method(MethodConfig(name="omma", params={"d_max": 0.3, "clean_coeff": 0.3}))


# --------------------------------------------------------------------------------------
# Through the trainer: exact resume, including the state and the per-epoch logs
# --------------------------------------------------------------------------------------


def _digits_cfg(*overrides):
    base = [
        "data.val_size=100",
        "data.train_subset=300",
        "data.batch_size=50",
        "model.name=cnn-small",
        "optim.name=adam",
        "optim.lr=0.005",
        "method.name=mma",
        "method.params={norm: linf, d_max: 0.2, eps_min: 0.05, steps: 3, n_search: 5}",
        "run.epochs=3",
        "run.threads=1",
        "data.augment=none",
    ]
    return apply_overrides(load_recipe("digits-standard"), base + list(overrides))


def _timeless(run):
    lines = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "epoch_time"} for r in lines]


@pytest.mark.parametrize(
    "extra, when",
    [
        ((), lambda pos: pos["epoch"] == 1 and pos["batch_in_epoch"] == 0),
        (("run.checkpoint_every_steps=4",), lambda pos: pos["step"] == 8),  # mid epoch 2
    ],
    ids=["after-epoch-1", "mid-epoch-2"],
)
def test_mma_resume_is_exact(tmp_path, interrupt_after, extra, when):
    cfg = _digits_cfg(*extra)
    full = train(cfg, tmp_path / "full", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", progress=False, callbacks=[interrupt_after(when)])
    resumed = resume(tmp_path / "cut", progress=False)
    a = load_checkpoint(full.run_dir / "checkpoints/last.safetensors")
    b = load_checkpoint(resumed.run_dir / "checkpoints/last.safetensors")
    for k in a.model:
        assert torch.equal(a.model[k], b.model[k]), k
    assert set(a.example_state) == {"mma_eps", "mma_epoch", "mma_status"}
    for k in a.example_state:
        assert torch.equal(a.example_state[k], b.example_state[k]), k
    lines = _timeless(full.run_dir)
    assert lines == _timeless(resumed.run_dir)
    epochs = [r for r in lines if r["event"] == "epoch"]
    assert len(epochs) == 3 and all(r["mma_visited"] == 300 for r in epochs)
    assert all(sum(r["mma_eps_hist"]) == 300 for r in epochs)
    # some examples were attacked and stored a positive margin
    assert (a.example_state["mma_eps"] > 0).any()


# --------------------------------------------------------------------------------------
# Smoke test: 2-D toy data + MLP, ~200 MMA steps
# --------------------------------------------------------------------------------------


def test_toy2d_average_margin_increases():
    torch.manual_seed(0)
    x_tr, y_tr = make_toy2d(600, seed=1, std=0.1)
    x_va, y_va = make_toy2d(300, seed=2, std=0.1)
    model = wb.models.build_model("mlp", (1, 1, 2), 3, hidden=[32, 32])
    d_max = 0.25
    margin_kw = {"norm": "l2", "test_eps": 0.05, "eps_max": 1.05 * d_max, "steps": 10}
    m0 = average_margin(model, x_va, y_va, **margin_kw)
    method = _method(d_max=d_max, eps_min=0.02, steps=10, norm="l2")
    state = ExampleState(600)
    method.setup(model, state, 600)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(0)
    logs = []
    step = 0
    for epoch in range(17):  # 12 batches of 50 per epoch: 204 steps
        perm = torch.randperm(600, generator=gen)
        for s in range(0, 600, 50):
            idx = perm[s : s + 50]
            model.train()
            ctx = StepContext(epoch, step, 204, 12, state, torch.Generator().manual_seed(step), 3)
            loss, _ = method.loss(model, Batch(x_tr[idx], y_tr[idx], idx), ctx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        logs.append(method.epoch_logs(state, epoch))
    model.eval()
    m1 = average_margin(model, x_va, y_va, **margin_kw)
    assert m1 > m0 + 0.05 and m1 > 1.5 * m0, (m0, m1)
    # fewer misclassified and more examples beyond d_max as training goes on
    assert logs[-1]["mma_wrong_frac"] < logs[0]["mma_wrong_frac"]
    assert logs[-1]["mma_dropped_frac"] > logs[0]["mma_dropped_frac"]
    assert logs[-1]["mma_eps_mean"] > logs[0]["mma_eps_mean"]


# --------------------------------------------------------------------------------------
# MMA is more robust than standard training on digits (same seed, same budget)
# --------------------------------------------------------------------------------------


def test_mma_beats_standard_under_pgd_on_digits(tmp_path):
    common = ["run.epochs=6", "optim.lr=0.004", "run.threads=1"]
    std_cfg = apply_overrides(load_recipe("digits-standard"), common)
    mma_cfg = apply_overrides(
        load_recipe("digits-standard"),
        common + ["method.name=mma",
                  "method.params={norm: linf, d_max: 0.2, eps_min: 0.05, steps: 5}"],
    )
    x, y = wb.data.tensors("digits", split="test")
    acc = {}
    for name, cfg in (("std", std_cfg), ("mma", mma_cfg)):
        run = train(cfg, tmp_path / name, progress=False)
        model = wb.load_model(run.run_dir)
        with torch.no_grad():
            acc[name + "_clean"] = float((model(x).argmax(1) == y).float().mean())
        for eps in (0.1, 0.15):
            x_adv = pgd(model, x, y, norm="linf", eps=eps, steps=20)
            with torch.no_grad():
                acc[f"{name}_{eps}"] = float((model(x_adv).argmax(1) == y).float().mean())
    # measured: 0.69 vs 0.56 at 0.1, 0.43 vs 0.23 at 0.15 (360 test images)
    assert acc["mma_0.1"] > acc["std_0.1"] + 0.05, acc
    assert acc["mma_0.15"] > acc["std_0.15"] + 0.1, acc
    assert acc["mma_clean"] > 0.85 and not math.isnan(acc["std_clean"]), acc


# --------------------------------------------------------------------------------------
# Recipes: every d_max of the paper's tables (Ding et al., ICLR 2020, Tables 1–3 and App. C), MMA and OMMA
# --------------------------------------------------------------------------------------

PAPER_DMAX = {
    ("mnist", "linf"): ["0.45"],
    ("mnist", "l2"): ["2.0", "4.0", "6.0"],
    ("cifar10", "linf"): ["12", "20", "32"],
    ("cifar10", "l2"): ["1.0", "2.0", "3.0"],
}


@pytest.mark.parametrize("kind", ["mma", "omma"])
def test_paper_recipes_exist_and_match_the_paper(kind):
    for (dataset, norm), values in PAPER_DMAX.items():
        for v in values:
            cfg = load_recipe(f"{dataset}-{norm}-{kind}-{v}")
            method = build_method(cfg.method)
            p = method.params
            assert method.name == kind and p.norm == norm
            expected = int(v) / 255 if (dataset, norm) == ("cifar10", "linf") else float(v)
            assert p.d_max == pytest.approx(expected)
            assert p.clean_coeff == pytest.approx(0.0 if kind == "omma" else 1 / 3)
            assert p.steps == (40 if dataset == "mnist" else 10)
            assert p.step_scale == 2.5 and p.n_search == 10
            assert p.eps_min == {"linf": 0.1 if dataset == "mnist" else 0.005, "l2": 0.5}[norm]
            assert cfg.data.val_size == 5000 and cfg.description
            if dataset == "mnist":
                assert (cfg.model.name, cfg.optim.name, cfg.optim.lr) == ("lenet5-madry", "adam", 1e-4)
                assert (cfg.data.batch_size, cfg.run.steps) == (50, 100000)
            else:
                assert (cfg.model.name, cfg.optim.name, cfg.data.batch_size) == ("wrn-28-4", "sgd", 128)
                assert cfg.schedule.milestones == [20000, 30000, 40000] and cfg.run.steps == 50000
                assert cfg.schedule.values == [0.3, 0.09, 0.03, 0.009]
                assert cfg.optim.weight_decay == 2e-4 and cfg.data.augment == "cifar"


@pytest.mark.parametrize("name", ["digits-mma", "digits-omma", "fashion-mnist-mma"])
def test_small_recipes_build(name):
    cfg = load_recipe(name)
    method = build_method(cfg.method)
    assert method.name == name.split("-")[-1] and cfg.description
