"""The ``wideberth`` command: train, resume, evaluate, inspect runs, list recipes."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._version import __version__

log = logging.getLogger("wideberth")


def _default_out(name: str) -> Path:
    base = Path("runs") / name
    if not base.exists():
        return base
    i = 2
    while (Path("runs") / f"{name}-{i}").exists():
        i += 1
    return Path("runs") / f"{name}-{i}"


# ---------------------------------------------------------------------- commands

def cmd_train(args: argparse.Namespace) -> int:
    """Train a model from a recipe or config file (default: the digits recipe)."""
    from .config import DEFAULT_RECIPE, apply_overrides, load_config, load_recipe
    from .train import train

    if args.config:
        cfg = load_config(args.config)
        name = Path(args.config).stem
    else:
        name = args.recipe or DEFAULT_RECIPE
        cfg = load_recipe(name)
    overrides = list(args.set or [])
    if args.device:
        overrides.append(f"run.device={args.device}")
    if args.seed is not None:
        overrides.append(f"run.seed={args.seed}")
    cfg = apply_overrides(cfg, overrides)
    out = Path(args.out) if args.out else _default_out(name)
    print(f"training {cfg.model.name} on {cfg.data.name} with method {cfg.method.name} -> {out}")
    result = train(cfg, out, progress=None if not args.quiet else False)
    acc = result.test["clean_accuracy"] if result.test else float("nan")
    print(f"run folder: {result.run_dir}")
    print(
        f"test accuracy: {acc:.4f} ({result.test['n'] if result.test else 0} examples, "
        f"{result.test['weights'] if result.test else '-'} weights) in {result.wall_time:.1f}s"
    )
    print(f"next: wideberth evaluate {result.run_dir}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    """Continue an interrupted run from its last checkpoint, exactly."""
    from .train import resume

    result = resume(args.run, progress=None if not args.quiet else False)
    acc = result.test["clean_accuracy"] if result.test else float("nan")
    print(f"run folder: {result.run_dir}")
    print(f"test accuracy: {acc:.4f}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a trained run or checkpoint on its dataset's test split: clean accuracy and,
    with --eps, robust accuracy over the ε grid under an attack suite (the pointwise worst
    case over its attacks; MMA paper §5), AvgAcc and AvgRobAcc, and sanity flags."""

    from .evaluation.clean import clean_metrics
    from .runs import load_run_config, resolve_checkpoint

    cfg = load_run_config(args.run)
    model, x, y, _ = _load_for_attack(args)
    metrics = clean_metrics(model, x, y, args.batch_size)
    report: dict[str, Any] = {
        "run": str(args.run),
        "checkpoint": str(resolve_checkpoint(args.run, args.which)),
        "dataset": cfg.data.name,
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
        f"{cfg.data.name} {args.split}: clean accuracy {metrics['clean_accuracy']:.4f} "
        f"on {metrics['n']} examples (loss {metrics['loss']:.4f})"
    )
    if args.eps:
        from .evaluation.robustness import evaluate

        rep = evaluate(
            model, x, y, norm=args.norm, epsilons=args.eps, suite=args.suite,
            restarts=args.restarts, batch_size=args.batch_size, seed=args.seed,
            state_file=args.state, reuse=args.reuse, progress=None if args.quiet else lambda line: print(line, flush=True),
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
            _write_evaluation_report(model, x, y, report, args)
    if args.json:
        from .fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _write_evaluation_report(model: Any, x: Any, y: Any, report: dict[str, Any],
                             args: argparse.Namespace) -> None:
    """--report DIR: margins (minimal-norm estimates) and MMA Fig. 3 loss slices on a
    subset, then the report folder (JSON, Markdown, PNG)."""
    import torch

    from .attacks import estimate_margin, margin_stats, pgd
    from .evaluation.clean import model_device
    from .evaluation.report import loss_along_ray, write_report

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
    name = Path(args.run).name
    for path in write_report(report, args.report, name=name, margins=margins, loss_curves=curves):
        print(f"wrote {path}")


def _load_for_attack(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """Model (eval mode), the first N examples of ``args.split`` (all if N is None) as float
    tensors, and the device."""
    import torch

    from .data import IndexedTensors, load_split
    from .runs import load_model, load_run_config
    from .train import resolve_device

    cfg = load_run_config(args.run)
    device = resolve_device(args.device or "auto")
    model = load_model(args.run, which=args.which, device=device)
    x_raw, y_raw = load_split(cfg.data.name, args.split, cfg.data.data_dir, cfg.data.download)
    ds = IndexedTensors(x_raw, y_raw)
    n = len(ds) if args.n is None else min(args.n, len(ds))
    x, y, _ = ds.get_batch(torch.arange(n))
    return model, x, y, device


def _describe(values: Any) -> str:
    import torch

    v = values.float()
    if v.numel() == 0:
        return "n/a"
    q = torch.quantile(v, torch.tensor([0.25, 0.5, 0.75]))
    return (
        f"mean {v.mean():.4f}  q1 {q[0]:.4f}  median {q[1]:.4f}  q3 {q[2]:.4f}  max {v.max():.4f}"
    )


def cmd_attack(args: argparse.Namespace) -> int:
    """Attack a run's model on its test split; print clean and robust accuracy and
    perturbation-norm statistics; optionally save the adversarial examples (safetensors)."""
    import torch

    from .attacks import run_attack
    from .threat import get_threat

    model, x, y, device = _load_for_attack(args)
    threat = get_threat(args.norm)
    x_adv_all, clean_ok, adv_ok = [], [], []
    for start in range(0, x.shape[0], args.batch_size):
        xb = x[start : start + args.batch_size].to(device)
        yb = y[start : start + args.batch_size].to(device)
        xa = run_attack(
            args.attack, model, xb, yb, norm=args.norm, eps=args.eps, steps=args.steps,
            restarts=args.restarts, seed=args.seed,
        )
        with torch.no_grad():
            clean_ok.append((model(xb).argmax(1) == yb).cpu())
            adv_ok.append((model(xa).argmax(1) == yb).cpu())
        x_adv_all.append(xa.cpu())
    x_adv = torch.cat(x_adv_all)
    clean_ok_t, adv_ok_t = torch.cat(clean_ok), torch.cat(adv_ok)
    dist = threat.norm(x_adv - x)
    broken = clean_ok_t & ~adv_ok_t
    print(f"attack {args.attack} ({args.norm}, eps {args.eps:g}, steps {args.steps}, "
          f"restarts {args.restarts}) on {x.shape[0]} examples")
    print(f"clean accuracy:  {clean_ok_t.float().mean():.4f}")
    print(f"robust accuracy: {adv_ok_t.float().mean():.4f}")
    print(f"perturbation {args.norm} norm, all:    {_describe(dist)}")
    print(f"perturbation {args.norm} norm, broken: {_describe(dist[broken])}")
    if args.out:
        import json

        from safetensors.torch import save_file

        from .fileio import replace_atomically

        out = Path(args.out)
        tmp = out.with_name(f".{out.name}.tmp")
        meta = {k: str(v) for k, v in vars(args).items() if k != "func"}
        save_file({"x_adv": x_adv.contiguous(), "y": y.contiguous()}, str(tmp),
                  metadata={"wideberth": json.dumps(meta)})
        replace_atomically(tmp, out)
        print(f"wrote {out}")
    return 0


def cmd_margins(args: argparse.Namespace) -> int:
    """Estimate each test example's distance to the decision boundary (0 if misclassified)
    and print margin statistics; optionally write JSON and a histogram."""
    import torch

    from .attacks.margin import estimate_margin_result, margin_stats

    model, x, y, device = _load_for_attack(args)
    distances, found = [], []
    for start in range(0, x.shape[0], args.batch_size):
        res = estimate_margin_result(
            model, x[start : start + args.batch_size].to(device),
            y[start : start + args.batch_size].to(device), norm=args.norm, method=args.method,
        )
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

        from .fileio import atomic_write_text

        report = {"run": str(args.run), "norm": args.norm, "method": args.method,
                  "n": int(d.numel()), "stats": stats,
                  "distances": [float(v) for v in d.tolist()]}
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        from .evaluation.plots import margin_histogram

        margin_histogram(d, args.plot, norm=args.norm, title=f"{Path(str(args.run)).name}: margins")
        print(f"wrote {args.plot}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """Draw a run's training curves and, when margins were tracked (track.every > 0), the
    MMA paper's Fig. 4: per-epoch margin histograms of the tracked train and test points.
    For a toy2d run, also the decision regions with each test point's l2 margin."""
    from .config import load_config
    from .evaluation.plots import decision_boundary, margin_histograms_by_epoch, training_curves

    run = Path(args.run)
    metrics = run / "metrics.jsonl"
    if not metrics.exists():
        raise FileNotFoundError(f"{metrics} does not exist; is {run} a wideberth run folder?")
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    out = Path(args.out) if args.out else run / "plots"
    written = [training_curves(records, out / "training_curves.png", title=run.name)]
    for split in ("train", "test"):
        if any(r.get("event") == "margins" and r.get("split") == split for r in records):
            written.append(margin_histograms_by_epoch(records, out / f"margins_{split}.png", split=split))
    cfg_path = run / "config.yaml"
    if cfg_path.exists() and load_config(cfg_path).data.name == "toy2d":
        from .attacks import estimate_margin
        from .data import tensors
        from .runs import load_model

        model = load_model(run)
        x, y = tensors("toy2d", "test")
        d = estimate_margin(model, x, y, norm="l2")
        written.append(decision_boundary(model, x, y, out / "decision_boundary.png", margins=d,
                                         title=f"{run.name}: decision boundary, l2 margins"))
    for p in written:
        print(f"wrote {p}")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    """List the shipped training recipes."""
    from .config import list_recipes, recipe_description

    names = list_recipes()
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {recipe_description(name)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Several models side by side in the MMA paper's table format (its Table 1): clean
    accuracy, AvgAcc, AvgRobAcc and robust accuracy per ε. Each input is a JSON report of
    `wideberth evaluate --json` or a run folder / checkpoint, evaluated here with --norm,
    --eps and --suite (all on the same first --n test examples)."""
    from .evaluation.report import markdown_table, plot_robust_accuracy
    from .evaluation.robustness import evaluate

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
        model, x, y, _ = _load_for_attack(argparse.Namespace(**{**vars(args), "run": item, "split": "test"}))
        rep = evaluate(model, x, y, norm=args.norm, epsilons=args.eps, suite=args.suite,
                       batch_size=args.batch_size, seed=args.seed)
        reports[name] = rep.to_dict()
        print(f"evaluated {item}", file=sys.stderr)
    table = markdown_table(reports)
    print(table, end="")
    for name, r in reports.items():
        for flag in r.get("flags") or []:
            print(f"FLAG [{name}]: {flag}")
    if args.markdown:
        from .fileio import atomic_write_text

        atomic_write_text(args.markdown, table)
        print(f"wrote {args.markdown}")
    if args.plot:
        print(f"wrote {plot_robust_accuracy(reports, args.plot)}")
    return 0


def _load_models_and_examples(args: argparse.Namespace) -> tuple[list[Any], list[str], Any, Any]:
    """Every run of ``args.runs`` as a model, their names, and the first ``args.n`` test
    examples of the first run's dataset (all runs must share its input shape)."""
    from .runs import load_run_config

    models, names = [], []
    datasets = {load_run_config(r).data.name for r in args.runs}
    if len(datasets) > 1:
        raise ValueError(f"the runs were trained on different datasets ({', '.join(sorted(datasets))}); "
                         "give runs of one dataset")
    x = y = None
    for r in args.runs:
        model, xr, yr, _ = _load_for_attack(argparse.Namespace(**{**vars(args), "run": r, "split": "test"}))
        models.append(model)
        names.append(Path(r).name)
        if x is None:
            x, y = xr, yr
    return models, names, x, y


def cmd_minmax(args: argparse.Namespace) -> int:
    """The min-max framework's attacks (Wang et al.; specs/minmax.md): APGDA with learned
    domain weights against its baselines, side by side, with the weights saved and plotted.

    `ensemble RUN RUN ...`: one perturbation per image against K models (§2a): ASR_all
    (fooled by every model) and per-model ASR. `universal RUN --group-size K`: one
    perturbation per group of K consecutive test images (§2b): ASR_gp (every image of the
    group fooled). `transforms RUN [--transforms table3|tableA5|tableA6]`: one perturbation
    per image robust over the paper's transformation set (§2c): ASR under every transform."""
    from .evaluation.clean import model_device
    from .minmax.diagnostics import plot_weight_trajectory, save_weights, summarize_weights

    if args.kind != "ensemble" and len(args.runs) != 1:
        raise ValueError(f"`minmax {args.kind}` attacks one model; got {len(args.runs)} runs")
    models, names, x, y = _load_models_and_examples(args)
    device = model_device(models[0])
    x, y = x.to(device), y.to(device)
    methods = args.methods or (["minmax", "avg", "avg_logit", "avg_prob", "clip"]
                               if args.kind == "ensemble" else ["minmax", "avg"])
    rows: list[tuple[str, float, list[float]]] = []
    minmax_res, domains = None, names
    for method in methods:
        if args.kind == "ensemble":
            from .minmax import ensemble_attack, ensemble_metrics

            res = ensemble_attack(models, x, y, norm=args.norm, eps=args.eps, steps=args.steps,
                                  method=method, seed=args.seed)
            met = ensemble_metrics(models, res.x_adv, y)
            rows.append((method, met.asr_all, [float(a) for a in met.per_model_asr]))
        elif args.kind == "universal":
            from .minmax import universal_attack, universal_metrics

            n = x.shape[0] - x.shape[0] % args.group_size
            res = universal_attack(models[0], x[:n], y[:n], group_size=args.group_size,
                                   norm=args.norm, eps=args.eps, steps=args.steps,
                                   method=method, seed=args.seed)
            met = universal_metrics(models[0], res.x_adv, y[:n].reshape(res.x_adv.shape[:2]))
            domains = [f"image {i}" for i in range(args.group_size)]
            rows.append((method, met.asr_gp, [float(v) for v in met.fooled.double().mean(0)]))
        else:
            from .minmax import transform_attack, transform_metrics

            res = transform_attack(models[0], x, y, args.transforms, norm=args.norm,
                                   eps=args.eps, steps=args.steps, method=method, seed=args.seed)
            met = transform_metrics(models[0], res.x_adv, y, res.transforms)
            domains = list(res.labels)
            rows.append((method, met.asr_gp, [float(v) for v in met.per_transform_asr]))
        if method == "minmax":
            minmax_res = res
    metric = {"ensemble": "ASR_all", "universal": "ASR_gp", "transforms": "ASR_all_T"}[args.kind]
    print(f"{args.kind}: {', '.join(names)}; {x.shape[0]} examples, {args.norm} eps {args.eps:g}, "
          f"{args.steps} steps; columns: {metric}, then the ASR per domain")
    header = f"{'method':10s} {metric:>9s} " + " ".join(f"{d[:12]:>12s}" for d in domains)
    print(header)
    print("-" * len(header))
    for method, headline, per in rows:
        print(f"{method:10s} {headline:9.3f} " + " ".join(f"{v:12.3f}" for v in per))
    if minmax_res is not None and minmax_res.w is not None:
        summary = summarize_weights(minmax_res.w, domains)
        print(f"hardest domain by mean weight: {summary['hardest']} "
              f"({', '.join(f'{k} {v:.2f}' for k, v in summary['mean'].items())})")
        if args.out:
            out = Path(args.out)
            extra = {"kind": args.kind, "norm": args.norm, "eps": args.eps, "steps": args.steps,
                     metric: {m: h for m, h, _ in rows}}
            print(f"wrote {save_weights(minmax_res.w, out / 'weights.json', domains, extra)}")
            if minmax_res.w_trajectory is not None:
                print(f"wrote {plot_weight_trajectory(minmax_res.w_trajectory, out / 'weights.png', domains)}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Describe a run: data, model, method, progress, best epoch, test result."""
    from .runs import run_info

    info = run_info(args.run)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    pos = info.get("position") or {}
    print(f"checkpoint:  {info['checkpoint']}")
    print(f"data:        {info['data']['name']} {tuple(info['data']['input_shape'])}, "
          f"{info['data']['num_classes']} classes, {info['data']['num_train']} train / "
          f"{info['data']['num_val']} val")
    print(f"model:       {info['model']['name']} ({info['model']['num_parameters']:,} parameters)")
    print(f"method:      {info['method']['name']} {info['method']['params'] or ''}".rstrip())
    print(f"progress:    epoch {pos.get('epoch')}, step {pos.get('step')} of {info['total_steps']}")
    best = info.get("best") or {}
    if best.get("value") is not None:
        print(f"best:        {best['metric']} {best['value']:.4f} at epoch {best['epoch']}")
    if info.get("train_time_s") is not None:
        print(f"train time:  {info['train_time_s']:.1f}s")
    if "test" in info:
        t = info["test"]
        print(f"test:        clean accuracy {t['clean_accuracy']:.4f} on {t['n']} examples")
    return 0


# ---------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    from .attacks import ATTACK_NAMES

    parser = argparse.ArgumentParser(
        prog="wideberth",
        description="Margin-based adversarial training and robustness evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"wideberth {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a model (default: the digits recipe)",
                       description=cmd_train.__doc__)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--recipe", help="a shipped recipe (see `wideberth recipes`)")
    src.add_argument("--config", help="a YAML config file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=0.01 (repeatable)")
    p.add_argument("--out", help="run folder to create (default: runs/<recipe>)")
    p.add_argument("--device", help="auto, cpu or cuda (default: the config's run.device)")
    p.add_argument("--seed", type=int, help="random seed (default: the config's run.seed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("resume", help="continue an interrupted run exactly",
                       description=cmd_resume.__doc__)
    p.add_argument("run", help="run folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("evaluate", help="evaluate a run or checkpoint",
                       description=cmd_evaluate.__doc__)
    p.add_argument("run", help="run folder or .safetensors checkpoint")
    p.add_argument("--split", default="test", choices=["test", "train"])
    p.add_argument("--n", type=int, help="evaluate the first N examples (default: all)")
    p.add_argument("--which", default="best", choices=["best", "last"],
                   help="which checkpoint of a run folder (default: best)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--json", help="write the report as JSON to this file")
    p.add_argument("--norm", default="linf", choices=["linf", "l2", "l1"],
                   help="threat model of the robust evaluation (default linf)")
    p.add_argument("--eps", type=float, nargs="+",
                   help="radii of the robust evaluation (omit: clean accuracy only)")
    p.add_argument("--suite", default="standard", choices=["quick", "paper", "standard"],
                   help="attack suite (default standard: APGD-CE, APGD-T, paper PGD)")
    p.add_argument("--restarts", type=int,
                   help="N of the paper PGD (split CE/CW; default 10)")
    p.add_argument("--seed", type=int, default=0, help="attack seed (default 0)")
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
                   help="examples for the report's margins and loss slices (default 200)")
    p.set_defaults(func=cmd_evaluate)

    def add_model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("run", help="run folder or .safetensors checkpoint")
        p.add_argument("--norm", default="linf", choices=["linf", "l2", "l1"])
        p.add_argument("--n", type=int, default=1000, help="first N test examples (default 1000)")
        p.add_argument("--split", default="test", choices=["test", "train"])
        p.add_argument("--which", default="best", choices=["best", "last"])
        p.add_argument("--batch-size", type=int, default=500)
        p.add_argument("--device", help="auto, cpu or cuda (default: auto)")

    p = sub.add_parser("attack", help="attack a model and report robust accuracy",
                       description=cmd_attack.__doc__)
    add_model_args(p)
    p.add_argument("--attack", default="pgd", choices=list(ATTACK_NAMES) + ["apgd-dlr"],
                   help="attack name (apgd-dlr: deprecated alias of apgd-t)")
    p.add_argument("--eps", type=float, required=True, help="perturbation budget")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--restarts", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="save adversarial examples to this .safetensors file")
    p.set_defaults(func=cmd_attack)

    p = sub.add_parser("margins", help="estimate distances to the decision boundary",
                       description=cmd_margins.__doc__)
    add_model_args(p)
    p.set_defaults(norm="l2", n=500)
    p.add_argument("--method", default="auto", choices=["auto", "fmn", "anpgd", "cw"])
    p.add_argument("--thresholds", type=float, nargs="*", help="report the fraction of margins below each")
    p.add_argument("--json", help="write statistics and per-example distances to this file")
    p.add_argument("--plot", help="draw a histogram to this PNG file")
    p.set_defaults(func=cmd_margins)

    p = sub.add_parser("plot", help="draw a run's training curves and margin histograms",
                       description=cmd_plot.__doc__)
    p.add_argument("run", help="run folder")
    p.add_argument("--out", help="folder for the PNGs (default: RUN/plots)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("recipes", help="list the shipped recipes", description=cmd_recipes.__doc__)
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("compare", help="several models side by side (MMA Table 1 format)",
                       description=cmd_compare.__doc__)
    p.add_argument("inputs", nargs="+", help="JSON reports of `evaluate --json`, or runs")
    p.add_argument("--norm", default="linf", choices=["linf", "l2", "l1"])
    p.add_argument("--eps", type=float, nargs="+", help="ε grid (needed for runs)")
    p.add_argument("--suite", default="standard", choices=["quick", "paper", "standard"])
    p.add_argument("--n", type=int, default=1000, help="first N test examples (default 1000)")
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--markdown", help="also write the table to this file")
    p.add_argument("--plot", help="robust accuracy vs ε of every model, as a PNG")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("minmax", help="min-max attacks (APGDA) against their baselines",
                       description=cmd_minmax.__doc__)
    p.add_argument("kind", choices=["ensemble", "universal", "transforms"],
                   help="application of the framework")
    p.add_argument("runs", nargs="+", help="run folders or checkpoints (the models)")
    p.add_argument("--group-size", type=int, default=5, help="universal: images per group (5)")
    p.add_argument("--transforms", default="table3",
                   help="transforms: table3 (default), tableA5 (stochastic) or tableA6")
    p.add_argument("--norm", default="linf", choices=["linf", "l2", "l1"])
    p.add_argument("--eps", type=float, required=True)
    p.add_argument("--steps", type=int, default=50, help="APGDA iterations (default 50)")
    p.add_argument("--n", type=int, default=500, help="first N test examples (default 500)")
    p.add_argument("--methods", nargs="+",
                   help="APGDA (minmax) and baselines to run (ensemble default: minmax avg "
                        "avg_logit avg_prob clip; else minmax avg)")
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--out", help="folder for weights.json and weights.png")
    p.set_defaults(func=cmd_minmax)

    p = sub.add_parser("info", help="describe a run", description=cmd_info.__doc__)
    p.add_argument("run", help="run folder or .safetensors checkpoint")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wideberth`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
        format="%(message)s",
    )
    from .config import ConfigError
    from .train import CheckpointError, TrainingError

    try:
        return args.func(args)
    except (ConfigError, CheckpointError, TrainingError, ValueError, FileNotFoundError) as exc:
        print(f"wideberth {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted; the last checkpoint is intact: continue with `wideberth resume RUN`",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
