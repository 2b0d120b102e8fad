"""Domain weights as a diagnostic: summaries, the saved file, the trajectory plot."""

from __future__ import annotations

import json
import math

import pytest
import torch

from wideberth.minmax.diagnostics import plot_weight_trajectory, save_weights, summarize_weights


def test_summary_of_hand_made_weights():
    w = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [1.0, 0.0, 0.0]])
    s = summarize_weights(w, ["A", "B", "C"])
    assert s["mean"] == pytest.approx({"A": 0.6, "B": 0.325, "C": 0.075})
    assert s["hardest"] == "A" and s["hardest_count"] == {"A": 3, "B": 1, "C": 0}
    h = [-(r * r.clamp_min(1e-300).log()).sum() for r in w.double()]
    assert s["entropy"] == pytest.approx(float(sum(h) / 4))
    uniform = summarize_weights(torch.full((2, 4), 0.25))
    assert uniform["entropy"] == pytest.approx(math.log(4))
    with pytest.raises(ValueError, match="one name per domain"):
        summarize_weights(w, ["A", "B"])


def test_saved_weights_and_plot(tmp_path):
    traj = torch.softmax(torch.randn(11, 5, 3), dim=2)
    png = plot_weight_trajectory(traj, tmp_path / "w.png", ["m1", "m2", "m3"])
    assert png.stat().st_size > 1000
    path = save_weights(traj[-1], tmp_path / "w.json", ["m1", "m2", "m3"], {"method": "minmax"})
    doc = json.loads(path.read_text())
    assert doc["domains"] == ["m1", "m2", "m3"] and len(doc["weights"]) == 5
    assert doc["method"] == "minmax" and doc["summary"]["hardest"] in {"m1", "m2", "m3"}
    with pytest.raises(ValueError, match="T\\+1, B, K"):
        plot_weight_trajectory(traj[0], tmp_path / "bad.png")
