"""The files of one training run folder and its append-only metrics log.

::

    RUN/
      config.yaml                    the resolved config (also inside every checkpoint)
      metrics.jsonl                  one JSON object per line: epochs, validation, test
      checkpoints/last.safetensors   the latest training position
      checkpoints/best.safetensors   the best epoch by eval.selection_metric on validation
      results.json                   final test metrics of the best (else last) weights

``metrics.jsonl`` is only ever appended to; every checkpoint records its length in bytes,
so a resumed run truncates the log back to that point and rewrites the same lines.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import Config, save_config
from ..fileio import atomic_write_text

__all__ = ["RunFolder"]


class RunFolder:
    """Paths and file operations of the run folder ``path`` (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.metrics = self.path / "metrics.jsonl"
        self.config = self.path / "config.yaml"
        self.results = self.path / "results.json"

    def checkpoint(self, name: str) -> Path:
        """The checkpoint file ``name`` (``last`` or ``best``)."""
        return self.checkpoints / f"{name}.safetensors"

    def holds_run(self) -> bool:
        """Whether a run has already started here (a ``last`` checkpoint or a metrics log)."""
        return self.checkpoint("last").exists() or self.metrics.exists()

    def create(self, cfg: Config) -> None:
        """Start a new run: make the folder, write ``config.yaml`` and an empty metrics log."""
        self.path.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.config)
        self.metrics.touch()

    def truncate_metrics(self, nbytes: int) -> None:
        """Cut the metrics log back to its first ``nbytes`` bytes (what a checkpoint saw)."""
        with open(self.metrics, "r+") as fh:
            fh.truncate(nbytes)

    def metrics_size(self) -> int:
        """The metrics log's length in bytes."""
        return self.metrics.stat().st_size

    def append_metrics(self, record: dict[str, Any]) -> int:
        """Append one JSON line to the metrics log; returns the log's new length in bytes."""
        with open(self.metrics, "a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            return fh.tell()

    def write_results(self, results: dict[str, Any]) -> None:
        """Write ``results.json`` atomically."""
        atomic_write_text(self.results, json.dumps(results, indent=2) + "\n")
