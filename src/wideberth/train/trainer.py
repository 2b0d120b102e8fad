"""The training loop: budgets, optimiser and schedule, validation, checkpoints, exact resume.

A run lives in one folder (see :mod:`wideberth.train.run_folder`): ``config.yaml``,
``metrics.jsonl``, ``checkpoints/last.safetensors`` (written at the end of every epoch,
and every ``run.checkpoint_every_steps`` steps when set), ``checkpoints/best.safetensors``
(the best epoch by ``eval.selection_metric`` on validation) and ``results.json``.

Reproducibility: the data order of epoch e comes from a generator seeded by (seed, e), and
every step reseeds torch's global generator and the method's generator from (seed, step).
A run resumed from any checkpoint therefore repeats bit for bit what the uninterrupted run
would have done (on the same machine and thread count).

:class:`~wideberth.train.Callback` objects passed as ``callbacks=`` are told about every
step, epoch, metrics line and checkpoint; margin tracking and TensorBoard output are such
callbacks, added from the config.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..config import Config, config_from_dict
from ..data import IndexedTensors, iterate_batches
from ..evaluation.clean import clean_metrics
from ..methods import Batch, StepContext
from .callbacks import Callback, EpochInfo, StepInfo
from .checkpoint import load_checkpoint, optimizer_from_flat, read_checkpoint_meta, save_checkpoint
from .run_folder import RunFolder
from .run_parts import build_run_parts, derive_seed, resolve_device, resumable_model
from .schedule import lr_at
from .selection import improves, validation_metrics
from .tensorboard import tensorboard_callback
from .tracking import MarginTracker

__all__ = ["Trainer", "TrainResult", "TrainingError", "train", "resume", "resolve_device", "derive_seed"]

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


class Trainer:
    """Train ``cfg`` into ``run_dir``; :meth:`fit` starts fresh or resumes from ``last``.

    ``callbacks`` (:class:`~wideberth.train.Callback`) are told about the run as it goes,
    after the built-in ones (margin tracking when ``track.every > 0``, TensorBoard when
    ``run.tensorboard``). During :meth:`fit` a callback may read ``model``, ``optimizer``, ``method``, ``state``
    (the :class:`ExampleState`), ``splits``, ``device``, the position ``epoch`` (epochs
    done), ``batch_in_epoch`` and ``step``, and ``best``; it may add lines to
    ``metrics.jsonl`` with :meth:`log_metrics`.
    """

    model_source: dict[str, Any] | None = None  # a resumed run's recorded model (model_record)
    def __init__(
        self,
        cfg: Config,
        run_dir: str | Path,
        *,
        progress: bool | None = None,
        callbacks: Iterable[Callback] = (),
    ) -> None:
        self.cfg = cfg.copy()  # the run resolves it (absolute data paths); the caller's stays
        self.folder = RunFolder(run_dir)
        self.run_dir = self.folder.path
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.ckpt_dir = self.folder.checkpoints
        self.metrics_path = self.folder.metrics
        self.user_callbacks = list(callbacks)
        self.callbacks: list[Callback] = list(self.user_callbacks)
        self._start_position()

    def _start_position(self) -> None:
        """The position of a new run (:meth:`_restore` overwrites it when resuming)."""
        self.epoch, self.batch_in_epoch, self.step = 0, 0, 0  # epochs, batches in epoch, steps done
        self.best: dict[str, Any] = {"metric": self.cfg.eval.selection_metric, "value": None, "epoch": None}
        self._accum = _fresh_accum()
        self._elapsed_before = 0.0  # training time of the run before this fit resumed it
        self._metrics_bytes = 0
        self._t_train = time.perf_counter()

    # ------------------------------------------------------------------ run
    def fit(self, resume: bool = False) -> TrainResult:
        """Train to the end of the budget (resuming from ``last`` if ``resume``)."""
        t_start = time.perf_counter()
        self._setup()
        if resume:
            self._restore()
        else:
            self._start_new_run()
        self._metrics_bytes = self.folder.metrics_size()
        self._t_train = time.perf_counter()
        for cb in self.callbacks:
            cb.on_fit_start(self)
        while self.step < self.total_steps:
            lr = self._run_epoch()
            record = self._epoch_record(lr)
            val = self._validate_if_due()
            self._log_epoch(record, val)
            self._begin_next_epoch()
            self._update_best(val)
            self._save("last")
        result = self._finish(t_start)
        for cb in self.callbacks:
            cb.on_fit_end(self, result)
        return result

    @property
    def position(self) -> dict[str, int]:
        """Where the run stands: ``epoch`` (epochs done), ``batch_in_epoch``, ``step``."""
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "step": self.step}

    @property
    def is_done(self) -> bool:
        """Whether the step budget is spent."""
        return self.step >= self.total_steps

    def log_metrics(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one line of ``metrics.jsonl`` (and tell the callbacks)."""
        self._metrics_bytes = self.folder.append_metrics(record)
        for cb in self.callbacks:
            cb.on_log(self, record)

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        self.parts = p = build_run_parts(self.cfg, self.model_source)
        self.device, self.splits, self.augment = p.device, p.splits, p.augment
        self.model, self.method, self.optimizer, self.state = p.model, p.method, p.optimizer, p.state
        self.steps_per_epoch, self.total_steps = p.steps_per_epoch, p.total_steps
        self.total_epochs = p.total_epochs
        self._start_position()
        self.callbacks = [*self._builtin_callbacks(), *self.user_callbacks]

    def _builtin_callbacks(self) -> list[Callback]:
        """Margin tracking when ``track.every > 0``; TensorBoard (scalars, and the tracked
        margins' histograms) when ``run.tensorboard`` (required: missing → error) or
        ``track.every > 0`` (when installed)."""
        track, callbacks = self.cfg.track, list[Callback]()
        if track.every > 0:
            callbacks.append(MarginTracker(
                track, self.splits, batch_size=self.cfg.data.eval_batch_size, device=self.device))
        if self.cfg.run.tensorboard or track.every > 0:
            board = tensorboard_callback(self.run_dir / "tensorboard", required=self.cfg.run.tensorboard)
            callbacks += [] if board is None else [board]
        return callbacks

    def _start_new_run(self) -> None:
        if self.folder.holds_run():
            raise TrainingError(
                f"{self.run_dir} already holds a run; continue it with "
                f"`wideberth resume {self.run_dir}` or choose another --out"
            )
        self.folder.create(self.cfg)

    def _restore(self) -> None:
        """Continue from ``last``: weights, optimiser, per-example and method state, position."""
        ckpt = load_checkpoint(self.folder.checkpoint("last"), device=self.device)
        self.model.load_state_dict(ckpt.model)
        self.optimizer.load_state_dict(optimizer_from_flat(ckpt.optim, ckpt.meta["optimizer"]))
        self.state.load_state_dict(ckpt.example_state)
        self.method.load_state_dict(ckpt.method)
        pos = ckpt.meta["position"]
        self.epoch, self.batch_in_epoch, self.step = pos["epoch"], pos["batch_in_epoch"], pos["step"]
        self.best = ckpt.meta["best"]
        self._accum = ckpt.meta["epoch_accum"]
        self._elapsed_before = ckpt.meta.get("train_time", 0.0)
        self.folder.truncate_metrics(ckpt.meta["metrics_bytes"])
        log.info("resuming %s at epoch %d, step %d", self.run_dir, self.epoch + 1, self.step)

    # ------------------------------------------------------------------ one epoch
    def _epoch_batches(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """The current epoch's batches from where the position stands, in a seeded order."""
        gen = torch.Generator().manual_seed(derive_seed(self.cfg.run.seed, "epoch", self.epoch))
        return iterate_batches(
            self.splits.train,
            self.cfg.data.batch_size,
            shuffle=True,
            generator=gen,
            start_batch=self.batch_in_epoch,
            augment=self.augment,
        )

    def _run_epoch(self) -> float:
        """Train on the rest of the current epoch (or up to the budget); returns the last lr.

        Writes ``last`` every ``run.checkpoint_every_steps`` steps inside the epoch.
        """
        every = self.cfg.run.checkpoint_every_steps
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=self.batch_in_epoch,
            desc=f"epoch {self.epoch + 1}/{self.total_epochs}",
            disable=not self.progress,
            leave=False,
        )
        lr = math.nan
        t_epoch = time.perf_counter()
        for x, y, index in self._epoch_batches():
            lr = self._set_lr()
            loss, correct = self._step(x, y, index, self.epoch, self.step)
            self._accum["loss_sum"] += loss * y.shape[0]
            self._accum["correct"] += correct
            self._accum["count"] += y.shape[0]
            self.step += 1
            self.batch_in_epoch += 1
            self._update_bar(bar)
            info = StepInfo(self.epoch, self.step, self.batch_in_epoch, loss, correct, y.shape[0], lr)
            for cb in self.callbacks:
                cb.on_step_end(self, info)
            if self.is_done:
                break
            if every and self.step % every == 0 and self.batch_in_epoch < self.steps_per_epoch:
                now = time.perf_counter()
                self._accum["time"] += now - t_epoch
                t_epoch = now
                self._save("last")
        bar.close()
        self._accum["time"] += time.perf_counter() - t_epoch
        return lr

    def _set_lr(self) -> float:
        lr = lr_at(
            self.step,
            total_steps=self.total_steps,
            steps_per_epoch=self.steps_per_epoch,
            optim=self.cfg.optim,
            schedule=self.cfg.schedule,
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _update_bar(self, bar: Any) -> None:
        bar.update(1)
        if self.step % self.cfg.run.log_every == 0:
            a = self._accum
            bar.set_postfix(
                loss=f"{a['loss_sum'] / a['count']:.4f}", acc=f"{a['correct'] / a['count']:.3f}"
            )

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
                f"the last good checkpoint is {self.folder.checkpoint('last')}. "
                "Lower optim.lr (or check the data) and start a new run."
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        correct = int((logits.detach().argmax(1) == y).sum())
        return float(loss.detach()), correct

    # ------------------------------------------------------------------ end of an epoch
    def _epoch_record(self, lr: float) -> dict[str, Any]:
        """The epoch's ``metrics.jsonl`` line: training loss and accuracy, the method's logs."""
        a = self._accum
        record: dict[str, Any] = {
            "event": "epoch",
            "epoch": self.epoch + 1,
            "step": self.step,
            "lr": lr,
            "train_loss": a["loss_sum"] / max(a["count"], 1),
            "train_accuracy": a["correct"] / max(a["count"], 1),
            "epoch_time": a["time"],
        }
        record.update(self.method.epoch_logs(self.state, self.epoch))
        return record

    def _validate_if_due(self) -> dict[str, float]:
        """Validation metrics every ``eval.every`` epochs and after the last; else ``{}``."""
        val = self.splits.val
        if val is not None and ((self.epoch + 1) % self.cfg.eval.every == 0 or self.is_done):
            return validation_metrics(self.model, val, self.cfg)
        return {}

    def _log_epoch(self, record: dict[str, Any], val: dict[str, float]) -> None:
        """Write the epoch's line (with ``val_*``) and run the callbacks' ``on_epoch_end``."""
        record.update({f"val_{k}": v for k, v in val.items()})
        log.info(
            "epoch %d/%d  loss %.4f  acc %.4f%s  (%.1fs)",
            self.epoch + 1,
            self.total_epochs,
            record["train_loss"],
            record["train_accuracy"],
            "".join(f"  val_{k} {v:.4f}" for k, v in val.items()),
            self._accum["time"],
        )
        self.log_metrics(record)
        info = EpochInfo(self.epoch + 1, self.step, self.is_done, record, val)
        for cb in self.callbacks:
            cb.on_epoch_end(self, info)

    def _begin_next_epoch(self) -> None:
        self.epoch += 1
        self.batch_in_epoch = 0
        self._accum = _fresh_accum()

    def _update_best(self, val: dict[str, float]) -> None:
        """Keep ``best`` (and save its checkpoint) when ``val`` beats it on the selection metric."""
        metric = self.cfg.eval.selection_metric
        if metric in val and improves(self.best, val, metric):
            self.best = {"metric": metric, "value": val[metric], "epoch": self.epoch, "val_loss": val["loss"]}
            self._save("best")

    # ------------------------------------------------------------------ checkpoints
    def _save(self, name: str) -> None:
        """Write checkpoint ``name`` at the current position, then tell the callbacks."""
        meta = self.parts.checkpoint_meta(
            position=self.position,
            best=self.best,
            epoch_accum=self._accum,
            metrics_bytes=self._metrics_bytes,
            train_time=self._train_time(),
        )
        path = self.folder.checkpoint(name)
        save_checkpoint(
            path,
            model_state=self.model.state_dict(),
            optimizer=self.optimizer,
            example_state=self.state.state_dict(),
            method_state=self.method.state_dict(),
            meta=meta,
        )
        for cb in self.callbacks:
            cb.on_checkpoint(self, name, path, meta)

    def _train_time(self) -> float:
        return self._elapsed_before + time.perf_counter() - self._t_train

    # ------------------------------------------------------------------ the end
    def _test(self, ds: IndexedTensors) -> dict[str, Any]:
        n = len(ds) if self.cfg.eval.test_n is None else min(self.cfg.eval.test_n, len(ds))
        x, y, _ = ds.get_batch(torch.arange(n))
        return clean_metrics(self.model, x, y, self.cfg.data.eval_batch_size)

    def _finish(self, wall_start: float) -> TrainResult:
        """Test the best (else last) weights, log the test line, write ``results.json``."""
        train_time = self._train_time()
        best_path = self.folder.checkpoint("best")
        source = "best" if best_path.exists() else "last"
        if source == "best":
            ckpt = load_checkpoint(best_path, device=self.device)
            self.model.load_state_dict(ckpt.model)
        else:
            log.warning("no validation split (data.val_size: 0): testing the last weights")
        test = self._test(self.splits.test)
        test["weights"] = source
        self.log_metrics({"event": "test", **test})
        self.folder.write_results(
            {
                "run_dir": str(self.run_dir),
                "dataset": self.splits.info.name,
                "model": self.cfg.model.name,
                "method": self.cfg.method.name,
                "epochs": self.epoch,
                "steps": self.step,
                "best": self.best,
                "test": test,
                "train_time_s": train_time,
            }
        )
        log.info(
            "test accuracy %.4f (%s weights, %d examples)", test["clean_accuracy"], source, test["n"]
        )
        return TrainResult(self.run_dir, self.epoch, self.step, self.best, test, time.perf_counter() - wall_start)


def _fresh_accum() -> dict[str, Any]:
    """The running sums of one epoch's training loss, accuracy and time."""
    return {"loss_sum": 0.0, "correct": 0, "count": 0, "time": 0.0}


def train(
    cfg: Config,
    run_dir: str | Path,
    *,
    progress: bool | None = None,
    callbacks: Iterable[Callback] = (),
) -> TrainResult:
    """Train ``cfg`` into a new run folder ``run_dir`` and test the selected weights.

    ``callbacks`` (:class:`~wideberth.train.Callback`) are told about every step, epoch,
    metrics line and checkpoint. Progress (one line per epoch, the test result) goes to
    :mod:`logging` under the ``"wideberth"`` loggers at INFO; turn it on with
    ``logging.basicConfig(level=logging.INFO)``. ``progress`` draws a per-epoch bar
    (default: when standard error is a terminal).
    """
    return Trainer(cfg, run_dir, progress=progress, callbacks=callbacks).fit(resume=False)


def resume(
    run_dir: str | Path, *, progress: bool | None = None, callbacks: Iterable[Callback] = ()
) -> TrainResult:
    """Continue the run in ``run_dir`` from its ``last`` checkpoint, exactly.

    ``callbacks`` are told about the rest of the run, as in :func:`train`.
    """
    run_dir = Path(run_dir)
    last = RunFolder(run_dir).checkpoint("last")
    if not last.exists():
        raise TrainingError(
            f"{run_dir} has no checkpoint to resume from ({last} is missing); "
            "start it again with `wideberth train`"
        )
    meta = read_checkpoint_meta(last)
    trainer = Trainer(config_from_dict(meta["config"]), run_dir, progress=progress,
                      callbacks=callbacks)
    trainer.model_source = resumable_model(meta, run_dir)
    return trainer.fit(resume=True)
