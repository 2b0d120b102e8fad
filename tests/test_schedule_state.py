"""Learning-rate schedules and the per-example state store."""

from __future__ import annotations

import math

import pytest
import torch

from wideberth.config import OptimConfig, ScheduleConfig
from wideberth.train import ExampleState, lr_at


def _lr(step, schedule, lr=0.3, total=100, spe=10):
    return lr_at(
        step, total_steps=total, steps_per_epoch=spe, optim=OptimConfig(lr=lr), schedule=schedule
    )


def test_piecewise_matches_mma_cifar_schedule():
    s = ScheduleConfig(
        name="piecewise", milestones=[20000, 30000, 40000], values=[0.3, 0.09, 0.03, 0.009]
    )
    got = [_lr(k, s, total=50000) for k in (0, 19999, 20000, 29999, 30000, 40000, 49999)]
    assert got == [0.3, 0.3, 0.09, 0.09, 0.03, 0.009, 0.009]


def test_piecewise_by_epoch():
    s = ScheduleConfig(name="piecewise", milestones=[2], values=[1.0, 0.1], milestone_unit="epoch")
    assert _lr(19, s) == 1.0 and _lr(20, s) == 0.1


def test_cosine_endpoints_and_midpoint():
    s = ScheduleConfig(name="cosine", min_lr=0.01)
    assert _lr(0, s, lr=1.0) == pytest.approx(1.0)
    assert _lr(50, s, lr=1.0) == pytest.approx(0.01 + 0.5 * 0.99)
    assert _lr(100, s, lr=1.0) == pytest.approx(0.01)
    assert _lr(25, s, lr=1.0) == pytest.approx(0.01 + 0.5 * 0.99 * (1 + math.cos(math.pi / 4)))


def test_warmup_is_linear():
    s = ScheduleConfig(name="constant", warmup_steps=4)
    assert [_lr(k, s, lr=1.0) for k in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_state_scatter_gather_by_index():
    st = ExampleState(10)
    st.register("eps", default=0.5)
    idx = torch.tensor([7, 2, 9])
    st.set("eps", idx, torch.tensor([0.1, 0.2, 0.3]))
    assert torch.equal(st.get("eps", torch.tensor([2, 7, 0])), torch.tensor([0.2, 0.1, 0.5]))
    restored = ExampleState(10)
    restored.load_state_dict(st.state_dict())
    assert torch.equal(restored.all("eps"), st.all("eps"))


def test_state_errors():
    st = ExampleState(4)
    st.register("eps")
    with pytest.raises(IndexError, match=r"got \[0, 4\], the state holds 4"):
        st.get("eps", torch.tensor([0, 4]))
    with pytest.raises(KeyError, match="no per-example field 'd'"):
        st.get("d", torch.tensor([0]))
    with pytest.raises(ValueError, match="2 indices but 3 values"):
        st.set("eps", torch.tensor([0, 1]), torch.zeros(3))
    with pytest.raises(ValueError, match=r"expected \(4,\)"):
        st.load_state_dict({"eps": torch.zeros(5)})
