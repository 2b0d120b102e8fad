"""Evaluation reports: the papers' tables in Markdown, robust-accuracy curves, loss slices.

* :func:`markdown_table`: one row per model in the MMA paper's format (Table 1, 4–11):
  clean accuracy, AvgAcc, AvgRobAcc and robust accuracy per ε, in percent (with
  ``intervals=True`` each accuracy also carries its 95 % Clopper–Pearson interval,
  :mod:`wideberth.evaluation.statistics`);
* :func:`loss_along_ray`: the loss at ``x + t·δ`` for t = 0, 0.1, …, 1 (MMA Fig. 3's
  input-space loss slices, Ding et al., ICLR 2020, §2.4);
* :func:`plot_robust_accuracy`, :func:`plot_loss_slices`: PNG figures;
* :func:`write_report`: a report folder (``report.json``, ``report.md`` and the figures).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..attacks import attack_context
from ..figures import pyplot, save_figure
from ..fileio import atomic_write_text
from ..losses import get_loss
from .statistics import accuracy_interval

__all__ = ["markdown_table", "loss_along_ray", "plot_robust_accuracy", "plot_loss_slices", "write_report"]


def _with_interval(acc: Any, n: Any) -> str:
    """``"85.20 [82.47, 87.62]"``: an accuracy and its 95 % Clopper–Pearson interval, in %."""
    lo, hi = accuracy_interval(float(acc), int(n or 0))
    if lo != lo:
        return f"{100 * float(acc):.2f}"
    return f"{100 * float(acc):.2f} [{100 * lo:.2f}, {100 * hi:.2f}]"


def markdown_table(reports: Mapping[str, Mapping[str, Any]], *, intervals: bool = False) -> str:
    """The MMA paper's table for several models: ``reports`` maps a model name to a report
    dict (:meth:`EvalReport.to_dict` or ``wideberth evaluate --json``). Every report must
    cover the same ε grid and norm. Values in percent, two decimals; ``intervals``: clean
    and robust accuracies followed by their 95 % Clopper–Pearson interval ``[lo, hi]``
    (computed from the report's ``n``; AvgAcc and AvgRobAcc are means, given without)."""
    if not reports:
        raise ValueError("no reports to tabulate")
    first = next(iter(reports.values()))
    grid = list(first["robust_accuracy"])
    for name, r in reports.items():
        if list(r["robust_accuracy"]) != grid or r.get("norm") != first.get("norm"):
            raise ValueError(f"report {name!r} covers another ε grid or norm than the first; "
                             "compare models evaluated on the same grid")
    head = ["Model", "Cln Acc", "AvgAcc", "AvgRobAcc"] + [f"ε={e}" for e in grid]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for name, r in reports.items():
        if intervals:
            n = r.get("n")
            row = [name, _with_interval(r["clean_accuracy"], n)]
            row += [f"{100 * float(r[k]):.2f}" for k in ("avg_acc", "avg_rob_acc")]
            row += [_with_interval(r["robust_accuracy"][e], n) for e in grid]
            lines.append("| " + " | ".join(row) + " |")
            continue
        cells = [name, r["clean_accuracy"], r["avg_acc"], r["avg_rob_acc"]]
        cells += [r["robust_accuracy"][e] for e in grid]
        lines.append("| " + " | ".join([cells[0]] + [f"{100 * float(v):.2f}" for v in cells[1:]]) + " |")
    return "\n".join(lines) + "\n"


def loss_along_ray(
    model: nn.Module, x: Tensor, delta: Tensor, y: Tensor, n: int = 11, loss: str = "lm"
) -> Tensor:
    """``loss(model(x + t·δ), y)`` for ``t`` in ``linspace(0, 1, n)``: ``[B, n]``.

    MMA Fig. 3 (Ding et al., ICLR 2020, §2.4) plots the logit margin LM along the segment
    from x to a PGD perturbation that failed. Shapes: x, δ ``[B, ...]`` (x + δ in [0, 1]), y ``[B]``."""
    if n < 2:
        raise ValueError(f"n must be >= 2 points along the ray; got {n}")
    fn = get_loss(loss)
    ts = torch.linspace(0, 1, n, device=x.device, dtype=x.dtype)
    out = []
    with torch.no_grad(), attack_context(model):
        for t in ts:
            out.append(fn(model((x + t * delta).clamp(0, 1)), y))
    return torch.stack(out, 1).cpu()


def robust_accuracy_figure(reports: Mapping[str, Mapping[str, Any]], *,
                           title: str | None = None) -> Any:
    """Robust accuracy (%) against ε, one line per report (ε = 0: clean accuracy), each
    labelled with its AvgRobAcc (Ding et al. 2020, Table 1). Every report must use the same
    norm. Returns the matplotlib ``Figure``."""
    from ..figures import eps_label, finish_figure, norm_symbol

    if not reports:
        raise ValueError("no reports to plot")
    norms = {r.get("norm") for r in reports.values()}
    if len(norms) > 1:
        raise ValueError(f"the reports use different norms {sorted(map(str, norms))}; "
                         "plot each norm on its own figure")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for i, (name, r) in enumerate(reports.items()):
        eps = [0.0] + [float(e) for e in r["robust_accuracy"]]
        acc = [float(r["clean_accuracy"])] + [float(v) for v in r["robust_accuracy"].values()]
        label = name + (f" (AvgRobAcc {100 * float(r['avg_rob_acc']):.1f} %)"
                        if r.get("avg_rob_acc") is not None else "")
        # the colour cycle has 10 colours: later curves get another line style and marker
        style = ("-", "o") if i < 10 else ("--", "s")
        ax.plot(eps, [100 * a for a in acc], linestyle=style[0], marker=style[1], label=label)
    first = next(iter(reports.values()))
    norm = first.get("norm")
    ax.set_xlabel(eps_label(norm))
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or f"{norm_symbol(norm)} robust accuracy against ε", fontsize=10)
    suite = first.get("suite")
    attacks = first.get("attacks")
    caption = (f"Attacks: the {suite!r} suite" + (f" ({', '.join(attacks)})" if attacks else "")
               + f" on {first.get('n')} test inputs; ε = 0 is clean accuracy."
               if suite else "ε = 0 is clean accuracy.")
    return finish_figure(fig, caption)


