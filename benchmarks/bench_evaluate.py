"""Evaluation cost and strength: ε-grid reuse, and our `standard` suite against AutoAttack.

Prints, from one run on the same adversarially trained model and the same test points:

1. **ε-grid reuse**: an 8-ε robust-accuracy curve by :func:`wideberth.evaluate` with
   ``reuse="up"`` (increasing ε, only still-robust points attacked) and ``reuse="both"``
   (decreasing ε, only points broken at every larger ε attacked again, adversarial
   examples reused by their norm, robustness inferred downward) against 8 independent
   single-ε evaluations with the same suite and seed. Printed: wall times and ratios
   (goal ≤ 0.4), and the robust accuracy per ε (goal: never above the independent runs).
2. **vs AutoAttack** (torchattacks' ``AutoAttack(version="standard")``: APGD-CE, APGD-T,
   FAB-T, Square 5000 queries), benchmark environment only: our ``standard`` suite
   (APGD-CE, APGD-T, 100-step PGD with CE/CW restarts) at one ε: robust accuracy of both
   (goal: ours at most 0.5 points above AutoAttack's) and wall time (goal: ours no slower).

The model: ``cnn-small`` trained here by PGD-AT (``wideberth.methods.PGDAT``) on a subset of
Fashion-MNIST (``--train-subset`` images, ``--epochs`` epochs, ℓ∞ ε = ``--train-eps``),
so that robust accuracy is far from 0 over the grid. Nothing is asserted.

Run (about 10 minutes on 2 CPU cores with the defaults):

    python benchmarks/bench_evaluate.py
    /tmp/bench-venv/bin/python benchmarks/bench_evaluate.py   # with torchattacks (part 2)

(see benchmarks/README.md for the torchattacks environment).
"""

from __future__ import annotations

import argparse
import time

import torch

from wideberth import data
from wideberth.evaluation import evaluate
from wideberth.example_state import ExampleState
from wideberth.methods.base import Batch, StepContext
from wideberth.methods.pgd_at import PGDAT, PGDATParams
from wideberth.models import build_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-subset", type=int, default=12000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-eps", type=float, default=0.1)
    p.add_argument("--n", type=int, default=500, help="test points (500)")
    p.add_argument("--grid", type=float, nargs="+",
                   default=[0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2], help="the 8-ε grid")
    p.add_argument("--suite", default="quick", help="suite of part 1 (quick)")
    p.add_argument("--aa-eps", type=float, default=0.1, help="ε of part 2 (0.1)")
    p.add_argument("--aa-n", type=int, default=200, help="test points of part 2 (200)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-aa", action="store_true")
    return p.parse_args(argv)


