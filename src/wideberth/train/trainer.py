"""The training loop: budgets, optimiser and schedule, validation, checkpoints, exact resume.

A run lives in one folder::

    RUN/
      config.yaml                    the resolved config (also inside every checkpoint)
      metrics.jsonl                  one JSON object per line: epochs, validation, test
      checkpoints/last.safetensors   written at the end of every epoch (and every
                                     run.checkpoint_every_steps steps when set)
      checkpoints/best.safetensors   the best epoch by eval.selection_metric on validation
      results.json                   final test metrics of the best (else last) weights

Reproducibility: the data order of epoch e comes from a generator seeded by (seed, e), and
every step reseeds torch's global generator and the method's generator from (seed, step).
A run resumed from any checkpoint therefore repeats bit for bit what the uninterrupted run
would have done (on the same machine and thread count).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._version import __version__
from ..config import Config, ConfigError, config_from_dict, config_to_dict, save_config
from ..data import DataSplits, IndexedTensors, build_splits, iterate_batches, num_batches
from ..evaluation.clean import clean_metrics
from ..example_state import ExampleState
from ..fileio import atomic_write_text
from ..methods import Batch, Method, StepContext, build_method
from ..models import build_model
from .checkpoint import (
    load_checkpoint,
    optimizer_from_flat,
    read_checkpoint_meta,
    save_checkpoint,
)
from .schedule import lr_at
from .selection import VALIDATION_METRICS
from .tracking import MarginTracker

__all__ = [
    "Trainer",
    "TrainResult",
    "TrainingError",
    "train",
    "resume",
    "resolve_device",
    "derive_seed",
]

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, a run folder in the way, ...)."""


@dataclass
class TrainResult:
    """Where a run went and what it achieved."""

    run_dir: Path
    epochs: int
    steps: int
    best: dict[str, Any]
    test: dict[str, Any] | None
    wall_time: float


