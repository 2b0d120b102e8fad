"""Random-number sources of random starts (wideberth.noise)."""

from __future__ import annotations

import math

import pytest
import torch

from wideberth.noise import GeneratorNoise, KeyedNoise, _splitmix64, example_keys


def test_splitmix64_matches_the_reference_integers():
    # SplitMix64 reference (Vigna): seed 1234567, the first outputs of next().
    # next(): state += golden; return mix(state). Python ints as the oracle.
    golden, m = 0x9E3779B97F4A7C15, (1 << 64) - 1

    def mix(z: int) -> int:
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
        return z ^ (z >> 31)

    states = [(1234567 + golden * (i + 1)) & m for i in range(6)]
    expect = [mix(s) for s in states]
    signed = torch.tensor([s - (1 << 64) if s >= 1 << 63 else s for s in states], dtype=torch.int64)
    got = [int(v) & m for v in _splitmix64(signed)]
    assert got == expect
    # the published first output of SplitMix64 seeded with 1234567
    assert expect[0] == 6457827717110365317


def test_keyed_rows_do_not_depend_on_the_rest_of_the_batch():
    keys = [11, 22, 33, 44]
    full = KeyedNoise(keys)
    a_u, a_n = full.rand((4, 3, 5)), full.randn((4, 3, 5))
    sub = KeyedNoise([33, 11])
    b_u, b_n = sub.rand((2, 3, 5)), sub.randn((2, 3, 5))
    torch.testing.assert_close(b_u, a_u[[2, 0]], rtol=0, atol=0)
    torch.testing.assert_close(b_n, a_n[[2, 0]], rtol=0, atol=0)


def test_keyed_draws_differ_between_calls_rows_and_positions():
    n = KeyedNoise([5, 6])
    u1, u2 = n.rand((2, 100)), n.rand((2, 100))
    assert not torch.equal(u1, u2)
    assert not torch.equal(u1[0], u1[1])
    assert u1[0].unique().numel() == 100


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_keyed_uniform_and_normal_moments(dtype):
    n = KeyedNoise(list(range(64)), dtype=dtype)
    u = n.rand((64, 4096)).double()
    assert u.dtype == torch.float64 and float(u.min()) >= 0 and float(u.max()) < 1
    se = 1 / math.sqrt(12 * u.numel())
    assert abs(float(u.mean()) - 0.5) < 5 * se
    assert abs(float(u.var()) - 1 / 12) < 0.002
    z = n.randn((64, 4096)).double()
    assert torch.isfinite(z).all()
    assert abs(float(z.mean())) < 5 / math.sqrt(z.numel())
    assert abs(float(z.std()) - 1) < 0.01
    # a normal's tails: P(|z| > 3) = 0.0027
    assert abs(float((z.abs() > 3).double().mean()) - 0.0027) < 0.001
    assert n.rand((64, 1)).dtype == dtype


def test_keyed_noise_rejects_a_wrong_batch_size():
    with pytest.raises(ValueError, match="B = 2"):
        KeyedNoise([1, 2]).rand((3, 4))
    with pytest.raises(ValueError, match="one key per example"):
        KeyedNoise(torch.zeros(2, 2, dtype=torch.int64))


def test_generator_noise_reproduces_torch_rng():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    torch.testing.assert_close(GeneratorNoise(g1).rand((4, 3)), torch.rand((4, 3), generator=g2))
    torch.testing.assert_close(GeneratorNoise(g1).randn((4, 3)), torch.randn((4, 3), generator=g2))


def test_example_keys_follow_content_only():
    x = torch.rand(3, 2, 2)
    k = example_keys(x)
    assert example_keys(x[[2, 0]]) == [k[2], k[0]]
    assert len(set(k)) == 3 and all(0 <= v < 1 << 63 for v in k)
