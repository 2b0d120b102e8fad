"""Clopper–Pearson intervals, McNemar's exact test, and what `compare` says about them."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import wideberth as wb
from wideberth.cli import main
from wideberth.evaluation.comparison import measurement_notes, paired_tests
from wideberth.evaluation.statistics import clopper_pearson, mcnemar


@pytest.mark.parametrize("n", [1, 7, 50, 1000])
def test_clopper_pearson_closed_forms_at_the_ends(n):
    lo, hi = clopper_pearson(0, n)
    assert lo == 0 and hi == pytest.approx(1 - 0.025 ** (1 / n), rel=1e-10)
    lo, hi = clopper_pearson(n, n)
    assert hi == 1 and lo == pytest.approx(0.025 ** (1 / n), rel=1e-10)


def test_clopper_pearson_tabulated_value_and_coverage():
    # k = 5 of n = 10: the textbook exact 95 % interval (0.1871, 0.8129)
    lo, hi = clopper_pearson(5, 10)
    assert lo == pytest.approx(0.187086, abs=1e-6) and hi == pytest.approx(0.812914, abs=1e-6)
    # exact coverage P_p[lo(K) <= p <= hi(K)] >= 95 % for every p (conservative)
    n = 20
    bounds = [clopper_pearson(k, n) for k in range(n + 1)]
    for p in [i / 97 for i in range(1, 97)]:
        cover = sum(math.comb(n, k) * p**k * (1 - p) ** (n - k)
                    for k, (a, b) in enumerate(bounds) if a <= p <= b)
        assert cover >= 0.95 - 1e-12, p


def test_mcnemar_exact_p_value_by_hand():
    t = mcnemar(1, 9)
    assert t["p_value"] == 0.021484375  # 2 * (C(10,0) + C(10,1)) / 2**10, exactly
    assert t["mid_p"] == pytest.approx((22 - 10) / 1024)
    assert t["chi2"] == pytest.approx((8 - 1) ** 2 / 10)
    assert mcnemar(9, 1)["p_value"] == t["p_value"]
    assert mcnemar(4, 4)["p_value"] == 1.0 and mcnemar(0, 0)["p_value"] == 1.0
    with pytest.raises(ValueError):
        mcnemar(-1, 2)


def reports():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = 0.3 + 0.4 * torch.rand(80, 1, 4, 4)
    y = model(x).argmax(1)
    kw = dict(norm="linf", epsilons=[0.02, 0.05], batch_size=40, sanity=False)
    a = wb.evaluate(model, x, y, suite="quick", **kw)
    b = wb.evaluate(model, x, y, suite=[wb.evaluation.AttackSpec("fgsm", 1)], **kw)
    return a, b


def test_report_json_holds_intervals_and_per_example_results_and_pairs_them():
    a, b = reports()
    da, db = a.to_dict(), b.to_dict()
    assert da["clean_accuracy_ci"] == list(clopper_pearson(round(da["clean_accuracy"] * 80), 80))
    k = round(da["robust_accuracy"]["0.05"] * 80)
    assert da["robust_accuracy_ci"]["0.05"] == list(clopper_pearson(k, 80))
    assert da["per_example"]["ids"] == list(range(80))
    fb = torch.tensor(da["per_example"]["first_broken"])
    assert float((fb > 1).double().mean()) == da["robust_accuracy"]["0.05"]
    (row,) = paired_tests({"a": da, "b": db})
    ra, rb = ~a.success[1], ~b.success[1]  # robust at 0.05
    assert row["tests"]["0.05"]["b"] == int((ra & ~rb).sum())
    assert row["tests"]["0.05"]["c"] == int((rb & ~ra).sum())
    assert row["tests"]["clean"]["p_value"] == 1.0  # same model, same clean predictions
    assert measurement_notes({"a": da, "b": db})[0].startswith(
        "rows measured with different suites: a: quick; b: custom")
    other = json.loads(json.dumps(db))
    other["per_example"]["ids"] = list(range(1, 81))
    (row,) = paired_tests({"a": da, "b": other})
    assert "different examples" in row["skipped"]


def test_compare_prints_intervals_notes_and_mcnemar(tmp_path, capsys):
    a, b = reports()
    (tmp_path / "a.json").write_text(a.to_json())
    (tmp_path / "b.json").write_text(b.to_json())
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    lo, hi = a.to_dict()["robust_accuracy_ci"]["0.05"]
    assert f"{100 * a.robust_accuracy['0.05']:.2f} [{100 * lo:.2f}, {100 * hi:.2f}]" in out
    assert "NOTE: rows measured with different suites" in out
    assert "NOTE: rows measured with different attack lists" in out
    assert "McNemar a vs b, ε=0.05:" in out and "exact two-sided p=" in out
