"""What the command modules share: argument helpers, registry-driven choices, loading a run's
model and examples."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "NORMS",
    "HelpFormatter",
    "add_command",
    "add_model_args",
    "attack_help",
    "load_for_attack",
    "registry_name",
    "with_run",
]

#: the threat-model norms a command accepts (``--norm``)
NORMS = ["linf", "l2", "l1"]


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that an option's help keeps its explicit line breaks
    (each line is wrapped on its own, an indented line's continuation two spaces deeper), so
    a listing such as the ``--attack`` table stays a listing. Help texts without line breaks
    are formatted exactly as by argparse."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        if "\n" not in text:
            return super()._split_lines(text, width)
        lines: list[str] = []
        for line in text.splitlines():
            indent = len(line) - len(line.lstrip())
            wrapped = super()._split_lines(line, max(width - indent - 2, 1))
            lines.extend(" " * (indent + 2 * (i > 0 and indent > 0)) + w for i, w in enumerate(wrapped))
        return lines


def add_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    func: Callable[[argparse.Namespace], int],
    help: str,
) -> argparse.ArgumentParser:
    """Register the subcommand ``name`` running ``func`` (its docstring is the description)."""
    p = subparsers.add_parser(name, help=help, description=func.__doc__,
                              formatter_class=HelpFormatter)
    p.set_defaults(func=func)
    return p


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The options of a command that loads one run's model and its first N examples."""
    p.add_argument("run", help="run folder or .safetensors checkpoint")
    p.add_argument("--norm", default="linf", choices=NORMS)
    p.add_argument("--n", type=int, default=1000, help="first N test examples (default 1000)")
    p.add_argument("--split", default="test", choices=["test", "train"])
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device", help="auto, cpu or cuda (default: auto)")


def registry_name(command: str, extra: Iterable[str] = ()) -> Callable[[str], str]:
    """An argparse ``type`` for an option naming a registered attack: a deprecated alias
    (``apgd-dlr``) resolves to its canonical name (``apgd-t``) with a one-line notice on
    stderr; names in ``extra`` (``auto``) and unknown names pass through unchanged, for
    argparse's ``choices`` to accept or reject."""
    from ..attacks.registry import ATTACKS, get_attack

    passthrough = set(extra)

    def resolve(name: str) -> str:
        if name in ATTACKS or name in passthrough:
            return name
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                canonical = get_attack(name).name
            except ValueError:
                return name
        for w in caught:
            print(f"wideberth {command}: warning: {w.message}", file=sys.stderr)
        return canonical

    return resolve


def attack_help(names: Iterable[str], lead: str) -> str:
    """Help text listing the registered attacks ``names`` grouped by kind, one line each
    (name, norms, summary, paper), then their deprecated aliases."""
    from ..attacks.registry import ATTACKS

    entries = [ATTACKS[n] for n in names]
    lines = [lead]
    for kind in dict.fromkeys(e.kind for e in entries):
        lines.append(f"{kind}:")
        for e in entries:
            if e.kind == kind:
                lines.append(f"  {e.name} [{', '.join(e.norms)}]: {e.summary} ({e.paper})")
    aliases = [f"{a} (= {e.name})" for e in entries for a in e.aliases]
    if aliases:
        lines.append(f"deprecated names: {', '.join(aliases)}")
    return "\n".join(lines)


def with_run(args: argparse.Namespace, run: str) -> argparse.Namespace:
    """A copy of ``args`` naming the run ``run`` and the test split."""
    return argparse.Namespace(**{**vars(args), "run": run, "split": "test"})


def load_for_attack(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """The model of ``args.run`` (``args.which`` checkpoint, eval mode, on ``args.device``),
    the first ``args.n`` examples of ``args.split`` (all if None) as float tensors x, y,
    and the device."""
    import torch

    from ..data import IndexedTensors, load_split
    from ..runs import load_model, load_run_config
    from ..train import resolve_device

    cfg = load_run_config(args.run)
    device = resolve_device(args.device or "auto")
    model = load_model(args.run, which=args.which, device=device)
    x_raw, y_raw = load_split(cfg.data, args.split)  # the run's split, from its whole DataConfig
    ds = IndexedTensors(x_raw, y_raw)
    n = len(ds) if args.n is None else min(args.n, len(ds))
    x, y, _ = ds.get_batch(torch.arange(n))
    return model, x, y, device
