"""``wideberth import``: a published TRADES, MMA or RobustBench checkpoint as a run folder."""

from __future__ import annotations

import argparse
import sys

from .common import add_command

__all__ = ["add_parser", "cmd_import"]


def cmd_import(args: argparse.Namespace) -> int:
    """Turn a published checkpoint into a wideberth run folder (config.yaml and
    checkpoints/best|last.safetensors, provenance recorded) that `evaluate`, `attack`,
    `margins`, `info` and `wb.load_model` use like a trained run. The file is read safely
    (safetensors, or torch.load(weights_only=True) only: a file that needs full unpickling
    is refused and nothing in it runs), its container ({"state_dict": ...}, {"model": ...},
    a "module." prefix) unwrapped, its parameter names renamed to the registry model's and
    loaded strictly (missing or unexpected keys are listed). Sources: TRADES (Zhang et al.,
    "Theoretically Principled Trade-off between Robustness and Accuracy", ICML 2019:
    smallcnn, wrn-34-10), MMA training (Ding et al., "MMA Training: Direct Input Space
    Margin Maximization through Adversarial Training", ICLR 2020: lenet5-madry, wrn-28-4
    with its per-image standardisation) and RobustBench (Croce et al., NeurIPS 2021 Datasets
    and Benchmarks: wrn-28-10, wrn-34-10, preact-resnet18)."""
    from ..config import ConfigError, parse_override
    from ..runs import import_checkpoint

    params = {}
    for text in args.param or []:
        path, value = parse_override(text)
        if len(path) != 1:
            raise ConfigError(f"--param expects NAME=VALUE (e.g. sub_block1=true), got {text!r}")
        params[path[0]] = value
    try:
        out = import_checkpoint(args.file, args.source, args.model, args.out, data=args.data,
                                params=params, force=args.force)
    except FileExistsError as exc:
        print(f"wideberth import: error: {exc}", file=sys.stderr)
        return 2
    print(f"imported {args.file} ({args.source}) as {args.model} -> {out}")
    print(f"next: wideberth evaluate {out}")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``import``."""
    p = add_command(sub, "import", cmd_import,
                    "make a run folder of a TRADES, MMA or RobustBench checkpoint")
    p.add_argument("file", help="the published weights (.pt/.pth or .safetensors)")
    p.add_argument("--from", dest="source", required=True, metavar="SOURCE",
                   help="where the weights come from: trades, mma or robustbench (required)")
    p.add_argument("--model", required=True,
                   help="the registry model: trades: smallcnn, wrn-34-10; mma: lenet5-madry, "
                        "wrn-28-4; robustbench: wrn-28-10, wrn-34-10, preact-resnet18 "
                        "(required)")
    p.add_argument("--out", required=True, help="the run folder to create (required)")
    p.add_argument("--data",
                   help="dataset name or spec the run is evaluated on (default: mnist for "
                        "smallcnn and lenet5-madry, cifar10 for the others)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="a model option, e.g. sub_block1=true (repeatable; default: none)")
    p.add_argument("--force", action="store_true",
                   help="replace the run files of an existing run folder (default: refuse)")
