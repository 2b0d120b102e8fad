"""Standard (clean) training: mean cross-entropy on the clean batch. No perturbation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from .base import Batch, Method, MethodParams, StepContext


@dataclass
class StandardParams(MethodParams):
    """Standard training takes no parameters."""

    method_name: ClassVar[str] = "standard"


class Standard(Method):
    """Empirical risk minimisation with cross-entropy (the STD baseline of the MMA paper)."""

    name = "standard"
    Params = StandardParams

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> tuple[Tensor, Tensor]:
        logits = model(batch.x)
        return F.cross_entropy(logits, batch.y), logits
