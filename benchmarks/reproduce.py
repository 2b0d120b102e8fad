"""Reproduce the papers' claims at CPU scale on Fashion-MNIST and write docs/results.md.

Trains and evaluates a fixed set of ``cnn-small`` models with the library's CPU recipes
(issue 7): standard training; PGD-AT at three ε (0.05, 0.1 and 0.3, the last one large
enough to fail as in the papers); PGDLS at the large ε; TRADES β = 1 and 6; MMA at three
d_max and OMMA at one; the Wu & Yu regulariser; multi-perturbation min-max AT and its
``avg`` baseline. Adversarial runs use the same budget: 20,000 training images (5,000
held out for validation), 3 epochs, 10-step inner attacks.

Every model is evaluated on the first ``--n`` test images with the ``standard`` suite
(APGD-CE, APGD-T, 100-step PGD with CE/CW restarts) over one ℓ∞ ε grid (plus ℓ2 for the
multi-norm models), and its ℓ∞ margins are estimated (FMN, misclassified = 0). The script
then writes ``docs/results.md`` (the MMA paper's table, training cost, the claims with
our verdicts) and its figures under ``docs/results/``.

Runs are independent and resumable: a finished run (``results.json``) is not trained
again, an interrupted one is resumed from its last checkpoint, and a finished evaluation
(``eval.json``) is reused, so the whole set can be built over several sittings::

    python benchmarks/reproduce.py --list
    python benchmarks/reproduce.py --runs standard pgd-at-0.1     # some runs
    python benchmarks/reproduce.py                                # all (hours on 2 cores)
    python benchmarks/reproduce.py --report-only                  # rewrite the page

``--set KEY=VALUE`` overrides every run's config (e.g. a smoke test with
``--set data.train_subset=500 --set run.epochs=1 --n 100 --out /tmp/r --results /tmp/r.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from wideberth.config import apply_overrides, load_recipe
from wideberth.data import IndexedTensors, load_split
from wideberth.evaluate.margins import min_perturbation_distance
from wideberth.evaluate.report import markdown_table, plot_robust_accuracy
from wideberth.evaluate.robustness import evaluate
from wideberth.runs import load_model
from wideberth.train import resume, train
from wideberth.train.checkpoint import atomic_write_text

EPS_LINF = [0.05, 0.1, 0.15, 0.2]
EPS_L2 = [0.5, 1.0, 1.5, 2.0]
ADV = ["data.train_subset=20000", "run.epochs=3"]


@dataclass(frozen=True)
class Run:
    name: str
    recipe: str
    overrides: tuple[str, ...] = ()
    l2: bool = False  # also evaluated under ℓ2 (multi-norm models)
    label: str = ""

    @property
    def title(self) -> str:
        return self.label or self.name


RUNS: list[Run] = [
    Run("standard", "fashion-mnist-standard", label="STD"),
    Run("pgd-at-0.05", "fashion-mnist-pgd-at", (*ADV, "method.params.eps=0.05"), label="PGD-0.05"),
    Run("pgd-at-0.1", "fashion-mnist-pgd-at", (*ADV, "method.params.eps=0.1"), label="PGD-0.1"),
    Run("pgd-at-0.3", "fashion-mnist-pgd-at", (*ADV, "method.params.eps=0.3"), label="PGD-0.3"),
    Run("pgdls-0.3", "fashion-mnist-pgdls", (*ADV, "method.params.eps=0.3"), label="PGDLS-0.3"),
    Run("trades-b1", "fashion-mnist-trades", (*ADV, "method.params.beta=1.0"), label="TRADES β=1"),
    Run("trades-b6", "fashion-mnist-trades", (*ADV, "method.params.beta=6.0"), label="TRADES β=6"),
    Run("mma-0.1", "fashion-mnist-mma", (*ADV, "method.params.d_max=0.1"), label="MMA-0.1"),
    Run("mma-0.2", "fashion-mnist-mma", (*ADV, "method.params.d_max=0.2"), label="MMA-0.2"),
    Run("mma-0.3", "fashion-mnist-mma", (*ADV, "method.params.d_max=0.3"), label="MMA-0.3"),
    Run("omma-0.2", "fashion-mnist-mma", (*ADV, "method.name=omma", "method.params.d_max=0.2",
                                          "method.params.clean_coeff=0.0"), label="OMMA-0.2"),
    Run("avg-margin", "fashion-mnist-avg-margin", label="Wu & Yu AMR"),
    Run("minmax-at", "fashion-mnist-minmax-at", ("data.train_subset=20000",), l2=True,
        label="min-max AT"),
    Run("minmax-at-avg", "fashion-mnist-minmax-at-avg", ("data.train_subset=20000",), l2=True,
        label="avg AT"),
]
BY_NAME = {r.name: r for r in RUNS}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", choices=list(BY_NAME), help="runs to build (default: all)")
    p.add_argument("--list", action="store_true", help="list the runs and their state")
    p.add_argument("--out", default="runs/reproduce", help="run folders (default runs/reproduce)")
    p.add_argument("--results", default="docs/results.md", help="the results page")
    p.add_argument("--n", type=int, default=1000, help="test images evaluated (1000)")
    p.add_argument("--suite", default="standard", help="evaluation suite (standard)")
    p.add_argument("--margin-n", type=int, default=500, help="test images for margins (500)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="KEY=VALUE override applied to every run")
    p.add_argument("--report-only", action="store_true", help="only rewrite the results page")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


# --------------------------------------------------------------------------- build


def _state(run_dir: Path) -> str:
    if (run_dir / "eval.json").exists():
        return "evaluated"
    if (run_dir / "results.json").exists():
        return "trained"
    if (run_dir / "checkpoints" / "last.safetensors").exists():
        return "interrupted"
    return "missing"


def build(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    run_dir = Path(args.out) / run.name
    state = _state(run_dir)
    if state == "missing":
        cfg = apply_overrides(load_recipe(run.recipe), [*run.overrides, *args.overrides])
        print(f"[{run.name}] training ({run.recipe})", flush=True)
        train(cfg, run_dir, progress=False)
    elif state == "interrupted":
        print(f"[{run.name}] resuming", flush=True)
        resume(run_dir, progress=False)
    eval_path = run_dir / "eval.json"
    if eval_path.exists():
        return json.loads(eval_path.read_text(encoding="utf-8"))
    print(f"[{run.name}] evaluating", flush=True)
    t0 = time.perf_counter()
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    model = load_model(run_dir)
    x_raw, y_raw = load_split("fashion-mnist", "test", None, False)
    x, y, _ = IndexedTensors(x_raw, y_raw).get_batch(torch.arange(args.n))
    out: dict[str, Any] = {"name": run.name, "title": run.title, "recipe": run.recipe,
                           "overrides": [*run.overrides, *args.overrides],
                           "train_time_s": results.get("train_time_s"), "n": args.n}
    rep = evaluate(model, x, y, norm="linf", epsilons=EPS_LINF, suite=args.suite, seed=args.seed)
    out["linf"] = rep.to_dict()
    if run.l2:
        rep2 = evaluate(model, x, y, norm="l2", epsilons=EPS_L2, suite=args.suite, seed=args.seed)
        out["l2"] = rep2.to_dict()
        # Acc^max_adv at the training radii: robust under both norms, per example
        both = ~rep.success[EPS_LINF.index(0.1)] & ~rep2.success[EPS_L2.index(1.0)]
        out["acc_max_adv"] = float(both.double().mean())
    m = min(args.margin_n, args.n)
    margins = min_perturbation_distance(model, x[:m], y[:m], norm="linf", methods=("fmn",),
                                        radii=EPS_LINF)
    out["margins_linf"] = {"distance": [float(d) for d in margins["distance"]],
                           "stats": margins["stats"], "failures": margins["failures"]}
    out["eval_time_s"] = time.perf_counter() - t0
    atomic_write_text(eval_path, json.dumps(out, indent=2, default=str) + "\n")
    return out


# --------------------------------------------------------------------------- claims


def _rob(e: dict[str, Any], eps: float) -> float:
    return float(e["linf"]["robust_accuracy"][f"{eps:g}"])


def _se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / n)


def _compare(a: float, b: float, n: int) -> str:
    """'higher' / 'lower' / 'tie' of a vs b at about two standard errors of a difference."""
    tol = 2 * math.sqrt(_se(a, n) ** 2 + _se(b, n) ** 2)
    return "higher" if a - b > tol else "lower" if b - a > tol else "tie"


@dataclass
class Claim:
    text: str
    needs: tuple[str, ...]
    verdict: str = "not yet measured"
    numbers: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def claims(ev: dict[str, dict[str, Any]], n: int) -> list[Claim]:
    out: list[Claim] = []

    def have(*names: str) -> bool:
        return all(k in ev for k in names)

    c = Claim("MMA (Ding et al.): PGD-AT trained at too large an ε fails (clean and robust "
              "accuracy collapse), while MMA with a large d_max still trains (§7.0: PGD "
              "collapses at ε ≥ 24/255 on CIFAR-10; MMA-32 keeps 84% clean).",
              ("pgd-at-0.3", "mma-0.3"))
    if have(*c.needs):
        p, m = ev["pgd-at-0.3"]["linf"], ev["mma-0.3"]["linf"]
        c.numbers = (f"clean: PGD-0.3 {100 * p['clean_accuracy']:.1f}%, MMA-0.3 "
                     f"{100 * m['clean_accuracy']:.1f}%; AvgAcc {100 * p['avg_acc']:.1f} vs "
                     f"{100 * m['avg_acc']:.1f}")
        ok = _compare(m["avg_acc"], p["avg_acc"], n) == "higher"
        c.verdict = "agrees" if ok else ("inconclusive" if _compare(m["avg_acc"], p["avg_acc"], n) == "tie" else "disagrees")
    out.append(c)

    c = Claim("MMA is insensitive to d_max: AvgAcc changes little across d_max while clean "
              "accuracy falls slowly (§7.0: CIFAR-10 MMA-12/20/32 AvgAcc 26.9/28.9/29.4).",
              ("mma-0.1", "mma-0.2", "mma-0.3"))
    if have(*c.needs):
        vals = [ev[k]["linf"]["avg_acc"] for k in c.needs]
        c.numbers = "AvgAcc " + " / ".join(f"{100 * v:.1f}" for v in vals)
        spread = max(vals) - min(vals)
        c.verdict = "agrees" if spread < 0.05 else "disagrees"
    out.append(c)

    c = Claim("PGDLS (ε ramped up) trains where PGD at the same large ε fails (MMA paper, "
              "MNIST-ℓ∞ PGDLS-0.45 vs PGD).", ("pgdls-0.3", "pgd-at-0.3"))
    if have(*c.needs):
        a, b = ev["pgdls-0.3"]["linf"]["avg_acc"], ev["pgd-at-0.3"]["linf"]["avg_acc"]
        c.numbers = f"AvgAcc PGDLS-0.3 {100 * a:.1f} vs PGD-0.3 {100 * b:.1f}"
        r = _compare(a, b, n)
        c.verdict = {"higher": "agrees", "tie": "inconclusive", "lower": "disagrees"}[r]
    out.append(c)

    c = Claim("TRADES beats MMA at small ε and loses at large ε (§7.0, CIFAR-10 ℓ∞).",
              ("trades-b6", "mma-0.3"))
    if have(*c.needs):
        t, m = ev["trades-b6"], ev["mma-0.3"]
        small, large = EPS_LINF[0], EPS_LINF[-1]
        rs = _compare(_rob(t, small), _rob(m, small), n)
        rl = _compare(_rob(t, large), _rob(m, large), n)
        c.numbers = (f"ε={small:g}: TRADES {100 * _rob(t, small):.1f} vs MMA {100 * _rob(m, small):.1f}; "
                     f"ε={large:g}: {100 * _rob(t, large):.1f} vs {100 * _rob(m, large):.1f}")
        c.verdict = ("agrees" if rs == "higher" and rl == "lower"
                     else "disagrees" if rs == "lower" or rl == "higher" else "inconclusive")
    out.append(c)

    c = Claim("TRADES: larger β (1/λ) trades clean accuracy for robustness (β=1 vs β=6: "
              "88.64/49.14 vs 84.92/56.61 on CIFAR-10).", ("trades-b1", "trades-b6"))
    if have(*c.needs):
        a, b = ev["trades-b1"]["linf"], ev["trades-b6"]["linf"]
        e = EPS_LINF[1]
        c.numbers = (f"clean {100 * a['clean_accuracy']:.1f} vs {100 * b['clean_accuracy']:.1f}; "
                     f"ε={e:g}: {100 * _rob(ev['trades-b1'], e):.1f} vs {100 * _rob(ev['trades-b6'], e):.1f}")
        cl = _compare(a["clean_accuracy"], b["clean_accuracy"], n)
        rb = _compare(_rob(ev["trades-b1"], e), _rob(ev["trades-b6"], e), n)
        c.verdict = ("agrees" if cl == "higher" and rb == "lower"
                     else "disagrees" if cl == "lower" or rb == "higher" else "inconclusive")
    out.append(c)

    c = Claim("MMA vs OMMA: the extra clean loss lowers clean accuracy and raises AvgAcc "
              "(CIFAR-10: OMMA-32 86.11 / 28.36 vs MMA-32 84.36 / 29.39).", ("mma-0.2", "omma-0.2"))
    if have(*c.needs):
        m, o = ev["mma-0.2"]["linf"], ev["omma-0.2"]["linf"]
        c.numbers = (f"clean MMA {100 * m['clean_accuracy']:.1f} vs OMMA {100 * o['clean_accuracy']:.1f}; "
                     f"AvgAcc {100 * m['avg_acc']:.1f} vs {100 * o['avg_acc']:.1f}")
        cl = _compare(m["clean_accuracy"], o["clean_accuracy"], n)
        av = _compare(m["avg_acc"], o["avg_acc"], n)
        c.verdict = ("agrees" if cl == "lower" and av == "higher"
                     else "disagrees" if cl == "higher" or av == "lower" else "inconclusive")
    out.append(c)

    c = Claim("Wu & Yu: the average-margin regulariser enlarges the average margin over "
              "standard training (MNIST-CNN 1.40 vs 1.01).", ("avg-margin", "standard"))
    if have(*c.needs):
        a = ev["avg-margin"]["margins_linf"]["stats"]["mean"]
        b = ev["standard"]["margins_linf"]["stats"]["mean"]
        c.numbers = f"mean ℓ∞ margin {a:.4f} vs {b:.4f}"
        c.verdict = "agrees" if a > b * 1.05 else "disagrees" if a < b else "inconclusive"
    out.append(c)

    c = Claim("Min-max AT over ℓ∞ and ℓ2 beats the avg baseline on Acc^max_adv (Table 4: about "
              "+1 point).", ("minmax-at", "minmax-at-avg"))
    if have(*c.needs):
        a, b = ev["minmax-at"]["acc_max_adv"], ev["minmax-at-avg"]["acc_max_adv"]
        c.numbers = f"Acc^max_adv (ℓ∞ 0.1 and ℓ2 1.0): {100 * a:.1f} vs {100 * b:.1f}"
        r = _compare(a, b, n)
        c.verdict = {"higher": "agrees", "tie": "inconclusive", "lower": "disagrees"}[r]
    out.append(c)
    return out


# --------------------------------------------------------------------------- page


def write_page(ev: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    path = Path(args.results)
    fig_dir = path.parent / "results"
    fig_dir.mkdir(parents=True, exist_ok=True)
    lines = ["# Reproduction at CPU scale on Fashion-MNIST", "",
             "Generated by `python benchmarks/reproduce.py` (see its docstring for the model set, "
             "budgets and how to rebuild single runs). Every number below was measured by the "
             "committed code; runs not yet built are listed as such.", ""]
    built = [r for r in RUNS if r.name in ev]
    missing = [r.name for r in RUNS if r.name not in ev]
    if built:
        first = ev[built[0].name]
        lines += [f"Evaluation: first {first['n']} test images, suite `{first['linf']['suite']}` "
                  f"({', '.join(first['linf']['attacks'])}), ℓ∞ ε grid {EPS_LINF}.", "",
                  "## Robust accuracy (%; the MMA paper's table format)", "",
                  markdown_table({ev[r.name]["title"]: ev[r.name]["linf"] for r in built})]
        l2 = {ev[r.name]["title"]: ev[r.name]["l2"] for r in built if "l2" in ev[r.name]}
        if l2:
            lines += ["### ℓ2 (multi-norm models)", "", markdown_table(l2)]
        plot_robust_accuracy({ev[r.name]["title"]: ev[r.name]["linf"] for r in built},
                             fig_dir / "robust_accuracy_linf.png")
        lines += ["![robust accuracy vs ε](results/robust_accuracy_linf.png)", "",
                  "## Margins (ℓ∞, FMN; misclassified = 0) and training cost", "",
                  "| Model | mean margin | median | q1 | q3 | train time (s) | eval time (s) |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        from wideberth.evaluate.plots import margin_histogram

        total = 0.0
        for r in built:
            e = ev[r.name]
            s = e["margins_linf"]["stats"]
            t = e.get("train_time_s") or float("nan")
            total += (t if math.isfinite(t) else 0) + e.get("eval_time_s", 0)
            lines.append(f"| {e['title']} | {s['mean']:.4f} | {s['median']:.4f} | {s['q1']:.4f} | "
                         f"{s['q3']:.4f} | {t:.0f} | {e.get('eval_time_s', float('nan')):.0f} |")
            margin_histogram(torch.tensor(e["margins_linf"]["distance"]),
                             fig_dir / f"margins_{r.name}.png", norm="linf", title=e["title"])
        lines += ["", f"Total CPU wall time of the built runs (training + evaluation): {total / 60:.0f} min.", ""]
        flags = [(ev[r.name]["title"], f) for r in built for f in ev[r.name]["linf"]["flags"]]
        lines += ["## Sanity flags", ""] + ([f"- {t}: {f}" for t, f in flags] or ["None fired."]) + [""]
    n = min((int(e["n"]) for e in ev.values()), default=args.n)
    lines += ["## The papers' claims and our verdicts", "",
              "Verdicts compare our numbers at about two standard errors of a difference "
              f"(n = {n}); 'inconclusive' means within that band.", "",
              "| Claim | Our numbers | Verdict |", "|---|---|---|"]
    for c in claims(ev, n):
        lines.append(f"| {c.text} | {c.numbers or '—'} | {c.verdict} |")
    if missing:
        lines += ["", f"Runs not yet built: {', '.join(missing)}."]
    atomic_write_text(path, "\n".join(lines) + "\n")
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.list:
        for r in RUNS:
            print(f"{r.name:15s} {_state(Path(args.out) / r.name):12s} {r.recipe} {' '.join(r.overrides)}")
        return
    ev: dict[str, dict[str, Any]] = {}
    for r in RUNS:
        p = Path(args.out) / r.name / "eval.json"
        if p.exists():
            ev[r.name] = json.loads(p.read_text(encoding="utf-8"))
    if not args.report_only:
        for name in args.runs or list(BY_NAME):
            ev[name] = build(BY_NAME[name], args)
    write_page(ev, args)


if __name__ == "__main__":
    main()
