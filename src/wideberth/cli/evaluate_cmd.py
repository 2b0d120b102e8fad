"""``wideberth evaluate`` and ``wideberth compare``: robust accuracy over an ε grid, alone or
side by side."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .catalog import SUITE_NAMES
from .common import NORMS, add_command, add_source_args, load_for_attack, with_run
from .sources import load_source

__all__ = ["add_parser", "cmd_compare", "cmd_evaluate", "write_evaluation_report"]


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a trained run or checkpoint on its dataset's test split — or bare weights
    (--model SPEC --weights FILE --data SPEC, no run folder) on the data named: clean
    accuracy and, with --eps, robust accuracy over the ε grid under an attack suite (the
    pointwise worst case over its attacks, as in Ding et al., MMA training, ICLR 2020, §4
    "Measuring adversarial robustness"), AvgAcc and AvgRobAcc, and sanity flags."""
    from ..evaluation.clean import clean_metrics

    src = load_source(args, "evaluate")
    model, x, y = src.model, src.x, src.y
    metrics = clean_metrics(model, x, y, args.batch_size)
    dataset = src.dataset
    report: dict[str, Any] = {
        **src.record,  # run + checkpoint, or model spec + weights path + SHA-256
        "dataset": dataset,
        "split": args.split,
        "n": metrics["n"],
        "norm": None,
        "suite": "clean",
        "clean_accuracy": metrics["clean_accuracy"],
        "clean_loss": metrics["loss"],
        "robust_accuracy": {},
        "avg_acc": metrics["clean_accuracy"],
        "avg_rob_acc": None,
        "flags": [],
    }
    print(
        f"{dataset} {args.split}: clean accuracy {metrics['clean_accuracy']:.4f} "
        f"on {metrics['n']} examples (loss {metrics['loss']:.4f})"
    )
    if args.eps:
        from ..evaluation.robustness import evaluate

        rep = evaluate(
            model, x, y, norm=args.norm, epsilons=args.eps, suite=args.suite,
            restarts=args.restarts, batch_size=args.batch_size, seed=args.seed,
            state_file=args.state, reuse=args.reuse,
            progress=None if args.quiet else lambda line: print(line, flush=True),
        )
        report.update(rep.to_dict())
        print(f"suite {rep.suite} ({', '.join(rep.attacks)}), norm {rep.norm}")
        print(f"{'eps':>8}  robust accuracy")
        for e, acc in rep.robust_accuracy.items():
            print(f"{e:>8}  {acc:.4f}")
        print(f"AvgAcc {rep.avg_acc:.4f}  AvgRobAcc {rep.avg_rob_acc:.4f}")
        for flag in rep.flags:
            print(f"FLAG: {flag}")
        if args.report:
            write_evaluation_report(model, x, y, report, args)
    if args.json:
        from ..fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def write_evaluation_report(model: Any, x: Any, y: Any, report: dict[str, Any],
                            args: argparse.Namespace) -> None:
    """--report DIR: margins (minimal-norm estimates) and the loss along adversarial rays
    (Ding et al., MMA training, ICLR 2020, Fig. 3) on the first --report-n examples, then
    the report folder (JSON, Markdown, PNG)."""
    import torch

    from ..attacks import estimate_margin, margin_stats, pgd
    from ..evaluation.clean import model_device
    from ..evaluation.report import loss_along_ray, write_report

    device = model_device(model)
    m = min(args.report_n, x.shape[0])
    xs, ys = x[:m].to(device), y[:m].to(device)
    margins = estimate_margin(model, xs, ys, norm=args.norm).cpu()
    eps_grid = sorted(args.eps)
    report["margins"] = margin_stats(margins, thresholds=eps_grid)
    report["margins"]["method"] = "auto"
    eps0 = eps_grid[0]
    x_adv = pgd(model, xs, ys, norm=args.norm, eps=eps0, steps=20, seed=args.seed)
    with torch.no_grad():
        failed = model(x_adv).argmax(1) == ys  # MMA Fig. 3 keeps the failed perturbations
    curves = loss_along_ray(model, xs[failed], (x_adv - xs)[failed], ys[failed])
    name = Path(args.run).name if args.run is not None else Path(args.weights).stem
    for path in write_report(report, args.report, name=name, margins=margins, loss_curves=curves):
        print(f"wrote {path}")