def derive_seed(seed: int, *keys: object) -> int:
    """A stable 63-bit seed from a base seed and any keys (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"run.device={name!r} but CUDA is not available here; use --device cpu or auto"
        )
    return torch.device(name)


def _augment_kind(cfg: Config, splits: DataSplits) -> str | None:
    a = cfg.data.augment
    if a == "auto":
        return splits.info.augment
    return None if a in (None, "none") else a


class Trainer:
    """Train ``cfg`` into ``run_dir``; :meth:`fit` starts fresh or resumes from ``last``."""

    def __init__(self, cfg: Config, run_dir: str | Path, *, progress: bool | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.metrics_path = self.run_dir / "metrics.jsonl"

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        cfg = self.cfg
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        self.device = resolve_device(cfg.run.device)
        d = cfg.data
        self.splits = build_splits(
            d.name,
            data_dir=d.data_dir,
            val_size=d.val_size,
            train_subset=d.train_subset,
            seed=d.split_seed,
            download=d.download,
        )
        info = self.splits.info
        self.augment = _augment_kind(cfg, self.splits)
        if cfg.eval.selection_metric not in VALIDATION_METRICS:
            raise ConfigError(
                f"unknown eval.selection_metric {cfg.eval.selection_metric!r}; "
                f"available: {', '.join(sorted(VALIDATION_METRICS))}"
            )
        torch.manual_seed(derive_seed(cfg.run.seed, "init"))
        self.model = build_model(
            cfg.model.name, tuple(info.input_shape), info.num_classes, **cfg.model.kwargs
        ).to(self.device)
        self.method: Method = build_method(cfg.method)
        self.optimizer = self._make_optimizer()
        n_train = len(self.splits.train)
        self.steps_per_epoch = num_batches(n_train, d.batch_size, drop_last=False)
        if cfg.run.steps is not None:
            self.total_steps = cfg.run.steps
        else:
            assert cfg.run.epochs is not None
            self.total_steps = cfg.run.epochs * self.steps_per_epoch
        self.total_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        indices = [self.splits.train.index]
        if self.splits.val is not None:
            indices.append(self.splits.val.index)
        self.state = ExampleState(int(torch.cat(indices).max()) + 1)
        self.method.setup(self.model, self.state, n_train)
        self.method.bind_train_data(self.splits.train, d.eval_batch_size)
        self.tracker = MarginTracker(
            cfg.track, self.splits, batch_size=d.eval_batch_size, device=self.device,
            run_dir=self.run_dir if cfg.track.every > 0 else None,
        )

    def _make_optimizer(self) -> torch.optim.Optimizer:
        o = self.cfg.optim
        params = self.model.parameters()
        if o.name == "sgd":
            return torch.optim.SGD(
                params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay
            )
        return torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)

    # ------------------------------------------------------------------ helpers
    def _meta(self, **extra: Any) -> dict[str, Any]:
        info = self.splits.info
        return {
            "config": config_to_dict(self.cfg),
            "data": {
                "name": info.name,
                "input_shape": list(info.input_shape),
                "num_classes": info.num_classes,
                "num_train": len(self.splits.train),
                "num_val": len(self.splits.val) if self.splits.val is not None else 0,
            },
            "model": {
                "name": self.cfg.model.name,
                "num_parameters": sum(p.numel() for p in self.model.parameters()),
            },
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "versions": {"wideberth": __version__, "torch": torch.__version__},
            **extra,
        }

    def _append_metrics(self, record: dict[str, Any]) -> int:
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            return fh.tell()

    def _validate(self) -> dict[str, float]:
        val = self.splits.val
        if val is None:
            return {}
        x, y, _ = val.get_batch(torch.arange(len(val)))
        out = clean_metrics(self.model, x, y, self.cfg.data.eval_batch_size)
        metric = self.cfg.eval.selection_metric
        if metric not in out:
            out[metric] = VALIDATION_METRICS[metric].fn(self.model, x, y, self.cfg)
        return {k: v for k, v in out.items() if k != "n"}

    def _test(self, ds: IndexedTensors) -> dict[str, Any]:
        n = len(ds) if self.cfg.eval.test_n is None else min(self.cfg.eval.test_n, len(ds))
        x, y, _ = ds.get_batch(torch.arange(n))
        return clean_metrics(self.model, x, y, self.cfg.data.eval_batch_size)

    def _save(self, name: str, meta: dict[str, Any]) -> None:
        save_checkpoint(
            self.ckpt_dir / f"{name}.safetensors",
            model_state=self.model.state_dict(),
            optimizer=self.optimizer,
            example_state=self.state.state_dict(),
            method_state=self.method.state_dict(),
            meta=meta,
        )

    # ------------------------------------------------------------------ run
    def fit(self, resume: bool = False) -> TrainResult:
        """Train to the end of the budget (resuming from ``last`` if ``resume``)."""
        t_start = time.perf_counter()
        self._setup()
        cfg = self.cfg
        last_path = self.ckpt_dir / "last.safetensors"
        epoch, batch_in_epoch, step = 0, 0, 0
        best: dict[str, Any] = {"metric": cfg.eval.selection_metric, "value": None, "epoch": None}
        accum = {"loss_sum": 0.0, "correct": 0, "count": 0, "time": 0.0}
        elapsed_before = 0.0
        if resume:
            ckpt = load_checkpoint(last_path, device=self.device)
            self.model.load_state_dict(ckpt.model)
            self.optimizer.load_state_dict(optimizer_from_flat(ckpt.optim, ckpt.meta["optimizer"]))
            self.state.load_state_dict(ckpt.example_state)
            self.method.load_state_dict(ckpt.method)
            pos = ckpt.meta["position"]
            epoch, batch_in_epoch, step = pos["epoch"], pos["batch_in_epoch"], pos["step"]
            best = ckpt.meta["best"]
            accum = ckpt.meta["epoch_accum"]
            elapsed_before = ckpt.meta.get("train_time", 0.0)
            with open(self.metrics_path, "r+") as fh:
                fh.truncate(ckpt.meta["metrics_bytes"])
            log.info("resuming %s at epoch %d, step %d", self.run_dir, epoch + 1, step)
        else:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if last_path.exists() or self.metrics_path.exists():
                raise TrainingError(
                    f"{self.run_dir} already holds a run; continue it with "
                    f"`wideberth resume {self.run_dir}` or choose another --out"
                )
            save_config(cfg, self.run_dir / "config.yaml")
            self.metrics_path.touch()
        metrics_bytes = self.metrics_path.stat().st_size
        train_ds = self.splits.train
        t_train = time.perf_counter()

        while step < self.total_steps:
            gen = torch.Generator().manual_seed(derive_seed(cfg.run.seed, "epoch", epoch))
            batches = iterate_batches(
                train_ds,
                cfg.data.batch_size,
                shuffle=True,
                generator=gen,
                start_batch=batch_in_epoch,
                augment=self.augment,
            )
            bar = tqdm(
                total=self.steps_per_epoch,
                initial=batch_in_epoch,
                desc=f"epoch {epoch + 1}/{self.total_epochs}",
                disable=not self.progress,
                leave=False,
            )
            t_epoch = time.perf_counter()
            for x, y, index in batches:
                lr = lr_at(
                    step,
                    total_steps=self.total_steps,
                    steps_per_epoch=self.steps_per_epoch,
                    optim=cfg.optim,
                    schedule=cfg.schedule,
                )
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                loss, correct = self._step(x, y, index, epoch, step)
                accum["loss_sum"] += loss * y.shape[0]
                accum["correct"] += correct
                accum["count"] += y.shape[0]
                step += 1
                batch_in_epoch += 1
                bar.update(1)
                if step % cfg.run.log_every == 0:
                    bar.set_postfix(
                        loss=f"{accum['loss_sum'] / accum['count']:.4f}",
                        acc=f"{accum['correct'] / accum['count']:.3f}",
                    )
                if step >= self.total_steps:
                    break
                every = cfg.run.checkpoint_every_steps
                if every and step % every == 0 and batch_in_epoch < self.steps_per_epoch:
                    accum["time"] += time.perf_counter() - t_epoch
                    t_epoch = time.perf_counter()
                    self._save(
                        "last",
                        self._meta(
                            position={"epoch": epoch, "batch_in_epoch": batch_in_epoch, "step": step},
                            best=best,
                            epoch_accum=accum,
                            metrics_bytes=metrics_bytes,
                            train_time=elapsed_before + time.perf_counter() - t_train,
                        ),
                    )
            bar.close()
            accum["time"] += time.perf_counter() - t_epoch

            # ---- end of epoch: validate, log, checkpoint
            record: dict[str, Any] = {
                "event": "epoch",
                "epoch": epoch + 1,
                "step": step,
                "lr": lr,
                "train_loss": accum["loss_sum"] / max(accum["count"], 1),
                "train_accuracy": accum["correct"] / max(accum["count"], 1),
                "epoch_time": accum["time"],
            }
            record.update(self.method.epoch_logs(self.state, epoch))
            is_last_epoch = step >= self.total_steps
            val: dict[str, float] = {}
            if self.splits.val is not None and ((epoch + 1) % cfg.eval.every == 0 or is_last_epoch):
                val = self._validate()
                record.update({f"val_{k}": v for k, v in val.items()})
            log.info(
                "epoch %d/%d  loss %.4f  acc %.4f%s  (%.1fs)",
                epoch + 1,
                self.total_epochs,
                record["train_loss"],
                record["train_accuracy"],
                "".join(f"  val_{k} {v:.4f}" for k, v in val.items()),
                accum["time"],
            )
            metrics_bytes = self._append_metrics(record)
            if self.tracker.due(epoch + 1, is_last_epoch):
                for margins in self.tracker.measure(self.model, epoch + 1):
                    metrics_bytes = self._append_metrics(margins)
            epoch += 1
            batch_in_epoch = 0
            accum = {"loss_sum": 0.0, "correct": 0, "count": 0, "time": 0.0}
            position = {"epoch": epoch, "batch_in_epoch": 0, "step": step}
            metric = cfg.eval.selection_metric
            if metric in val:
                value = val[metric]
                higher = VALIDATION_METRICS[metric].higher_is_better
                better = best["value"] is None or (
                    value > best["value"] if higher else value < best["value"]
                )
                # A tie on the selection metric (common for accuracy on a small validation
                # split) goes to the epoch with the lower validation loss.
                tie = value == best["value"] and val["loss"] < best.get("val_loss", math.inf)
                if better or tie:
                    best = {"metric": metric, "value": value, "epoch": epoch, "val_loss": val["loss"]}
                    self._save(
                        "best",
                        self._meta(
                            position=position,
                            best=best,
                            epoch_accum=accum,
                            metrics_bytes=metrics_bytes,
                            train_time=elapsed_before + time.perf_counter() - t_train,
                        ),
                    )
            self._save(
                "last",
                self._meta(
                    position=position,
                    best=best,
                    epoch_accum=accum,
                    metrics_bytes=metrics_bytes,
                    train_time=elapsed_before + time.perf_counter() - t_train,
                ),
            )

        train_time = elapsed_before + time.perf_counter() - t_train
        return self._finish(best, epoch, step, train_time, time.perf_counter() - t_start)

    def _step(self, x: Tensor, y: Tensor, index: Tensor, epoch: int, step: int) -> tuple[float, int]:
        cfg = self.cfg
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        torch.manual_seed(derive_seed(cfg.run.seed, "step", step))
        gen = torch.Generator(device=self.device)
        gen.manual_seed(derive_seed(cfg.run.seed, "method", step))
        ctx = StepContext(
            epoch=epoch,
            step=step,
            total_steps=self.total_steps,
            steps_per_epoch=self.steps_per_epoch,
            state=self.state,
            generator=gen,
            num_classes=self.splits.info.num_classes,
        )
        self.model.train()
        loss, logits = self.method.loss(self.model, Batch(x, y, index), ctx)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"the training loss became {float(loss.detach())} at epoch {epoch + 1}, step {step}; "
                f"the last good checkpoint is {self.ckpt_dir / 'last.safetensors'}. "
                "Lower optim.lr (or check the data) and start a new run."
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        correct = int((logits.detach().argmax(1) == y).sum())
        return float(loss.detach()), correct

    def _finish(
        self, best: dict[str, Any], epoch: int, step: int, train_time: float, wall: float
    ) -> TrainResult:
        best_path = self.ckpt_dir / "best.safetensors"
        source = "best" if best_path.exists() else "last"
        if source == "best":
            ckpt = load_checkpoint(best_path, device=self.device)
            self.model.load_state_dict(ckpt.model)
        else:
            log.warning("no validation split (data.val_size: 0): testing the last weights")
        test = self._test(self.splits.test)
        test["weights"] = source
        self._append_metrics({"event": "test", **test})
        results = {
            "run_dir": str(self.run_dir),
            "dataset": self.splits.info.name,
            "model": self.cfg.model.name,
            "method": self.cfg.method.name,
            "epochs": epoch,
            "steps": step,
            "best": best,
            "test": test,
            "train_time_s": train_time,
        }
        atomic_write_text(self.run_dir / "results.json", json.dumps(results, indent=2) + "\n")
        log.info(
            "test accuracy %.4f (%s weights, %d examples)", test["clean_accuracy"], source, test["n"]
        )
        return TrainResult(self.run_dir, epoch, step, best, test, wall)


def train(cfg: Config, run_dir: str | Path, *, progress: bool | None = None) -> TrainResult:
    """Train ``cfg`` into a new run folder ``run_dir`` and test the selected weights."""
    return Trainer(cfg, run_dir, progress=progress).fit(resume=False)


def resume(run_dir: str | Path, *, progress: bool | None = None) -> TrainResult:
    """Continue the run in ``run_dir`` from its ``last`` checkpoint, exactly."""
    run_dir = Path(run_dir)
    last = run_dir / "checkpoints" / "last.safetensors"
    if not last.exists():
        raise TrainingError(
            f"{run_dir} has no checkpoint to resume from ({last} is missing); "
            "start it again with `wideberth train`"
        )
    cfg = config_from_dict(read_checkpoint_meta(last)["config"])
    return Trainer(cfg, run_dir, progress=progress).fit(resume=True)
