"""``wideberth plot``: a run's figures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import add_command

__all__ = ["add_parser", "cmd_plot"]


def cmd_plot(args: argparse.Namespace) -> int:
    """Draw a run's training curves and, when margins were tracked (track.every > 0), the
    margin distributions during training of Ding et al., MMA training, ICLR 2020, Fig. 4:
    per-epoch margin histograms of the tracked train and test points. For a toy2d run,
    also the decision regions with each test point's l2 margin. Every figure labels its
    axes with units and defines its terms in a caption under the axes."""
    from ..config import load_config
    from ..evaluation.plots import decision_boundary, margin_histograms_by_epoch, training_curves

    run = Path(args.run)
    metrics = run / "metrics.jsonl"
    if not metrics.exists():
        raise FileNotFoundError(f"{metrics} does not exist; is {run} a wideberth run folder?")
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    out = Path(args.out) if args.out else run / "plots"
    cfg_path = run / "config.yaml"
    cfg = load_config(cfg_path) if cfg_path.exists() else None
    # the norm of the run's ε and margins: the method's own, else the validation attack's
    norm = None if cfg is None else str(cfg.method.params.get("norm") or cfg.eval.norm)
    written = [training_curves(records, out / "training_curves.png", title=f"{run.name}: training curves",
                               norm=norm)]
    for split in ("train", "test"):
        if any(r.get("event") == "margins" and r.get("split") == split for r in records):
            written.append(margin_histograms_by_epoch(
                records, out / f"margins_{split}.png", split=split,
                title=f"{run.name}: margins of the tracked {split} points per epoch"))
    if cfg is not None and cfg.data.name == "toy2d":
        from ..attacks import estimate_margin
        from ..data import tensors
        from ..runs import load_model

        model = load_model(run)
        x, y = tensors("toy2d", "test")
        d = estimate_margin(model, x, y, norm="l2")
        written.append(decision_boundary(model, x, y, out / "decision_boundary.png", margins=d,
                                         title=f"{run.name}: decision regions and ℓ2 margins"))
    for p in written:
        print(f"wrote {p}")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``plot``."""
    p = add_command(sub, "plot", cmd_plot, "draw a run's training curves and margin histograms")
    p.add_argument("run", help="run folder")
    p.add_argument("--out", help="folder for the PNGs (default: RUN/plots)")
