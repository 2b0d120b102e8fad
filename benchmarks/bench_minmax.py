"""Min-max framework: APGDA's learned domain weights against the average-loss baseline.

1. **Ensemble attack** (Wang et al. 2021, §4.1, Table 1): a pool of four Fashion-MNIST models
   of different architectures (``mlp``, ``cnn-small``, ``lenet5-madry``, ``smallcnn``),
   each trained here by plain Adam for ``--epochs`` epochs on ``--train-subset`` images,
   attacked together with one perturbation per image: APGDA (``method="minmax"``) against
   the average loss (``"avg"``) and the other baselines, at the same steps and ε, on
   ``--n`` test points. Printed: ASR_all (fooled by every model; the paper's MNIST ℓ∞
   numbers are 48.17 → 90.16 %), per-model ASR, and the hardest model by mean weight.

2. **Multi-perturbation adversarial training** (§2d, Table 4): the
   ``fashion-mnist-minmax-at`` recipe (learned per-example weights over ℓ∞ ε 0.1 and ℓ2
   ε 1.0) against ``fashion-mnist-minmax-at-avg`` (equal weights) at the same budget
   (``--at-subset`` training images, ``--at-epochs`` epochs, same seed), each evaluated on
   ``--n`` test points by 20-step PGD per norm: Acc, Acc-ℓ∞, Acc-ℓ2, Acc^max_adv (correct
   under both), Acc^avg_adv, and the training time. ``--skip-at`` skips it.

Nothing is asserted. Run (about 8 minutes on 2 CPU cores):

    python benchmarks/bench_minmax.py
    python benchmarks/bench_minmax.py --norm l2 --eps 2.0
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from wideberth import data
from wideberth.minmax import ensemble_attack, ensemble_metrics
from wideberth.minmax.diagnostics import summarize_weights
from wideberth.models import build_model

POOL = ("mlp", "cnn-small", "lenet5-madry", "smallcnn")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-subset", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--n", type=int, default=500, help="test points (500)")
    p.add_argument("--norm", default="linf", choices=["linf", "l2", "l1"])
    p.add_argument("--eps", type=float, default=0.1, help="radius (0.1)")
    p.add_argument("--steps", type=int, default=50, help="APGDA iterations (50, as Table 1)")
    p.add_argument("--methods", nargs="+", default=["minmax", "avg", "avg_logit", "avg_prob", "clip"])
    p.add_argument("--at-subset", type=int, default=5000, help="part 2 training images (5000)")
    p.add_argument("--at-epochs", type=int, default=3, help="part 2 epochs (3)")
    p.add_argument("--skip-at", action="store_true", help="skip part 2")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def train(name: str, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(name, tuple(x.shape[1:]), 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for e in range(epochs):
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed + e))
        for s in range(0, x.shape[0], 128):
            idx = perm[s : s + 128]
            loss = F.cross_entropy(model(x[idx]), y[idx])
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
    sub = torch.randperm(x_tr.shape[0], generator=torch.Generator().manual_seed(args.seed))[: args.train_subset]
    models = [train(n, x_tr[sub], y_tr[sub], args.epochs, args.seed + i) for i, n in enumerate(POOL)]
    x, y = x_te[: args.n], y_te[: args.n]
    with torch.no_grad():
        accs = [float((m(x).argmax(1) == y).double().mean()) for m in models]
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads; pool trained in "
          f"{time.perf_counter() - t0:.0f} s ({args.epochs} epochs on {args.train_subset} images); "
          "clean accuracy " + ", ".join(f"{n} {a:.3f}" for n, a in zip(POOL, accs, strict=True)))
    print(f"\n## 1. ensemble attack, {args.norm} ε {args.eps}, {args.steps} steps, {args.n} test points")
    header = f"{'method':10s} {'ASR_all':>8s} {'time s':>7s} " + " ".join(f"{n:>13s}" for n in POOL)
    print(header)
    print("-" * len(header))
    asr = {}
    for method in args.methods:
        t = time.perf_counter()
        res = ensemble_attack(models, x, y, norm=args.norm, eps=args.eps, steps=args.steps,
                              method=method, seed=args.seed)
        dt = time.perf_counter() - t
        met = ensemble_metrics(models, res.x_adv, y)
        asr[method] = met.asr_all
        print(f"{method:10s} {met.asr_all:8.3f} {dt:7.1f} "
              + " ".join(f"{float(a):13.3f}" for a in met.per_model_asr), flush=True)
        if method == "minmax" and res.w is not None:
            s = summarize_weights(res.w, list(POOL))
            hardest = s["hardest"]
            weights = ", ".join(f"{k} {v:.2f}" for k, v in s["mean"].items())
    if "minmax" in asr and "avg" in asr:
        print(f"\nASR_all: APGDA {100 * asr['minmax']:.2f} % vs average loss {100 * asr['avg']:.2f} % "
              f"(lift {100 * (asr['minmax'] - asr['avg']):+.2f} points); mean weights: {weights}; "
              f"hardest: {hardest}")
    if not args.skip_at:
        adversarial_training(args, x, y)
    print(f"\n# total {time.perf_counter() - t0:.0f} s")


def adversarial_training(args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor) -> None:
    import tempfile

    from wideberth.config import apply_overrides, load_recipe
    from wideberth.minmax import multi_norm_metrics
    from wideberth.runs import load_model
    from wideberth.train import train as train_run

    eps = {"linf": 0.1, "l2": 1.0}
    print(f"\n## 2. multi-perturbation AT on Fashion-MNIST ({args.at_subset} images, "
          f"{args.at_epochs} epochs, ℓ∞ {eps['linf']} + ℓ2 {eps['l2']}), {args.n} test points, "
          "20-step PGD per norm")
    print(f"{'recipe':30s} {'train s':>8s} {'Acc':>6s} {'Acc-linf':>9s} {'Acc-l2':>7s} "
          f"{'Acc^max':>8s} {'Acc^avg':>8s}")
    for recipe in ("fashion-mnist-minmax-at", "fashion-mnist-minmax-at-avg"):
        cfg = apply_overrides(load_recipe(recipe), [
            f"data.train_subset={args.at_subset}", f"run.epochs={args.at_epochs}",
            f"run.seed={args.seed}"])
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            train_run(cfg, f"{tmp}/run", progress=False)
            dt = time.perf_counter() - t
            model = load_model(f"{tmp}/run", which="last")
        m = multi_norm_metrics(model, x, y, eps, steps=20, seed=args.seed)
        print(f"{recipe:30s} {dt:8.0f} {m.clean:6.3f} {m.per_norm['linf']:9.3f} "
              f"{m.per_norm['l2']:7.3f} {m.max_adv:8.3f} {m.avg_adv:8.3f}", flush=True)


if __name__ == "__main__":
    main()
