"""Margin tracking during training (MMA Fig. 4; Wu & Yu's minimum/average margin curves).

:class:`MarginTracker` fixes random subsets of the training and test splits once (seeded),
and every ``track.every`` epochs estimates their margins with a pluggable estimator:

- ``fmn`` / ``anpgd`` / ``cw``: attack-based estimates (upper bounds on the true distance)
  from :func:`wideberth.attacks.estimate_margin_result`;
- ``gradient``: Wu & Yu's sampled Lipschitz estimate (spec A4), a lower-bound style
  estimate capped at its radius, from :func:`wideberth.attacks.gradient_margin_bound`.

Each measurement becomes one ``{"event": "margins", ...}`` line of ``metrics.jsonl`` per
split: the statistics of :func:`wideberth.attacks.margin_stats` plus every per-example
distance (so ``wideberth plot`` can redraw the per-epoch histograms), with ``null`` for
"no adversarial found within the search range". When TensorBoard is installed the
distances are also written as histograms under ``RUN/tensorboard``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..config import TrackConfig
from ..data import DataSplits, IndexedTensors

__all__ = ["MarginTracker"]

log = logging.getLogger(__name__)


def _subset(ds: IndexedTensors, n: int, seed: int) -> tuple[Tensor, Tensor]:
    n = min(n, len(ds))
    rows = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
    x, y, _ = ds.get_batch(rows.sort().values)
    return x, y


class MarginTracker:
    """Estimate and log margins of fixed train/test subsets every ``cfg.every`` epochs."""

    def __init__(
        self,
        cfg: TrackConfig,
        splits: DataSplits,
        *,
        batch_size: int,
        device: torch.device,
        run_dir: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.batch_size = batch_size
        self.device = device
        self.subsets: dict[str, tuple[Tensor, Tensor]] = {}
        if cfg.n_train:
            self.subsets["train"] = _subset(splits.train, cfg.n_train, cfg.seed)
        if cfg.n_test:
            self.subsets["test"] = _subset(splits.test, cfg.n_test, cfg.seed + 1)
        self._writer: Any = None
        if run_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(run_dir / "tensorboard"))
            except Exception:  # tensorboard not installed: metrics.jsonl only
                self._writer = None

    def due(self, epoch: int, last: bool) -> bool:
        """Whether to measure after (1-based) ``epoch``: the first, every ``every``-th, the last."""
        if self.cfg.every <= 0:
            return False
        return epoch == 1 or epoch % self.cfg.every == 0 or last

    def _distances(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        from ..attacks import estimate_margin_result, gradient_margin_bound

        out = []
        for i in range(0, x.shape[0], self.batch_size):
            xb = x[i : i + self.batch_size].to(self.device)
            yb = y[i : i + self.batch_size].to(self.device)
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
            if self._writer is not None:
                finite = d[torch.isfinite(d)]
                if finite.numel():
                    self._writer.add_histogram(f"margins/{split}", finite, epoch)
                    self._writer.flush()
            log.info(
                "margins (%s, %s) %s: mean %.4f median %.4f",
                self.cfg.norm, self.cfg.method, split, stats["mean"], stats["median"],
            )
        return records
