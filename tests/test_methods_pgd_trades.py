"""PGD-AT, PGDLS and TRADES: losses equal their closed forms, modes and BN statistics are
handled as documented, the PGDLS schedule is exact, runs resume bit for bit, and (slow)
adversarial training beats standard training under PGD on digits."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import wideberth as wb
from wideberth._modes import eval_mode
from wideberth.attacks import pgd
from wideberth.config import ConfigError, MethodConfig, apply_overrides, load_recipe
from wideberth.config import list_recipes as all_recipes
from wideberth.example_state import ExampleState
from wideberth.losses import trades_kl
from wideberth.methods import build_method, register_method
from wideberth.methods.base import Batch, StepContext
from wideberth.methods.pgd_at import PGDAT, PGDLS, PGDATParams, PGDLSParams, pgdls_eps
from wideberth.methods.trades import TRADES, TRADESParams, trades_attack
from wideberth.models import build_model
from wideberth.train import load_checkpoint, resume, train

for _cls in (PGDAT, PGDLS, TRADES):
    register_method(_cls)


# --------------------------------------------------------------------------- helpers

def _digits(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = wb.data.tensors("digits", split="train", n=n)
    return x, y


def _model(batchnorm: bool = False, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn-small", (1, 8, 8), 10, channels=(8, 16), hidden=32,
                       batchnorm=batchnorm)


def _ctx(seed: int = 123, step: int = 0, steps_per_epoch: int = 10,
         state: ExampleState | None = None) -> StepContext:
    return StepContext(
        epoch=step // steps_per_epoch, step=step, total_steps=1000,
        steps_per_epoch=steps_per_epoch, state=state, generator=torch.Generator().manual_seed(seed),
        num_classes=10,
    )


def _batch(x: torch.Tensor, y: torch.Tensor) -> Batch:
    return Batch(x, y, torch.arange(x.shape[0]))


def _bn_stats(model: nn.Module) -> list[torch.Tensor]:
    return [b.clone() for name, b in model.named_buffers()]


# --------------------------------------------------------------------------- PGD-AT

@pytest.mark.parametrize("loss_name,init,norm,eps", [
    ("ce", "uniform", "linf", 0.1),
    ("slm", "advertorch", "l2", 0.5),
])
def test_pgd_at_loss_is_ce_at_pgd_output(loss_name, init, norm, eps):
    x, y = _digits()
    model = _model()
    method = PGDAT(PGDATParams(norm=norm, eps=eps, steps=4, attack_loss=loss_name, init=init))
    model.train()
    loss, logits = method.loss(model, _batch(x, y), _ctx(seed=7))
    assert model.training and all(m.training for m in model.modules())
    x_adv = pgd(model, x, y, norm=norm, eps=eps, steps=4, step_size=2.5 * eps / 4,
                loss=loss_name, init=init, return_best=False,
                generator=torch.Generator().manual_seed(7), check=False)
    expected_logits = model(x_adv)
    assert torch.equal(logits, expected_logits)  # the adversarial logits are returned
    assert torch.equal(loss, F.cross_entropy(expected_logits, y))
    clean = F.cross_entropy(model(x), y)
    assert loss > clean + 1e-3  # the attack did something
    # another generator seed gives another random start, hence another loss
    other, _ = method.loss(model, _batch(x, y), _ctx(seed=8))
    assert not torch.equal(other, loss)


def test_pgd_at_clean_weight_mixes_exactly():
    x, y = _digits()
    model = _model()
    model.train()
    pure, _ = PGDAT(PGDATParams(eps=0.1, steps=3)).loss(model, _batch(x, y), _ctx(seed=3))
    mixed, _ = PGDAT(PGDATParams(eps=0.1, steps=3, clean_weight=0.3)).loss(
        model, _batch(x, y), _ctx(seed=3))
    clean = F.cross_entropy(model(x), y)
    assert mixed.item() == pytest.approx(0.7 * pure.item() + 0.3 * clean.item(), rel=1e-6)
    only_clean, _ = PGDAT(PGDATParams(eps=0.1, steps=3, clean_weight=1.0)).loss(
        model, _batch(x, y), _ctx(seed=3))
    assert only_clean.item() == pytest.approx(clean.item(), rel=1e-6)


@pytest.mark.parametrize("bn,attack_forwards", [("eval", 0), ("train", 3)])
def test_pgd_at_attack_bn_mode(bn, attack_forwards):
    x, y = _digits()
    model = _model(batchnorm=True)
    model.train()
    frozen = model.features[1]  # a BN layer the user froze: must come back frozen
    frozen.eval()
    before = _bn_stats(model)
    method = PGDAT(PGDATParams(eps=0.1, steps=3, attack_bn=bn))
    x_adv = method.adversarial(model, x, y, 0.1, torch.Generator().manual_seed(0))
    after = _bn_stats(model)
    changed = any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert changed == (bn == "train")
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    # through loss(): num_batches_tracked counts train-mode forwards of the live BN layer
    live = model.features[5]
    assert isinstance(live, nn.BatchNorm2d)
    n0 = int(live.num_batches_tracked)
    loss, _ = method.loss(model, _batch(x, y), _ctx())
    assert int(live.num_batches_tracked) - n0 == attack_forwards + 1  # + the loss forward
    assert model.training and live.training and not frozen.training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_pgd_at_logs_clean_accuracy_per_example():
    x, y = _digits(20)
    model = _model()
    state = ExampleState(50)
    method = PGDAT(PGDATParams(eps=0.1, steps=2))
    method.setup(model, state, 50)
    model.train()
    method.loss(model, Batch(x, y, torch.arange(10, 30)), _ctx(state=state))
    with torch.no_grad():
        expect = (model.eval()(x).argmax(1) == y).float().mean().item()
    logs = method.epoch_logs(state, 0)
    assert logs["eps"] == 0.1
    assert logs["train_clean_accuracy"] == pytest.approx(expect)


def test_params_are_validated_with_clear_errors():
    ok = build_method(MethodConfig("pgd-at", {"eps": "3e-1", "steps": 5}))
    assert ok.params.eps == 0.3
    cases = [
        ("pgd-at", {}, "needs params.eps"),
        ("pgd-at", {"eps": 0.1, "epss": 1}, "unknown parameter method.params.epss"),
        ("pgd-at", {"eps": 0.1, "attack_bn": "frozen"}, "attack_bn must be one of eval, train"),
        ("pgd-at", {"eps": 0.1, "clean_weight": 1.5}, "clean_weight must be in"),
        ("pgd-at", {"eps": 0.1, "norm": "l7"}, "params.norm"),
        ("pgd-at", {"eps": 0.1, "steps": 2.5}, "steps must be an integer"),
        ("pgdls", {"eps": 0.1, "ramp_epochs": -1}, "ramp_epochs must be >= 0"),
        ("trades", {"eps": 0.1, "norm": "l1"}, "must be linf or l2"),
        ("trades", {"beta": 6}, "needs params.eps"),
        ("trades", {"eps": 0.1, "reuse_nat_forward": "yes"}, "true or false"),
    ]
    for name, params, message in cases:
        with pytest.raises(ConfigError, match=message):
            build_method(MethodConfig(name, params))


# --------------------------------------------------------------------------- PGDLS

def test_pgdls_schedule_values_are_exact():
    # T = ramp_epochs * steps_per_epoch = 8; step s uses eps * (s + 1) / T until s + 1 >= T
    values = [pgdls_eps(s, 4, 0.5, 2) for s in range(10)]
    assert values == [0.0625, 0.125, 0.1875, 0.25, 0.3125, 0.375, 0.4375, 0.5, 0.5, 0.5]
    assert pgdls_eps(0, 1100, 0.3, 50) == 0.3 / 55000
    assert pgdls_eps(27499, 1100, 0.3, 50) == 0.3 * 27500 / 55000  # half-way: eps / 2
    assert pgdls_eps(54999, 1100, 0.3, 50) == 0.3  # last step of epoch 50: exactly eps
    assert pgdls_eps(10**6, 1100, 0.3, 50) == 0.3
    assert pgdls_eps(0, 10, 0.3, 0) == 0.3  # no ramp: plain PGD
    assert pgdls_eps(2, 4, 1.0, 1.5) == 0.5  # fractional ramp: T = 6
    assert all(a < b for a, b in zip(values[:7], values[1:8], strict=True))
    with pytest.raises(ValueError):
        pgdls_eps(-1, 4, 0.5, 2)


def test_pgdls_loss_is_pgd_at_at_the_current_eps():
    x, y = _digits()
    model = _model()
    model.train()
    method = PGDLS(PGDLSParams(eps=0.2, steps=3, ramp_epochs=2, step_size=0.1))
    ctx = _ctx(seed=5, step=4, steps_per_epoch=10)  # eps_t = 0.2 * 5/20 = 0.05
    loss, _ = method.loss(model, _batch(x, y), ctx)
    assert method.epoch_logs(None, 0) == {"eps": 0.05}
    # explicit step_size is the step at the full eps: scaled by eps_t / eps = 1/4
    step = method.step_size_for(0.05)
    assert step == pytest.approx(0.025, rel=1e-12)
    x_adv = pgd(model, x, y, eps=0.05, steps=3, step_size=step, init="uniform",
                return_best=False, generator=torch.Generator().manual_seed(5), check=False)
    assert torch.equal(loss, F.cross_entropy(model(x_adv), y))
    assert (x_adv - x).abs().max() <= 0.05 + 1e-6
    # default step: step_scale * eps_t / steps
    assert PGDLS(PGDLSParams(eps=0.2, steps=4)).step_size_for(0.05) == 2.5 * 0.05 / 4


# --------------------------------------------------------------------------- TRADES

class _Recorder(nn.Module):
    """Wraps a model and records the train/eval mode of every forward."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.modes: list[bool] = []
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        self.inputs.append(x.detach().clone())
        return self.inner(x)


