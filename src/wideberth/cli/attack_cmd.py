"""``wideberth attack``: one registered attack on a run's test split (or on bare weights)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from .catalog import attack_info, info_names
from .common import add_command, add_model_args, attack_help, registry_name
from .sources import load_source

__all__ = ["add_parser", "attack_header", "cmd_attack", "describe_norms", "merge_summaries"]


def describe_norms(quartiles: dict[str, float] | None) -> str:
    """One line of :func:`wideberth.evaluation.attack_summary.norm_quartiles` (``n/a`` if
    there were no values)."""
    if quartiles is None:
        return "n/a"
    q = quartiles
    return (f"mean {q['mean']:.4f}  q1 {q['q1']:.4f}  median {q['median']:.4f}  "
            f"q3 {q['q3']:.4f}  max {q['max']:.4f}")


def merge_summaries(parts: list[Any]) -> Any:
    """One :class:`~wideberth.evaluation.attack_summary.AttackSummary` of consecutive
    batches' summaries (their per-example tensors concatenated in order)."""
    import torch

    if len(parts) == 1:
        return parts[0]
    tensors = ("x_adv", "y", "clean_correct", "robust_correct", "distances")
    return replace(parts[0], **{k: torch.cat([getattr(p, k) for p in parts]) for k in tensors})


def attack_header(attack: str, norm: str, eps: float, steps: int, restarts: int, n: int) -> str:
    """The first line of ``wideberth attack``'s output: the attack and its budget. A
    single-step attack (FGSM/FGM, Goodfellow et al., ICLR 2015) shows no steps or restarts."""
    info = attack_info(attack)
    if info is not None and info.default_steps == 1:
        budget = "single step"
    else:
        budget = f"steps {steps}, restarts {restarts}"
    return f"attack {attack} ({norm}, eps {eps:g}, {budget}) on {n} examples"


def cmd_attack(args: argparse.Namespace) -> int:
    """Attack a run's model on its test split (or bare weights: --model SPEC --weights FILE
    --data SPEC); print clean and robust accuracy and perturbation-norm statistics;
    optionally save the adversarial examples (safetensors). A progress bar counts the
    batches when standard error is a terminal."""
    from ..attacks.registry import get_attack
    from ..evaluation.attack_summary import summarize_attack
    from ..progress import progress_bar

    entry = get_attack(args.attack)
    entry.check_norm(args.norm)  # a clear error before loading anything
    steps = entry.default_steps if args.steps is None else args.steps
    src = load_source(args, "attack")
    n = src.x.shape[0]
    parts = []
    with progress_bar(n, f"attack {entry.name}", unit="ex", enabled=False if args.quiet else None) as bar:
        for start in range(0, n, args.batch_size):
            xb, yb = src.x[start : start + args.batch_size], src.y[start : start + args.batch_size]
            parts.append(summarize_attack(
                src.model, xb, yb, attack=args.attack, norm=args.norm, eps=args.eps, steps=steps,
                restarts=args.restarts, seed=args.seed, batch_size=args.batch_size,
                device=src.device))
            bar.update(xb.shape[0])
    s = merge_summaries(parts)
    print(attack_header(s.attack, args.norm, args.eps, steps, args.restarts, s.n))
    print(f"clean accuracy:  {s.clean_accuracy:.4f}")
    print(f"robust accuracy: {s.robust_accuracy:.4f}")
    print(f"perturbation {args.norm} norm, all:    {describe_norms(s.quartiles_all)}")
    print(f"perturbation {args.norm} norm, broken: {describe_norms(s.quartiles_broken)}")
    if args.out:
        meta = {k: v for k, v in vars(args).items() if k != "func"}
        meta.update(src.record, steps=steps)
        print(f"wrote {s.save(args.out, metadata=meta)}")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``attack`` (``--attack`` choices and help: the attack registry, through
    :mod:`wideberth.cli.catalog` so that ``--help`` needs no PyTorch)."""
    p = add_command(sub, "attack", cmd_attack, "attack a model and report robust accuracy")
    add_model_args(p)
    names = list(info_names())
    p.add_argument("--attack", default="pgd", choices=names, type=registry_name("attack"),
                   help=attack_help(names, "attack (default %(default)s) [the norms it "
                                           "supports]; a minimal-norm attack breaks an example "
                                           "where the perturbation it finds is ≤ eps"))
    p.add_argument("--eps", type=float, required=True, help="perturbation budget (required)")
    steps = ", ".join(f"{a.name} {a.default_steps}" for a in
                      (attack_info(n) for n in names) if a is not None)
    p.add_argument("--steps", type=int, default=None,
                   help=f"iterations (square: queries; fgsm: single step, ignored) "
                        f"(default: the attack's own: {steps})")
    p.add_argument("--restarts", type=int, default=1,
                   help="random restarts (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="attack seed (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", help="save adversarial examples to this .safetensors file")
