"""A method-level vector kept in the run's per-example state, so that checkpoints carry it.

The trainer saves and restores only the model, the optimiser, the per-example
:class:`~wideberth.example_state.ExampleState` and :meth:`Method.state_dict`; a method whose
state is a parameter-sized vector (the average-margin DC solver's stored gradient) keeps it
as :class:`StateVector` chunks of that state, so a resumed run continues bit for bit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # pragma: no cover
    from ..example_state import ExampleState

__all__ = ["StateVector", "flat_grad"]




class StateVector:
    """A float32 vector of fixed ``length`` stored in an ExampleState as
    ``ceil(length / state.size)`` fields ``{prefix}.{j}``: the trainer saves and restores only
    the model, the optimiser and this state, so this is how method-level state survives a
    resume bit for bit. The fields are not per-example values."""

    def __init__(self, state: ExampleState, prefix: str, length: int) -> None:
        self.state, self.length = state, int(length)
        n_fields = max(1, -(-self.length // state.size))
        self.names = [f"{prefix}.{j:04d}" for j in range(n_fields)]
        for name in self.names:
            state.register(name, 0.0)

    def read(self) -> Tensor:
        """The vector (a copy, float32, CPU)."""
        return torch.cat([self.state.all(n) for n in self.names])[: self.length].clone()

    def write(self, values: Tensor) -> None:
        """Store ``values`` (``length`` entries)."""
        size = self.state.size
        flat = torch.zeros(len(self.names) * size, dtype=torch.float32)
        flat[: self.length] = values.detach().to("cpu", torch.float32).reshape(-1)
        rows = torch.arange(size)
        for j, name in enumerate(self.names):
            self.state.set(name, rows, flat[j * size : (j + 1) * size])


def flat_grad(loss: Tensor, params: list[nn.Parameter], retain: bool) -> Tensor:
    """``∇_params loss`` as one flat vector (zeros for parameters the loss does not use)."""
    grads = torch.autograd.grad(loss, params, retain_graph=retain, allow_unused=True)
    return torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).reshape(-1)
            for p, g in zip(params, grads, strict=True)
        ]
    )