def _toy_linear(seed: int = 0) -> nn.Module:
    """A linear 3-class model with large weights: an ε = 0.1 perturbation moves the logits
    by several units, so KL(p‖q) and KL(q‖p) differ clearly."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    nn.init.normal_(model[1].weight, std=1.0)
    return model


def test_trades_kl_direction_and_batchmean_by_hand():
    x, y = _digits(8)
    y = y % 3
    model = _toy_linear()
    model.train()
    beta = 2.0
    method = TRADES(TRADESParams(eps=0.1, step_size=0.03, steps=5, beta=beta))
    loss, logits = method.loss(model, _batch(x, y), _ctx(seed=11))
    x_adv = trades_attack(model, x, eps=0.1, step_size=0.03, steps=5,
                          generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        p = F.softmax(model(x).double(), 1)
        q = F.softmax(model(x_adv).double(), 1)
        ce = F.cross_entropy(logits.double(), y).item()
    robust = (loss.item() - ce) / beta
    # KL(p_clean || p_adv) summed over classes and examples, divided by the batch size
    hand = sum(
        sum(p[i, k].item() * math.log(p[i, k].item() / q[i, k].item()) for k in range(3))
        for i in range(x.shape[0])
    ) / x.shape[0]
    reverse = float((q * (q.log() - p.log())).sum() / x.shape[0])
    assert hand > 0.1
    assert robust == pytest.approx(hand, rel=1e-5)
    assert abs(reverse - hand) > 0.05 * hand  # the direction is tested
    assert robust != pytest.approx(hand / 3, rel=1e-2)  # torch "mean" would divide by K


def test_trades_beta_zero_is_clean_ce():
    x, y = _digits()
    model = _model()
    model.train()
    loss, logits = TRADES(TRADESParams(eps=0.1, steps=2, beta=0.0)).loss(
        model, _batch(x, y), _ctx())
    assert torch.equal(logits, model(x))
    assert torch.equal(loss, F.cross_entropy(model(x), y))


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_trades_attack_is_feasible_and_increases_kl(norm, eps):
    x, y = _digits()
    model = _model()
    model.train()
    gen = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    start = trades_attack(model, x, norm=norm, eps=eps, step_size=2 * eps / 5, steps=0,
                          generator=gen())
    noise = torch.randn(x.shape, generator=gen())
    assert torch.equal(start, (x + 0.001 * noise).clamp(0, 1))  # the 0.001·N(0, I) start
    rec = _Recorder(model)
    x_adv = trades_attack(rec, x, norm=norm, eps=eps, step_size=2 * eps / 5, steps=5,
                          generator=gen())
    assert model.training
    # forwards: the natural target at x, then the unclipped start x + 0.001·N, then every
    # later iterate inside ball ∩ box (projected and clipped after each step)
    assert len(rec.inputs) == 1 + 5 and torch.equal(rec.inputs[0], x)
    assert torch.equal(rec.inputs[1], x + 0.001 * noise) and rec.inputs[1].min() < 0
    for xi in rec.inputs[2:] + [x_adv]:
        assert xi.min() >= 0 and xi.max() <= 1
        d = (xi - x).flatten(1)
        bound = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        assert bound.max() <= eps * (1 + 1e-6)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    d = (x_adv - x).flatten(1)
    if norm == "linf":
        assert d.abs().max() <= eps + 1e-6
    else:
        assert d.norm(dim=1).max() <= eps * (1 + 1e-6)
    with torch.no_grad(), eval_mode(model):
        nat = model(x)
        kl_start = trades_kl(model(start), nat)
        kl_adv = trades_kl(model(x_adv), nat)
    assert (kl_adv > kl_start).all()
    assert kl_adv.sum() > 100 * kl_start.sum()


class _Flat(nn.Module):
    """Logits that do not depend on the input: the KL's input gradient is exactly 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0 * x.flatten(1)[:, :10]


