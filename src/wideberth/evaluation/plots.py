"""Figures of margins, training curves and decision regions (matplotlib's Agg backend).

Each figure has a builder ``*_figure(...)`` returning the matplotlib ``Figure`` (to show,
restyle or inspect it) and a writer of the same name without the suffix that saves it to a
PNG (atomically) and returns the path. Every axis is labelled with its quantity and unit,
every legend uses the human names of :func:`wideberth.figures.metric_label`, and the
caption under the axes defines every term the figure uses
(:func:`wideberth.figures.finish_figure`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..figures import distance_label, finish_figure, metric_label, norm_symbol, pyplot, save_figure

__all__ = [
    "COUNT_LABEL",
    "decision_boundary",
    "decision_boundary_figure",
    "margin_histogram",
    "margin_histogram_figure",
    "margin_histogram_grid",
    "margin_histogram_grid_figure",
    "margin_histograms_by_epoch",
    "margin_histograms_by_epoch_figure",
    "training_curves",
    "training_curves_figure",
]

COUNT_LABEL = "examples (count)"
_ESTIMATORS = {
    "fmn": "FMN",
    "anpgd": "AN-PGD",
    "cw": "CW-ℓ2",
    "cw-l2": "CW-ℓ2",
    "gradient": "Wu & Yu's sampled gradient (Lipschitz) bound",
    "auto": "the best of several minimal-norm attacks",
}


def _estimator(method: str | None) -> str:
    return _ESTIMATORS.get(str(method), str(method)) if method else "an attack"


def _notes(d: Tensor, finite: Tensor) -> str:
    n_inf = d.numel() - finite.numel()
    note = f"{int((d == 0).sum())} misclassified (margin 0)"
    return note + (f", {n_inf} not found" if n_inf else "")


def margin_histogram_figure(
    distances: Tensor, *, norm: str = "l2", bins: int = 30, title: str | None = None
) -> Any:
    """Histogram of per-example margins ``distances`` [N] in ``norm`` (0 = misclassified;
    +inf = none found within the search range, counted in the note, not in the bars)."""
    plt = pyplot()
    d = distances.detach().float().cpu().reshape(-1)
    finite = d[torch.isfinite(d)]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    if finite.numel():
        ax.hist(finite.numpy(), bins=bins, color="#3b6ea5", edgecolor="white")
        mean = float(finite.mean())
        label = f"mean margin {mean:.3f}" + (" (of those found)" if finite.numel() < d.numel() else "")
        ax.axvline(mean, color="#c0392b", linestyle="--", label=label)
        ax.legend(loc="center right", fontsize=8)
    ax.set_xlabel(distance_label(norm))
    ax.set_ylabel(COUNT_LABEL)
    ax.set_title(title or f"{norm_symbol(norm)} margins of {d.numel()} examples", fontsize=10)
    ax.text(0.99, 0.97, f"{d.numel()} examples, " + _notes(d, finite), transform=ax.transAxes,
            ha="right", va="top", fontsize=8)
    ax.set_xlim(left=0, right=max(float(finite.max()) if finite.numel() else 1.0, 1e-6) * 1.05)
    return finish_figure(fig, "Red dashed line: the mean margin. Margin-0 inputs fall in the first bin.")


def margin_histogram(
    distances: Tensor, path: str | Path, *, norm: str = "l2", bins: int = 30, title: str | None = None
) -> Path:
    """:func:`margin_histogram_figure` written to the PNG ``path``; returns the path."""
    return save_figure(margin_histogram_figure(distances, norm=norm, bins=bins, title=title), path)


def margin_histogram_grid_figure(
    distances: Mapping[str, Tensor], *, norm: str = "l2", bins: int = 30, columns: int = 4,
    title: str | None = None,
) -> Any:
    """Margin histograms of several models side by side, one panel per model on a shared
    margin axis and shared bins, so the models compare at a glance (MMA Tables 2–3 as
    pictures, Ding et al. 2020). ``distances``: name → per-example margins ``[N]``
    (0 = misclassified, drawn in the first bin; ``+inf`` = not found, counted in the note)."""
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
        mean = float(f.mean()) if f.numel() else float("nan")
        ax.text(0.98, 0.95, f"mean {mean:.3f}\n" + _notes(d, f).replace(", ", "\n"),
                transform=ax.transAxes, ha="right", va="top", fontsize=6.5)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7, labelbottom=True)  # ticks under every panel: some have none below
    fig.suptitle(title or f"{norm_symbol(norm)} margins, one panel per model", fontsize=9)
    return finish_figure(fig, "Shared bins; red dashed line: each model's mean margin; margin-0 "
                              "inputs fall in the first bin.",
                         xlabel=distance_label(norm), ylabel=COUNT_LABEL)


def margin_histogram_grid(
    distances: Mapping[str, Tensor], path: str | Path, *, norm: str = "l2", bins: int = 30,
    columns: int = 4, title: str | None = None,
) -> Path:
    """:func:`margin_histogram_grid_figure` written to the PNG ``path``; returns the path."""
    fig = margin_histogram_grid_figure(distances, norm=norm, bins=bins, columns=columns, title=title)
    return save_figure(fig, path)


def margin_histograms_by_epoch_figure(
    records: list[dict], *, split: str = "train", bins: int = 25, title: str | None = None
) -> Any:
    """MMA Fig. 4 (Ding et al. 2020): one histogram of tracked margins per epoch, rotated
    90° (margin upward, count to the right), epochs side by side. ``records`` are the
    ``{"event": "margins"}`` lines of a run's ``metrics.jsonl``."""
    plt = pyplot()
    rows = [r for r in records if r.get("event") == "margins" and r.get("split") == split]
    if not rows:
        raise ValueError(f"no tracked margins for split {split!r} (train with track.every > 0)")
    dists = [torch.tensor([d for d in r["distances"] if d is not None], dtype=torch.float32) for r in rows]
    top = max(float(d.max()) if d.numel() else 0.0 for d in dists) or 1.0
    edges = torch.linspace(0, top, bins + 1)
    fig, axes = plt.subplots(1, len(rows), figsize=(1.1 * len(rows) + 1.5, 3.6), dpi=120,
                             sharex=True, sharey=True, squeeze=False)
    for ax, r, d in zip(axes[0], rows, dists, strict=True):
        counts = torch.histc(d, bins=bins, min=0, max=top) if d.numel() else torch.zeros(bins)
        ax.barh(edges[:-1].numpy(), counts.numpy(), height=float(edges[1] - edges[0]), align="edge",
                color="#3b6ea5")
        ax.axhline(float(r["median"]) if r.get("median") is not None else 0, color="#c0392b", lw=0.8)
        ax.set_title(f"epoch {r['epoch']}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xticks([])
    fig.suptitle(title or f"{norm_symbol(rows[0].get('norm'))} margins of {len(rows[0]['distances'])} "
                 f"{split} points per epoch", fontsize=9)
    lost = sum(len(r["distances"]) - len(d) for r, d in zip(rows, dists, strict=True))
    caption = (f"Margins estimated with {_estimator(rows[0].get('method'))} every few epochs on a fixed "
               "set of points; red line: the median; misclassified = 0."
               + (f" {lost} estimates were not found and are left out." if lost else ""))
    return finish_figure(fig, caption, xlabel="examples (count; bar length, same scale in every panel)",
                         ylabel=distance_label(rows[0].get("norm")))


def margin_histograms_by_epoch(
    records: list[dict], path: str | Path, *, split: str = "train", bins: int = 25,
    title: str | None = None,
) -> Path:
    """:func:`margin_histograms_by_epoch_figure` written to the PNG ``path``; returns the path."""
    fig = margin_histograms_by_epoch_figure(records, split=split, bins=bins, title=title)
    return save_figure(fig, path)


_DISTANCE_KEYS = ("val_anpgd_margin", "mma_eps_mean", "eps")


def training_curves_figure(records: list[dict], *, title: str | None = None,
                           norm: str | None = None) -> Any:
    """Training loss and accuracy per epoch with every logged validation metric; a third
    panel holds the distance-valued ones (AN-PGD margin, MMA's mean ε, the training ε) in
    ``norm`` when the run logged any. ``records``: the lines of ``metrics.jsonl``."""
    plt = pyplot()
    rows = [r for r in records if r.get("event") == "epoch"]
    if not rows:
        raise ValueError("no epoch records in metrics.jsonl")
    keys = sorted({k for r in rows for k in r})
    epochs = [r["epoch"] for r in rows]
    acc = [k for k in keys if k.endswith("accuracy")]
    dist = [k for k in _DISTANCE_KEYS if k in keys]
    fig, axes = plt.subplots(1, 3 if dist else 2, figsize=(13 if dist else 9, 3.4), dpi=120)

    def draw(ax: Any, key: str, scale: float = 1.0) -> None:
        vals = [r.get(key) for r in rows]
        ax.plot(epochs, [scale * v if isinstance(v, (int, float)) else float("nan") for v in vals],
                marker="o", markersize=3, label=metric_label(key))

    for key in ("train_loss", "val_loss"):
        if key in keys:
            draw(axes[0], key)
    axes[0].set_ylabel("loss")
    for key in acc:
        draw(axes[1], key, 100.0)
    axes[1].set_ylabel("accuracy (%)")
    for key in dist:
        draw(axes[2], key)
    if dist:
        axes[2].set_ylabel(distance_label(norm, "ε or margin"))
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=7)
    fig.suptitle(title or "training curves", fontsize=9)
    return finish_figure(fig, "Per-epoch values from metrics.jsonl: training numbers average the "
                              "epoch's batches, validation numbers the held-out validation split.")


