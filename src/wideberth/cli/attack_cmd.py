"""``wideberth attack``: one registered attack on a run's test split."""

from __future__ import annotations

import argparse

from .common import add_command, add_model_args, attack_help, load_for_attack, registry_name

__all__ = ["add_parser", "cmd_attack", "describe_norms"]


def describe_norms(quartiles: dict[str, float] | None) -> str:
    """One line of :func:`wideberth.evaluation.attack_summary.norm_quartiles` (``n/a`` if
    there were no values)."""
    if quartiles is None:
        return "n/a"
    q = quartiles
    return (f"mean {q['mean']:.4f}  q1 {q['q1']:.4f}  median {q['median']:.4f}  "
            f"q3 {q['q3']:.4f}  max {q['max']:.4f}")


def cmd_attack(args: argparse.Namespace) -> int:
    """Attack a run's model on its test split; print clean and robust accuracy and
    perturbation-norm statistics; optionally save the adversarial examples (safetensors)."""
    from ..attacks.registry import get_attack
    from ..evaluation.attack_summary import summarize_attack

    get_attack(args.attack).check_norm(args.norm)  # a clear error before loading anything
    model, x, y, device = load_for_attack(args)
    s = summarize_attack(model, x, y, attack=args.attack, norm=args.norm, eps=args.eps,
                       steps=args.steps, restarts=args.restarts, seed=args.seed,
                       batch_size=args.batch_size, device=device)
    print(f"attack {s.attack} ({args.norm}, eps {args.eps:g}, steps {args.steps}, "
          f"restarts {args.restarts}) on {s.n} examples")
    print(f"clean accuracy:  {s.clean_accuracy:.4f}")
    print(f"robust accuracy: {s.robust_accuracy:.4f}")
    print(f"perturbation {args.norm} norm, all:    {describe_norms(s.quartiles_all)}")
    print(f"perturbation {args.norm} norm, broken: {describe_norms(s.quartiles_broken)}")
    if args.out:
        meta = {k: v for k, v in vars(args).items() if k != "func"}
        print(f"wrote {s.save(args.out, metadata=meta)}")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``attack`` (``--attack`` choices and help: the attack registry)."""
    from ..attacks.registry import attack_names

    p = add_command(sub, "attack", cmd_attack, "attack a model and report robust accuracy")
    add_model_args(p)
    names = list(attack_names())
    p.add_argument("--attack", default="pgd", choices=names, type=registry_name("attack"),
                   help=attack_help(names, "attack (default pgd) [the norms it supports]; a "
                                           "minimal-norm attack breaks an example where the "
                                           "perturbation it finds is ≤ eps"))
    p.add_argument("--eps", type=float, required=True, help="perturbation budget")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--restarts", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="save adversarial examples to this .safetensors file")