def test_trades_zero_gradient_handling():
    x, _ = _digits()
    # ℓ2: a zero gradient is replaced by a draw of N(0, I) (the reference), so δ still moves
    x_adv = trades_attack(_Flat(), x, norm="l2", eps=0.5, step_size=0.2, steps=5,
                          generator=torch.Generator().manual_seed(0))
    norms = (x_adv - x).flatten(1).norm(dim=1)
    assert torch.isfinite(x_adv).all() and (norms > 0.25).all() and (norms <= 0.5 + 1e-6).all()
    # ℓ∞: sign(0) = 0, the iterate stays at the clipped start
    x_adv = trades_attack(_Flat(), x, norm="linf", eps=0.1, step_size=0.03, steps=5,
                          generator=torch.Generator().manual_seed(0))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x_adv, (x + 0.001 * noise).clamp(0, 1))


@pytest.mark.parametrize("reuse,outer_forwards", [(False, 3), (True, 2)])
def test_trades_modes_and_forward_count(reuse, outer_forwards):
    x, y = _digits()
    model = _Recorder(_model())
    model.train()
    TRADES(TRADESParams(eps=0.1, steps=4, reuse_nat_forward=reuse)).loss(
        model, _batch(x, y), _ctx())
    # natural target once (eval, no grad) + K attack steps in eval, then the outer passes
    assert model.modes == [False] * 5 + [True] * outer_forwards
    assert model.training