def plot_robust_accuracy(reports: Mapping[str, Mapping[str, Any]], path: str | Path, *,
                         title: str | None = None) -> Path:
    """:func:`robust_accuracy_figure` written to the PNG ``path``; returns the path."""
    return save_figure(robust_accuracy_figure(reports, title=title), path)


_LOSS_UNITS = {"LM": "logit units", "SLM": "logit units", "CW": "logit units", "CE": "nats"}


def loss_slices_figure(curves: Tensor, *, title: str | None = None, loss: str = "LM") -> Any:
    """MMA Fig. 3 (Ding et al. 2020, §2.4): one line per example, the loss ``curves``
    [B, n] at n positions 0, …, 1 along the segment x → x + δ (:func:`loss_along_ray`).
    Returns the matplotlib ``Figure``."""
    from ..figures import finish_figure

    plt = pyplot()
    c = curves.detach().float().cpu()
    ts = torch.linspace(0, 1, c.shape[1])
    fig, ax = plt.subplots(figsize=(5.0, 3.4), dpi=120)
    for row in c:
        ax.plot(ts.numpy(), row.numpy(), color="#3b6ea5", alpha=0.35, lw=1)
    ax.axhline(0, color="#c0392b", lw=1, ls="--")
    name = loss.upper()
    ax.set_xlabel("position t along the perturbation (0: x, 1: x + δ; fraction)")
    ax.set_ylabel(f"{name} ({_LOSS_UNITS.get(name, 'loss value')})")
    ax.set_title(title or f"{name} along {c.shape[0]} failed PGD perturbations", fontsize=10)
    caption = ("Each line: one test input x, the loss at x + t·δ, where δ is a PGD perturbation "
               "(failed: it did not change the prediction). Red dashed line: loss 0"
               + (", the decision boundary (above it the point is misclassified)." if name == "LM"
                  else "."))
    return finish_figure(fig, caption)


def plot_loss_slices(curves: Tensor, path: str | Path, *, title: str | None = None,
                     loss: str = "LM") -> Path:
    """:func:`loss_slices_figure` written to the PNG ``path``; returns the path."""
    return save_figure(loss_slices_figure(curves, title=title, loss=loss), path)


def write_report(
    report: Mapping[str, Any],
    out_dir: str | Path,
    *,
    name: str = "model",
    margins: Tensor | None = None,
    loss_curves: Tensor | None = None,
) -> list[Path]:
    """A report folder: ``report.json``, ``report.md`` (table, flags, attack attribution,
    margin statistics when given), ``robust_accuracy.png``, and ``margins.png`` /
    ``loss_slices.png`` when ``margins`` [N] / ``loss_curves`` [B, n] are given. Every file
    is written atomically. Returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    md = [f"# Robustness report: {name}", ""]
    md.append(f"{report.get('n')} examples, norm {report.get('norm')}, suite {report.get('suite')}"
              + (f" ({', '.join(report['attacks'])})" if report.get("attacks") else ""))
    md += ["", markdown_table({name: report}, intervals=True),
           "Accuracies in %, with their 95 % Clopper–Pearson (exact binomial) interval "
           f"over the {report.get('n')} examples in brackets.", ""]
    flags: Sequence[str] = report.get("flags") or []
    md += ["## Sanity flags", ""] + ([f"- {f}" for f in flags] or ["None fired."]) + [""]
    if report.get("broken_by"):
        md += ["## Which attack broke each example first", ""]
        attacks = list(report.get("attacks") or next(iter(report["broken_by"].values())))
        md.append("| ε | " + " | ".join(attacks) + " |")
        md.append("|---:|" + "---:|" * len(attacks))
        for e, counts in report["broken_by"].items():
            md.append(f"| {e} | " + " | ".join(str(counts.get(a, 0)) for a in attacks) + " |")
        md.append("")
    if report.get("margins"):
        m = report["margins"]
        md += ["## Margins (minimal-norm estimates; misclassified = 0)", "",
               f"mean {m['mean']:.4f}, q1 {m['q1']:.4f}, median {m['median']:.4f}, q3 {m['q3']:.4f}"
               f" over {m['n']} examples", ""]
        below = m.get("fraction_below") or {}
        if below:
            md += ["Robust accuracy the margins imply, an optimistic upper bound (attack "
                   "distances bound margins from above): "
                   + ", ".join(f"ε={float(e):g}: {100 * (1 - float(f)):.2f}%" for e, f in below.items()),
                   ""]
    paths.append(out / "report.md")
    atomic_write_text(paths[-1], "\n".join(md))
    paths.append(out / "report.json")
    atomic_write_text(paths[-1], json.dumps(dict(report), indent=2) + "\n")
    paths.append(plot_robust_accuracy({name: report}, out / "robust_accuracy.png"))
    if margins is not None:
        from .plots import margin_histogram

        paths.append(margin_histogram(margins, out / "margins.png", norm=str(report.get("norm"))))
    if loss_curves is not None and loss_curves.shape[0] > 0:
        paths.append(plot_loss_slices(loss_curves, out / "loss_slices.png"))
    return paths
