"""The ``wideberth`` command: train, resume, evaluate, inspect runs, list recipes."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__

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
    """Evaluate a trained run or checkpoint on its dataset's test split."""
    import torch

    from .data import IndexedTensors, load_split
    from .evaluate.clean import clean_metrics
    from .runs import load_model, load_run_config, resolve_checkpoint
    from .train import resolve_device

    cfg = load_run_config(args.run)
    device = resolve_device(args.device or "auto")
    model = load_model(args.run, which=args.which, device=device)
    x_raw, y_raw = load_split(cfg.data.name, args.split, cfg.data.data_dir, cfg.data.download)
    ds = IndexedTensors(x_raw, y_raw)
    n = len(ds) if args.n is None else min(args.n, len(ds))
    x, y, _ = ds.get_batch(torch.arange(n))
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
    if args.json:
        from .train.checkpoint import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    """List the shipped training recipes."""
    from .config import list_recipes, recipe_description

    names = list_recipes()
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {recipe_description(name)}")
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
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("recipes", help="list the shipped recipes", description=cmd_recipes.__doc__)
    p.set_defaults(func=cmd_recipes)

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