def test_trades_gradient_flows_through_both_branches():
    x, y = _digits()
    model = _model()
    model.train()
    beta = 6.0
    loss, _ = TRADES(TRADESParams(eps=0.1, step_size=0.03, steps=3, beta=beta)).loss(
        model, _batch(x, y), _ctx(seed=4))
    params = list(model.parameters())
    g_method = torch.autograd.grad(loss, params)
    x_adv = trades_attack(model, x, eps=0.1, step_size=0.03, steps=3,
                          generator=torch.Generator().manual_seed(4))

    def manual(detach: bool):
        nat = model(x)
        kl_nat = model(x)
        kl = trades_kl(model(x_adv), kl_nat.detach() if detach else kl_nat, "batchmean")
        return torch.autograd.grad(F.cross_entropy(nat, y) + beta * kl, params)

    g_full, g_detached = manual(False), manual(True)
    for a, b in zip(g_method, g_full, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    diff = max(float((a - b).abs().max()) for a, b in zip(g_method, g_detached, strict=True))
    assert diff > 1e-4


def test_trades_logs_adversarial_accuracy():
    x, y = _digits(20)
    model = _model()
    state = ExampleState(20)
    method = TRADES(TRADESParams(eps=0.1, steps=2))
    method.setup(model, state, 20)
    model.train()
    method.loss(model, _batch(x, y), _ctx(state=state))
    acc = method.epoch_logs(state, 0)["train_adv_accuracy"]
    assert 0.0 <= acc <= 1.0 and not math.isnan(acc)


# --------------------------------------------------------------------------- recipes

MY_RECIPES = [
    "digits-pgd-at", "digits-pgdls", "digits-trades",
    "fashion-mnist-pgd-at", "fashion-mnist-pgdls", "fashion-mnist-trades",
    "mnist-linf-pgd-0.3", "mnist-linf-pgdls-0.3", "mnist-l2-pgd-2.0",
    "cifar10-linf-pgd-8", "cifar10-l2-pgd-1.0",
    "mnist-trades-linf", "mnist-trades-linf-beta6",
    "cifar10-trades-linf", "cifar10-trades-linf-beta1",
]


def test_recipes_validate_and_carry_the_papers_settings():
    names = all_recipes()
    mine = [n for n in names if any(k in n for k in ("pgd-at", "pgdls", "-pgd-", "trades"))]
    assert set(MY_RECIPES) <= set(mine)
    for name in mine:
        cfg = load_recipe(name)
        method = build_method(cfg.method)  # parameters validate
        assert cfg.description
        assert method.name in ("pgd-at", "pgdls", "trades")
    mma = load_recipe("mnist-linf-pgd-0.3")
    p = build_method(mma.method).params
    assert (p.eps, p.steps, p.attack_loss, p.step_scale) == (0.3, 40, "slm", 2.5)
    assert (mma.data.batch_size, mma.run.steps, mma.optim.name, mma.optim.lr) == (
        50, 100000, "adam", 1e-4)
    cifar = load_recipe("cifar10-linf-pgd-8")
    assert build_method(cifar.method).params.eps == 8 / 255
    assert cifar.schedule.milestones == [20000, 30000, 40000]
    assert cifar.schedule.values == [0.3, 0.09, 0.03, 0.009]
    ls = build_method(load_recipe("mnist-linf-pgdls-0.3").method)
    assert ls.name == "pgdls" and ls.params.ramp_epochs == 50
    t = load_recipe("cifar10-trades-linf")
    tp = build_method(t.method).params
    assert (tp.eps, tp.step_size, tp.steps, tp.beta) == (0.031, 0.007, 10, 6.0)
    assert build_method(load_recipe("cifar10-trades-linf-beta1").method).params.beta == 1.0
    assert build_method(load_recipe("mnist-trades-linf-beta6").method).params.beta == 6.0


# --------------------------------------------------------------------------- trainer runs

_RUNS = {
    # (method, params, model kwargs)
    "pgd-at": ("{eps: 0.1, steps: 3, attack_loss: slm}",
               "{channels: [8, 16], hidden: 32, batchnorm: true}"),
    "pgdls": ("{eps: 0.1, steps: 3, ramp_epochs: 1}", "{channels: [8, 16], hidden: 32}"),
    "trades": ("{eps: 0.1, steps: 3, step_size: 0.03, beta: 6.0}", None),  # smallcnn: dropout
}


def _run_cfg(name: str):
    params, kwargs = _RUNS[name]
    overrides = [
        "data.val_size=100",
        "data.train_subset=300",
        "data.batch_size=50",
        f"method.name={name}",
        f"method.params={params}",
        "run.epochs=2",
        "run.threads=1",
    ]
    overrides += [f"model.params={kwargs}"] if kwargs else ["model.name=smallcnn"]
    return apply_overrides(load_recipe("digits-standard"), overrides)


def _lines(run):
    return [
        {k: v for k, v in json.loads(line).items() if k != "epoch_time"}
        for line in (run / "metrics.jsonl").read_text().splitlines()
    ]


@pytest.mark.parametrize("name", list(_RUNS))
def test_short_run_finishes_and_resumes_exactly(name, tmp_path, interrupt_after):
    cfg = _run_cfg(name)
    full = train(cfg, tmp_path / "full", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", progress=False,
              callbacks=[interrupt_after(epoch=1, batch_in_epoch=0)])
    resumed = resume(tmp_path / "cut", progress=False)
    a = load_checkpoint(full.run_dir / "checkpoints/last.safetensors")
    b = load_checkpoint(resumed.run_dir / "checkpoints/last.safetensors")
    assert a.model.keys() == b.model.keys()
    for k in a.model:
        assert torch.equal(a.model[k], b.model[k]), k
    for k in a.example_state:
        torch.testing.assert_close(a.example_state[k], b.example_state[k], rtol=0, atol=0,
                                   equal_nan=True)
    lines = _lines(full.run_dir)
    assert lines == _lines(resumed.run_dir)
    epochs = [r for r in lines if r["event"] == "epoch"]
    assert len(epochs) == 2 and all(math.isfinite(r["train_loss"]) for r in epochs)
    if name == "trades":
        assert "train_adv_accuracy" in epochs[-1]
    else:
        assert "train_clean_accuracy" in epochs[-1]
        # pgdls: 6 steps per epoch, ramp over 1 epoch -> full eps from the 6th step on
        assert epochs[-1]["eps"] == 0.1
        if name == "pgdls":
            assert epochs[0]["eps"] == 0.1 and pgdls_eps(0, 6, 0.1, 1) == 0.1 / 6


# --------------------------------------------------------------------------- robustness (slow)

@pytest.mark.slow
def test_adversarial_training_beats_standard_under_pgd(tmp_path):
    """Same seed and budget; PGD-20 (ℓ∞ ε=0.1) robust accuracy on the 360 digits test images."""
    x, y = wb.data.tensors("digits", split="test")
    setups = {
        "standard": "{}",
        "pgd-at": "{eps: 0.1, steps: 5}",
        "trades": "{eps: 0.1, steps: 5, step_size: 0.04, beta: 6.0}",
    }
    robust = {}
    for name, params in setups.items():
        cfg = apply_overrides(load_recipe("digits-standard"), [
            f"method.name={name}", f"method.params={params}", "run.epochs=8", "run.threads=1",
        ])
        result = train(cfg, tmp_path / name, progress=False)
        model = wb.load_model(result.run_dir)
        x_adv = pgd(model, x, y, norm="linf", eps=0.1, steps=20, seed=0)
        with torch.no_grad():
            robust[name] = (model(x_adv).argmax(1) == y).float().mean().item()
    print("PGD-20 robust accuracy at eps=0.1:", robust)
    assert robust["pgd-at"] > robust["standard"] + 0.05
    assert robust["trades"] > robust["standard"] + 0.05
