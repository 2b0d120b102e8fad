"""Sanity flags: they fire on a gradient-masked model and stay quiet on a normal one."""

from __future__ import annotations

import math

import torch
from torch import nn

import wideberth as wb
from wideberth.evaluation import sanity
from wideberth.threat import get_threat


class Quantize(nn.Module):
    """A non-differentiable front layer: rounds pixels to 4 levels (zero gradient a.e.)."""

    def forward(self, x):
        return torch.round(x * 3) / 3


def trained_mlp(x, y, seed=0, steps=300):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 64), nn.ReLU(), nn.Linear(64, 3))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def blobs(n=150, seed=0):
    """Three classes of 1×4×4 images: bright left, bright right, bright top, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = 0.2 + 0.1 * torch.rand(n, 1, 4, 4, generator=g)
    x[y == 0, :, :, :2] += 0.5
    x[y == 1, :, :, 2:] += 0.5
    x[y == 2, :, :2, :] += 0.5
    return x.clamp(0, 1), y


def test_flags_fire_on_a_masked_model_and_stay_quiet_on_a_normal_one():
    x, y = blobs()
    net = trained_mlp(x, y)
    normal = wb.evaluate(net, x, y, norm="linf", epsilons=[0.05, 0.4], suite="quick")
    assert normal.flags == []
    assert normal.robust_accuracy["0.4"] < normal.robust_accuracy["0.05"]

    masked_model = nn.Sequential(Quantize(), net).eval()
    masked = wb.evaluate(masked_model, x, y, norm="linf", epsilons=[0.05, 0.4], suite="quick")
    text = " ".join(masked.flags)
    assert "unbounded radius" in text
    assert "zero input gradient" in text
    assert "black-box" in text
    # the white-box suite is fooled: it reports the masked model as robust at ε = 0.4
    assert masked.robust_accuracy["0.4"] > normal.robust_accuracy["0.4"] + 0.3


def test_unbounded_radius_contains_the_box():
    for norm, shape, expected in (("linf", (1, 4, 4), 1.0), ("l2", (3, 2, 2), math.sqrt(12)),
                                  ("l1", (1, 2, 3), 6.0)):
        r = sanity.unbounded_radius(norm, shape)
        assert r == expected
        far = torch.ones(1, *shape) - torch.zeros(1, *shape)  # corner to corner of the box
        assert float(get_threat(norm).norm(far)) <= r + 1e-6


def test_monotonicity_check():
    assert sanity.monotonicity_check({"0.1": 0.8, "0.2": 0.5, "0.3": 0.1}) == []
    flags = sanity.monotonicity_check({"0.3": 0.2, "0.1": 0.8, "0.2": 0.1})
    assert len(flags) == 1 and "0.2 → 0.3" in flags[0]


def test_zero_gradient_check_counts_only_correct_examples():
    x, y = blobs(60)
    net = trained_mlp(x, y)
    assert sanity.zero_gradient_check(net, x, y) == []
    assert sanity.zero_gradient_check(nn.Sequential(Quantize(), net), x, y) != []
