"""TensorBoard scalars for every numeric field of metrics.jsonl, through the callback hook."""

from __future__ import annotations

import json
import math
import sys

import pytest

from wideberth.config import apply_overrides, load_recipe
from wideberth.train import TensorBoardCallback, train
from wideberth.train.tensorboard import record_step, scalar_tags, tensorboard_callback


def _leaves(prefix, value, out):
    """Numeric leaves of a record, found independently of the library (bools excluded)."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, list)):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _leaves(f"{prefix}/{k}", v, out)
    else:
        out[prefix] = float(value)


def test_scalar_tags_group_flatten_and_skip_non_numbers():
    epoch = {"event": "epoch", "epoch": 2, "step": 8, "lr": 0.1, "train_loss": 1.5,
             "train_accuracy": 0.5, "epoch_time": 3.0, "val_clean_accuracy": 0.25,
             "val_pgd_accuracy": 0.125, "mma_eps_mean": 0.2, "mma_eps_hist": [1, 2],
             "mma_visited": 40, "eps": 0.3, "amr_reg": 0.7, "flag": True, "note": "x", "gone": None}
    assert scalar_tags(epoch) == {
        "progress/epoch": 2.0, "train/lr": 0.1, "train/loss": 1.5, "train/accuracy": 0.5,
        "time/epoch_time": 3.0, "val/clean_accuracy": 0.25, "val/pgd_accuracy": 0.125,
        "eps/mma_eps_mean": 0.2, "eps/mma_visited": 40.0, "eps/eps": 0.3, "method/amr_reg": 0.7,
    }
    margins = {"event": "margins", "epoch": 2, "split": "test", "norm": "l2", "method": "fmn",
               "mean": 0.5, "median": None, "fraction_below": {"0.05": 0.25, "0.1": 0.5},
               "distances": [0.5, None]}
    assert scalar_tags(margins) == {"margin/test/mean": 0.5, "margin/test/fraction_below/0.05": 0.25,
                                    "margin/test/fraction_below/0.1": 0.5}
    assert scalar_tags({"event": "test", "n": 7, "weights": "best"}) == {"test/n": 7.0}
    assert scalar_tags({"event": "probe", "a": {"b": 1}}) == {"probe/a/b": 1.0}
    assert scalar_tags({"x": 1}) == {"other/x": 1.0}
    # the x-axis: the line's own step, else the trainer's, else the epoch
    assert record_step(epoch) == 8
    assert record_step(margins, type("T", (), {"step": 12})()) == 12
    assert record_step(margins) == 2


def test_missing_tensorboard_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails
    with pytest.raises(ImportError, match=r'pip install "wideberth\[tensorboard\]"'):
        TensorBoardCallback(tmp_path / "tb")
    with pytest.raises(ImportError, match="not installed"):
        tensorboard_callback(tmp_path / "tb", required=True)
    assert tensorboard_callback(tmp_path / "tb") is None  # the trainer's forgiving variant
    assert not (tmp_path / "tb").exists()


def _read_board(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    return scalars, set(acc.Tags()["histograms"])


def test_an_mma_run_puts_every_metrics_field_on_the_board(tmp_path):
    pytest.importorskip("tensorboard")
    cfg = apply_overrides(load_recipe("digits-standard"), [
        "data.val_size=60", "data.train_subset=100", "data.batch_size=50", "run.epochs=2",
        "run.threads=1", "data.augment=none", "model.name=mlp", "model.params.hidden=[16]",
        "method.name=mma", "method.params={norm: linf, d_max: 0.2, eps_min: 0.05, steps: 2, n_search: 3}",
        "eval.selection_metric=pgd_accuracy", "eval.eps=0.1", "eval.attack_steps=2", "eval.test_n=50",
        "track.every=1", "track.n_train=8", "track.n_test=8", "track.steps=5", "track.norm=l2",
    ])
    user_dir = tmp_path / "user_tb"
    result = train(cfg, tmp_path / "r", progress=False, callbacks=[TensorBoardCallback(user_dir)])
    records = [json.loads(s) for s in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {r["event"] for r in records} == {"epoch", "margins", "test"}
    step_of_epoch = {r["epoch"]: r["step"] for r in records if r["event"] == "epoch"}
    final_step = max(step_of_epoch.values())

    # every numeric leaf of every line, with the step it must be drawn at
    expected: list[tuple[str, str, int, float]] = []  # (event/split, leaf path, step, value)
    for r in records:
        leaves: dict[str, float] = {}
        for k, v in r.items():
            if k == "step" or (r["event"] == "margins" and k == "epoch"):
                continue  # the x-axis (a margin line's epoch is its epoch line's)
            _leaves(k, v, leaves)
        step = r.get("step", step_of_epoch.get(r.get("epoch"), final_step))
        kind = r["event"] + (f"/{r['split']}" if r["event"] == "margins" else "")
        expected += [(kind, path, step, value) for path, value in leaves.items()]
    assert len(expected) > 40

    # the trainer's own board (track.every > 0) and a user's callback write the same thing
    for folder in (result.run_dir / "tensorboard", user_dir):
        scalars, histograms = _read_board(folder)
        groups = {"epoch": ("train/", "val/", "eps/", "time/", "progress/", "method/"),
                  "test": ("test/",)}
        used = set()
        for kind, path, step, value in expected:
            prefixes = groups.get(kind, (f"margin/{kind.split('/', 1)[-1]}/",))
            name = path.removeprefix("train_").removeprefix("val_")
            hits = [t for t in scalars if t.startswith(prefixes) and t.endswith("/" + name)
                    and any(s == step and math.isclose(v, value, rel_tol=1e-6, abs_tol=1e-9)
                            for s, v in scalars[t])]
            assert len(hits) == 1, (kind, path, step, value, hits)
            used.add(hits[0])
        assert used == set(scalars)  # nothing on the board that is not in metrics.jsonl
        for tag in ("train/loss", "train/accuracy", "train/lr", "val/clean_accuracy", "val/loss",
                    "val/pgd_accuracy", "eps/mma_eps_mean", "eps/mma_dropped_frac",
                    "time/epoch_time", "margin/train/mean", "margin/test/fraction_below/0.05",
                    "test/clean_accuracy"):
            assert tag in scalars, tag
        assert [s for s, _ in scalars["train/loss"]] == sorted(step_of_epoch.values())
        assert {"margin/train/distances", "margin/test/distances", "eps/mma_eps_hist"} <= histograms


def test_a_resumed_run_draws_each_line_once(tmp_path):
    pytest.importorskip("tensorboard")
    from wideberth.train import Callback, resume

    class CrashInEpoch3(Callback):  # after epoch 3's lines are drawn, before its checkpoint
        def on_epoch_end(self, trainer, info):
            if info.epoch == 3:
                raise KeyboardInterrupt

    cfg = apply_overrides(load_recipe("digits-standard"), [
        "data.val_size=50", "data.train_subset=100", "data.batch_size=50", "run.epochs=3",
        "run.threads=1", "model.name=mlp", "model.params.hidden=[16]", "eval.test_n=50",
        "track.every=2", "track.n_train=5", "track.n_test=0", "track.steps=5",
    ])
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "r", progress=False, callbacks=[CrashInEpoch3()])
    first, _ = _read_board(tmp_path / "r" / "tensorboard")
    assert [s for s, _ in first["train/loss"]] == [2, 4, 6]  # epoch 3 drawn, last checkpoint at 4
    resume(tmp_path / "r", progress=False)  # truncates metrics.jsonl to step 4, redoes epoch 3
    scalars, _ = _read_board(tmp_path / "r" / "tensorboard")
    records = [json.loads(s) for s in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in records if r["event"] == "epoch"]
    assert [s for s, _ in scalars["train/loss"]] == [2, 4, 6]  # the first epoch-3 point purged
    assert [v for _, v in scalars["train/loss"]] == pytest.approx(losses, rel=1e-6)
    assert [s for s, _ in scalars["margin/train/mean"]] == [2, 4, 6]  # epochs 1, 2 and the last
