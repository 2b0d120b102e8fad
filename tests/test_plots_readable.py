"""Every figure of the library is readable: labelled axes with units, human legend names,
and a caption that defines every term the figure uses."""

from __future__ import annotations

import re

import pytest
import torch

from wideberth.evaluation.plots import (
    decision_boundary_figure,
    margin_histogram_figure,
    margin_histogram_grid_figure,
    margin_histograms_by_epoch_figure,
    training_curves,
    training_curves_figure,
)
from wideberth.evaluation.report import loss_slices_figure, robust_accuracy_figure
from wideberth.figures import METRIC_LABELS, TERMS, figure_caption, glossary, metric_label, pyplot
from wideberth.minmax.diagnostics import weight_trajectory_figure

# an axis label must name a unit, or be one of these explicitly unit-free quantities
UNITS = ("pixel scale", "(%)", "(count", "logit units", "nats", "fraction", "(in [0, 1])", "(s)")
UNIT_FREE = ("epoch", "loss", "APGDA iteration")


def _records():
    g = torch.Generator().manual_seed(0)
    out = []
    for e in (1, 2, 3):
        out.append({"event": "epoch", "epoch": e, "step": 4 * e, "lr": 0.1, "train_loss": 2.0 / e,
                    "train_accuracy": 0.3 * e, "epoch_time": 0.5, "val_loss": 2.2 / e,
                    "val_clean_accuracy": 0.25 * e, "val_pgd_accuracy": 0.1 * e,
                    "val_anpgd_margin": 0.05 * e, "mma_eps_mean": 0.02 * e, "mma_eps_hist": [1, 2]})
        out.append({"event": "margins", "epoch": e, "split": "train", "norm": "l2", "method": "fmn",
                    "median": 0.3, "distances": torch.rand(20, generator=g).tolist() + [None]})
    return out


def _report(acc):
    return {"norm": "linf", "suite": "quick", "attacks": ["apgd-ce", "apgd-t"], "n": 100,
            "clean_accuracy": acc, "robust_accuracy": {"0.1": acc / 2, "0.3": acc / 4},
            "avg_acc": acc / 2, "avg_rob_acc": acc * 3 / 8}


def _toy_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 3))


MARGINS = torch.tensor([0.0, 0.0, 0.1, 0.25, 0.4, float("inf")])
BUILDERS = {
    "margin_histogram": lambda: margin_histogram_figure(MARGINS, norm="linf"),
    "margin_histogram_grid": lambda: margin_histogram_grid_figure(
        {"model A": MARGINS, "model B": MARGINS * 2, "model C": MARGINS / 2}, norm="l2", columns=2),
    "margins_by_epoch": lambda: margin_histograms_by_epoch_figure(_records()),
    "training_curves": lambda: training_curves_figure(_records(), norm="linf"),
    "robust_accuracy": lambda: robust_accuracy_figure({"model A": _report(0.9), "model B": _report(0.6)}),
    "loss_slices": lambda: loss_slices_figure(torch.randn(4, 11, generator=torch.Generator().manual_seed(1))),
    "weight_trajectory": lambda: weight_trajectory_figure(
        torch.softmax(torch.randn(6, 4, 3), dim=2), ["ensemble member 1", "member 2", "member 3"]),
    "decision_boundary": lambda: decision_boundary_figure(
        _toy_model(), torch.rand(30, 1, 1, 2), torch.randint(0, 3, (30,)),
        margins=torch.rand(30) * 0.1, resolution=40),
}


def _shown_text(fig):
    """Everything the figure shows but its caption (collected here, not by the library)."""
    texts = [t.get_text() for t in fig.texts if figure_caption(fig) != " ".join(t.get_text().split())]
    for ax in fig.axes:
        if ax.get_visible():
            texts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()] + [t.get_text() for t in ax.texts]
            if ax.get_legend():
                texts += [t.get_text() for t in ax.get_legend().get_texts()]
    return [t for t in texts if t]


def _legend_texts(fig):
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


@pytest.fixture(params=sorted(BUILDERS))
def figure(request):
    fig = BUILDERS[request.param]()
    yield fig
    pyplot().close(fig)


