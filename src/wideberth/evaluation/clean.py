"""Clean (unperturbed) accuracy and loss, batched, with the model in eval mode."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._modes import eval_mode

__all__ = ["predict", "clean_metrics", "model_device"]


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter (or buffer); CPU for a parameterless one."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 500) -> Tensor:
    """Logits of ``model`` on ``x`` [N, ...] computed in batches, in eval mode; returns [N, K]
    on the CPU. The model's mode is restored afterwards."""
    device = model_device(model)
    out = []
    with eval_mode(model):
        for start in range(0, x.shape[0], batch_size):
            out.append(model(x[start : start + batch_size].to(device)).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


@torch.no_grad()
def clean_metrics(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 500) -> dict[str, float]:
    """``{"n", "clean_accuracy", "loss"}`` of ``model`` on images ``x`` [N, C, H, W] in [0, 1]
    and labels ``y`` [N]; accuracy is a fraction in [0, 1], loss the mean cross-entropy."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise ValueError("cannot evaluate on an empty set of examples")
    logits = predict(model, x, batch_size)
    y = y.cpu()
    return {
        "n": int(y.numel()),
        "clean_accuracy": float((logits.argmax(1) == y).float().mean()),
        "loss": float(F.cross_entropy(logits, y)),
    }
