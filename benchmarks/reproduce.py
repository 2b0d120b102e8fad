"""Reproduce the papers' claims at CPU scale on Fashion-MNIST and write docs/results.md.

Trains and evaluates a fixed set of ``cnn-small`` models with the library's CPU recipes
(issue 7): standard training; PGD-AT at three ε (0.05, 0.1 and 0.3, the last one large
enough to fail as in the papers); PGDLS at the large ε; TRADES β = 1 and 6; MMA at three
d_max and OMMA at one; the Wu & Yu regulariser; multi-perturbation min-max AT and its
``avg`` baseline. Adversarial runs use the same budget: 20,000 training images (5,000
held out for validation), 3 epochs, 10-step inner attacks. Standard training and Wu & Yu
use all 55,000 images for 8 epochs and track ℓ2 margins of 200 train and 200 test points
after every epoch (Wu & Yu's margin curves).

Every model is evaluated on the first ``--n`` (500) test images with the ``standard``
suite (APGD-CE, APGD-T, 100-step PGD with CE/CW restarts) over one ℓ∞ ε grid (plus ℓ2 for
the multi-norm models), and its ℓ∞ margins are estimated (FMN, misclassified = 0). The
ensemble attack of the min-max paper (APGDA against the average loss, w_clip and the
average probability) then attacks four of the trained models at once. The script writes
``docs/results.md`` (the MMA paper's table, margins, training cost, the ensemble attack,
the claims with our verdicts) and its figures under ``docs/results/``.

Runs are independent and resumable: a finished run (``results.json``) is not trained
again, an interrupted one is resumed from its last checkpoint, and a finished evaluation
(``eval.json``) is reused, so the whole set can be built over several sittings::

    python benchmarks/reproduce.py --list
    python benchmarks/reproduce.py --runs standard pgd-at-0.1     # some runs
    python benchmarks/reproduce.py --runs ensemble                # the ensemble attack
    python benchmarks/reproduce.py                                # all (hours on 2 cores)
    python benchmarks/reproduce.py --report-only                  # rewrite the page

``--set KEY=VALUE`` overrides every run's config (e.g. a smoke test with
``--set data.train_subset=500 --set run.epochs=1 --n 100 --out /tmp/r --results /tmp/r.md``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from wideberth.config import apply_overrides, load_recipe
from wideberth.data import IndexedTensors, load_split
from wideberth.evaluation.margins import min_perturbation_distance
from wideberth.evaluation.plots import margin_histogram_grid, margin_histograms_by_epoch
from wideberth.evaluation.report import markdown_table, plot_robust_accuracy
from wideberth.evaluation.robustness import evaluate
from wideberth.fileio import atomic_write_text
from wideberth.minmax import ensemble_attack, ensemble_metrics, lift
from wideberth.minmax.diagnostics import plot_weight_trajectory, summarize_weights
from wideberth.runs import load_model
from wideberth.train import resume, train

EPS_LINF = [0.05, 0.1, 0.15, 0.2]
EPS_L2 = [0.5, 1.0, 1.5, 2.0]
ADV = ["data.train_subset=20000", "run.epochs=3"]
#: Wu & Yu's margin curves: ℓ2 FMN margins of 200 fixed train and 200 test points per epoch
TRACK = ("track.every=1", "track.n_train=200", "track.n_test=200", "track.norm=l2",
         "track.steps=50")


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
    Run("standard", "fashion-mnist-standard", TRACK, label="STD"),
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
    Run("avg-margin", "fashion-mnist-avg-margin", TRACK, label="Wu & Yu AMR"),
    Run("minmax-at", "fashion-mnist-minmax-at", ("data.train_subset=20000",), l2=True,
        label="min-max AT"),
    Run("minmax-at-avg", "fashion-mnist-minmax-at-avg", ("data.train_subset=20000",), l2=True,
        label="avg AT"),
]
BY_NAME = {r.name: r for r in RUNS}

#: The ensemble-attack comparison (Wang et al. §2a, Table 1) on models trained here: one
#: undefended and three defended members of increasing robustness, as the paper's MNIST
#: A–D pool mixes easy and hard models. ℓ∞ ε = 0.1, 50 APGDA steps (the paper's T).
ENSEMBLE = "ensemble"
ENSEMBLE_POOL = ("standard", "pgd-at-0.1", "trades-b6", "mma-0.2")
ENSEMBLE_METHODS = ("minmax", "avg", "clip", "avg_prob")
ENSEMBLE_EPS = 0.1
ENSEMBLE_STEPS = 50


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", choices=[*BY_NAME, ENSEMBLE],
                   help=f"runs to build (default: all, then '{ENSEMBLE}': the ensemble attack "
                        f"on {', '.join(ENSEMBLE_POOL)})")
    p.add_argument("--list", action="store_true", help="list the runs and their state")
    p.add_argument("--out", default="runs/reproduce", help="run folders (default runs/reproduce)")
    p.add_argument("--results", default="docs/results.md", help="the results page")
    p.add_argument("--n", type=int, default=500, help="test images evaluated (500)")
    p.add_argument("--suite", default="standard", help="evaluation suite (standard)")
    p.add_argument("--margin-n", type=int, default=500, help="test images for margins (500)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="KEY=VALUE override applied to every run")
    p.add_argument("--report-only", action="store_true", help="only rewrite the results page")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (0: torch's default); 1 lets two sittings share 2 cores")
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


def tracked_margins(run_dir: Path) -> list[dict[str, Any]]:
    """The per-epoch margin records of ``metrics.jsonl`` (training-time tracking) without
    the per-example distances: epoch, split, mean (misclassified = 0), mean over the
    correctly classified points, and the misclassified count."""
    rows = []
    path = run_dir / "metrics.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        rec = json.loads(line)
        if rec.get("event") != "margins":
            continue
        d = [v for v in rec["distances"] if v is not None and v > 0]
        rows.append({"epoch": rec["epoch"], "split": rec["split"], "norm": rec["norm"],
                     "mean": rec["mean"], "mean_correct": sum(d) / len(d) if d else 0.0,
                     "misclassified": rec["count_misclassified"], "n": rec["n"]})
    return rows


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
    # per-batch state files: an interrupted evaluation resumes where it stopped
    rep = evaluate(model, x, y, norm="linf", epsilons=EPS_LINF, suite=args.suite, seed=args.seed,
                   state_file=run_dir / "eval-linf.state.json")
    out["linf"] = rep.to_dict()
    if run.l2:
        rep2 = evaluate(model, x, y, norm="l2", epsilons=EPS_L2, suite=args.suite,
                        seed=args.seed, state_file=run_dir / "eval-l2.state.json")
        out["l2"] = rep2.to_dict()
        # Acc^max_adv at the training radii: robust under both norms, per example
        both = ~rep.success[EPS_LINF.index(0.1)] & ~rep2.success[EPS_L2.index(1.0)]
        out["acc_max_adv"] = float(both.double().mean())
    m = min(args.margin_n, args.n)
    margins = min_perturbation_distance(model, x[:m], y[:m], norm="linf", methods=("fmn",),
                                        radii=EPS_LINF)
    out["margins_linf"] = {"distance": [float(d) for d in margins["distance"]],
                           "stats": margins["stats"], "failures": margins["failures"]}
    track = tracked_margins(run_dir)
    if track:
        out["margin_track"] = track
    out["threads"] = torch.get_num_threads()
    out["eval_time_s"] = time.perf_counter() - t0
    atomic_write_text(eval_path, json.dumps(out, indent=2, default=str) + "\n")
    return out


def _member_ids(out_dir: Path) -> list[str]:
    """The members' results.json hashes: they identify the trained weights, so a retrained
    member invalidates a cached ensemble attack."""
    return [hashlib.sha256((out_dir / m / "results.json").read_bytes()).hexdigest()[:16]
            if (out_dir / m / "results.json").exists() else "" for m in ENSEMBLE_POOL]


def cached_ensemble(out_dir: Path, n: int) -> dict[str, Any] | None:
    """``<out>/ensemble.json`` if it was computed on the current members and ``n``."""
    path = out_dir / "ensemble.json"
    if not path.exists():
        return None
    cached = json.loads(path.read_text(encoding="utf-8"))
    ok = (cached.get("pool") == list(ENSEMBLE_POOL) and cached.get("n") == n
          and cached.get("members") == _member_ids(out_dir))
    return cached if ok else None


def build_ensemble(args: argparse.Namespace) -> dict[str, Any] | None:
    """APGDA (learned per-example model weights) against the average-loss attack and two
    more baselines on :data:`ENSEMBLE_POOL`; cached in ``<out>/ensemble.json``."""
    out_dir = Path(args.out)
    path = out_dir / "ensemble.json"
    absent = [m for m in ENSEMBLE_POOL if not (out_dir / m / "results.json").exists()]
    if absent:
        print(f"[{ENSEMBLE}] skipped: members not trained yet: {', '.join(absent)}", flush=True)
        return None
    cached = cached_ensemble(out_dir, args.n)
    if cached is not None:
        return cached
    members = _member_ids(out_dir)
    print(f"[{ENSEMBLE}] attacking {', '.join(ENSEMBLE_POOL)}", flush=True)
    t0 = time.perf_counter()
    models = [load_model(out_dir / m) for m in ENSEMBLE_POOL]
    x_raw, y_raw = load_split("fashion-mnist", "test", None, False)
    x, y, _ = IndexedTensors(x_raw, y_raw).get_batch(torch.arange(args.n))
    clean = ensemble_metrics(models, x, y)
    res: dict[str, Any] = {"pool": list(ENSEMBLE_POOL), "members": members, "n": args.n,
                           "eps": ENSEMBLE_EPS,
                           "steps": ENSEMBLE_STEPS, "norm": "linf",
                           "clean_per_model_acc": [1 - float(a) for a in clean.per_model_asr],
                           "clean_asr_all": clean.asr_all, "methods": {}}
    for method in ENSEMBLE_METHODS:
        t = time.perf_counter()
        r = ensemble_attack(models, x, y, norm="linf", eps=ENSEMBLE_EPS, steps=ENSEMBLE_STEPS,
                            method=method, seed=args.seed)
        met = ensemble_metrics(models, r.x_adv, y)
        entry: dict[str, Any] = {"asr_all": met.asr_all, "asr_avg": met.asr_avg,
                                 "per_model_acc": [1 - float(a) for a in met.per_model_asr],
                                 "fooled_all": [int(v) for v in met.fooled.all(1).tolist()],
                                 "time_s": time.perf_counter() - t}
        if method == "minmax" and r.w is not None and r.w_trajectory is not None:
            entry["weights"] = summarize_weights(r.w, list(ENSEMBLE_POOL))
            # kept beside ensemble.json (the trajectory is too big to cache); the page copies it
            fig = out_dir / "ensemble_weights.png"
            plot_weight_trajectory(r.w_trajectory, fig, list(ENSEMBLE_POOL),
                                   title=f"APGDA model weights (ℓ∞ ε={ENSEMBLE_EPS:g})")
        res["methods"][method] = entry
        print(f"[{ENSEMBLE}] {method}: ASR_all {met.asr_all:.3f}", flush=True)
    res["time_s"] = time.perf_counter() - t0
    atomic_write_text(path, json.dumps(res, indent=2) + "\n")
    return res


def ensemble_section(ens: dict[str, Any]) -> list[str]:
    titles = [BY_NAME[m].title for m in ens["pool"]]
    base = ens["methods"]["avg"]["asr_all"]
    lines = ["## Ensemble attack: APGDA vs average loss (min-max framework §2a, Table 1)", "",
             f"One ℓ∞ perturbation (ε = {ens['eps']:g}, {ens['steps']} steps, C&W loss κ = 50, "
             f"the Table 1 MNIST step sizes) per test image that must fool all of "
             f"{', '.join(titles)} at once; first {ens['n']} test images. Acc_i is each "
             "model's accuracy on the adversarial examples, ASR_all the fraction that fools "
             "every model (clean errors count), Lift = (ASR − ASR_avg-loss) / ASR_avg-loss. "
             f"Clean: {', '.join(f'{t} {100 * a:.1f}' for t, a in zip(titles, ens['clean_per_model_acc'], strict=True))}.",
             "",
             "| Method | " + " | ".join(f"Acc {t}" for t in titles) + " | ASR_avg | ASR_all | Lift | time (s) |",
             "|---|" + "---:|" * (len(titles) + 4)]
    names = {"minmax": "APGDA (min max)", "avg": "average loss", "clip": "w_clip",
             "avg_prob": "average probability"}
    for m, e in ens["methods"].items():
        lf = "–" if m == "avg" else f"{100 * lift(e['asr_all'], base):+.1f}%"
        lines.append(f"| {names.get(m, m)} | "
                     + " | ".join(f"{100 * a:.1f}" for a in e["per_model_acc"])
                     + f" | {100 * e['asr_avg']:.1f} | {100 * e['asr_all']:.1f} | {lf} | {e['time_s']:.0f} |")
    w = ens["methods"].get("minmax", {}).get("weights")
    if w:
        lines += ["", "APGDA's mean learned weights: "
                  + ", ".join(f"{BY_NAME[k].title} {v:.2f}" for k, v in w["mean"].items())
                  + f" (mean row entropy {w['entropy']:.2f} nats; uniform = "
                  f"{math.log(len(titles)):.2f}).", "",
                  "![APGDA weights](results/ensemble_weights.png)"]
    return [*lines, ""]


# --------------------------------------------------------------------------- claims


def _rob(e: dict[str, Any], eps: float) -> float:
    return float(e["linf"]["robust_accuracy"][f"{eps:g}"])


def _last_track(e: dict[str, Any], split: str) -> dict[str, Any] | None:
    rows = [r for r in e.get("margin_track", []) if r["split"] == split]
    return rows[-1] if rows else None


def _se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / n)


def _compare(a: float, b: float, n: int) -> str:
    """'higher' / 'lower' / 'tie' of a vs b at about two standard errors of a difference."""
    tol = 2 * math.sqrt(_se(a, n) ** 2 + _se(b, n) ** 2)
    return "higher" if a - b > tol else "lower" if b - a > tol else "tie"


_OPPOSITE = {"higher": "lower", "lower": "higher"}


def _verdict(*observed: tuple[str, str]) -> str:
    """Joint verdict over ``(observed, expected)`` comparisons (each 'higher'/'lower'/'tie'
    against the direction the paper reports): agrees if every one goes the paper's way,
    disagrees if any goes the other way, inconclusive otherwise."""
    if all(o == e for o, e in observed):
        return "agrees"
    if any(o == _OPPOSITE[e] for o, e in observed):
        return "disagrees"
    return "inconclusive"


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
        c.verdict = _verdict((_compare(m["avg_acc"], p["avg_acc"], n), "higher"))
    out.append(c)

    c = Claim("MMA is insensitive to d_max: AvgAcc changes little across d_max while clean "
              "accuracy falls slowly (§7.0: CIFAR-10 MMA-12/20/32 AvgAcc 26.9/28.9/29.4).",
              ("mma-0.1", "mma-0.2", "mma-0.3"))
    if have(*c.needs):
        vals = [ev[k]["linf"]["avg_acc"] for k in c.needs]
        spread = max(vals) - min(vals)
        c.numbers = ("AvgAcc " + " / ".join(f"{100 * v:.1f}" for v in vals)
                     + f"; spread {100 * spread:.1f} points (rule: agrees below 5)")
        c.verdict = "agrees" if spread < 0.05 else "disagrees"
    out.append(c)

    c = Claim("PGDLS (ε ramped up) trains where PGD at the same large ε fails (MMA paper, "
              "MNIST-ℓ∞ PGDLS-0.45 vs PGD).", ("pgdls-0.3", "pgd-at-0.3"))
    if have(*c.needs):
        a, b = ev["pgdls-0.3"]["linf"]["avg_acc"], ev["pgd-at-0.3"]["linf"]["avg_acc"]
        c.numbers = f"AvgAcc PGDLS-0.3 {100 * a:.1f} vs PGD-0.3 {100 * b:.1f}"
        c.verdict = _verdict((_compare(a, b, n), "higher"))
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
        c.verdict = _verdict((rs, "higher"), (rl, "lower"))
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
        c.verdict = _verdict((cl, "higher"), (rb, "lower"))
    out.append(c)

    c = Claim("MMA vs OMMA: the extra clean loss lowers clean accuracy and raises AvgAcc "
              "(CIFAR-10: OMMA-32 86.11 / 28.36 vs MMA-32 84.36 / 29.39).", ("mma-0.2", "omma-0.2"))
    if have(*c.needs):
        m, o = ev["mma-0.2"]["linf"], ev["omma-0.2"]["linf"]
        c.numbers = (f"clean MMA {100 * m['clean_accuracy']:.1f} vs OMMA {100 * o['clean_accuracy']:.1f}; "
                     f"AvgAcc {100 * m['avg_acc']:.1f} vs {100 * o['avg_acc']:.1f}")
        cl = _compare(m["clean_accuracy"], o["clean_accuracy"], n)
        av = _compare(m["avg_acc"], o["avg_acc"], n)
        c.verdict = _verdict((cl, "lower"), (av, "higher"))
    out.append(c)

    c = Claim("Wu & Yu: the average-margin regulariser enlarges the average margin over "
              "standard training (C4: MNIST-CNN 1.40 vs 1.01 in ℓ2; 1.5–2× for CNNs).",
              ("avg-margin", "standard"))
    if have(*c.needs):
        a = ev["avg-margin"]["margins_linf"]["stats"]["mean"]
        b = ev["standard"]["margins_linf"]["stats"]["mean"]
        ratios = [a / b]
        c.numbers = f"mean ℓ∞ margin (test, FMN) {a:.4f} vs {b:.4f}"
        la, lb = _last_track(ev["avg-margin"], "test"), _last_track(ev["standard"], "test")
        if la and lb:
            ratios.append(la["mean"] / lb["mean"])
            c.numbers += (f"; mean ℓ2 margin (200 tracked test points, last epoch) "
                          f"{la['mean']:.3f} vs {lb['mean']:.3f}")
        c.numbers += " (rule: agrees if every ratio AMR/STD > 1.05, disagrees if all < 1)"
        c.verdict = ("agrees" if min(ratios) > 1.05 else "disagrees" if max(ratios) < 1.0
                     else "inconclusive")
    out.append(c)

    c = Claim("Wu & Yu §3: in standard training the average margin decreases over training "
              "while the error keeps falling (C4; Figs 2, 6 — MNIST-CNN is the stated "
              "exception).", ("standard",))
    track = ev.get("standard", {}).get("margin_track", [])
    rows = [r for r in track if r["split"] == "train"]
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        c.numbers = (f"mean ℓ2 margin of the correctly classified tracked train points: epoch "
                     f"{first['epoch']} {first['mean_correct']:.3f} → epoch {last['epoch']} "
                     f"{last['mean_correct']:.3f}; misclassified {first['misclassified']} → "
                     f"{last['misclassified']} of {last['n']}")
        c.numbers += " (rule: agrees if the last is below 0.95× the first)"
        r = last["mean_correct"] / first["mean_correct"]
        c.verdict = "agrees" if r < 0.95 else "disagrees" if r > 1.05 else "inconclusive"
    out.append(c)

    c = Claim("TRADES (β = 6) is more robust than PGD-AT at the training ε (TRADES Table 5: "
              "CIFAR-10 56.61 vs 47.04 % under PGD-20; MNIST 96.07 vs 96.01).",
              ("trades-b6", "pgd-at-0.1"))
    if have(*c.needs):
        e = 0.1
        a, b = _rob(ev["trades-b6"], e), _rob(ev["pgd-at-0.1"], e)
        c.numbers = (f"ε={e:g}: TRADES {100 * a:.1f} vs PGD-0.1 {100 * b:.1f}; clean "
                     f"{100 * ev['trades-b6']['linf']['clean_accuracy']:.1f} vs "
                     f"{100 * ev['pgd-at-0.1']['linf']['clean_accuracy']:.1f}")
        c.verdict = _verdict((_compare(a, b, n), "higher"))
    out.append(c)

    c = Claim("MMA §7.0 (MNIST-ℓ∞): PGDLS at a large ε is as good as or slightly better than "
              "MMA at the same d_max (PGDLS-0.45 AvgAcc 94.74 vs MMA-0.45 94.13).",
              ("pgdls-0.3", "mma-0.3"))
    if have(*c.needs):
        a, b = ev["pgdls-0.3"]["linf"]["avg_acc"], ev["mma-0.3"]["linf"]["avg_acc"]
        c.numbers = f"AvgAcc PGDLS-0.3 {100 * a:.1f} vs MMA-0.3 {100 * b:.1f}"
        c.verdict = {"higher": "agrees", "tie": "agrees", "lower": "disagrees"}[_compare(a, b, n)]
    out.append(c)

    c = Claim("Min-max ensemble attack: APGDA's learned model weights raise ASR_all over the "
              "average-loss attack (Table 1: lift 9–87%, MNIST ℓ∞ 48.17 → 90.16).", (ENSEMBLE,))
    if have(*c.needs):
        m, a = ev[ENSEMBLE]["methods"]["minmax"], ev[ENSEMBLE]["methods"]["avg"]
        c.numbers = (f"ASR_all APGDA {100 * m['asr_all']:.1f}% vs average loss "
                     f"{100 * a['asr_all']:.1f}% (lift {100 * lift(m['asr_all'], a['asr_all']):+.1f}%)")
        # paired: the same images under both attacks, so McNemar's test on the discordant ones
        only_m = sum(f and not g for f, g in zip(m["fooled_all"], a["fooled_all"], strict=True))
        only_a = sum(g and not f for f, g in zip(m["fooled_all"], a["fooled_all"], strict=True))
        z = (only_m - only_a) / math.sqrt(only_m + only_a) if only_m + only_a else 0.0
        c.numbers += (f"; images fooled by APGDA only {only_m}, by the average loss only "
                      f"{only_a} (McNemar z = {z:.1f})")
        c.verdict = "agrees" if z > 2 else "disagrees" if z < -2 else "inconclusive"
    out.append(c)

    c = Claim("Min-max AT over ℓ∞ and ℓ2 beats the avg baseline on Acc^max_adv (Table 4: about "
              "+1 point).", ("minmax-at", "minmax-at-avg"))
    if have(*c.needs):
        a, b = ev["minmax-at"]["acc_max_adv"], ev["minmax-at-avg"]["acc_max_adv"]
        c.numbers = f"Acc^max_adv (ℓ∞ 0.1 and ℓ2 1.0): {100 * a:.1f} vs {100 * b:.1f}"
        c.verdict = _verdict((_compare(a, b, n), "higher"))
    out.append(c)
    return out


# --------------------------------------------------------------------------- page


def margin_track_section(runs: list[dict[str, Any]]) -> list[str]:
    """Wu & Yu's margin curves as a table: per epoch and run, the mean ℓ2 margin of the
    tracked train / test points (misclassified = 0) and of the correctly classified ones."""
    cols = [(e["title"], split) for e in runs for split in ("train", "test")]
    by = {(e["title"], r["split"], r["epoch"]): r for e in runs for r in e["margin_track"]}
    epochs = sorted({r["epoch"] for e in runs for r in e["margin_track"]})
    lines = ["## Margin dynamics during training (Wu & Yu §3)", "",
             "ℓ2 margins (FMN, 50 steps) of 200 fixed training and 200 fixed test points, "
             "measured after every epoch. Each cell: mean with misclassified points at 0 / "
             "mean over the correctly classified points / misclassified count. The signed "
             "minimum margin of the paper is not reported: the estimator gives misclassified "
             "points distance 0, not their negative distance.", "",
             "| epoch | " + " | ".join(f"{t} {sp}" for t, sp in cols) + " |",
             "|---:|" + "---|" * len(cols)]
    for ep in epochs:
        cells = []
        for t, sp in cols:
            r = by.get((t, sp, ep))
            cells.append("–" if r is None else
                         f"{r['mean']:.3f} / {r['mean_correct']:.3f} / {r['misclassified']}")
        lines.append(f"| {ep} | " + " | ".join(cells) + " |")
    return [*lines, ""]


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
        lines += ["![robust accuracy vs ε](results/robust_accuracy_linf.png)", ""]
        if l2:
            plot_robust_accuracy(l2, fig_dir / "robust_accuracy_l2.png")
            lines += ["![ℓ2 robust accuracy vs ε](results/robust_accuracy_l2.png)", ""]
        acc_max = [r for r in built if "acc_max_adv" in ev[r.name]]
        if acc_max:
            lines += ["Acc^max_adv (robust to both ℓ∞ 0.1 and ℓ2 1.0 per example, min-max paper "
                      "Table 4): " + ", ".join(f"{ev[r.name]['title']} {100 * ev[r.name]['acc_max_adv']:.1f}%"
                                               for r in acc_max) + ".", ""]
        lines += ["## Margins (ℓ∞, FMN; misclassified = 0), training and evaluation cost", "",
                  "| Model | recipe and overrides | test acc. (10k) | mean margin | median | q1 | q3 "
                  "| train (s) | eval (s) |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        total = 0.0
        for r in built:
            e = ev[r.name]
            s = e["margins_linf"]["stats"]
            t = e.get("train_time_s") or float("nan")
            total += (t if math.isfinite(t) else 0) + e.get("eval_time_s", 0)
            res_path = Path(args.out) / r.name / "results.json"
            test = (json.loads(res_path.read_text(encoding="utf-8"))["test"]["clean_accuracy"]
                    if res_path.exists() else float("nan"))
            recipe = " ".join([f"`{e['recipe']}`", *(f"`{o}`" for o in e["overrides"])])
            lines.append(f"| {e['title']} | {recipe} | {100 * test:.2f} | {s['mean']:.4f} | "
                         f"{s['median']:.4f} | {s['q1']:.4f} | {s['q3']:.4f} | {t:.0f} | "
                         f"{e.get('eval_time_s', float('nan')):.0f} |")
        margin_histogram_grid({ev[r.name]["title"]: torch.tensor(ev[r.name]["margins_linf"]["distance"])
                               for r in built}, fig_dir / "margins_linf.png", norm="linf",
                              title="ℓ∞ margins (FMN) of the first test images; red: mean")
        if ENSEMBLE in ev:
            total += ev[ENSEMBLE].get("time_s", 0)
        threads = sorted({ev[r.name].get("threads") for r in built} - {None})
        lines += ["", "![margin histograms](results/margins_linf.png)", "",
                  f"Total wall time of the built runs (training + evaluation + ensemble attack): "
                  f"{total / 60:.0f} min"
                  + (". Every run used one torch thread; when runs are built side by side "
                     "(for the committed page: two, for a while three, one-thread processes on "
                     "2 cores), each wall time is an upper bound on the CPU-core time the run "
                     "needed" if threads == [1] else "")
                  + "."
                  + " Training time counts the run's own wall clock (evaluation of the held-out "
                  "split and checkpoints included); the test-accuracy column is the trainer's "
                  "report on all 10,000 test images with the selected (best validation) weights.",
                  ""]
        tracked = [r for r in built if ev[r.name].get("margin_track")]
        if tracked:
            lines += margin_track_section([ev[r.name] for r in tracked])
            for r in tracked:
                recs = [json.loads(line) for line in (Path(args.out) / r.name / "metrics.jsonl")
                        .read_text(encoding="utf-8").splitlines()]
                for split in ("train", "test"):
                    margin_histograms_by_epoch(recs, fig_dir / f"margins_by_epoch_{r.name}_{split}.png",
                                               split=split, title=f"{ev[r.name]['title']}: ℓ2 "
                                               f"margins of 200 {split} points per epoch")
                lines += [f"![{r.name} margins by epoch](results/margins_by_epoch_{r.name}_train.png)"]
            lines += [""]
        flags = [(ev[r.name]["title"], f) for r in built for f in ev[r.name]["linf"]["flags"]]
        lines += ["## Sanity flags", ""] + ([f"- {t}: {f}" for t, f in flags] or ["None fired."]) + [""]
    if ENSEMBLE in ev:
        lines += ensemble_section(ev[ENSEMBLE])
        fig = Path(args.out) / "ensemble_weights.png"
        if fig.exists():
            shutil.copyfile(fig, fig_dir / fig.name)
    else:
        lines += [f"The ensemble-attack comparison is not yet built (needs {', '.join(ENSEMBLE_POOL)}).", ""]
    n = min((int(e["n"]) for e in ev.values()), default=args.n)
    lines += ["## The papers' claims and our verdicts", "",
              "Verdicts compare our numbers at about two standard errors of a difference "
              f"of two proportions (n = {n} each; treated as independent samples, which is "
              "conservative for models scored on the same images), except the ensemble claim, "
              "which uses McNemar's paired test (|z| > 2) on the images of both attacks, and "
              "the rows that state their own rule. "
              "'Inconclusive' means within that band; 'agrees' and 'disagrees' are about the "
              "direction the paper reports, not its size.", "",
              "| Claim | Our numbers | Verdict |", "|---|---|---|"]
    for c in claims(ev, n):
        lines.append(f"| {c.text} | {c.numbers or '—'} | {c.verdict} |")
    if missing:
        lines += ["", f"Runs not yet built: {', '.join(missing)}."]
    atomic_write_text(path, "\n".join(lines) + "\n")
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.list:
        for r in RUNS:
            print(f"{r.name:15s} {_state(Path(args.out) / r.name):12s} {r.recipe} {' '.join(r.overrides)}")
        built = cached_ensemble(Path(args.out), args.n) is not None
        print(f"{ENSEMBLE:15s} {'evaluated' if built else 'missing':12s} APGDA vs average loss on "
              f"{', '.join(ENSEMBLE_POOL)}")
        return
    ev: dict[str, dict[str, Any]] = {}
    for r in RUNS:
        p = Path(args.out) / r.name / "eval.json"
        if p.exists():
            ev[r.name] = json.loads(p.read_text(encoding="utf-8"))
    ens = cached_ensemble(Path(args.out), args.n)
    if ens is not None:
        ev[ENSEMBLE] = ens
    if not args.report_only:
        for name in args.runs or [*BY_NAME, ENSEMBLE]:
            if name == ENSEMBLE:
                ens = build_ensemble(args)
                if ens is not None:
                    ev[ENSEMBLE] = ens
            else:
                ev[name] = build(BY_NAME[name], args)
    write_page(ev, args)


if __name__ == "__main__":
    main()
