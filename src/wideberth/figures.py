"""Matplotlib without a display, and the words every figure of the library uses.

Every plot of the library (evaluation reports, margin histograms, training curves, min-max
weight trajectories) goes through this module:

* :func:`pyplot` (the Agg backend, imported on first use) and :func:`save_figure` (PNG,
  written atomically, so a half-written image never replaces a good one);
* one vocabulary: :data:`METRIC_LABELS` / :func:`metric_label` turn ``metrics.jsonl`` keys
  into human names (``val_clean_accuracy`` → "validation clean accuracy");
  :func:`eps_label` and :func:`distance_label` are the axis labels of radii and distances,
  with their norm and scale;
* captions that define their terms: :data:`TERMS` holds the definition of every
  abbreviation or convention a figure may show (LM, AvgRobAcc, "misclassified = 0", FMN,
  ...), and :func:`finish_figure` writes a caption under the axes that defines each term
  the figure's text uses (:func:`figure_caption` reads it back).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .fileio import atomic_path

__all__ = [
    "METRIC_LABELS",
    "TERMS",
    "Term",
    "distance_label",
    "eps_label",
    "figure_caption",
    "figure_texts",
    "finish_figure",
    "glossary",
    "metric_label",
    "norm_symbol",
    "pyplot",
    "save_figure",
]

PIXEL_SCALE = "pixel scale [0, 1]"
CAPTION_GID = "wideberth-caption"


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save ``fig`` to ``path`` (PNG, parent folders created) atomically, close it, and
    return the path."""
    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path, suffix=path.suffix or ".png") as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)
    return path


# --------------------------------------------------------------------------- labels

_NORMS = {"linf": "ℓ∞", "l2": "ℓ2", "l1": "ℓ1"}


def norm_symbol(norm: str | None) -> str:
    """``"linf"`` → ``"ℓ∞"``, ``"l2"`` → ``"ℓ2"``, ``"l1"`` → ``"ℓ1"`` (anything else as given)."""
    return _NORMS.get(str(norm).lower(), str(norm)) if norm else ""


def eps_label(norm: str | None) -> str:
    """The axis label of a perturbation radius: ``"ε (ℓ∞ radius, pixel scale [0, 1])"``."""
    sym = norm_symbol(norm)
    return f"ε ({sym + ' radius, ' if sym else 'radius, '}{PIXEL_SCALE})"


def distance_label(norm: str | None, what: str = "margin") -> str:
    """The axis label of a distance in input space: ``"margin (ℓ2 distance, pixel scale [0, 1])"``."""
    sym = norm_symbol(norm)
    return f"{what} ({sym + ' ' if sym else ''}distance, {PIXEL_SCALE})"


METRIC_LABELS: dict[str, str] = {
    "train_loss": "training loss (the method's objective)",
    "train_accuracy": "training accuracy",
    "train_clean_accuracy": "training clean accuracy",
    "lr": "learning rate",
    "epoch_time": "epoch time (s)",
    "val_loss": "validation loss (cross-entropy)",
    "val_clean_accuracy": "validation clean accuracy",
    "val_pgd_accuracy": "validation PGD robust accuracy",
    "val_anpgd_margin": "validation AN-PGD margin",
    "clean_accuracy": "clean accuracy",
    "loss": "loss",
    "avg_acc": "AvgAcc",
    "avg_rob_acc": "AvgRobAcc",
    "eps": "training ε",
    "mma_eps_mean": "MMA mean per-example ε",
    "mma_dropped_frac": "MMA fraction of correct examples dropped by the hinge",
    "mma_wrong_frac": "MMA fraction of misclassified examples",
    "mma_visited": "MMA examples visited",
    "amr_reg": "average-margin regulariser",
    "amr_active_fraction": "average-margin active fraction",
}
"""Human names of ``metrics.jsonl`` keys, used by every legend of the library."""

_PREFIXES = (("val_", "validation "), ("train_", "training "), ("test_", "test "))


def metric_label(key: str) -> str:
    """The human name of a metric key: :data:`METRIC_LABELS`, else the key with its
    ``val_`` / ``train_`` / ``test_`` prefix spelled out and underscores as spaces
    (``val_foo_bar`` → "validation foo bar")."""
    if key in METRIC_LABELS:
        return METRIC_LABELS[key]
    for prefix, words in _PREFIXES:
        if key.startswith(prefix):
            rest = key[len(prefix):]
            return words + METRIC_LABELS.get(rest, rest.replace("_", " "))
    return key.replace("_", " ")


