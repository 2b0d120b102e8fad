"""Clean (unperturbed) accuracy and loss, batched, with the model in eval mode.

Both take stacked tensors or, with ``y`` omitted, a ``Dataset`` / ``DataLoader``
(:mod:`wideberth.evaluation.streaming`), streamed batch by batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._modes import eval_mode
from ..progress import progress_bar
from .streaming import as_stream

__all__ = ["predict", "clean_metrics", "model_device"]


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter (or buffer); CPU for a parameterless one."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, x: Tensor | Any, batch_size: int = 500) -> Tensor:
    """Logits of ``model`` on ``x`` [N, ...] (or a ``Dataset`` / ``DataLoader``, whose
    labels are ignored) computed in batches, in eval mode; returns [N, K] on the CPU. The
    model's mode is restored afterwards."""
    device = model_device(model)
    out = []
    if isinstance(x, Tensor):
        chunks = (x[s : s + batch_size] for s in range(0, x.shape[0], batch_size))
    else:
        chunks = (b.x for b in as_stream(x, None, batch_size).batches())
    with eval_mode(model):
        for xb in chunks:
            out.append(model(xb.to(device)).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


@torch.no_grad()
def clean_metrics(model: nn.Module, x: Tensor | Any, y: Tensor | None = None,
                  batch_size: int = 500) -> dict[str, float]:
    """``{"n", "clean_accuracy", "loss"}`` of ``model`` on images ``x`` [N, C, H, W] in [0, 1]
    and labels ``y`` [N] (or a ``Dataset`` / ``DataLoader`` with ``y`` omitted, streamed);
    accuracy is a fraction in [0, 1], loss the mean cross-entropy (per-example losses
    [N] are kept and averaged once, so batching does not change the result)."""
    stream = as_stream(x, y, batch_size)
    device = model_device(model)
    correct, losses = [], []
    with eval_mode(model), progress_bar(stream.n_batches, "clean accuracy", unit="batch") as bar:
        for b in stream.batches():
            logits = model(b.x.to(device)).float().cpu()
            correct.append(logits.argmax(1) == b.y)
            losses.append(F.cross_entropy(logits, b.y, reduction="none"))
            bar.update(1)
    if not correct:
        raise ValueError("cannot evaluate on an empty set of examples")
    return {
        "n": int(sum(c.numel() for c in correct)),
        "clean_accuracy": float(torch.cat(correct).float().mean()),
        "loss": float(torch.cat(losses).mean()),
    }
