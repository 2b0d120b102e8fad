"""Domain weights as a diagnostic (Wang et al. 2021, *Adversarial attack generation empowered
by min-max optimization*, §4.1 Fig. 1c, App. F Tables A9/A10): which model, input or
transformation is hardest to attack, summarised, saved and plotted.

APGDA's weight on domain i grows while F_i (the attack loss still to be minimised on that
domain) stays high, so at the end a large weight marks a domain the shared perturbation
finds hard: the most robust model of an ensemble, the hardest image of a universal group,
the transformation that resists the attack most.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..fileio import atomic_write_text

__all__ = ["summarize_weights", "plot_weight_trajectory", "save_weights", "weight_trajectory_figure"]


def _names(k: int, names: Sequence[str] | None) -> list[str]:
    if names is None:
        return [f"domain {i}" for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} names for {k} domains; give one name per domain")
    return list(names)


def summarize_weights(w: Tensor, names: Sequence[str] | None = None) -> dict[str, Any]:
    """Summary of final weights ``w`` [B, K] (one row per example or group, on the simplex).

    Returns ``{"mean": {name: mean weight}, "hardest_count": {name: rows whose largest
    weight is on it}, "hardest": the name with the largest mean weight, "entropy": mean row
    entropy in nats (0: one domain takes all; log K: uniform)}``."""
    if w.dim() != 2 or w.shape[1] == 0:
        raise ValueError(f"weights must have shape [B, K]; got {list(w.shape)}")
    w = w.detach().double().cpu()
    labels = _names(w.shape[1], names)
    mean = w.mean(0)
    top = torch.bincount(w.argmax(1), minlength=w.shape[1])
    entropy = -(w.clamp_min(1e-300).log() * w).sum(1).mean()
    return {
        "mean": {n: float(m) for n, m in zip(labels, mean, strict=True)},
        "hardest_count": {n: int(c) for n, c in zip(labels, top, strict=True)},
        "hardest": labels[int(mean.argmax())],
        "entropy": float(entropy),
    }


def weight_trajectory_figure(
    w_trajectory: Tensor, names: Sequence[str] | None = None, *, title: str | None = None
) -> Any:
    """Mean weight of each domain over the APGDA iterations (Wang et al. 2021, §4.1,
    Fig. 1c), with the 10–90 % band over rows. ``w_trajectory``: [T+1, B, K] (iterate,
    row, domain). Returns the matplotlib ``Figure``."""
    from ..figures import finish_figure, pyplot

    if w_trajectory.dim() != 3:
        raise ValueError(f"w_trajectory must have shape [T+1, B, K]; got {list(w_trajectory.shape)}")
    plt = pyplot()
    wt = w_trajectory.detach().double().cpu()
    labels = _names(wt.shape[2], names)
    t = torch.arange(wt.shape[0]).numpy()
    fig, ax = plt.subplots(figsize=(5.5, 3.5), dpi=120)
    for i, name in enumerate(labels):
        col = wt[:, :, i]
        line = ax.plot(t, col.mean(1).numpy(), label=name)[0]
        if col.shape[1] > 1:
            lo, hi = torch.quantile(col, 0.1, dim=1), torch.quantile(col, 0.9, dim=1)
            ax.fill_between(t, lo.numpy(), hi.numpy(), color=line.get_color(), alpha=0.15)
    ax.set_xlabel("APGDA iteration")
    ax.set_ylabel("domain weight (fraction, 0–1)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "domain weights during the min-max attack", fontsize=10)
    band = " Shaded band: the 10–90 % range over rows." if wt.shape[1] > 1 else ""
    return finish_figure(fig, f"Lines: the mean weight over the {wt.shape[1]} rows (examples or "
                              f"groups) of each domain.{band}")


def plot_weight_trajectory(
    w_trajectory: Tensor, path: str | Path, names: Sequence[str] | None = None, *,
    title: str | None = None,
) -> Path:
    """:func:`weight_trajectory_figure` written to the PNG ``path``; returns the path."""
    from ..figures import save_figure

    return save_figure(weight_trajectory_figure(w_trajectory, names, title=title), path)


def save_weights(w: Tensor, path: str | Path, names: Sequence[str] | None = None,
                 extra: dict[str, Any] | None = None) -> Path:
    """Per-row weights [B, K] and their summary as JSON (atomic write)."""
    labels = _names(w.shape[1], names)
    doc = {"domains": labels, "weights": w.detach().double().cpu().tolist(),
           "summary": summarize_weights(w, labels), **(extra or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return path
