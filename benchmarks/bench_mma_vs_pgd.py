"""MMA training speed: one epoch of MMA against one epoch of PGD-AT at equal PGD steps.

Both methods train the same ``cnn-small`` from the same starting weights for one epoch on
a fixed subset of Fashion-MNIST (default 5,000 training images, batch 128; digits if
Fashion-MNIST is not installed), with the same PGD settings (``--steps`` iterations, SLM
attack loss, step 2.5·ε/steps, advertorch random start and projection, eval-mode attack):

* **PGD-AT** (``wideberth.methods.PGDAT``, name ``pgd-at``): PGD at ε = ``--eps``, CE on
  the last iterate. Its optional clean-accuracy logging forward is switched off, so it does
  exactly the work of Madry's training step.
* **MMA** (``wideberth.methods.mma.MMA``): clean forward+backward, AN-PGD (PGD with the
  same step count on the correctly classified rows + ``--n-search`` bisection forwards),
  mixed forward+backward; ``d_max = --d-max``.

The starting weights come from two epochs of standard training on the same subset (so that,
as in steady-state training, most examples are classified correctly and get attacked by
MMA: an untrained model would make MMA look cheap). The MMA ε store starts at ε_min.

Timing: ``--repeats`` rounds, each timing one epoch of PGD-AT and one of MMA back to back
(order alternating between rounds), every epoch from a fresh copy of the starting weights
with the same seeds. Printed: per-epoch seconds of each (median, min–max), the per-round
ratio MMA/PGD-AT (median, min–max; goal ≤ 1.2; counting the passes of MMA's Algorithm 1,
AN-PGD plus its search, gives 1.3–1.5× PGD-10 training for the CIFAR-10 recipe: the paper
itself reports no timing), the fraction of rows MMA attacked, and a cost model in units of one
forward pass. Nothing is asserted.

Run (about 5–10 minutes on 2 CPU cores with the defaults; longer on a loaded machine):

    python benchmarks/bench_mma_vs_pgd.py
    python benchmarks/bench_mma_vs_pgd.py --train-subset 5000 --repeats 3 --steps 10 40
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wideberth import data
from wideberth.config import MethodConfig
from wideberth.example_state import ExampleState
from wideberth.losses import soft_logit_margin
from wideberth.methods import build_method
from wideberth.methods.base import Batch, Method, StepContext
from wideberth.methods.mma import MMA, STATUS_WRONG, MMAParams
from wideberth.methods.pgd_at import PGDAT, PGDATParams
from wideberth.models import build_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Prints timings and ratios only (no asserts). See benchmarks/README.md.",
    )
    p.add_argument("--dataset", default="fashion-mnist", help="training data (default fashion-mnist)")
    p.add_argument("--train-subset", type=int, default=5000, help="training images (5000)")
    p.add_argument("--pretrain-epochs", type=int, default=2,
                   help="epochs of standard training that give the common start weights (2)")
    p.add_argument("--batch", type=int, default=128, help="batch size (128)")
    p.add_argument("--steps", type=int, nargs="+", default=[10], help="PGD steps to compare (10)")
    p.add_argument("--norm", default="linf", help="linf (default) or l2")
    p.add_argument("--eps", type=float, default=0.1, help="PGD-AT radius (0.1)")
    p.add_argument("--d-max", type=float, default=0.2, help="MMA hinge threshold (0.2)")
    p.add_argument("--eps-min", type=float, default=0.05, help="MMA eps_min (0.05)")
    p.add_argument("--n-search", type=int, default=10, help="MMA bisection steps (10)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds (3)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--others", nargs="*", default=["standard", "pgdls", "trades", "avg-margin"],
                   help="other methods timed against PGD-AT at the largest --steps "
                        "(default: standard pgdls trades avg-margin; none: skip)")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- methods

def make_pgd_at(args: argparse.Namespace, steps: int) -> Method:
    return PGDAT(PGDATParams(
        norm=args.norm, eps=args.eps, steps=steps, step_scale=2.5, attack_loss="slm",
        init="advertorch", projection="approx", log_clean_accuracy=False,
    ))


def make_other(name: str, args: argparse.Namespace, steps: int) -> Method:
    """Another method at the same budget: PGDLS and TRADES at ε = --eps with ``steps``
    inner steps (TRADES β = 6); the Wu & Yu regulariser and standard training need no
    attack."""
    params: dict[str, object] = {}
    if name == "pgdls":
        params = dict(norm=args.norm, eps=args.eps, steps=steps, ramp_epochs=1)
    elif name == "trades":
        params = dict(norm=args.norm, eps=args.eps, steps=steps, beta=6.0)
    return build_method(MethodConfig(name=name, params=params))


def make_mma(args: argparse.Namespace, steps: int) -> MMA:
    return MMA(MMAParams(
        d_max=args.d_max, norm=args.norm, eps_min=args.eps_min, steps=steps,
        n_search=args.n_search,
    ))


# ----------------------------------------------------------------------------- loop

def run_epoch(
    method: Method,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    batch: int,
    seed: int,
) -> tuple[float, ExampleState]:
    """One epoch of the trainer's step (train mode, Adam, one backward): (seconds, state)."""
    n = x.shape[0]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    state = ExampleState(n)
    method.setup(model, state, n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    steps_per_epoch = -(-n // batch)
    t0 = time.perf_counter()
    for step, s in enumerate(range(0, n, batch)):
        idx = perm[s : s + batch]
        b = Batch(x[idx], y[idx], idx)
        torch.manual_seed(seed * 100003 + step)
        gen = torch.Generator().manual_seed(seed * 7919 + step)
        ctx = StepContext(0, step, steps_per_epoch, steps_per_epoch, state, gen, 10)
        model.train()
        loss, _ = method.loss(model, b, ctx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0, state


def pretrain(model: nn.Module, x: Tensor, y: Tensor, batch: int, seed: int, epochs: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for e in range(epochs):
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed + 1 + e))
        for s in range(0, x.shape[0], batch):
            idx = perm[s : s + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def unit_costs(model: nn.Module, x: Tensor, y: Tensor, reps: int = 20) -> tuple[float, float]:
    """Seconds of one no-grad forward and of one forward+input-backward on batch ``x``."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        def fwd() -> None:
            with torch.no_grad():
                model(x)

        def fwd_bwd() -> None:
            xi = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(soft_logit_margin(model(xi), y).sum(), xi)

        out = []
        for fn in (fwd, fwd_bwd):
            fn()
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            out.append((time.perf_counter() - t0) / reps)
        return out[0], out[1]
    finally:
        for p in model.parameters():
            p.requires_grad_(True)


def fmt(values: list[float], digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        splits = data.build_splits(args.dataset, train_subset=args.train_subset, seed=0)
        name = args.dataset
    except Exception as exc:  # noqa: BLE001 - any failure to load: fall back to digits
        print(f"{args.dataset} unavailable ({exc}); using digits")
        splits = data.build_splits("digits", seed=0)
        name = "digits"
    x, y = splits.train.tensors()
    x, y = x.contiguous(), y.contiguous()
    info = splits.info
    torch.manual_seed(args.seed)
    base = build_model("cnn-small", tuple(info.input_shape), info.num_classes)
    pretrain(base, x, y, args.batch, args.seed, args.pretrain_epochs)
    with torch.no_grad():
        base.train()
        correct0 = float((soft_logit_margin(base(x[:2000]), y[:2000]) < 0).float().mean())
    f1, fb1 = unit_costs(base, x[: args.batch], y[: args.batch])
    print(
        f"data: {name}, {x.shape[0]} training images, batch {args.batch}, cnn-small, "
        f"{args.threads} threads, norm {args.norm}; PGD-AT eps {args.eps}, MMA d_max "
        f"{args.d_max} (eps_min {args.eps_min}, {args.n_search} bisection steps)"
    )
    print(
        f"start weights: {args.pretrain_epochs} epoch(s) of standard training; "
        f"SLM-correct fraction {correct0:.3f}"
    )
    print(f"unit costs on one batch: forward {1e3 * f1:.2f} ms, forward+input-backward {1e3 * fb1:.2f} ms")
    print()
    header = (
        f"{'PGD steps':>9} | {'PGD-AT s/epoch':>20} | {'MMA s/epoch':>20} | "
        f"{'ratio MMA/PGD-AT':>20} | {'attacked':>8} | {'model':>6} | {'model a=1':>9}"
    )
    print(header)
    print("-" * len(header))
    for steps in args.steps:
        t_pgd: list[float] = []
        t_mma: list[float] = []
        attacked: list[float] = []
        for r in range(args.repeats):
            order = ("pgd", "mma") if r % 2 == 0 else ("mma", "pgd")
            for kind in order:
                model = copy.deepcopy(base)
                if kind == "pgd":
                    t_pgd.append(run_epoch(make_pgd_at(args, steps), model, x, y, args.batch, args.seed)[0])
                else:
                    seconds, state = run_epoch(make_mma(args, steps), model, x, y, args.batch, args.seed)
                    t_mma.append(seconds)
                    # rows that were SLM-correct at their visit, i.e. attacked by AN-PGD
                    attacked.append(float((state.all(MMA.STATUS_FIELD) != STATUS_WRONG).float().mean()))
        ratios = [m / p for m, p in zip(t_mma, t_pgd, strict=True)]
        # pass-counting model: FB = forward+backward (input or parameter gradient), F = a
        # no-grad forward, both as measured; a = attacked fraction of the batch
        a = statistics.median(attacked)
        model_pgd = (steps + 1) * fb1  # PGD + the training forward+backward
        model_mma = 2 * fb1 + a * (steps * fb1 + (args.n_search + 1) * f1)
        model_all = 2 * fb1 + steps * fb1 + (args.n_search + 1) * f1
        print(
            f"{steps:>9} | {fmt(t_pgd):>20} | {fmt(t_mma):>20} | {fmt(ratios):>20} | "
            f"{a:>8.3f} | {model_mma / model_pgd:>6.2f} | {model_all / model_pgd:>9.2f}"
        )
    if args.others:
        steps = max(args.steps)
        print(f"\nother methods, one epoch each against PGD-AT ({steps} steps), {args.repeats} "
              "interleaved rounds: seconds per epoch and ratio to PGD-AT, median (min–max)")
        for name in args.others:
            t_other: list[float] = []
            t_pgd = []
            for r in range(args.repeats):
                order = ("pgd", name) if r % 2 == 0 else (name, "pgd")
                for kind in order:
                    model = copy.deepcopy(base)
                    method = make_pgd_at(args, steps) if kind == "pgd" else make_other(name, args, steps)
                    t = run_epoch(method, model, x, y, args.batch, args.seed)[0]
                    (t_pgd if kind == "pgd" else t_other).append(t)
            ratios = [o / p for o, p in zip(t_other, t_pgd, strict=True)]
            print(f"  {name:11s} {fmt(t_other):>20s} s   ratio {fmt(ratios)}", flush=True)
    print()
    print(
        "'attacked' (a): fraction of rows MMA ran AN-PGD on (SLM-correct at their visit).\n"
        "'model': the ratio predicted by counting passes: PGD-AT = (k+1)·FB, "
        "MMA = 2·FB + a·(k·FB + (n_search+1)·F), with FB = forward+backward and F = no-grad "
        "forward as measured above (k = PGD steps); 'model a=1': the same with every row "
        "attacked (an upper bound, approached late in training)."
    )


if __name__ == "__main__":
    main()
