"""Peak memory of a streamed evaluation: flat in the dataset size (a Dataset/DataLoader)
against growing with it (stacked tensors).

Each measurement runs in a fresh subprocess, which evaluates a small MLP with
:func:`wideberth.evaluate` (ℓ∞, one ε, an FGSM suite, sanity checks on the first 100
examples) over N synthetic 1×28×28 images and prints its own peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``). The data come from a ``Dataset`` whose
``__getitem__`` makes image i from the seed i, so the dataset itself is never in memory:

* ``stream``: a ``DataLoader`` over that dataset (batch 250) passed as is;
* ``stacked``: the same images stacked into tensors ``x`` [N, 1, 28, 28], ``y`` [N] first
  (what the tensor call needs), for contrast.

Printed: the peak RSS of both at N = 10 000 and N = 60 000 and the ratios 60k / 10k (goal
for the stream: about 1). Nothing is asserted.

Run (about 2 minutes on 2 CPU cores):

    python benchmarks/bench_streaming_memory.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

SHAPE = (1, 28, 28)


def child(mode: str, n: int, batch_size: int) -> None:
    """Evaluate in this process and print ``{"peak_rss_mb": ..., ...}`` as JSON."""
    import resource

    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    import wideberth as wb
    from wideberth.evaluation import AttackSpec

    class Seeded(Dataset):
        def __len__(self) -> int:
            return n

        def __getitem__(self, i: int):
            g = torch.Generator().manual_seed(i)
            return torch.rand(SHAPE, generator=g), int(torch.randint(0, 10, (), generator=g))

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 64), nn.ReLU(), nn.Linear(64, 10))
    kw = dict(norm="linf", epsilons=[0.05], suite=[AttackSpec("fgsm", 1)], batch_size=batch_size)
    ds = Seeded()
    if mode == "stream":
        rep = wb.evaluate(model, DataLoader(ds, batch_size=batch_size), **kw)
    else:
        items = [ds[i] for i in range(n)]
        x = torch.stack([it[0] for it in items])
        y = torch.tensor([it[1] for it in items])
        del items
        rep = wb.evaluate(model, x, y, **kw)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    print(json.dumps({"mode": mode, "n": n, "peak_rss_mb": peak_kb / 1024,
                      "robust_accuracy": rep.robust_accuracy["0.05"]}))


def measure(mode: str, n: int, batch_size: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(n),
                          "--batch-size", str(batch_size)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs=2, default=[10_000, 60_000],
                   help="the two dataset sizes (10000 60000)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--child", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), args.batch_size)
        return
    small, large = args.sizes
    rows = {}
    for mode in ("stream", "stacked"):
        rows[mode] = [measure(mode, n, args.batch_size) for n in (small, large)]
    print(f"peak RSS of one evaluation process, MB ({SHAPE} images, batch {args.batch_size})")
    print(f"{'data':>10}  {'N=' + str(small):>10}  {'N=' + str(large):>10}  ratio")
    for mode, (a, b) in rows.items():
        print(f"{mode:>10}  {a['peak_rss_mb']:10.1f}  {b['peak_rss_mb']:10.1f}  "
              f"{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}")
    same = all(rows["stream"][i]["robust_accuracy"] == rows["stacked"][i]["robust_accuracy"]
               for i in range(2))
    print(f"same robust accuracy streamed and stacked: {same}")


if __name__ == "__main__":
    main()