# --------------------------------------------------------------------------- terms


@dataclass(frozen=True)
class Term:
    """An abbreviation or convention a figure may show: its ``name``, the ``pattern``
    (regular expression) that finds it in a figure's text, and its ``definition``."""

    name: str
    pattern: str
    definition: str

    def used_in(self, text: str) -> bool:
        """Whether ``text`` uses the term."""
        return re.search(self.pattern, text) is not None


TERMS: tuple[Term, ...] = (
    Term("ε", r"ε", "ε: the radius of the threat model's ball around each input, on the "
         "pixel scale [0, 1]."),
    Term("robust accuracy", r"(?i)robust accuracy", "Robust accuracy: the share of inputs "
         "still classified correctly when attacked within the ε-ball."),
    Term("clean accuracy", r"(?i)clean accuracy", "Clean accuracy: accuracy on the "
         "unperturbed inputs."),
    Term("AvgRobAcc", r"AvgRobAcc", "AvgRobAcc: robust accuracy averaged over the ε grid "
         "(Ding et al. 2020, Table 1)."),
    Term("AvgAcc", r"AvgAcc", "AvgAcc: the average of clean accuracy and the robust "
         "accuracies of the ε grid (Ding et al. 2020, Table 1)."),
    Term("margin", r"(?i)(?<!logit )(?<!max-)\bmargins?\b", "Margin: the distance from an input to "
         "the model's decision boundary, i.e. the smallest perturbation that changes its "
         "prediction, as estimated (an attack's estimate bounds it from above)."),
    Term("misclassified = 0", r"(?i)misclassified\s*=\s*0|margin 0(?![.\d])",
         "Misclassified = 0: an input the model already gets wrong has margin 0."),
    Term("not found", r"(?i)not found|of those found", "Not found: no adversarial example "
         "within the attack's search range; such inputs are left out of the bars and the mean."),
    Term("LM", r"\bLM\b", "LM (logit margin loss) = max_{j≠y} z_j − z_y, the largest "
         "wrong-class logit minus the true-class logit (z: logits); LM ≥ 0 means misclassified."),
    Term("SLM", r"\bSLM\b", "SLM (soft logit margin loss) = log Σ_{j≠y} exp z_j − z_y "
         "(z: logits), a smooth upper bound of the logit margin loss."),
    Term("CE", r"\bCE\b", "CE (cross-entropy) = log Σ_j exp z_j − z_y (z: logits)."),
    Term("CW", r"\bCW\b(?!-)", "CW: Carlini & Wagner's (2017) margin loss, the logit "
         "margin capped at κ."),
    Term("CW-ℓ2", r"CW-ℓ2|\bcw-l2\b", "CW-ℓ2: Carlini & Wagner's (2017) minimal-ℓ2 attack."),
    Term("DLR", r"\bDLR\b", "DLR: the difference-of-logits-ratio loss (Croce & Hein 2020)."),
    Term("FGSM", r"(?i)\bfgsm\b|\bFGM\b", "FGSM / FGM: one gradient step of size ε (Goodfellow "
         "et al. 2015)."),
    Term("PGD", r"(?i)(?<![-\w])pgd\b", "PGD: projected gradient descent, the iterated "
         "steepest-ascent attack projected onto the ε-ball (Madry et al. 2018)."),
    Term("APGD-CE", r"(?i)\bapgd-ce\b", "APGD-CE: AutoAttack's step-size-free PGD on the "
         "cross-entropy (Croce & Hein 2020)."),
    Term("APGD-T", r"(?i)\bapgd-t\b", "APGD-T: targeted APGD on the DLR loss over the top "
         "classes (Croce & Hein 2020)."),
    Term("Square", r"(?i)\bsquare\b", "Square: a gradient-free random-search attack "
         "(Andriushchenko et al. 2020)."),
    Term("AN-PGD", r"AN-PGD|\banpgd\b", "AN-PGD: MMA's adaptive-norm PGD, a search for the "
         "smallest ε at which PGD succeeds (Ding et al. 2020)."),
    Term("FMN", r"(?i)\bfmn\b", "FMN: the fast minimum-norm attack (Pintor et al. 2021)."),
    Term("MMA", r"\bMMA\b", "MMA: max-margin adversarial training (Ding et al., ICLR 2020)."),
    Term("APGDA", r"APGDA", "APGDA: alternating projected gradient descent–ascent, the "
         "solver of the min-max attack (Wang et al. 2021)."),
    Term("domain weight", r"(?i)domain weight", "Domain weight: the share of the attack "
         "loss a domain (model, input or transformation) gets; the weights of a row sum to 1, "
         "and a high weight marks a domain that is hard to attack."),
)
"""Every term a figure of the library may use, with its definition (see :func:`glossary`)."""