def test_every_axis_is_labelled_with_a_unit(figure):
    visible = [ax for ax in figure.axes if ax.get_visible()]
    assert visible
    for ax in visible:
        for label in (ax.get_xlabel() or figure.get_supxlabel(), ax.get_ylabel() or figure.get_supylabel()):
            assert label.strip(), "an axis has no label"
            assert any(u in label for u in UNITS) or label in UNIT_FREE, label


def test_legends_use_human_names(figure):
    for text in _legend_texts(figure):
        assert "_" not in text and text not in METRIC_LABELS, text


def test_every_term_shown_is_defined_in_the_caption(figure):
    caption = figure_caption(figure)
    assert caption, "no caption"
    shown = "\n".join(_shown_text(figure))
    for term in TERMS:
        if term.used_in(shown) or term.used_in(caption):
            assert term.definition in caption, f"{term.name!r} is used but not defined"
    # ... and nothing is defined that the figure (or another definition) does not use
    defined = [t for t in TERMS if t.definition in caption]
    rest = caption
    for t in defined:
        rest = rest.replace(t.definition, "")
    for t in defined:
        others = " ".join(d.definition for d in defined if d is not t)
        assert t.used_in(shown) or t.used_in(rest) or t.used_in(others), f"{t.name!r} defined, never used"


def test_the_paper_terms_appear_with_their_definitions():
    slices = loss_slices_figure(torch.zeros(2, 5))
    assert slices.axes[0].get_ylabel() == "LM (logit units)"
    assert "LM (logit margin loss) = max_{j≠y} z_j − z_y" in figure_caption(slices)
    hist = margin_histogram_figure(MARGINS, norm="l2")
    assert "2 misclassified (margin 0), 1 not found" in hist.axes[0].texts[0].get_text()
    assert "Misclassified = 0: an input the model already gets wrong has margin 0." in figure_caption(hist)
    assert hist.axes[0].get_xlabel() == "margin (ℓ2 distance, pixel scale [0, 1])"
    acc = robust_accuracy_figure({"model A": _report(0.8)})
    assert acc.axes[0].get_xlabel() == "ε (ℓ∞ radius, pixel scale [0, 1])"
    assert _legend_texts(acc) == ["model A (AvgRobAcc 30.0 %)"]
    assert "AvgRobAcc: robust accuracy averaged over the ε grid" in figure_caption(acc)
    assert "LM" not in re.sub(r"\s", " ", figure_caption(acc)).split()  # not used: not defined
    for f in (slices, hist, acc):
        pyplot().close(f)


def test_training_curves_put_each_metric_on_the_axis_of_its_unit(tmp_path):
    fig = training_curves_figure(_records(), norm="l2")
    loss_ax, acc_ax, dist_ax = fig.axes
    assert _legend_texts(fig) == [
        "training loss (the method's objective)", "validation loss (cross-entropy)",
        "training accuracy", "validation clean accuracy", "validation PGD robust accuracy",
        "validation AN-PGD margin", "MMA mean per-example ε",
    ]
    assert acc_ax.get_ylabel() == "accuracy (%)"
    assert list(acc_ax.get_lines()[0].get_ydata()) == pytest.approx([30.0, 60.0, 90.0])  # percent
    assert dist_ax.get_ylabel() == "ε or margin (ℓ2 distance, pixel scale [0, 1])"
    assert list(dist_ax.get_lines()[0].get_ydata()) == pytest.approx([0.05, 0.10, 0.15])
    assert loss_ax.get_xlabel() == "epoch"
    pyplot().close(fig)
    path = training_curves(_records(), tmp_path / "c.png")  # the writer still writes a PNG
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_metric_labels_and_glossary():
    assert metric_label("val_clean_accuracy") == "validation clean accuracy"
    assert metric_label("val_foo_bar") == "validation foo bar"
    assert metric_label("train_pgd_accuracy") == "training pgd accuracy"
    assert all("_" not in v for v in METRIC_LABELS.values())
    text = glossary(["AN-PGD margin"])  # AN-PGD's definition uses PGD and MMA: defined too
    for name in ("AN-PGD", "PGD", "MMA", "margin"):
        assert next(t for t in TERMS if t.name == name).definition in text
    assert glossary(["the logit margin"]) == ""  # "logit margin" is not a distance margin
    with pytest.raises(ValueError, match="different norms"):
        robust_accuracy_figure({"a": _report(0.5), "b": {**_report(0.5), "norm": "l2"}})
