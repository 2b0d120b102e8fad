"""The training loop on digits: learning happens, resume is exact, runs are protected."""

from __future__ import annotations

import json
import time

import pytest
import torch

import wideberth as wb
from wideberth.config import apply_overrides, load_recipe
from wideberth.train import TrainingError, load_checkpoint, resume, train


def _cfg(*overrides):
    base = [
        "data.val_size=100",
        "data.train_subset=600",
        "data.batch_size=50",
        "model.name=smallcnn",  # has dropout: resume must also repeat the dropout masks
        "optim.name=adam",
        "optim.lr=0.003",
        "schedule.name=cosine",
        "run.epochs=3",
        "run.threads=1",
    ]
    return apply_overrides(load_recipe("digits-standard"), base + list(overrides))


def _weights(path):
    return load_checkpoint(path).model


def _lines(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_training_loss_falls_and_run_folder_is_complete(tmp_path):
    t0 = time.perf_counter()
    result = train(_cfg("run.epochs=4"), tmp_path / "run", progress=False)
    elapsed = time.perf_counter() - t0
    # the reported times are durations of this fit, not clock readings
    assert 0 < result.wall_time <= elapsed
    lines = _lines(result.run_dir)
    epochs = [r for r in lines if r["event"] == "epoch"]
    assert len(epochs) == 4
    assert epochs[-1]["train_loss"] < 0.5 * epochs[0]["train_loss"]
    assert epochs[-1]["val_clean_accuracy"] > 0.8
    assert lines[-1]["event"] == "test" and lines[-1]["n"] == 360
    results = json.loads((result.run_dir / "results.json").read_text())
    assert results["test"]["clean_accuracy"] == pytest.approx(result.test["clean_accuracy"])
    assert 0 < results["train_time_s"] <= result.wall_time
    for f in ("config.yaml", "checkpoints/last.safetensors", "checkpoints/best.safetensors"):
        assert (result.run_dir / f).exists()
    model = wb.load_model(result.run_dir)
    assert not model.training
    x, y = wb.data.tensors("digits", split="test")
    acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc == pytest.approx(results["test"]["clean_accuracy"])


def test_resume_after_epoch_one_is_bitwise_identical(tmp_path, interrupt_after):
    full = train(_cfg(), tmp_path / "full", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(), tmp_path / "cut", progress=False,
              callbacks=[interrupt_after(epoch=1, batch_in_epoch=0)])
    assert (
        load_checkpoint(tmp_path / "cut/checkpoints/last.safetensors").meta["position"]["epoch"]
        == 1
    )
    resumed = resume(tmp_path / "cut", progress=False)
    a = _weights(full.run_dir / "checkpoints/last.safetensors")
    b = _weights(resumed.run_dir / "checkpoints/last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k

    def timeless(run):
        return [{k: v for k, v in r.items() if k != "epoch_time"} for r in _lines(run)]

    assert timeless(full.run_dir) == timeless(resumed.run_dir)
    assert full.test["clean_accuracy"] == resumed.test["clean_accuracy"]


def test_resume_mid_epoch_is_bitwise_identical(tmp_path, interrupt_after):
    cfg = _cfg("run.epochs=2", "run.checkpoint_every_steps=5", "data.augment=none")
    full = train(cfg, tmp_path / "full", progress=False)
    with pytest.raises(KeyboardInterrupt):  # 10 steps per epoch: step 15 is mid epoch 2
        train(cfg, tmp_path / "cut", progress=False, callbacks=[interrupt_after(step=15)])
    resumed = resume(tmp_path / "cut", progress=False)
    a = _weights(full.run_dir / "checkpoints/last.safetensors")
    b = _weights(resumed.run_dir / "checkpoints/last.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    losses = lambda run: [r["train_loss"] for r in _lines(run) if r["event"] == "epoch"]  # noqa: E731
    assert losses(full.run_dir) == losses(resumed.run_dir)


def test_existing_run_is_never_overwritten(tmp_path):
    cfg = _cfg("run.steps=2")
    train(cfg, tmp_path / "run", progress=False)
    before = (tmp_path / "run/checkpoints/last.safetensors").read_bytes()
    with pytest.raises(TrainingError, match="already holds a run; continue it with"):
        train(cfg, tmp_path / "run", progress=False)
    assert (tmp_path / "run/checkpoints/last.safetensors").read_bytes() == before


def test_step_budget_and_nonfinite_loss(tmp_path):
    result = train(_cfg("run.steps=7", "run.epochs=null"), tmp_path / "steps", progress=False)
    assert result.steps == 7 and result.epochs == 1
    with pytest.raises(TrainingError, match="loss became nan"):
        train(_cfg("optim.lr=1e30", "run.steps=20"), tmp_path / "nan", progress=False)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(TrainingError, match="no checkpoint to resume from"):
        resume(tmp_path)


def test_callbacks_hear_every_step_epoch_line_and_checkpoint(tmp_path):
    from wideberth.train import Callback

    events = []

    class Recorder(Callback):
        def on_fit_start(self, trainer):
            events.append(("start", trainer.step))

        def on_step_end(self, trainer, info):
            assert info.step == trainer.step and info.batch_size > 0 and info.lr > 0
            events.append(("step", info.step))

        def on_epoch_end(self, trainer, info):
            assert info.record["event"] == "epoch" and "clean_accuracy" in info.val
            trainer.log_metrics({"event": "custom", "epoch": info.epoch})
            events.append(("epoch", info.epoch, info.is_last))

        def on_log(self, trainer, record):
            events.append(("log", record["event"]))

        def on_checkpoint(self, trainer, name, path, meta):
            assert path.exists() and meta["position"] == trainer.position
            events.append(("ckpt", name))

        def on_fit_end(self, trainer, result):
            events.append(("end", result.steps))

    cfg = _cfg("run.epochs=2", "data.train_subset=100")  # 2 steps per epoch
    result = train(cfg, tmp_path / "run", progress=False, callbacks=[Recorder()])
    epoch = [("log", "epoch"), ("log", "custom")]
    assert events[0] == ("start", 0) and events[-1] == ("end", 4)
    assert [e for e in events if e[0] == "step"] == [("step", s) for s in (1, 2, 3, 4)]
    assert [e for e in events if e[0] == "epoch"] == [("epoch", 1, False), ("epoch", 2, True)]
    assert [e for e in events if e[0] == "log"] == epoch + epoch + [("log", "test")]
    assert [e[1] for e in events if e[0] == "ckpt"][-1] == "last"
    assert events.index(("epoch", 1, False)) < events.index(("ckpt", "last"))
    # the callback's own lines are in metrics.jsonl before each epoch's checkpoint
    assert [r["event"] for r in _lines(result.run_dir)] == ["epoch", "custom"] * 2 + ["test"]
