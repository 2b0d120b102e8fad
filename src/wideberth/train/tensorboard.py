"""TensorBoard output as a trainer callback (needs the optional ``tensorboard`` package:
``pip install "wideberth[tensorboard]"``).

:class:`TensorBoardCallback` listens to the trainer's ``on_log`` hook, so everything that
reaches ``metrics.jsonl`` reaches TensorBoard too, with the global optimiser step as the
x-axis. Every numeric field of every line becomes a scalar (:func:`scalar_tags` names them;
nested dicts are flattened with ``/``; strings, booleans, ``None`` and lists are not
scalars), grouped by what it measures:

- ``train/loss``, ``train/accuracy``, ``train/lr``: the epoch line's ``train_loss``,
  ``train_accuracy`` and ``lr`` (every ``train_*`` key loses its prefix);
- ``val/<metric>``: the epoch line's ``val_<metric>`` (validation metrics, robust ones too);
- ``eps/<key>``: the method's ε statistics, keys with ``eps`` in them and MMA's ``mma_*``
  logs (``mma_eps_mean``, ``mma_dropped_frac``, ...; Ding et al. 2020, §3);
- ``method/<key>``: the method's other per-epoch logs;
- ``time/<key>``: timings (``epoch_time``, any ``*_time``), in seconds;
- ``progress/epoch``: the epoch number;
- ``margin/<split>/<stat>``: margin-tracking lines (``mean``, ``median``, ``q1``, ...,
  ``fraction_below/<radius>``);
- ``test/<metric>``: the final test line;
- ``<event>/<key>``: lines a user callback logs with ``{"event": ...}`` (``other/<key>``
  without one).

Two lists become histograms: a margin line's per-example ``distances``
(``margin/<split>/distances``, finite ones only) and MMA's ε histogram ``mma_eps_hist``
over ``[0, mma_eps_hist_max]`` (``eps/mma_eps_hist``).

The trainer adds a callback writing to ``RUN/tensorboard`` on its own whenever margin
tracking is on (``track.every > 0``) and TensorBoard is installed; pass one yourself with
``callbacks=[TensorBoardCallback(run_dir / "tensorboard")]`` to ``wideberth.train.train``.
View with ``tensorboard --logdir RUN/tensorboard``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import torch

from .callbacks import Callback

if TYPE_CHECKING:
    from .trainer import Trainer, TrainResult

__all__ = ["INSTALL_HINT", "TensorBoardCallback", "record_step", "scalar_tags", "tensorboard_callback"]

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "wideberth[tensorboard]"  (or: pip install tensorboard)'

# keys of a line that are not scalars of their own: what the line is, where it belongs
_STRUCTURAL = {"event", "step", "split", "norm", "method", "distances"}


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if _is_number(value):
        out[prefix] = float(value)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}/{k}", v, out)


def _epoch_tag(key: str) -> str:
    """The tag of one key of an ``{"event": "epoch"}`` line."""
    if key == "epoch":
        return "progress/epoch"
    if key == "lr":
        return "train/lr"
    if key.startswith("val_"):
        return f"val/{key[4:]}"
    if key == "epoch_time" or key.endswith("_time"):
        return f"time/{key}"
    if key.startswith("train_"):
        return f"train/{key[6:]}"
    if "eps" in key or key.startswith("mma_"):
        return f"eps/{key}"
    return f"method/{key}"


def scalar_tags(record: Mapping[str, Any]) -> dict[str, float]:
    """The TensorBoard scalars of one ``metrics.jsonl`` line: ``{tag: value}``.

    Every numeric field (``int`` or ``float``, booleans excluded) gets a tag grouped as
    in the module docstring; nested dicts are flattened (``fraction_below: {"0.05": x}``
    becomes ``.../fraction_below/0.05``); strings, ``None`` and lists are skipped. ``step``
    is the x-axis (:func:`record_step`), not a scalar; so is a margin line's ``epoch``
    (the epoch line of the same step already carries it).
    """
    event = record.get("event")
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in _STRUCTURAL:
            continue
        if event == "epoch":
            tag = _epoch_tag(key)
        elif event == "margins":
            if key == "epoch":
                continue
            tag = f"margin/{record.get('split', 'all')}/{key}"
        else:
            tag = f"{event if isinstance(event, str) and event else 'other'}/{key}"
        _flatten(tag, value, out)
    return out


def record_step(record: Mapping[str, Any], trainer: Any = None) -> int:
    """The x-axis value of a line: its own ``step``, else the trainer's global step when
    it was logged, else its ``epoch`` (0 when it has neither)."""
    step = record.get("step")
    if _is_number(step):
        return int(step)
    if trainer is not None and _is_number(getattr(trainer, "step", None)):
        return int(trainer.step)
    epoch = record.get("epoch")
    return int(epoch) if _is_number(epoch) else 0


class TensorBoardCallback(Callback):
    """Write every line the trainer logs to ``metrics.jsonl`` to the TensorBoard folder
    ``log_dir``: its numbers as scalars (:func:`scalar_tags`) at the global step, margin
    distances and MMA's ε histogram as histograms. ``scalars=False`` keeps the histograms
    only.

    Raises ``ImportError`` saying how to install TensorBoard when it is missing (see
    :func:`tensorboard_callback` for the forgiving variant).
    """

    def __init__(self, log_dir: str | Path, *, scalars: bool = True) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ImportError(
                f"TensorBoard output was requested but the tensorboard package is not "
                f"installed; install it with {INSTALL_HINT}"
            ) from exc
        self._writer_class = SummaryWriter
        self.log_dir = Path(log_dir)
        self.writer: Any = None  # opened when the fit starts (or at the first line)
        self.scalars = scalars

    def on_fit_start(self, trainer: Trainer) -> None:
        """Open the event file. A resumed run (``trainer.step`` > 0) purges what an earlier
        writer drew after its checkpoint, as the trainer truncates ``metrics.jsonl``: the
        lines it rewrites are not drawn twice."""
        step = int(getattr(trainer, "step", 0) or 0)
        self._open(step + 1 if step > 0 else None)

    def _open(self, purge_step: int | None) -> None:
        if self.writer is not None:
            self.writer.close()
        self.writer = self._writer_class(str(self.log_dir), purge_step=purge_step)

    def on_log(self, trainer: Trainer | None, record: dict[str, Any]) -> None:
        """Write ``record``'s scalars and histograms at its step (:func:`record_step`)."""
        if self.writer is None:
            self._open(None)
        step = record_step(record, trainer)
        if record.get("event") == "margins" and isinstance(record.get("distances"), list):
            finite = torch.tensor(
                [v for v in record["distances"] if _is_number(v) and math.isfinite(v)]
            )
            if finite.numel():
                self.writer.add_histogram(f"margin/{record.get('split', 'all')}/distances", finite, step)
        hist, top = record.get("mma_eps_hist"), record.get("mma_eps_hist_max")
        if isinstance(hist, list) and hist and sum(hist) > 0 and _is_number(top) and top > 0:
            self._raw_histogram("eps/mma_eps_hist", [float(c) for c in hist], float(top), step)
        if self.scalars:
            for tag, value in scalar_tags(record).items():
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def _raw_histogram(self, tag: str, counts: list[float], top: float, step: int) -> None:
        """Counts of equal bins over ``[0, top]`` as a TensorBoard histogram (moments from
        the bin centres)."""
        width = top / len(counts)
        centres = [(i + 0.5) * width for i in range(len(counts))]
        self.writer.add_histogram_raw(
            tag,
            min=0.0,
            max=top,
            num=sum(counts),
            sum=sum(c * m for c, m in zip(counts, centres, strict=True)),
            sum_squares=sum(c * m * m for c, m in zip(counts, centres, strict=True)),
            bucket_limits=[(i + 1) * width for i in range(len(counts))],
            bucket_counts=counts,
            global_step=step,
        )

    def on_fit_end(self, trainer: Trainer, result: TrainResult) -> None:
        """Close the event file."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def tensorboard_callback(
    log_dir: str | Path, *, scalars: bool = True, required: bool = False
) -> TensorBoardCallback | None:
    """A :class:`TensorBoardCallback`, or ``None`` when TensorBoard is not installed.

    ``required=True`` (TensorBoard explicitly asked for) raises the ``ImportError`` with
    the install command instead of returning ``None``.
    """
    try:
        return TensorBoardCallback(log_dir, scalars=scalars)
    except ImportError:
        if required:
            raise
        log.info("TensorBoard not installed: metrics.jsonl only (%s)", INSTALL_HINT)
    except Exception as exc:  # a broken installation: keep training, say why
        if required:
            raise
        log.warning("TensorBoard could not start (%s): metrics.jsonl only", exc)
    return None
