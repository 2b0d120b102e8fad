"""``wideberth minmax``: the min-max framework's attacks against their baselines."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import NORMS, add_command, load_for_attack, with_run

__all__ = ["KINDS", "MethodRow", "add_parser", "cmd_minmax"]


@dataclass(frozen=True)
class MethodRow:
    """One method's line of the ``minmax`` table.

    Attributes:
        method: APGDA (``"minmax"``) or a baseline.
        headline: the kind's success rate (ASR_all, ASR_gp or ASR_all_T).
        per_domain: the ASR per domain (model, image of the group, transform).
        domains: the domains' names.
        w, w_trajectory: APGDA's final domain weights [B, K] and their trajectory
            [T + 1, B, K] (None where the method has none).
    """

    method: str
    headline: float
    per_domain: list[float]
    domains: list[str]
    w: Any = None
    w_trajectory: Any = None


def _progress(args: argparse.Namespace) -> bool | None:
    """APGDA's progress bar: off with --quiet, else when standard error is a terminal."""
    return False if args.quiet else None


def _ensemble(models: list[Any], names: list[str], x: Any, y: Any, method: str,
              args: argparse.Namespace) -> MethodRow:
    from ..minmax import ensemble_attack, ensemble_metrics

    res = ensemble_attack(models, x, y, norm=args.norm, eps=args.eps, steps=args.steps,
                          method=method, seed=args.seed, progress=_progress(args))
    met = ensemble_metrics(models, res.x_adv, y)
    return MethodRow(method, met.asr_all, [float(a) for a in met.per_model_asr], names,
                     res.w, res.w_trajectory)


def _universal(models: list[Any], names: list[str], x: Any, y: Any, method: str,
               args: argparse.Namespace) -> MethodRow:
    from ..minmax import universal_attack, universal_metrics

    n = x.shape[0] - x.shape[0] % args.group_size
    res = universal_attack(models[0], x[:n], y[:n], group_size=args.group_size,
                           norm=args.norm, eps=args.eps, steps=args.steps,
                           method=method, seed=args.seed, progress=_progress(args))
    met = universal_metrics(models[0], res.x_adv, y[:n].reshape(res.x_adv.shape[:2]))
    return MethodRow(method, met.asr_gp, [float(v) for v in met.fooled.double().mean(0)],
                     [f"image {i}" for i in range(args.group_size)], res.w, res.w_trajectory)


def _transforms(models: list[Any], names: list[str], x: Any, y: Any, method: str,
                args: argparse.Namespace) -> MethodRow:
    from ..minmax import transform_attack, transform_metrics

    res = transform_attack(models[0], x, y, args.transforms, norm=args.norm,
                           eps=args.eps, steps=args.steps, method=method, seed=args.seed,
                           progress=_progress(args))
    met = transform_metrics(models[0], res.x_adv, y, res.transforms)
    return MethodRow(method, met.asr_gp, [float(v) for v in met.per_transform_asr],
                     list(res.labels), res.w, res.w_trajectory)


#: kind → (runner of one method, headline metric, default methods)
KINDS: dict[str, tuple[Callable[..., MethodRow], str, list[str]]] = {
    "ensemble": (_ensemble, "ASR_all", ["minmax", "avg", "avg_logit", "avg_prob", "clip"]),
    "universal": (_universal, "ASR_gp", ["minmax", "avg"]),
    "transforms": (_transforms, "ASR_all_T", ["minmax", "avg"]),
}


def _load_models_and_examples(args: argparse.Namespace) -> tuple[list[Any], list[str], Any, Any]:
    """Every run of ``args.runs`` as a model, their names, and the first ``args.n`` test
    examples of the first run's dataset (all runs must share its input shape)."""
    from ..runs import load_run_config

    models, names = [], []
    datasets = {load_run_config(r).data.name for r in args.runs}
    if len(datasets) > 1:
        raise ValueError(f"the runs were trained on different datasets ({', '.join(sorted(datasets))}); "
                         "give runs of one dataset")
    x = y = None
    for r in args.runs:
        model, xr, yr, _ = load_for_attack(with_run(args, r))
        models.append(model)
        names.append(Path(r).name)
        if x is None:
            x, y = xr, yr
    return models, names, x, y


