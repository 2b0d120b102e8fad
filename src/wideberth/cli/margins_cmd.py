"""``wideberth margins``: each example's distance to the decision boundary."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .catalog import info_names
from .common import add_command, add_model_args, attack_help, registry_name
from .sources import load_source

__all__ = ["add_parser", "cmd_margins", "margin_search"]


def margin_search(method: str, model: Any, x: Any, y: Any, norm: str) -> Any:
    """Distances (``distance`` [B], ``found`` [B]) of the batch ``x`` [B, ...], ``y`` [B] by
    :func:`wideberth.attacks.estimate_margin_result` with ``method`` (``auto`` or a
    registered minimal-norm attack)."""
    from ..attacks.margin import estimate_margin_result

    return estimate_margin_result(model, x, y, norm=norm, method=method)


def cmd_margins(args: argparse.Namespace) -> int:
    """Estimate each test example's distance to the decision boundary (0 if misclassified;
    an attack-based upper bound of the margin of Ding et al., MMA training, ICLR 2020,
    Eq. 1) and print margin statistics as in that paper's Tables 2–3; optionally write JSON
    and a histogram. Works on a run or on bare weights (--model SPEC --weights FILE --data
    SPEC)."""
    import torch

    from ..attacks.margin import margin_stats

    if args.method != "auto":
        from ..attacks.registry import get_attack

        get_attack(args.method).check_norm(args.norm)  # a clear error before loading
    src = load_source(args, "margins")
    model, x, y, device = src.model, src.x, src.y, src.device
    distances, found = [], []
    for start in range(0, x.shape[0], args.batch_size):
        res = margin_search(args.method, model, x[start : start + args.batch_size].to(device),
                            y[start : start + args.batch_size].to(device), args.norm)
        distances.append(res.distance.cpu())
        found.append(res.found.cpu())
    d = torch.cat(distances)
    thresholds = args.thresholds
    stats = margin_stats(d, thresholds=thresholds)
    print(f"margins ({args.norm}, {args.method}) of {x.shape[0]} examples "
          f"(misclassified count as 0; not found = beyond the search range)")
    for key in ("mean", "min", "q1", "median", "q3", "max", "count_misclassified", "count_not_found"):
        if key in stats:
            v = stats[key]
            print(f"  {key:<20} {v:.4f}" if isinstance(v, float) else f"  {key:<20} {v}")
    for t, frac in (stats.get("fraction_below") or {}).items():
        print(f"  fraction below {t:<7} {frac:.4f}")
    if args.json:
        import json

        from ..fileio import atomic_write_text

        report = {**src.record, "norm": args.norm, "method": args.method,
                  "n": int(d.numel()), "stats": stats,
                  "distances": [float(v) for v in d.tolist()]}
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        from ..evaluation.plots import margin_histogram

        name = Path(str(args.run)).name if args.run is not None else Path(args.weights).stem
        margin_histogram(d, args.plot, norm=args.norm, title=f"{name}: margins")
        print(f"wrote {args.plot}")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``margins`` (``--method`` choices: ``auto`` and the registry's minimal-norm
    attacks)."""
    p = add_command(sub, "margins", cmd_margins, "estimate distances to the decision boundary")
    add_model_args(p)
    p.set_defaults(norm="l2", n=500)
    names = list(info_names(kind="minimal-norm"))
    p.add_argument("--method", default="auto", choices=["auto", *names],
                   type=registry_name("margins", extra=["auto"]),
                   help=attack_help(names, "margin estimator (default %(default)s: the "
                                           "library's default, FMN) [the norms it supports]"))
    p.add_argument("--thresholds", type=float, nargs="*",
                   help="report the fraction of margins below each (default: none)")

    p.add_argument("--json", help="write statistics and per-example distances to this file")
    p.add_argument("--plot", help="draw a histogram to this PNG file")
