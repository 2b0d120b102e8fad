"""``wideberth recipes`` and ``wideberth info``: what is shipped, what a run holds."""

from __future__ import annotations

import argparse
import json

from .common import add_command

__all__ = ["QUICK_PREFIXES", "add_parser", "cmd_info", "cmd_recipes", "recipe_order"]


#: name prefixes of the recipes that finish in seconds to minutes on a CPU, listed first
QUICK_PREFIXES = ("digits-", "toy2d-", "fashion-mnist-")


def recipe_order(names: list[str]) -> list[str]:
    """``names`` with the quick CPU recipes (:data:`QUICK_PREFIXES`, in that order) first,
    then the rest, each group sorted."""
    def key(name: str) -> tuple[int, str]:
        rank = next((i for i, p in enumerate(QUICK_PREFIXES) if name.startswith(p)),
                    len(QUICK_PREFIXES))
        return rank, name

    return sorted(names, key=key)


def cmd_recipes(args: argparse.Namespace) -> int:
    """List the shipped training recipes, the quick CPU ones (digits, toy2d, Fashion-MNIST)
    first, each with its one-sentence description (details: the comments of its YAML
    file). Train one with `wideberth train --recipe NAME`."""
    from ..config import list_recipes, recipe_description

    names = recipe_order(list_recipes())
    width = max(len(n) for n in names)
    quick = True
    print("quick on a CPU:")
    for name in names:
        if quick and not name.startswith(QUICK_PREFIXES):
            quick = False
            print("\nfull-size (paper) recipes, most need a GPU:")
        print(f"  {name:<{width}}  {recipe_description(name)}")
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
