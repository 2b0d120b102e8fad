"""Per-example state keyed by dataset index (MMA's per-example ε lives here).

The store holds named 1-D tensors sized to the full training split, on the CPU, and is
addressed by the stable ``index`` every training batch carries. Writes are scatter-by-index
and reads are gather-by-index, so the result does not depend on batch order or size, and a
data-parallel trainer can merge shards by all-gathering (index, value) pairs: writes to
distinct indices commute. The whole store is saved in every checkpoint.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["ExampleState"]


class ExampleState:
    """Named per-example fields over ``size`` examples, addressed by dataset index."""

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError(f"ExampleState needs a positive size, got {size}")
        self.size = int(size)
        self._fields: dict[str, Tensor] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._fields

    @property
    def names(self) -> list[str]:
        return sorted(self._fields)

    def register(self, name: str, default: float = 0.0, dtype: torch.dtype = torch.float32) -> None:
        """Create field ``name`` filled with ``default`` (no-op if it already exists)."""
        if name not in self._fields:
            self._fields[name] = torch.full((self.size,), default, dtype=dtype)

    def _check_index(self, index: Tensor) -> Tensor:
        index = index.detach().to("cpu", torch.long)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.size):
            raise IndexError(
                f"example index out of range: got [{int(index.min())}, {int(index.max())}], "
                f"the state holds {self.size} examples"
            )
        return index

    def _field(self, name: str) -> Tensor:
        if name not in self._fields:
            raise KeyError(f"no per-example field {name!r}; registered: {self.names}")
        return self._fields[name]

    def get(self, name: str, index: Tensor) -> Tensor:
        """Values of ``name`` at ``index`` [B], on ``index``'s device."""
        values = self._field(name)[self._check_index(index)]
        return values.to(index.device)

    def set(self, name: str, index: Tensor, values: Tensor) -> None:
        """Write ``values`` [B] at ``index`` [B]."""
        field = self._field(name)
        idx = self._check_index(index)
        values = values.detach().to("cpu", field.dtype).reshape(-1)
        if values.numel() != idx.numel():
            raise ValueError(f"set({name!r}): {idx.numel()} indices but {values.numel()} values")
        field[idx] = values

    def all(self, name: str) -> Tensor:
        """The whole field (a view; do not modify)."""
        return self._field(name)

    def state_dict(self) -> dict[str, Tensor]:
        return {name: t.clone() for name, t in self._fields.items()}

    def load_state_dict(self, data: dict[str, Tensor]) -> None:
        for name, t in data.items():
            if t.shape != (self.size,):
                raise ValueError(
                    f"per-example field {name!r} has shape {tuple(t.shape)}, expected ({self.size},)"
                )
            self._fields[name] = t.clone()