def cmd_compare(args: argparse.Namespace) -> int:
    """Several models side by side in the MMA paper's table format (Ding et al., ICLR 2020,
    Table 1): clean accuracy, AvgAcc, AvgRobAcc and robust accuracy per ε, each accuracy
    with its 95 % Clopper–Pearson interval. Each input is a JSON report of `wideberth
    evaluate --json` or a run folder / checkpoint, evaluated here with --norm, --eps and
    --suite (all on the same first --n test examples). Notes say when the rows were
    measured differently (suite, attacks, n, norm, data, seed), and McNemar's exact paired
    test (McNemar 1947) compares every model with the first where both reports hold
    per-example results on the same examples."""
    from ..evaluation.comparison import format_paired_tests, measurement_notes, paired_tests
    from ..evaluation.report import markdown_table, plot_robust_accuracy
    from ..evaluation.robustness import evaluate

    reports: dict[str, dict[str, Any]] = {}
    for item in args.inputs:
        path = Path(item)
        name = path.stem if path.suffix == ".json" else path.name
        if path.suffix == ".json" and path.is_file():
            reports[name] = json.loads(path.read_text(encoding="utf-8"))
            continue
        if not args.eps:
            raise ValueError(f"{item} is a run, not a JSON report: give --eps (and --norm, "
                             "--suite) to evaluate it")
        model, x, y, _ = load_for_attack(with_run(args, item))
        rep = evaluate(model, x, y, norm=args.norm, epsilons=args.eps, suite=args.suite,
                       batch_size=args.batch_size, seed=args.seed)
        reports[name] = rep.to_dict()
        print(f"evaluated {item}", file=sys.stderr)
    table = markdown_table(reports, intervals=True)
    print(table, end="")
    print("accuracies in %, 95 % Clopper–Pearson intervals in brackets")
    for note in measurement_notes(reports):
        print(f"NOTE: {note}")
    for line in format_paired_tests(paired_tests(reports)):
        print(line)
    for name, r in reports.items():
        for flag in r.get("flags") or []:
            print(f"FLAG [{name}]: {flag}")
    if args.markdown:
        from ..fileio import atomic_write_text

        atomic_write_text(args.markdown, table)
        print(f"wrote {args.markdown}")
    if args.plot:
        print(f"wrote {plot_robust_accuracy(reports, args.plot)}")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``evaluate`` and ``compare`` (``--suite`` choices: the evaluation suites)."""
    suites = list(SUITE_NAMES)
    p = add_command(sub, "evaluate", cmd_evaluate,
                    "evaluate a run, a checkpoint or bare weights (--model/--weights/--data)")
    add_source_args(p, n_default=None)
    p.add_argument("--json", help="write the report as JSON to this file")
    p.add_argument("--norm", default="linf", choices=NORMS,
                   help="threat model of the robust evaluation (default %(default)s)")
    p.add_argument("--eps", type=float, nargs="+",
                   help="radii of the robust evaluation (omit: clean accuracy only)")
    p.add_argument("--suite", default="standard", choices=suites,
                   help="attack suite (default %(default)s: APGD-CE, APGD-T, paper PGD)")
    p.add_argument("--restarts", type=int,
                   help="runs N of the paper PGD (split CE/CW) and of the standard suite's "
                        "APGD attacks (if omitted: N = 10 for the paper PGD, 1 for APGD)")
    p.add_argument("--seed", type=int, default=0, help="attack seed (default %(default)s)")
    p.add_argument("--state", help="resumable state file (JSON): progress is saved after "
                                   "every batch and an interrupted evaluation continues")
    p.add_argument("--reuse", default="up", choices=["up", "both"],
                   help="sharing across the ε grid: 'up' (default; never more robust than "
                        "independent per-ε runs) or 'both' (also infers robustness downward: "
                        "about 5x faster on a robust model's curve; see wb.evaluate)")
    p.add_argument("--quiet", action="store_true", help="no per-batch progress lines")
    p.add_argument("--report", help="write a report folder (report.json, report.md, "
                                    "robust_accuracy.png, margins.png, loss_slices.png)")
    p.add_argument("--report-n", type=int, default=200,
                   help="examples for the report's margins and loss slices (default %(default)s)")

    p = add_command(sub, "compare", cmd_compare,
                    "several models side by side (MMA Table 1 format)")
    p.add_argument("inputs", nargs="+", help="JSON reports of `evaluate --json`, or runs")
    p.add_argument("--norm", default="linf", choices=NORMS,
                   help="threat model for runs evaluated here (default %(default)s)")
    p.add_argument("--eps", type=float, nargs="+", help="ε grid (needed for runs)")
    p.add_argument("--suite", default="standard", choices=suites,
                   help="attack suite for runs evaluated here (default %(default)s)")
    p.add_argument("--n", type=int, default=1000,
                   help="first N test examples (default %(default)s)")
    p.add_argument("--which", default="best", choices=["best", "last"],
                   help="which checkpoint of a run folder (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=500,
                   help="examples per batch (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="attack seed (default %(default)s)")
    p.add_argument("--device", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--markdown", help="also write the table to this file")
    p.add_argument("--plot", help="robust accuracy vs ε of every model, as a PNG")
