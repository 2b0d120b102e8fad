"""Margin tracking during training (MMA Fig. 4; Wu & Yu's minimum/average margin curves).

:class:`MarginTracker` fixes random subsets of the training and test splits once (seeded),
and every ``track.every`` epochs estimates their margins with a pluggable estimator:

- ``fmn`` / ``anpgd`` / ``cw``: attack-based estimates (upper bounds on the true distance)
  from :func:`wideberth.attacks.estimate_margin_result`;
- ``gradient``: Wu & Yu's sampled Lipschitz estimate (Wu & Yu, *Understanding adversarial
  robustness: the trade-off between minimum and average margin*, §5.1, App. F, eq. 16), a
  lower-bound style estimate capped at its radius, from
  :func:`wideberth.attacks.gradient_margin_bound`.

Each measurement becomes one ``{"event": "margins", ...}`` line of ``metrics.jsonl`` per
split: the statistics of :func:`wideberth.attacks.margin_stats` plus every per-example
distance (so ``wideberth plot`` can redraw the per-epoch histograms), with ``null`` for
"no adversarial found within the search range". The tracker is a trainer
:class:`~wideberth.train.Callback`: the trainer adds one when ``track.every > 0``, and a
:class:`~wideberth.train.TensorBoardCallback` draws its distances as histograms.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..config import TrackConfig
from ..data import DataSplits, IndexedTensors
from .callbacks import Callback, EpochInfo

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["MarginTracker"]

log = logging.getLogger(__name__)


def _subset(ds: IndexedTensors, n: int, seed: int) -> tuple[Tensor, Tensor]:
    n = min(n, len(ds))
    rows = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
    x, y, _ = ds.get_batch(rows.sort().values)
    return x, y


class MarginTracker(Callback):
    """Estimate and log margins of fixed train/test subsets every ``cfg.every`` epochs.

    As a callback it measures after the first, every ``every``-th and the last epoch and
    logs the records through ``trainer.log_metrics`` (before the epoch's checkpoint, so a
    resumed run keeps them). ``splits``, ``batch_size`` and ``device`` default to the
    trainer's data splits, ``data.eval_batch_size`` and device when the fit starts.
    """

    def __init__(
        self,
        cfg: TrackConfig,
        splits: DataSplits | None = None,
        *,
        batch_size: int | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.cfg = cfg
        self.batch_size = batch_size
        self.device = device
        self.subsets: dict[str, tuple[Tensor, Tensor]] = {}
        self._ready = False
        if splits is not None:
            self._choose_subsets(splits)

    def _choose_subsets(self, splits: DataSplits) -> None:
        cfg = self.cfg
        if cfg.n_train:
            self.subsets["train"] = _subset(splits.train, cfg.n_train, cfg.seed)
        if cfg.n_test:
            self.subsets["test"] = _subset(splits.test, cfg.n_test, cfg.seed + 1)
        self._ready = True

    def on_fit_start(self, trainer: Trainer) -> None:
        """Fill in what the constructor left open from the trainer."""
        if self.batch_size is None:
            self.batch_size = trainer.cfg.data.eval_batch_size
        if self.device is None:
            self.device = trainer.device
        if not self._ready:
            self._choose_subsets(trainer.splits)

    def on_epoch_end(self, trainer: Trainer, info: EpochInfo) -> None:
        """Measure when :meth:`due` and log one record per split."""
        if self.due(info.epoch, info.is_last):
            for record in self.measure(trainer.model, info.epoch):
                trainer.log_metrics(record)

    def due(self, epoch: int, last: bool) -> bool:
        """Whether to measure after (1-based) ``epoch``: the first, every ``every``-th, the last."""
        if self.cfg.every <= 0:
            return False
        return epoch == 1 or epoch % self.cfg.every == 0 or last

    def _distances(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        from ..attacks import estimate_margin_result, gradient_margin_bound

        size = self.batch_size or x.shape[0]
        device = self.device or torch.device("cpu")
        out = []
        for i in range(0, x.shape[0], size):
            xb = x[i : i + size].to(device)
            yb = y[i : i + size].to(device)
            if self.cfg.method == "gradient":
                d = gradient_margin_bound(model, xb, yb, self.cfg.norm, seed=self.cfg.seed, check=False)
            else:
                kwargs: dict[str, Any] = {"steps": self.cfg.steps}
                if self.cfg.method == "anpgd":
                    kwargs["seed"] = self.cfg.seed
                d = estimate_margin_result(
                    model, xb, yb, self.cfg.norm, self.cfg.method, check=False, **kwargs
                ).distance
            out.append(d.detach().cpu())
        return torch.cat(out)

    def measure(self, model: nn.Module, epoch: int) -> list[dict[str, Any]]:
        """One record per split; the model is attacked in eval mode and restored."""
        from ..attacks import margin_stats

        records = []
        for split, (x, y) in self.subsets.items():
            d = self._distances(model, x, y)
            stats = margin_stats(d, thresholds=self.cfg.thresholds)
            stats["fraction_below"] = {str(k): v for k, v in stats["fraction_below"].items()}
            clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in stats.items()}
            records.append(
                {
                    "event": "margins",
                    "epoch": epoch,
                    "split": split,
                    "norm": self.cfg.norm,
                    "method": self.cfg.method,
                    **clean,
                    "distances": [float(v) if math.isfinite(v) else None for v in d.tolist()],
                }
            )
            log.info(
                "margins (%s, %s) %s: mean %.4f median %.4f",
                self.cfg.norm, self.cfg.method, split, stats["mean"], stats["median"],
            )
        return records