def cmd_minmax(args: argparse.Namespace) -> int:
    """The attacks of the unified min-max framework (Wang et al., "Towards a unified min-max
    framework for adversarial exploration and robustness", 2020; NeurIPS 2021 as
    "Adversarial attack generation empowered by min-max optimization"): APGDA (its
    Algorithm 1) with learned domain weights against its baselines, side by side, with the
    weights saved and plotted.

    `ensemble RUN RUN ...`: one perturbation per image against K models (eq. 5, Table 1):
    ASR_all (fooled by every model) and per-model ASR. `universal RUN --group-size K`: one
    perturbation per group of K consecutive test images (eq. 6, Table 2): ASR_gp (every
    image of the group fooled). `transforms RUN [--transforms table3|tableA5|tableA6]`: one
    perturbation per image robust over the paper's transformation set (eq. 7, Table 3): ASR
    under every transform."""
    from ..evaluation.clean import model_device
    from ..minmax.diagnostics import plot_weight_trajectory, save_weights, summarize_weights

    if args.kind != "ensemble" and len(args.runs) != 1:
        raise ValueError(f"`minmax {args.kind}` attacks one model; got {len(args.runs)} runs")
    runner, metric, default_methods = KINDS[args.kind]
    models, names, x, y = _load_models_and_examples(args)
    device = model_device(models[0])
    x, y = x.to(device), y.to(device)
    rows = [runner(models, names, x, y, method, args) for method in args.methods or default_methods]
    domains = rows[-1].domains if rows else names
    print(f"{args.kind}: {', '.join(names)}; {x.shape[0]} examples, {args.norm} eps {args.eps:g}, "
          f"{args.steps} steps; columns: {metric}, then the ASR per domain")
    header = f"{'method':10s} {metric:>9s} " + " ".join(f"{d[:12]:>12s}" for d in domains)
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row.method:10s} {row.headline:9.3f} " + " ".join(f"{v:12.3f}" for v in row.per_domain))
    minmax_row = next((r for r in reversed(rows) if r.method == "minmax"), None)
    if minmax_row is not None and minmax_row.w is not None:
        summary = summarize_weights(minmax_row.w, domains)
        print(f"hardest domain by mean weight: {summary['hardest']} "
              f"({', '.join(f'{k} {v:.2f}' for k, v in summary['mean'].items())})")
        if args.out:
            out = Path(args.out)
            extra = {"kind": args.kind, "norm": args.norm, "eps": args.eps, "steps": args.steps,
                     metric: {r.method: r.headline for r in rows}}
            print(f"wrote {save_weights(minmax_row.w, out / 'weights.json', domains, extra)}")
            if minmax_row.w_trajectory is not None:
                print(f"wrote {plot_weight_trajectory(minmax_row.w_trajectory, out / 'weights.png', domains)}")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``minmax``."""
    p = add_command(sub, "minmax", cmd_minmax, "min-max attacks (APGDA) against their baselines")
    p.add_argument("kind", choices=list(KINDS), help="application of the framework")
    p.add_argument("runs", nargs="+", help="run folders or checkpoints (the models)")
    p.add_argument("--group-size", type=int, default=5,
                   help="universal: images per group (default %(default)s)")
    p.add_argument("--transforms", default="table3",
                   help="transforms: table3 (default), tableA5 (stochastic) or tableA6")
    p.add_argument("--norm", default="linf", choices=NORMS,
                   help="threat model (default %(default)s)")
    p.add_argument("--eps", type=float, required=True, help="perturbation budget (required)")
    p.add_argument("--steps", type=int, default=50,
                   help="APGDA iterations (default %(default)s)")
    p.add_argument("--n", type=int, default=500,
                   help="first N test examples (default %(default)s)")
    p.add_argument("--methods", nargs="+",
                   help="APGDA (minmax) and baselines to run (ensemble default: minmax avg "
                        "avg_logit avg_prob clip; else minmax avg)")
    p.add_argument("--which", default="best", choices=["best", "last"],
                   help="which checkpoint of a run folder (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="attack seed (default %(default)s)")
    p.add_argument("--device", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", help="folder for weights.json and weights.png")
