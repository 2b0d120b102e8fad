"""PGD speed and strength: wideberth's PGD against plain forward+backward and torchattacks.

Prints, from ONE run on the same models and batches (CPU timings on a shared machine are
noisy, so everything is a ratio of interleaved measurements, reported as the median and
the min–max spread of the repeats):

1. **Overhead**: wall time of ``wideberth.attacks.pgd`` with k steps divided by
   k × (one forward+backward of the same model on the same batch), for k in (10, 40),
   ℓ∞ and ℓ2, on a Fashion-MNIST-sized batch (256 × 1×28×28) for ``cnn-small`` and
   ``lenet5-madry``. Goal ≤ 1.05. The baseline forward+backward is what one PGD iteration
   must do at least: eval mode, parameters frozen, the input gradient of the summed CE.
   The forward+backward is timed at a random point of the ε-ball around x, which is what
   every PGD iteration computes: at the clean x a natural image's zero background makes
   ReLU and max-pool measurably cheaper on CPU (``fb x`` is printed for reference).
   PGD-k does exactly k forward+backward passes (the best iterate is judged on the
   passes that compute the gradients), so the ratio is the attack's own bookkeeping.
2. **torchattacks** (``PGD`` for ℓ∞, ``PGDL2`` for ℓ2, ``random_start=True``) side by side
   at equal ε, steps and step size (α = 2.5·ε/k) on a cnn-small trained here for one epoch
   on 20,000 Fashion-MNIST images (digits if Fashion-MNIST is not installed): wall-time ratio
   ours/theirs (goal ≤ 1.0) and robust accuracy (goal: ours ≤ theirs) on n test points,
   attacked in chunks; each chunk is attacked by both libraries back to back (order
   alternating), so each chunk gives one paired timing ratio.

Run (about 5 minutes on 2 CPU cores):

    python benchmarks/bench_pgd.py
    python benchmarks/bench_pgd.py --profile     # also: where the time of one PGD-10 goes

torchattacks is optional; create a separate environment for it (it imports without
torchvision):

    python -m venv --system-site-packages /tmp/bench-venv
    /tmp/bench-venv/bin/pip install --no-deps torchattacks
    /tmp/bench-venv/bin/python benchmarks/bench_pgd.py

No timing is asserted anywhere: this script only measures and prints.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wideberth import data
from wideberth.attacks.projected_gradient import pgd
from wideberth.models import build_model

EPS = {"linf": 0.1, "l2": 1.5}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Prints ratios only (no asserts). See benchmarks/README.md.",
    )
    p.add_argument("--steps", type=int, nargs="+", default=[10, 40], help="PGD step counts k")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats (median reported)")
    p.add_argument("--batch", type=int, default=256, help="batch size of the overhead part")
    p.add_argument("--fb-block", type=int, default=5,
                   help="forward+backward calls timed per baseline sample")
    p.add_argument("--models", nargs="+", default=["cnn-small", "lenet5-madry"],
                   help="models of the overhead part (cnn-small is the trained one)")
    p.add_argument("--n-eval", type=int, default=1000, help="test points for part 2")
    p.add_argument("--chunks", type=int, default=10,
                   help="part 2 attacks n-eval points in this many chunks (one timing pair each)")
    p.add_argument("--train-subset", type=int, default=20000,
                   help="train one epoch on this many training images (0: the whole split); "
                        "20000 keeps the script near 5 minutes on 2 cores")
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (default) or digits")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-overhead", action="store_true", help="skip part 1")
    p.add_argument("--variants", action="store_true",
                   help="part 1 also times return_best=False and projection='approx' (slower)")
    p.add_argument("--skip-compare", action="store_true", help="skip part 2 (torchattacks)")
    p.add_argument("--profile", action="store_true",
                   help="profile one PGD-10 run per norm on cnn-small (torch.profiler) and print "
                        "the top operators and the share of model vs attack bookkeeping")
    return p.parse_args(argv)


# --------------------------------------------------------------------------------------
# data and model
# --------------------------------------------------------------------------------------


def load_data(name: str, seed: int) -> tuple[str, tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    try:
        train = data.tensors(name, "train", download=False)
        test = data.tensors(name, "test", seed=seed, n=None, download=False)
    except Exception as exc:  # missing dataset: fall back to the bundled digits
        if name == "digits":
            raise
        print(f"# {name} not available ({str(exc).splitlines()[0]}); using digits instead")
        return load_data("digits", seed)
    # a seeded random order of the test split, so that the first n are a random subset
    perm = torch.randperm(test[0].shape[0], generator=torch.Generator().manual_seed(seed))
    return name, train, (test[0][perm], test[1][perm])


def train_one_epoch(
    model: nn.Module, x: Tensor, y: Tensor, seed: int, batch_size: int = 128
) -> float:
    """Plain Adam, one epoch; returns seconds taken."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    t0 = time.perf_counter()
    perm = torch.randperm(x.shape[0], generator=g)
    for i in range(0, x.shape[0], batch_size):
        rows = perm[i : i + batch_size]
        loss = F.cross_entropy(model(x[rows]), y[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return time.perf_counter() - t0


def accuracy(model: nn.Module, x: Tensor, y: Tensor, bs: int = 1000) -> float:
    with torch.no_grad():
        hits = sum(int((model(x[i : i + bs]).argmax(1) == y[i : i + bs]).sum())
                   for i in range(0, x.shape[0], bs))
    return hits / x.shape[0]


# --------------------------------------------------------------------------------------
# timing helpers
# --------------------------------------------------------------------------------------


def timed(fn: Callable[..., object], *args: object, **kwargs: object) -> tuple[float, float, object]:
    """(wall seconds, process CPU seconds, result) of ``fn(*args, **kwargs)``.

    CPU time (all threads of this process) is less sensitive than wall time to other
    processes competing for the cores, so both are reported."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, time.process_time() - c0, out


def repeat(n: int, fn: Callable[..., object], *args: object) -> None:
    for _ in range(n):
        fn(*args)


def fwd_bwd(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """One PGD iteration's unavoidable work: forward, summed CE, input gradient."""
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(xg), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, xg)
    return g


class Frozen:
    """Eval mode and requires_grad=False for the baseline (the state PGD attacks in)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> nn.Module:
        self.training = self.model.training
        self.req = [p.requires_grad for p in self.model.parameters()]
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        return self.model

    def __exit__(self, *exc: object) -> None:
        self.model.train(self.training)
        for p, r in zip(self.model.parameters(), self.req, strict=True):
            p.requires_grad_(r)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):6.3f} [{min(values):.3f}–{max(values):.3f}]"


# --------------------------------------------------------------------------------------
# part 1: PGD-k time / (k × forward+backward)
# --------------------------------------------------------------------------------------


VARIANTS = {  # extra columns of part 1 with --variants: what the defaults cost
    "linf last": ("linf", {"return_best": False}),
    "l2 last": ("l2", {"return_best": False}),
    "l2 approx": ("l2", {"projection": "approx"}),
    "l2 last+approx": ("l2", {"return_best": False, "projection": "approx"}),
}


def perturbed(x: Tensor, norm: str, seed: int) -> Tensor:
    """x plus a random start of the ``norm`` ball: a typical PGD iterate.

    The baseline forward+backward is timed here, not at the clean x: on CPU a natural
    image's flat zero background makes ReLU/max-pool work measurably cheaper (about 5% for
    cnn-small on Fashion-MNIST) than on the dense inputs every PGD iteration sees."""
    from wideberth.attacks import random_start
    from wideberth.threat import get_threat

    return x + random_start(get_threat(norm), x, EPS[norm], seed=seed)


def overhead(models: dict[str, nn.Module], x: Tensor, y: Tensor, args: argparse.Namespace) -> None:
    print(f"\n## 1. PGD-k wall time / (k × one forward+backward), batch {x.shape[0]}×"
          f"{'×'.join(map(str, x.shape[1:]))}, median [min–max] of {args.repeats} interleaved repeats")
    print("   ours: defaults (init='auto': the one run starts at x; first breaking iterate; exact projection);"
          " 'last': return_best=False; 'approx': projection='approx'")
    print("   fb: one forward+backward at a random point of the norm's ε-ball around x (what a PGD"
          " iteration computes), the denominator; 'fb x': the same at the clean x, for reference;"
          " cpu: the ratio in process CPU time (median)")
    columns = {n: (n, {}) for n in EPS}
    if args.variants:
        columns.update(VARIANTS)
    xp = {norm: perturbed(x, norm, args.seed) for norm in EPS}
    header = (f"{'model':13s} {'k':>3s} {'fb x ms':>8s} {'fb ms':>6s} "
              + " ".join(f"{'wall ' + c:>23s} {'cpu':>6s}" for c in columns))
    print(header)
    print("-" * len(header))
    for name, model in models.items():
        with Frozen(model):
            for _ in range(2):  # warm-up
                fwd_bwd(model, x, y)
                for norm, kw in columns.values():
                    pgd(model, x, y, norm=norm, eps=EPS[norm], steps=2, **kw)
            for k in args.steps:
                wall: dict[str, list[float]] = {c: [] for c in columns}
                cpu: dict[str, list[float]] = {c: [] for c in columns}
                fb_clean: list[float] = []
                fb: dict[str, list[float]] = {n: [] for n in EPS}
                for _ in range(args.repeats):  # A_x A_linf A_l2 B_linf B_l2 A_x ...
                    fb_clean.append(timed(repeat, args.fb_block, fwd_bwd, model, x, y)[0] / args.fb_block)
                    base = {}
                    for norm in EPS:
                        w_fb, c_fb, _ = timed(repeat, args.fb_block, fwd_bwd, model, xp[norm], y)
                        base[norm] = (w_fb / args.fb_block, c_fb / args.fb_block)
                        fb[norm].append(base[norm][0])
                    for col, (norm, kw) in columns.items():
                        w, c, _ = timed(pgd, model, x, y, norm=norm, eps=EPS[norm], steps=k,
                                        seed=args.seed, **kw)
                        wall[col].append(w / (k * base[norm][0]))
                        cpu[col].append(c / (k * base[norm][1]))
                fb_all = [t for v in fb.values() for t in v]
                print(f"{name:13s} {k:3d} {1e3 * statistics.median(fb_clean):8.1f} "
                      f"{1e3 * statistics.median(fb_all):6.1f} "
                      + " ".join(f"{spread(wall[c]):>23s} {statistics.median(cpu[c]):6.3f}"
                                 for c in columns), flush=True)


# --------------------------------------------------------------------------------------
# part 2: side by side with torchattacks
# --------------------------------------------------------------------------------------


def compare(model: nn.Module, x: Tensor, y: Tensor, dataset: str, args: argparse.Namespace) -> None:
    try:
        import torchattacks
    except ImportError:
        print("\n## 2. torchattacks comparison skipped: torchattacks is not installed. Install it"
              " in a separate environment (it imports without torchvision):\n"
              "    python -m venv --system-site-packages /tmp/bench-venv\n"
              "    /tmp/bench-venv/bin/pip install --no-deps torchattacks\n"
              "    /tmp/bench-venv/bin/python benchmarks/bench_pgd.py")
        return
    n = x.shape[0]
    bounds = [round(i * n / args.chunks) for i in range(args.chunks + 1)]
    chunks = [(bounds[i], bounds[i + 1]) for i in range(args.chunks)]
    print(f"\n## 2. vs torchattacks {torchattacks.__version__} (PGD / PGDL2, random_start=True), "
          f"cnn-small trained 1 epoch on {dataset}, n={n} test points in {args.chunks} chunks "
          f"of ~{n // args.chunks}; α = 2.5·ε/k; clean accuracy {accuracy(model, x, y):.3f}")
    print("   wall ours/theirs: median [min–max] over the chunks (each chunk attacked twice by"
          " each, in the order ours theirs theirs ours); cpu: median ratio of process CPU time;"
          " ours/theirs s: total wall time of one pass over the n points;"
          "\n   rob.acc: robust accuracy; ours: defaults (init='auto': one run, from x);"
          " 'ours, their start': init='uniform' (ℓ∞) / 'radial' (ℓ2), torchattacks' start"
          " distribution")
    header = (f"{'norm':5s} {'eps':>5s} {'k':>3s} {'alpha':>8s} {'wall ours/theirs':>24s} {'cpu':>6s} "
              f"{'ours s':>7s} {'theirs s':>8s} {'rob.acc ours':>12s} {'theirs':>7s} "
              f"{'ours, their start':>17s}")
    print(header)
    print("-" * len(header))
    # warm-up both code paths
    atk_w = torchattacks.PGD(model, eps=0.1, alpha=0.05, steps=2, random_start=True)
    atk_w(x[:64], y[:64])
    pgd(model, x[:64], y[:64], norm="linf", eps=0.1, steps=2)
    for norm, eps in EPS.items():
        for k in args.steps:
            alpha = 2.5 * eps / k
            cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
            atk = cls(model, eps=eps, alpha=alpha, steps=k, random_start=True)
            torch.manual_seed(args.seed)  # torchattacks draws its start from the global RNG
            ratios, cpu_ratios, t_ours, t_theirs = [], [], 0.0, 0.0
            rob_ours, rob_theirs, rob_same = 0, 0, 0
            for a, b in chunks:
                xc, yc = x[a:b], y[a:b]
                ours = (pgd, model, xc, yc)
                kw = dict(norm=norm, eps=eps, steps=k, step_size=alpha, seed=args.seed)
                to1, co1, x_ours = timed(*ours, **kw)
                tt1, ct1, x_theirs = timed(atk, xc, yc)
                tt2, ct2, _ = timed(atk, xc, yc)
                to2, co2, _ = timed(*ours, **kw)
                ratios.append((to1 + to2) / (tt1 + tt2))
                cpu_ratios.append((co1 + co2) / (ct1 + ct2))
                t_ours += (to1 + to2) / 2
                t_theirs += (tt1 + tt2) / 2
                same = "radial" if norm == "l2" else "uniform"
                x_same = pgd(model, xc, yc, init=same, **kw)  # not timed: strength only
                d = (x_ours - xc).flatten(1)
                dn = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
                assert bool((dn <= eps * (1 + 1e-5)).all()), "ours left the ε-ball"
                with torch.no_grad():
                    rob_ours += int((model(x_ours).argmax(1) == yc).sum())
                    rob_theirs += int((model(x_theirs).argmax(1) == yc).sum())
                    rob_same += int((model(x_same).argmax(1) == yc).sum())
            print(f"{norm:5s} {eps:5.2f} {k:3d} {alpha:8.4f} {spread(ratios):>24s} "
                  f"{statistics.median(cpu_ratios):6.3f} "
                  f"{t_ours:7.2f} {t_theirs:8.2f} {rob_ours / n:12.3f} {rob_theirs / n:7.3f} "
                  f"{rob_same / n:17.3f}",
                  flush=True)


# --------------------------------------------------------------------------------------
# optional profile
# --------------------------------------------------------------------------------------

MODEL_OPS = ("conv", "max_pool", "threshold", "relu", "addmm", "mm", "linear", "log_softmax",
             "nll_loss", "_log_softmax")


def profile(model: nn.Module, x: Tensor, y: Tensor, k: int = 10) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    print(f"\n## profile: one PGD-{k} on cnn-small, batch {x.shape[0]} (torch.profiler, self CPU time)")
    for norm, eps in EPS.items():
        pgd(model, x, y, norm=norm, eps=eps, steps=2)
        with tprofile(activities=[ProfilerActivity.CPU]) as prof:
            pgd(model, x, y, norm=norm, eps=eps, steps=k)
        events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
        total = sum(e.self_cpu_time_total for e in events)
        model_t = sum(e.self_cpu_time_total for e in events
                      if any(op in e.key for op in MODEL_OPS) or e.key == "aten::fill_")
        print(f"{norm}: total {total / 1e3:.1f} ms; model ops (conv/pool/relu/linear/CE and "
              f"their backward, incl. gradient-buffer fills) {100 * model_t / total:.1f}%, "
              f"everything else {100 * (1 - model_t / total):.1f}%")
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]:
            print(f"   {e.key:42s} {e.self_cpu_time_total / 1e3:9.1f} ms  {e.count:6d} calls")


# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, seed {args.seed}")
    dataset, (x_tr, y_tr), (x_te, y_te) = load_data(args.dataset, args.seed)
    shape = tuple(x_tr.shape[1:])
    torch.manual_seed(args.seed)
    cnn = build_model("cnn-small", shape, 10)
    if args.train_subset:
        x_tr, y_tr = x_tr[: args.train_subset], y_tr[: args.train_subset]
    t_train = train_one_epoch(cnn, x_tr, y_tr, args.seed)
    print(f"# cnn-small: 1 epoch on {x_tr.shape[0]} {dataset} images in {t_train:.1f} s, "
          f"test accuracy {accuracy(cnn, x_te, y_te):.3f}")

    if not args.skip_overhead:
        models = {}
        for name in args.models:
            if name == "cnn-small":
                models[name] = cnn
            else:
                torch.manual_seed(args.seed)
                models[name] = build_model(name, shape, 10).eval()  # random weights: timing only
        xb, yb = x_te[: args.batch], y_te[: args.batch]
        overhead(models, xb, yb, args)
    if not args.skip_compare:
        compare(cnn, x_te[: args.n_eval], y_te[: args.n_eval], dataset, args)
    if args.profile:
        profile(cnn, x_te[: args.batch], y_te[: args.batch])
    print(f"\n# total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