def training_curves(records: list[dict], path: str | Path, *, title: str | None = None,
                    norm: str | None = None) -> Path:
    """:func:`training_curves_figure` written to the PNG ``path``; returns the path."""
    return save_figure(training_curves_figure(records, title=title, norm=norm), path)


def decision_boundary_figure(
    model: torch.nn.Module, x: Tensor, y: Tensor, *, margins: Tensor | None = None,
    resolution: int = 300, title: str | None = None,
) -> Any:
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
    regions = pred_grid.reshape(resolution, resolution).numpy()
    ax.contourf(gx.numpy(), gy.numpy(), regions, levels=torch.arange(-0.5, k + 0.5).numpy(),
                colors=[cmap(i) for i in range(k)], alpha=0.25)
    ax.contour(gx.numpy(), gy.numpy(), regions, levels=torch.arange(0.5, k - 0.5).numpy(),
               colors="k", linewidths=0.8)
    ok = pred == y.cpu()
    for c in range(k):
        sel = (y.cpu() == c) & ok
        ax.scatter(pts[sel, 0], pts[sel, 1], s=8, color=cmap(c), edgecolors="none")
    ax.scatter(pts[~ok, 0], pts[~ok, 1], s=18, marker="x", color="k", label="misclassified")
    caption = ("Shaded regions: the class the model predicts; black lines: its decision "
               "boundary; dots: correctly classified points, coloured by class; crosses: "
               "misclassified points.")
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
        caption += (" Circles: the ℓ2 margin (radius = the distance to the boundary) of the "
                    "correctly classified points" + (f", one in {every} drawn." if every > 1 else "."))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("input feature x₁ (in [0, 1])")
    ax.set_ylabel("input feature x₂ (in [0, 1])")
    ax.set_title(title or "decision regions", fontsize=9)
    if (~ok).any():
        ax.legend(loc="upper right", fontsize=7)
    return finish_figure(fig, caption)


def decision_boundary(
    model: torch.nn.Module, x: Tensor, y: Tensor, path: str | Path, *,
    margins: Tensor | None = None, resolution: int = 300, title: str | None = None,
) -> Path:
    """:func:`decision_boundary_figure` written to the PNG ``path``; returns the path."""
    fig = decision_boundary_figure(model, x, y, margins=margins, resolution=resolution, title=title)
    return save_figure(fig, path)
