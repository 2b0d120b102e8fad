"""The verdict logic of benchmarks/reproduce.py (the results page's claims) on synthetic
evaluations: each verdict follows the stated rule, and unmeasured claims say so."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce.py"


@pytest.fixture(scope="module")
def rp():
    spec = importlib.util.spec_from_file_location("reproduce", _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["reproduce"] = mod  # dataclasses look their module up while it loads
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop("reproduce", None)


def _ev(clean: float, avg: float, rob: float = 0.3) -> dict:
    return {"linf": {"clean_accuracy": clean, "avg_acc": avg,
                     "robust_accuracy": {"0.05": rob, "0.1": rob, "0.15": rob, "0.2": rob}}}


def _verdict(rp, ev: dict, start: str) -> tuple[str, str]:
    (c,) = [c for c in rp.claims(ev, 500) if c.text.startswith(start)]
    return c.verdict, c.numbers


def test_two_standard_errors_rule(rp):
    # n = 500, p ≈ 0.5: two SE of a difference is about 6.3 points
    assert rp._compare(0.57, 0.50, 500) == "higher"
    assert rp._compare(0.55, 0.50, 500) == "tie"
    assert rp._compare(0.43, 0.50, 500) == "lower"


@pytest.mark.parametrize(("mma", "verdict"), [(0.50, "agrees"), (0.31, "inconclusive"), (0.10, "disagrees")])
def test_large_eps_claim_follows_avgacc(rp, mma, verdict):
    ev = {"pgd-at-0.3": _ev(0.5, 0.30), "mma-0.3": _ev(0.8, mma)}
    assert _verdict(rp, ev, "MMA (Ding et al.)")[0] == verdict


def test_unbuilt_runs_are_not_measured(rp):
    assert {c.verdict for c in rp.claims({}, 500)} == {"not yet measured"}


def test_ensemble_claim_uses_the_paired_test(rp):
    def ens(m, a):
        return {rp.ENSEMBLE: {"n": len(m), "methods": {
            "minmax": {"asr_all": sum(m) / len(m), "fooled_all": m},
            "avg": {"asr_all": sum(a) / len(a), "fooled_all": a}}}}

    # 10 more images fooled, all discordant one way: z = 10/√10 ≈ 3.2 although the
    # unpaired difference (2 points at n = 500) is far inside two SE
    m, a = [1] * 110 + [0] * 390, [1] * 100 + [0] * 400
    verdict, numbers = _verdict(rp, ens(m, a), "Min-max ensemble attack")
    assert verdict == "agrees" and "z = 3.2" in numbers
    # the same totals with swapped discordant images: no evidence either way
    a2 = [0] * 10 + [1] * 100 + [0] * 390
    m2 = [1] * 10 + [0] * 10 + [1] * 90 + [0] * 390
    assert sum(m2) == sum(a2)
    assert _verdict(rp, ens(m2, a2), "Min-max ensemble attack")[0] == "inconclusive"


def test_margin_dynamics_claim_reads_the_tracked_train_margins(rp):
    track = [{"split": "train", "epoch": e, "mean_correct": v, "misclassified": 5, "n": 200,
              "mean": v} for e, v in ((1, 1.0), (8, 0.6))]
    verdict, numbers = _verdict(rp, {"standard": {"margin_track": track}}, "Wu & Yu §3")
    assert verdict == "agrees" and "1.000 → epoch 8 0.600" in numbers
    track[1]["mean_correct"] = 1.2
    assert _verdict(rp, {"standard": {"margin_track": track}}, "Wu & Yu §3")[0] == "disagrees"
