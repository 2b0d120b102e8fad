"""Evaluation data as a stream of batches: stacked tensors, a ``Dataset`` or a ``DataLoader``.

Every evaluation helper (:func:`wideberth.evaluate`, :func:`~wideberth.evaluation.clean_metrics`,
:func:`~wideberth.evaluation.summarize_attack`,
:func:`~wideberth.evaluation.min_perturbation_distance`) takes its data as

* ``x`` [N, C, H, W] and ``y`` [N] tensors, or
* a map-style ``torch.utils.data.Dataset`` whose items are ``(x, y)`` or ``(x, y, index)``
  (``x`` [C, H, W] in [0, 1], ``y`` an int or a 0-d tensor), or
* a ``DataLoader`` (or any iterable) yielding batches ``(x, y)`` or ``(x, y, index)``,

with ``y`` omitted for the last two. :func:`as_stream` turns any of them into a
:class:`Stream`, which yields batches of **exactly** ``batch_size`` examples (the last one
smaller) on the CPU: a ``Dataset`` is read ``batch_size`` items at a time, and a loader's
batches are re-chunked to ``batch_size`` whatever its own batch size (a buffer of at most
one evaluation batch plus one loader batch). Only one batch is in memory at a time, so
memory stays flat in the dataset size.

Why this gives the same numbers as the stacked tensors: the evaluated batches hold the same
examples in the same order whatever the source (so every batched computation is the same),
the random starts of the registered attacks are keyed by each example's content
(:mod:`wideberth.noise`), and an external attack is seeded from the suite seed, the batch
index and the ε index (:mod:`wideberth.evaluation.external`). A shuffling loader gives the
same accuracies on the same examples (in another order, so another batch composition).

Example ids: the ``index`` of ``(x, y, index)`` items/batches, else the position in the
stream (0, 1, …). Reports keep them with the per-example results, so two reports can be
paired (:mod:`wideberth.evaluation.statistics`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

__all__ = ["Batch", "Stream", "as_stream", "is_stream"]


@dataclass(frozen=True)
class Batch:
    """One evaluation batch: ``x`` [B, C, H, W], ``y`` [B] (int64), ``ids`` [B] (int64),
    ``start`` its position in the stream and ``index`` its batch number."""

    x: Tensor
    y: Tensor
    ids: Tensor
    start: int
    index: int


def is_stream(data: object) -> bool:
    """Whether ``data`` is a ``Dataset`` / ``DataLoader`` / iterable of batches, not a tensor."""
    return not isinstance(data, Tensor) and (
        isinstance(data, (Dataset, DataLoader)) or hasattr(data, "__iter__"))


def _as_tensor(v: Any, what: str) -> Tensor:
    try:
        return torch.as_tensor(v)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"cannot read {what} of the data as a tensor ({type(v).__name__}): "
                         f"{e}") from None


def _split_item(item: Any, where: str) -> tuple[Any, Any, Any]:
    if isinstance(item, dict) or not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
        raise ValueError(
            f"{where} must be (x, y) or (x, y, index); got {type(item).__name__}"
            + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else "")
            + ": wrap the dataset so that it returns the image and its label")
    return item[0], item[1], item[2] if len(item) == 3 else None


class Stream:
    """Batches of exactly ``batch_size`` examples from tensors, a ``Dataset`` or a loader.

    ``n`` is the number of examples when known (``None`` for an iterable without a
    length); ``from_tensors`` says whether the data were stacked tensors (then ``x`` and
    ``y`` hold them). Iterate with :meth:`batches` (every call starts from the beginning)."""

    def __init__(self, source: Any, batch_size: int, y: Tensor | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.batch_size = int(batch_size)
        self.from_tensors = isinstance(source, Tensor)
        self.x: Tensor | None = source if self.from_tensors else None
        self.y: Tensor | None = y
        self.source = source
        if self.from_tensors:
            assert y is not None
            self.n: int | None = int(source.shape[0])
        elif isinstance(source, Dataset) and not isinstance(source, IterableDataset):
            self.n = len(source) if isinstance(source, Sized) else None
        else:
            try:
                ds = source.dataset if isinstance(source, DataLoader) else None
                self.n = len(ds) if isinstance(ds, Sized) else None
            except TypeError:
                self.n = None

    @property
    def n_batches(self) -> int | None:
        """Batches of :meth:`batches` (``None`` when ``n`` is unknown)."""
        return None if self.n is None else -(-self.n // self.batch_size)

    def _chunks(self) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        """Pieces ``(x, y, ids or None)`` of any size, in stream order."""
        src = self.source
        if self.from_tensors:
            assert self.x is not None and self.y is not None
            for s in range(0, self.x.shape[0], self.batch_size):
                yield self.x[s : s + self.batch_size], self.y[s : s + self.batch_size], None
            return
        if isinstance(src, Dataset) and not isinstance(src, IterableDataset) and self.n is not None:
            for s in range(0, self.n, self.batch_size):
                items = [_split_item(src[i], f"item {i} of the dataset")
                         for i in range(s, min(s + self.batch_size, self.n))]
                xs = torch.stack([_as_tensor(it[0], "an image") for it in items])
                ys = torch.stack([_as_tensor(it[1], "a label").reshape(()) for it in items])
                ids = (torch.stack([_as_tensor(it[2], "an index").reshape(()) for it in items])
                       if items[0][2] is not None else None)
                yield xs, ys, ids
            return
        if not isinstance(src, Iterable):
            raise ValueError(f"data must be tensors x, y, a Dataset or a DataLoader; got "
                             f"{type(src).__name__}")
        for b, batch in enumerate(src):
            xb, yb, ib = _split_item(batch, f"batch {b} of the loader")
            xb, yb = _as_tensor(xb, "a batch of images"), _as_tensor(yb, "a batch of labels")
            if xb.dim() == 3 and yb.dim() == 0:  # an iterable of single items
                xb, yb, ib = xb[None], yb[None], None if ib is None else _as_tensor(ib, "")[None]
            yield xb, yb, None if ib is None else _as_tensor(ib, "a batch of indices")

    def batches(self) -> Iterator[Batch]:
        """The batches, each of exactly ``batch_size`` examples (the last may be smaller),
        on the CPU with int64 labels and ids."""
        buf: list[tuple[Tensor, Tensor, Tensor]] = []
        held = start = index = 0

        def emit(take: int) -> Batch:
            nonlocal buf, held, start, index
            xs, ys, ids, rest, got = [], [], [], [], 0
            for xb, yb, ib in buf:
                k = min(take - got, xb.shape[0])
                if k > 0:
                    xs.append(xb[:k]); ys.append(yb[:k]); ids.append(ib[:k])  # noqa: E702
                if k < xb.shape[0]:
                    rest.append((xb[k:], yb[k:], ib[k:]))
                got += k
            buf, held = rest, held - got
            out = Batch(xs[0] if len(xs) == 1 else torch.cat(xs),
                        (ys[0] if len(ys) == 1 else torch.cat(ys)).to(torch.int64),
                        (ids[0] if len(ids) == 1 else torch.cat(ids)).to(torch.int64),
                        start, index)
            start, index = start + got, index + 1
            return out

        pos = 0
        for xb, yb, ib in self._chunks():
            if xb.shape[0] != yb.shape[0]:
                raise ValueError(f"a batch holds {xb.shape[0]} images but {yb.shape[0]} labels")
            m = int(xb.shape[0])
            ids = torch.arange(pos, pos + m) if ib is None else ib.reshape(-1)
            pos += m
            if m == 0:
                continue
            buf.append((xb.detach().cpu(), yb.detach().cpu().reshape(-1), ids.cpu()))
            held += m
            while held >= self.batch_size:
                yield emit(self.batch_size)
        if held:
            yield emit(held)


def as_stream(data: Any, y: Tensor | None, batch_size: int) -> Stream:
    """A :class:`Stream` of ``data`` (tensors ``x`` with ``y``, or a ``Dataset`` /
    ``DataLoader`` with ``y`` omitted); a clear ``ValueError`` for a wrong combination."""
    if isinstance(data, Tensor):
        if y is None:
            raise ValueError("x is a tensor but y is missing: give the labels y [N], or pass "
                             "a Dataset / DataLoader yielding (x, y) instead")
        if not isinstance(y, Tensor):
            raise ValueError(f"y must be a tensor of labels [N]; got {type(y).__name__}")
        if data.shape[0] != y.shape[0]:
            raise ValueError(f"x has {data.shape[0]} examples but y has {y.shape[0]} labels")
        return Stream(data, batch_size, y)
    if y is not None:
        raise ValueError(f"data is a {type(data).__name__}, which carries its labels: omit y")
    if not is_stream(data):
        raise ValueError(f"data must be tensors x, y, a Dataset or a DataLoader; got "
                         f"{type(data).__name__}")
    return Stream(data, batch_size)
