"""Universal adversarial training: the δ update, its ball, and its checkpointed state."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wideberth.config import ConfigError, apply_overrides, load_recipe
from wideberth.example_state import ExampleState
from wideberth.methods.base import Batch, StepContext
from wideberth.methods.uat import UAT, UATParams
from wideberth.train import resume, train
from wideberth.train.checkpoint import load_checkpoint


def ctx(step: int = 0) -> StepContext:
    return StepContext(epoch=0, step=step, total_steps=10, steps_per_epoch=10,
                       state=ExampleState(8), generator=torch.Generator().manual_seed(step),
                       num_classes=3)


def test_one_step_is_a_sign_step_on_the_batch_mean_loss_and_stays_in_the_ball():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = 0.3 + 0.4 * torch.rand(8, 1, 4, 4)
    y = torch.randint(0, 3, (8,))
    m = UAT(UATParams(eps=0.05, step_size=0.02))
    loss, logits = m.loss(model, Batch(x, y, torch.arange(8)), ctx())
    d0 = torch.zeros(1, 4, 4, requires_grad=True)
    (g,) = torch.autograd.grad(F.cross_entropy(model((x + d0).clamp(0, 1)), y), d0)
    torch.testing.assert_close(m.delta, 0.02 * g.sign())
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y))  # at the old δ = 0
    for step in range(1, 6):
        m.loss(model, Batch(x, y, torch.arange(8)), ctx(step))
        assert float(m.delta.abs().max()) <= 0.05 + 1e-7
    assert float(m.delta.abs().max()) == pytest.approx(0.05)  # reached the ball's surface


def test_params_are_validated():
    with pytest.raises(ConfigError, match="eps is required"):
        UATParams()
    with pytest.raises(ConfigError, match="delta_mode"):
        UATParams(eps=0.1, delta_mode="adam")
    with pytest.raises(ValueError, match="unexpected checkpoint tensors"):
        UAT(UATParams(eps=0.1)).load_state_dict({"other": torch.zeros(1)})


def test_digits_run_carries_delta_through_checkpoints_and_resumes_exactly(tmp_path, interrupt_after):
    cfg = apply_overrides(load_recipe("digits-uat"), ["run.epochs=3"])
    full = train(cfg, tmp_path / "full", progress=False)
    ck = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.safetensors")
    assert set(ck.method) == {"delta"} and ck.method["delta"].shape == (1, 8, 8)
    assert 0 < float(ck.method["delta"].abs().max()) <= 0.1 + 1e-7
    # interrupt after the first epoch's checkpoint, then resume: identical weights and δ
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", progress=False,
              callbacks=[interrupt_after(epoch=1, batch_in_epoch=0)])
    cut = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.safetensors")
    assert "delta" in cut.method  # the interrupted run saved its universal perturbation
    resumed = resume(tmp_path / "cut", progress=False)
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.safetensors")
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.safetensors")
    for k in a.model:
        assert torch.equal(a.model[k], b.model[k]), k
    assert torch.equal(a.method["delta"], b.method["delta"])
    assert resumed.test == full.test
    logs = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert any("uat_delta_linf" in r for r in logs)
