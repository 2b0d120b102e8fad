"""Matplotlib without a display: the Agg backend, figures saved atomically as PNG.

Every plot of the library (evaluation reports, margin histograms, min-max weight
trajectories) goes through these two functions, so matplotlib is imported only when a
figure is actually drawn and a half-written image never replaces a good one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .fileio import atomic_path

__all__ = ["pyplot", "save_figure"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save ``fig`` to ``path`` (PNG, parent folders created) atomically, close it, and
    return the path."""
    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path, suffix=path.suffix or ".png") as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)
    return path
