"""What the command modules share: argument helpers, registry-driven choices, loading a run's
model and examples."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from .catalog import attack_info, info_names
from .sources import load_source

__all__ = [
    "NORMS",
    "HelpFormatter",
    "add_command",
    "add_model_args",
    "add_source_args",
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


def add_source_args(p: argparse.ArgumentParser, *, n_default: int | None = 1000) -> None:
    """The options naming the model and examples of a command: a run folder (or checkpoint)
    **or** ``--model SPEC --weights FILE --data SPEC`` (bare weights, no run folder), and
    which examples (``--n``, ``--split``, ``--which``), in batches on a device."""
    p.add_argument("run", nargs="?", metavar="RUN",
                   help="run folder or .safetensors checkpoint (or give --model and --weights)")
    p.add_argument("--model", metavar="SPEC",
                   help="bare weights: the model, a registry name (see `wideberth info`), an "
                        "import path package.module:factory or an installed entry-point name")
    p.add_argument("--model-params", metavar="YAML",
                   help="bare weights: the model's options / the factory's keyword arguments "
                        "as a YAML mapping, e.g. '{hidden: [16]}' (default: none)")
    p.add_argument("--weights", metavar="FILE",
                   help="bare weights: a safetensors state dict or a .pt/.pth file (read only "
                        "with torch.load(weights_only=True); a file needing full unpickling "
                        "is refused)")
    p.add_argument("--data", metavar="SPEC",
                   help="bare weights (required with --weights): a dataset name (its --split) "
                        "or npz:PATH / safetensors:PATH / folder:PATH (all its examples)")
    n_help = ("first N examples (default: all)" if n_default is None
              else "first N examples (default %(default)s)")
    p.add_argument("--n", type=int, default=n_default, help=n_help)
    p.add_argument("--split", default="test", choices=["test", "train"],
                   help="split of the run's (or --data's) dataset (default %(default)s)")
    p.add_argument("--which", default="best", choices=["best", "last"],
                   help="which checkpoint of a run folder (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=500,
                   help="examples per batch (default %(default)s)")
    p.add_argument("--device", help="auto, cpu or cuda (default: auto)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The options of a command that attacks one model on its first N examples: the model
    source (:func:`add_source_args`) and ``--norm``."""
    add_source_args(p)
    p.add_argument("--norm", default="linf", choices=NORMS,
                   help="threat model (default %(default)s)")


def registry_name(command: str, extra: Iterable[str] = ()) -> Callable[[str], str]:
    """An argparse ``type`` for an option naming a registered attack: a deprecated alias
    (``apgd-dlr``) resolves to its canonical name (``apgd-t``) with a one-line notice on
    stderr; names in ``extra`` (``auto``) and unknown names pass through unchanged, for
    argparse's ``choices`` to accept or reject. Canonical names resolve without PyTorch."""
    passthrough = set(extra) | set(info_names())

    def resolve(name: str) -> str:
        if name in passthrough:
            return name
        from ..attacks.registry import get_attack

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
    (name, norms, summary, paper), then their deprecated aliases (from
    :data:`~wideberth.cli.catalog.ATTACK_INFO`: no PyTorch needed)."""
    entries = [a for a in (attack_info(n) for n in names) if a is not None]
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
    """The model of ``args.run`` (``args.which`` checkpoint, eval mode, on ``args.device``)
    or of bare weights (``--model``/``--weights``/``--data``), the first ``args.n`` examples
    (all if None) as float tensors x, y, and the device (:func:`~.sources.load_source`)."""
    src = load_source(args, str(getattr(args, "command", None) or "wideberth"))
    return src.model, src.x, src.y, src.device
