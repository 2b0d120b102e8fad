"""Suite-wide settings and fixtures.

One torch thread: the tests use tiny tensors, for which thread start-up costs more than it
saves, and the CI machine has only 2 cores.
"""

from collections.abc import Callable
from typing import Any

import pytest
import torch

from wideberth.train import Callback

torch.set_num_threads(1)


class _InterruptAfter(Callback):
    """Raise KeyboardInterrupt right after the trainer writes `last` at a matching position."""

    def __init__(self, when: Callable[[dict[str, int]], bool]) -> None:
        self.when = when

    def on_checkpoint(self, trainer: Any, name: str, path: Any, meta: dict[str, Any]) -> None:
        if name == "last" and self.when(meta["position"]):
            raise KeyboardInterrupt


@pytest.fixture
def interrupt_after() -> Callable[..., Callback]:
    """A maker of callbacks that simulate a Ctrl-C right after a `last` checkpoint.

    ``interrupt_after(epoch=1, batch_in_epoch=0)`` interrupts once `last` is written with
    that position (all given fields equal: ``epoch`` done, ``batch_in_epoch``, ``step``);
    ``interrupt_after(when)`` takes a predicate on the position dict instead. Pass the
    result as ``train(..., callbacks=[...])``; a plain ``resume`` then continues the run.
    """

    def make(when: Callable[[dict[str, int]], bool] | None = None, **position: int) -> Callback:
        if (when is None) == (not position):
            raise TypeError("interrupt_after takes a predicate or position fields, not both")
        return _InterruptAfter(when or (lambda pos: all(pos[k] == v for k, v in position.items())))

    return make
