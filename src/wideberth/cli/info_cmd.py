"""``wideberth recipes`` and ``wideberth info``: what is shipped, what a run holds."""

from __future__ import annotations

import argparse
import json

from .common import add_command

__all__ = ["add_parser", "cmd_info", "cmd_recipes"]


def cmd_recipes(args: argparse.Namespace) -> int:
    """List the shipped training recipes."""
    from ..config import list_recipes, recipe_description

    names = list_recipes()
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {recipe_description(name)}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Describe a run: data, model, method, progress, best epoch, test result."""
    from ..runs import run_info

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


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``recipes`` and ``info``."""
    add_command(sub, "recipes", cmd_recipes, "list the shipped recipes")

    p = add_command(sub, "info", cmd_info, "describe a run")
    p.add_argument("run", help="run folder or .safetensors checkpoint")
    p.add_argument("--json", action="store_true", help="print JSON")
