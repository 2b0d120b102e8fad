"""The ``wideberth`` command: train, resume, evaluate, attack, inspect runs, list recipes.

One module per command family registers its subcommands (``add_parser``) and defines their
``cmd_*`` functions (each docstring is the command's description); :func:`build_parser`
only collects them, :func:`main` runs one and turns the library's errors into messages.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from .._version import __version__
from . import (
    attack_cmd,
    evaluate_cmd,
    import_cmd,
    info_cmd,
    margins_cmd,
    minmax_cmd,
    plot_cmd,
    train_cmd,
)

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

#: the command modules, in the order ``wideberth --help`` lists their commands
COMMAND_MODULES = (train_cmd, evaluate_cmd, attack_cmd, margins_cmd, plot_cmd, minmax_cmd,
                   info_cmd, import_cmd)


def build_parser() -> argparse.ArgumentParser:
    """The ``wideberth`` argument parser with every command's subparser."""
    parser = argparse.ArgumentParser(
        prog="wideberth",
        description="Margin-based adversarial training and robustness evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"wideberth {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wideberth`` console script. Output into a pipe that closes
    early (``wideberth recipes | head -1``) ends the command quietly."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # a closed pipe fails here, inside the try, not at exit
        return code
    except BrokenPipeError:
        # as the Python docs recommend (signal module, "Note on SIGPIPE"): point stdout at
        # devnull so that the interpreter's final flush does not fail again, then exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
        format="%(message)s",
    )
    from ..config import ConfigError
    from ..train import CheckpointError, TrainingError

    try:
        code: int = args.func(args)
        return code
    except (ConfigError, CheckpointError, TrainingError, ValueError, FileNotFoundError,
            ImportError) as exc:
        print(f"wideberth {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted; the last checkpoint is intact: continue with `wideberth resume RUN`",
            file=sys.stderr,
        )
        return 130