def glossary(texts: Iterable[str], *, known: str = "") -> str:
    """The definitions of every :data:`TERMS` entry used in ``texts`` (or, in turn, in a
    definition given) and not already defined in ``known``, as one paragraph."""
    seen = "\n".join([*texts, known])
    found: list[str] = []
    grew = True
    while grew:  # a definition may use another term (AN-PGD uses PGD): define that too
        grew = False
        for t in TERMS:
            if t.definition not in found and t.definition not in known and t.used_in(seen):
                found.append(t.definition)
                seen += "\n" + t.definition
                grew = True
    return " ".join(t.definition for t in TERMS if t.definition in found)  # in TERMS order


def figure_texts(fig: Any) -> list[str]:
    """Every text a figure shows except its caption: titles, the suptitle, axis labels,
    legend entries and annotations (tick labels excluded)."""
    out: list[str] = []
    for t in fig.texts:
        if t.get_gid() != CAPTION_GID:
            out.append(t.get_text())
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        out += [ax.get_title(loc) for loc in ("left", "center", "right")]
        out += [ax.get_xlabel(), ax.get_ylabel()]
        out += [t.get_text() for t in ax.texts]
        legend = ax.get_legend()
        if legend is not None:
            out += [t.get_text() for t in legend.get_texts()]
    for which in ("suptitle", "supxlabel", "supylabel"):  # public getters from matplotlib 3.8
        getter = getattr(fig, f"get_{which}", None)
        artist = getattr(fig, f"_{which}", None)
        out.append(getter() if getter else (artist.get_text() if artist is not None else ""))
    return [s for s in out if s]


def figure_caption(fig: Any) -> str:
    """The caption :func:`finish_figure` wrote under ``fig`` (``""`` if none), unwrapped."""
    for t in fig.texts:
        if t.get_gid() == CAPTION_GID:
            return " ".join(t.get_text().split())
    return ""


def finish_figure(
    fig: Any,
    caption: str = "",
    *,
    xlabel: str = "",
    ylabel: str = "",
    fontsize: float = 7.0,
) -> Any:
    """Lay ``fig`` out and write ``caption`` under its axes, followed by the definition of
    every :data:`TERMS` entry its text uses (:func:`glossary`). ``xlabel`` / ``ylabel``
    label a grid of panels as a whole (matplotlib's ``supxlabel`` / ``supylabel``), placed
    above the caption. The figure grows by the caption's height, so the axes keep their
    size. Returns ``fig``."""
    if ylabel:
        fig.supylabel(ylabel, fontsize=8)
    known = " ".join((caption, xlabel))
    text = " ".join(s for s in (caption.strip(), glossary([*figure_texts(fig), xlabel], known=known)) if s)
    width, height = fig.get_figwidth(), fig.get_figheight()
    extra = 0.0
    if text:
        chars = max(30, int(width * 72 / (0.56 * fontsize)))  # about 0.56 em per character
        wrapped = textwrap.fill(text, chars, break_on_hyphens=False, break_long_words=False)
        extra = ((wrapped.count("\n") + 1) * fontsize * 1.3 + 8) / 72  # inches
        fig.set_figheight(height + extra)
        fig.text(0.01, 4 / 72 / (height + extra), wrapped, ha="left", va="bottom",
                 fontsize=fontsize, color="#333333", gid=CAPTION_GID)
    bottom = extra / (height + extra)
    if xlabel:
        fig.supxlabel(xlabel, fontsize=8, y=bottom, va="bottom")
    fig.tight_layout(rect=(0, bottom, 1, 1))
    return fig
