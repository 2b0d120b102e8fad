"""Plots written straight to PNG files (matplotlib's Agg backend; no display needed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from ..figures import pyplot, save_figure

__all__ = [
    "decision_boundary",
    "margin_histogram",
    "margin_histogram_grid",
    "margin_histograms_by_epoch",
    "training_curves",
]


def margin_histogram(
    distances: Tensor,
    path: str | Path,
    *,
    norm: str = "l2",
    bins: int = 30,
    title: str | None = None,
) -> Path:
    """Histogram of per-example margins [N] (0 = misclassified; +inf = none found within
    the search range, drawn as a separate bar). Writes a PNG and returns its path."""
    plt = pyplot()
    d = distances.detach().float().cpu()
    finite = d[torch.isfinite(d)]
    n_inf = int((~torch.isfinite(d)).sum())
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    if finite.numel():
        ax.hist(finite.numpy(), bins=bins, color="#3b6ea5", edgecolor="white")
        mean = float(finite.mean())
        label = f"mean {mean:.3f}" + (" (of those found)" if n_inf else "")
        ax.axvline(mean, color="#c0392b", linestyle="--", label=label)
    ax.set_xlabel(f"{norm} distance to the decision boundary")
    ax.set_ylabel("examples")
    note = f"{d.numel()} examples, {int((d == 0).sum())} misclassified (0)"
    if n_inf:
        note += f", {n_inf} not found"
    ax.set_title(title or "margins", fontsize=10)
    ax.text(0.99, 0.97, note, transform=ax.transAxes, ha="right", va="top", fontsize=8)
    if finite.numel():
        ax.legend(loc="center right", fontsize=8)
    ax.set_xlim(left=0, right=max(float(finite.max()) if finite.numel() else 1.0, 1e-6) * 1.05)
    fig.tight_layout()
    return save_figure(fig, path)


def margin_histogram_grid(
    distances: Mapping[str, Tensor],
    path: str | Path,
    *,
    norm: str = "l2",
    bins: int = 30,
    columns: int = 4,
    title: str | None = None,
) -> Path:
    """Margin histograms of several models side by side, one panel per model on a shared
    margin axis and shared bins, so the models compare at a glance (MMA Tables 2–3 as
    pictures). ``distances``: name → per-example margins ``[N]`` (0 = misclassified, drawn
    in the first bin; ``+inf`` = not found, counted in the panel's note). Writes a PNG and
    returns its path."""
    if not distances:
        raise ValueError("distances is empty: pass at least one model's margins")
    plt = pyplot()
    ds = {k: v.detach().float().cpu().reshape(-1) for k, v in distances.items()}
    finite = [d[torch.isfinite(d)] for d in ds.values()]
    top = max((float(f.max()) for f in finite if f.numel()), default=0.0) or 1.0
    edges = torch.linspace(0, top, bins + 1).numpy()
    cols = min(columns, len(ds))
    rows = -(-len(ds) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.0 * rows + 0.4), dpi=120,
                             sharex=True, squeeze=False)
    for ax in axes.flat[len(ds):]:
        ax.set_visible(False)
    for ax, (name, d), f in zip(axes.flat, ds.items(), finite, strict=False):
        ax.hist(f.numpy(), bins=edges, color="#3b6ea5", edgecolor="white", linewidth=0.3)
        if f.numel():
            ax.axvline(float(f.mean()), color="#c0392b", linestyle="--", linewidth=0.9)
        n_inf = d.numel() - f.numel()
        note = f"mean {float(f.mean()) if f.numel() else float('nan'):.3f}\n{int((d == 0).sum())} at 0"
        ax.text(0.98, 0.95, note + (f", {n_inf} not found" if n_inf else ""),
                transform=ax.transAxes, ha="right", va="top", fontsize=7)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel(f"{norm} margin", fontsize=8)
    fig.suptitle(title or "margins (red: mean; misclassified = 0)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def margin_histograms_by_epoch(
    records: list[dict],
    path: str | Path,
    *,
    split: str = "train",
    bins: int = 25,
    title: str | None = None,
) -> Path:
    """MMA Fig. 4: one histogram of tracked margins per epoch, rotated 90° (margin on the
    vertical axis, count to the right), epochs side by side. ``records`` are the
    ``{"event": "margins"}`` lines of a run's ``metrics.jsonl``."""
    plt = pyplot()
    rows = [r for r in records if r.get("event") == "margins" and r.get("split") == split]
    if not rows:
        raise ValueError(f"no tracked margins for split {split!r} (train with track.every > 0)")
    dists = [torch.tensor([d for d in r["distances"] if d is not None], dtype=torch.float32) for r in rows]
    top = max(float(d.max()) if d.numel() else 0.0 for d in dists) or 1.0
    edges = torch.linspace(0, top, bins + 1)
    fig, axes = plt.subplots(1, len(rows), figsize=(1.1 * len(rows) + 1.5, 3.6), dpi=120, sharey=True)
    axes = axes if len(rows) > 1 else [axes]
    for ax, r, d in zip(axes, rows, dists, strict=True):
        counts = torch.histc(d, bins=bins, min=0, max=top) if d.numel() else torch.zeros(bins)
        ax.barh(edges[:-1].numpy(), counts.numpy(), height=float(edges[1] - edges[0]), align="edge",
                color="#3b6ea5")
        ax.axhline(float(r["median"]) if r.get("median") is not None else 0, color="#c0392b", lw=0.8)
        ax.set_title(f"ep {r['epoch']}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xticks([])
    axes[0].set_ylabel(f"{rows[0]['norm']} margin ({rows[0]['method']})")
    fig.suptitle(title or f"margins of {len(dists[0])} {split} points per epoch (red: median)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def training_curves(records: list[dict], path: str | Path, *, title: str | None = None) -> Path:
    """Training loss and accuracy per epoch, with every logged validation metric."""
    plt = pyplot()
    rows = [r for r in records if r.get("event") == "epoch"]
    if not rows:
        raise ValueError("no epoch records in metrics.jsonl")
    epochs = [r["epoch"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=120)
    ax1.plot(epochs, [r["train_loss"] for r in rows], label="train loss")
    if "val_loss" in rows[0]:
        ax1.plot(epochs, [r.get("val_loss") for r in rows], label="val loss")
    ax1.set_xlabel("epoch")
    ax1.legend(fontsize=8)
    ax2.plot(epochs, [r["train_accuracy"] for r in rows], label="train accuracy")
    for key in sorted(k for k in rows[0] if k.startswith("val_") and k != "val_loss"):
        ax2.plot(epochs, [r.get(key) for r in rows], label=key)
    ax2.set_xlabel("epoch")
    ax2.legend(fontsize=8)
    fig.suptitle(title or "training curves", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def decision_boundary(
    model: torch.nn.Module,
    x: Tensor,
    y: Tensor,
    path: str | Path,
    *,
    margins: Tensor | None = None,
    resolution: int = 300,
    title: str | None = None,
) -> Path:
    """Decision regions of a model on 2-D inputs in [0, 1]² (``toy2d``: x [N, 1, 1, 2]),
    with the data points and, when ``margins`` [N] is given, each correctly classified
    point's ℓ2 margin drawn as a circle for up to ~40 points (misclassified points are
    marked with a cross)."""
    plt = pyplot()
    from .._modes import eval_mode

    device = next(model.parameters()).device
    g = torch.linspace(0, 1, resolution)
    gx, gy = torch.meshgrid(g, g, indexing="xy")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1).reshape(-1, *x.shape[1:])
    with torch.no_grad(), eval_mode(model):
        pred_grid = torch.cat([model(grid[i : i + 65536].to(device)).argmax(1).cpu()
                               for i in range(0, grid.shape[0], 65536)])
        pred = model(x.to(device)).argmax(1).cpu()
    pts = x.reshape(x.shape[0], 2).cpu()
    k = int(max(int(y.max()), int(pred_grid.max())) + 1)
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(4.6, 4.6), dpi=120)
    ax.contourf(gx.numpy(), gy.numpy(), pred_grid.reshape(resolution, resolution).numpy(),
                levels=torch.arange(-0.5, k + 0.5).numpy(), colors=[cmap(i) for i in range(k)],
                alpha=0.25)
    ax.contour(gx.numpy(), gy.numpy(), pred_grid.reshape(resolution, resolution).numpy(),
               levels=torch.arange(0.5, k - 0.5).numpy(), colors="k", linewidths=0.8)
    ok = pred == y.cpu()
    for c in range(k):
        sel = (y.cpu() == c) & ok
        ax.scatter(pts[sel, 0], pts[sel, 1], s=8, color=cmap(c), edgecolors="none")
    ax.scatter(pts[~ok, 0], pts[~ok, 1], s=18, marker="x", color="k", label="misclassified")
    if margins is not None:
        from matplotlib.patches import Circle

        every = max(1, x.shape[0] // 40)  # circles for at most ~40 points, to stay readable
        for p, d, good in list(zip(pts.tolist(), margins.cpu().tolist(), ok.tolist(), strict=True))[::every]:
            if good and d > 0 and d != float("inf"):
                ax.add_patch(Circle(p, d, fill=False, lw=0.5, alpha=0.6, color="k"))
        m = margins[ok & torch.isfinite(margins.cpu())]
        if m.numel():
            ax.text(0.01, 0.01, f"mean ℓ2 margin {float(m.mean()):.3f}", transform=ax.transAxes,
                    fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_title(title or "decision boundary", fontsize=9)
    if (~ok).any():
        ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