def train_pgd_at(x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace) -> torch.nn.Module:
    torch.manual_seed(args.seed)
    model = build_model("cnn-small", tuple(x.shape[1:]), 10)
    method = PGDAT(PGDATParams(norm="linf", eps=args.train_eps, steps=7, log_clean_accuracy=False))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n, bs = x.shape[0], 128
    state = ExampleState(n)
    method.setup(model, state, n)
    steps_per_epoch = -(-n // bs)
    for epoch in range(args.epochs):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed + epoch))
        for step, s in enumerate(range(0, n, bs)):
            idx = perm[s : s + bs]
            gen = torch.Generator().manual_seed(args.seed * 7919 + epoch * 100003 + step)
            ctx = StepContext(epoch=epoch, step=epoch * steps_per_epoch + step,
                              total_steps=args.epochs * steps_per_epoch,
                              steps_per_epoch=steps_per_epoch, state=state, generator=gen,
                              num_classes=10)
            model.train()
            loss, _ = method.loss(model, Batch(x[idx], y[idx], idx), ctx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    x_tr, y_tr = data.tensors("fashion-mnist", "train", download=False)
    x_te, y_te = data.tensors("fashion-mnist", "test", download=False)
    perm = torch.randperm(x_tr.shape[0], generator=torch.Generator().manual_seed(args.seed))
    sub = perm[: args.train_subset]
    model = train_pgd_at(x_tr[sub], y_tr[sub], args)
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads; cnn-small PGD-AT "
          f"(ℓ∞ ε {args.train_eps}, PGD-7) {args.epochs} epoch(s) on {args.train_subset} "
          f"Fashion-MNIST images in {time.perf_counter() - t0:.0f} s")
    x, y = x_te[: args.n], y_te[: args.n]

    # part 1 ------------------------------------------------------------------------
    print(f"\n## 1. {len(args.grid)}-ε curve, suite {args.suite!r}, ℓ∞, {args.n} test points: "
          "reuse across ε vs independent per-ε runs (same seed)")
    curves, times = {}, {}
    for reuse in ("up", "both"):
        t = time.perf_counter()
        curves[reuse] = evaluate(model, x, y, norm="linf", epsilons=args.grid, suite=args.suite,
                                 seed=args.seed, sanity=False, reuse=reuse).robust_accuracy
        times[reuse] = time.perf_counter() - t
    t = time.perf_counter()
    single = {}
    for e in args.grid:
        r = evaluate(model, x, y, norm="linf", epsilons=[e], suite=args.suite, seed=args.seed,
                     sanity=False)
        single.update(r.robust_accuracy)
    t_single = time.perf_counter() - t
    print(f"wall: independent {t_single:.1f} s; reuse='up' {times['up']:.1f} s (ratio "
          f"{times['up'] / t_single:.3f}); reuse='both' {times['both']:.1f} s (ratio "
          f"{times['both'] / t_single:.3f}; goal <= 0.4)")
    print(f"{'eps':>6} {'indep.':>7} {'up':>7} {'both':>7}")
    for e in single:
        print(f"{e:>6} {single[e]:7.3f} {curves['up'][e]:7.3f} {curves['both'][e]:7.3f}")
    for reuse in ("up", "both"):
        higher = sum(curves[reuse][e] > single[e] + 1e-12 for e in single)
        print(f"ε's where reuse={reuse!r} reports more robust accuracy than the independent "
              f"run: {higher} (goal 0)")

    # part 2 ------------------------------------------------------------------------
    if args.skip_aa:
        return
    try:
        import torchattacks
    except ImportError:
        print("\n## 2. AutoAttack comparison skipped: torchattacks is not installed (see "
              "benchmarks/README.md for its separate environment)")
        return
    xa, ya = x_te[: args.aa_n], y_te[: args.aa_n]
    print(f"\n## 2. our 'standard' suite vs torchattacks {torchattacks.__version__} AutoAttack "
          f"(standard), ℓ∞ ε {args.aa_eps}, {args.aa_n} test points")
    t = time.perf_counter()
    ours = evaluate(model, xa, ya, norm="linf", epsilons=[args.aa_eps], suite="standard",
                    seed=args.seed, sanity=False)
    t_ours = time.perf_counter() - t
    atk = torchattacks.AutoAttack(model, norm="Linf", eps=args.aa_eps, version="standard",
                                  n_classes=10, seed=args.seed)
    t = time.perf_counter()
    x_aa = atk(xa, ya)
    t_aa = time.perf_counter() - t
    with torch.no_grad():
        rob_aa = float((model(x_aa).argmax(1) == ya).double().mean())
    rob_ours = ours.robust_accuracy[f"{args.aa_eps:g}"]
    print(f"robust accuracy: ours {rob_ours:.3f}, AutoAttack {rob_aa:.3f}, "
          f"difference {100 * (rob_ours - rob_aa):+.1f} points (goal <= +0.5)")
    print(f"wall: ours {t_ours:.1f} s, AutoAttack {t_aa:.1f} s, ratio {t_ours / t_aa:.3f} (goal <= 1)")
    print(f"\n# total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
