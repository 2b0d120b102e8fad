"""``wideberth train`` and ``wideberth resume``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_command

__all__ = ["add_parser", "cmd_resume", "cmd_train"]


def _default_out(name: str) -> Path:
    """``runs/NAME``, or ``runs/NAME-2``, ``-3`` … when it already exists."""
    base = Path("runs") / name
    if not base.exists():
        return base
    i = 2
    while (Path("runs") / f"{name}-{i}").exists():
        i += 1
    return Path("runs") / f"{name}-{i}"


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model from a recipe or config file (default: the digits recipe)."""
    from ..config import DEFAULT_RECIPE, apply_overrides, load_config, load_recipe
    from ..train import train

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
    if args.tensorboard:
        overrides.append("run.tensorboard=true")
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


def finished_message(run: str | Path) -> str | None:
    """What ``wideberth resume`` says of a run whose ``last`` checkpoint has spent the whole
    step budget (None while steps remain): it is finished, and how to train longer."""
    from ..train.checkpoint import read_checkpoint_meta
    from ..train.run_folder import RunFolder

    last = RunFolder(run).checkpoint("last")
    if not last.exists():
        return None  # resume() says what is missing
    meta = read_checkpoint_meta(last)
    if "imported" in meta:
        return None  # resume() refuses imported weights with its own message
    step, total = int(meta["position"]["step"]), int(meta["total_steps"])
    if step < total:
        return None
    epoch = int(meta["position"]["epoch"])
    return (f"{run} is finished: all {total} steps ({epoch} epochs) are done, nothing to "
            f"resume. To train longer, start a new run from its config with a larger "
            f"budget: wideberth train --config {Path(run) / 'config.yaml'} "
            f"--set run.epochs={epoch * 2} --out NEW_RUN")


def cmd_resume(args: argparse.Namespace) -> int:
    """Continue an interrupted run from its last checkpoint, exactly. A finished run is
    left alone (the message says how to train longer)."""
    from ..train import resume

    done = finished_message(args.run)
    if done is not None:
        print(done)
        return 0
    result = resume(args.run, progress=None if not args.quiet else False)
    acc = result.test["clean_accuracy"] if result.test else float("nan")
    print(f"run folder: {result.run_dir}")
    print(f"test accuracy: {acc:.4f}")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``train`` and ``resume``."""
    p = add_command(sub, "train", cmd_train, "train a model (default: the digits recipe)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--recipe", help="a shipped recipe (see `wideberth recipes`)")
    src.add_argument("--config", help="a YAML config file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=0.01 (repeatable)")
    p.add_argument("--out", help="run folder to create (default: runs/<recipe>)")
    p.add_argument("--device", help="auto, cpu or cuda (default: the config's run.device)")
    p.add_argument("--seed", type=int, help="random seed (default: the config's run.seed)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard scalars to RUN/tensorboard (sets "
                        "run.tensorboard=true; pip install 'wideberth[tensorboard]')")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = add_command(sub, "resume", cmd_resume, "continue an interrupted run exactly")
    p.add_argument("run", help="run folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
