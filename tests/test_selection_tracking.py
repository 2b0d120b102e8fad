"""Robust checkpoint selection, margin tracking during training, and `wideberth plot`."""

from __future__ import annotations

import json

import pytest
import torch

from wideberth.attacks import margin_stats
from wideberth.config import ConfigError, apply_overrides, load_recipe
from wideberth.train import VALIDATION_METRICS, load_checkpoint, resume, train


def _cfg(*overrides):
    base = ["data.val_size=100", "data.train_subset=400", "data.batch_size=50", "run.epochs=3",
            "model.name=mlp", "model.params.hidden=[64]", "optim.lr=0.01"]
    return apply_overrides(load_recipe("digits-standard"), base + list(overrides))


def _records(run, event):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def test_robust_selection_metrics_need_an_eps():
    with pytest.raises(ConfigError, match="pgd_accuracy needs eval.eps > 0"):
        _cfg("eval.selection_metric=pgd_accuracy")
    with pytest.raises(ConfigError, match="anpgd_margin needs eval.margin_eps_max"):
        _cfg("eval.selection_metric=anpgd_margin", "eval.eps=0.1")


@pytest.mark.parametrize(
    "metric, extra",
    [("pgd_accuracy", ["eval.eps=0.1", "eval.attack_steps=5"]),
     ("anpgd_margin", ["eval.eps=0.1", "eval.attack_steps=5", "eval.margin_eps_max=0.3"])],
)
def test_best_checkpoint_follows_the_robust_metric(tmp_path, metric, extra):
    result = train(_cfg(f"eval.selection_metric={metric}", *extra), tmp_path / "r", progress=False)
    epochs = _records(result.run_dir, "epoch")
    values = [r[f"val_{metric}"] for r in epochs]
    assert all(0 <= v <= 1 for v in values)
    best_epoch = max(range(len(values)), key=lambda i: (values[i], -epochs[i]["val_loss"])) + 1
    assert result.best["epoch"] == best_epoch and result.best["value"] == pytest.approx(max(values))
    assert load_checkpoint(result.run_dir / "checkpoints/best.safetensors").meta["position"]["epoch"] == best_epoch


def test_pgd_accuracy_metric_is_below_clean_accuracy():
    from wideberth.data import tensors
    from wideberth.models import build_model

    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 10, hidden=[32]).eval()
    x, y = tensors("digits", "test", n=100)
    y = model(x).argmax(1)  # every point correct, so robust accuracy is a real drop from 1
    cfg = _cfg("eval.eps=0.2", "eval.attack_steps=10")
    robust = VALIDATION_METRICS["pgd_accuracy"].fn(model, x, y, cfg)
    assert robust < 0.9


def test_margin_tracking_logs_fixed_subsets_and_resumes_identically(tmp_path, interrupt_after):
    cfg = _cfg("track.every=2", "track.n_train=30", "track.n_test=20", "track.steps=30",
               "track.thresholds=[0.1, 0.5]")
    full = train(cfg, tmp_path / "full", progress=False)
    recs = _records(full.run_dir, "margins")
    assert [(r["epoch"], r["split"]) for r in recs] == [
        (1, "train"), (1, "test"), (2, "train"), (2, "test"), (3, "train"), (3, "test")
    ]
    for r in recs:
        d = torch.tensor([v if v is not None else float("inf") for v in r["distances"]])
        assert d.numel() == (30 if r["split"] == "train" else 20)
        stats = margin_stats(d, thresholds=[0.1, 0.5])
        assert r["median"] == pytest.approx(stats["median"])
        assert r["fraction_below"]["0.5"] == pytest.approx(stats["fraction_below"][0.5])
    # interrupted after epoch 1, then resumed: the same margins are logged
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", progress=False, callbacks=[interrupt_after(epoch=1)])
    resumed = resume(tmp_path / "cut", progress=False)
    again = _records(resumed.run_dir, "margins")
    assert [r["distances"] for r in again] == [r["distances"] for r in recs]


def test_plot_command_draws_fig4(tmp_path):
    from wideberth.cli import main

    result = train(_cfg("track.every=1", "track.n_train=20", "track.n_test=0", "track.steps=20"),
                   tmp_path / "r", progress=False)
    assert main(["plot", str(result.run_dir)]) == 0
    for name in ("training_curves.png", "margins_train.png"):
        assert (result.run_dir / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    assert not (result.run_dir / "plots" / "margins_test.png").exists()


def test_plot_draws_the_decision_boundary_of_a_toy2d_run(tmp_path):
    from wideberth.cli import main

    cfg = apply_overrides(load_recipe("toy2d-mma"), ["run.epochs=3"])
    result = train(cfg, tmp_path / "toy", progress=False)
    assert main(["plot", str(result.run_dir)]) == 0
    assert (result.run_dir / "plots" / "decision_boundary.png").read_bytes()[:4] == b"\x89PNG"


def test_margin_histogram_grid_lays_out_one_panel_per_model(tmp_path):
    import struct

    import pytest
    import torch

    from wideberth.evaluation.plots import margin_histogram_grid

    dists = {f"m{i}": torch.tensor([0.0, 0.1 * (i + 1), 0.2, float("inf")]) for i in range(5)}
    path = margin_histogram_grid(dists, tmp_path / "grid.png", norm="linf", columns=4)
    head = path.read_bytes()[:24]
    assert head[:4] == b"\x89PNG"
    width, height = struct.unpack(">II", head[16:24])  # the IHDR chunk
    # 5 panels in 4 columns: 2 rows of 2.6 x 2.0 inches (+0.4 for the title) at 120 dpi,
    # and the caption under them (its definitions of margin, misclassified = 0, not found)
    assert width == round(2.6 * 4 * 120)
    assert round((2 * 2.0 + 0.4) * 120) + 30 < height < round((2 * 2.0 + 0.4 + 1.0) * 120)
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically
    with pytest.raises(ValueError, match="at least one"):
        margin_histogram_grid({}, tmp_path / "none.png")


def test_tensorboard_callback_draws_margin_records_as_histograms():
    from wideberth.train import TensorBoardCallback

    calls = []

    class Writer:
        def add_histogram(self, tag, values, step):
            calls.append((tag, values.tolist(), step))

        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

        def flush(self):
            pass

    cb = TensorBoardCallback.__new__(TensorBoardCallback)  # no tensorboard needed here
    cb.writer, cb.scalars = Writer(), False
    cb.on_log(None, {"event": "margins", "epoch": 3, "split": "train", "distances": [0.5, None, 0.25]})
    cb.on_log(None, {"event": "margins", "epoch": 3, "split": "test", "distances": [None]})
    cb.on_log(None, {"event": "epoch", "epoch": 3, "train_loss": 1.5})
    assert calls == [("margin/train/distances", [0.5, 0.25], 3)]
    cb.scalars = True
    cb.on_log(None, {"event": "epoch", "epoch": 3, "train_loss": 1.5})
    assert calls[-1] == ("train/loss", 1.5, 3)


def test_a_margin_tracker_can_be_passed_as_a_user_callback(tmp_path):
    from wideberth.config import TrackConfig
    from wideberth.train import MarginTracker

    tracker = MarginTracker(TrackConfig(every=2, n_train=5, n_test=0, steps=5))
    result = train(_cfg("run.epochs=2"), tmp_path / "r", progress=False, callbacks=[tracker])
    recs = _records(result.run_dir, "margins")
    assert [(r["epoch"], r["split"], len(r["distances"])) for r in recs] == [
        (1, "train", 5), (2, "train", 5)
    ]
