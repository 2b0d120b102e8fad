"""Random-number sources for random starts: one generator for a batch, or one stream per example.

An attack's random start must be reproducible, and by default it must also be *batch
independent*: an example gets the same start whatever else is in its batch and wherever
it sits. :class:`KeyedNoise` provides that without a Python loop over examples: every
number is a counter-based hash (SplitMix64, Steele et al. 2014) of the example's 63-bit
key, the draw number and the element's position, computed for the whole batch at once in
int64 tensor arithmetic, on any device. :class:`GeneratorNoise` draws the whole batch from
one :class:`torch.Generator` (what training loops use: cheapest, reproducible given the
generator's state, not batch independent).

Both produce ``rand(shape)`` (uniform in [0, 1)) and ``randn(shape)`` (standard normal)
with ``shape[0]`` the batch size.
"""

from __future__ import annotations

import hashlib
import math
from typing import Protocol

import torch
from torch import Tensor

__all__ = ["Noise", "GeneratorNoise", "KeyedNoise", "example_keys"]

_MASK63 = (1 << 63) - 1


def _signed(c: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MIX1 = _signed(0xBF58476D1CE4E5B9)
_MIX2 = _signed(0x94D049BB133111EB)


def _shr(z: Tensor, s: int) -> Tensor:
    """Logical right shift of int64 bit patterns (torch's ``>>`` is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def _splitmix64(z: Tensor) -> Tensor:
    """SplitMix64's output function on int64 tensors (multiplication wraps mod 2⁶⁴)."""
    z = (z ^ _shr(z, 30)) * _MIX1
    z = (z ^ _shr(z, 27)) * _MIX2
    return z ^ _shr(z, 31)


def example_keys(x: Tensor) -> list[int]:
    """A stable 63-bit key per example computed from its content (bytes of ``x[i]``)."""
    flat = x.detach().to("cpu", torch.float32).reshape(x.shape[0], -1).contiguous().numpy()
    return [
        int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little") >> 1
        for row in flat
    ]


class Noise(Protocol):
    """What a random start draws from: ``rand``/``randn`` of a batch shape ``[B, ...]``."""

    def rand(self, shape: tuple[int, ...] | torch.Size) -> Tensor: ...

    def randn(self, shape: tuple[int, ...] | torch.Size) -> Tensor: ...


class GeneratorNoise:
    """The whole batch from one :class:`torch.Generator` (``None``: torch's global RNG).

    The generator must live on ``device``."""

    def __init__(
        self,
        generator: torch.Generator | None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.generator, self.device, self.dtype = generator, torch.device(device), dtype

    def rand(self, shape: tuple[int, ...] | torch.Size) -> Tensor:
        return torch.rand(tuple(shape), generator=self.generator, device=self.device, dtype=self.dtype)

    def randn(self, shape: tuple[int, ...] | torch.Size) -> Tensor:
        return torch.randn(tuple(shape), generator=self.generator, device=self.device, dtype=self.dtype)


class KeyedNoise:
    """Per-example counter-based streams: row ``i`` of every draw depends only on
    ``keys[i]``, on how many draws came before and on the element's position in the row.

    Args:
        keys: one non-negative 63-bit key per example (e.g. :func:`example_keys` of the
            batch mixed with a seed), a list of ints or an int64 tensor ``[B]``.
        device, dtype: of the numbers produced.

    Uniforms carry 24 random bits in float32/float16/bfloat16 and 53 in float64; normals
    come from the Box–Muller transform of two uniforms.
    """

    def __init__(
        self,
        keys: list[int] | Tensor,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        k = torch.as_tensor(keys, dtype=torch.int64)
        if k.dim() != 1:
            raise ValueError(f"keys must be one key per example, shape [B]; got shape {list(k.shape)}")
        self.device, self.dtype = torch.device(device), dtype
        self.keys = (k & _MASK63).to(self.device)
        self._draw = 0

    def _bits(self, shape: tuple[int, ...]) -> Tensor:
        if not shape or shape[0] != self.keys.shape[0]:
            raise ValueError(
                f"a keyed draw needs shape [B, ...] with B = {self.keys.shape[0]} examples; got {list(shape)}"
            )
        per_row = math.prod(shape[1:])
        self._draw += 1
        pos = torch.arange(per_row, dtype=torch.int64, device=self.device) + (self._draw << 40)
        state = self.keys.unsqueeze(1) + (pos + 1).unsqueeze(0) * _GOLDEN
        return _splitmix64(state).reshape(shape)

    def rand(self, shape: tuple[int, ...] | torch.Size) -> Tensor:
        shape = tuple(shape)
        bits = self._bits(shape)
        if self.dtype == torch.float64:
            return _shr(bits, 11).to(torch.float64) * 2.0**-53
        return (_shr(bits, 40).to(torch.float32) * 2.0**-24).to(self.dtype)

    def randn(self, shape: tuple[int, ...] | torch.Size) -> Tensor:
        shape = tuple(shape)
        work = torch.float64 if self.dtype == torch.float64 else torch.float32
        u1 = self.rand(shape).to(work)
        u2 = self.rand(shape).to(work)
        # u1 ∈ [0, 1): 1 − u1 ∈ (0, 1] keeps the logarithm finite
        z = torch.sqrt(-2.0 * torch.log1p(-u1)) * torch.cos((2 * math.pi) * u2)
        return z.to(self.dtype)
