"""Seeded train / validation carving: :class:`DataSplits` and :func:`build_splits`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from .batching import IndexedTensors
from .loading import load_split
from .registry import DataError, DatasetInfo, dataset_info

logger = logging.getLogger(__name__)

__all__ = ["DataSplits", "build_splits"]


@dataclass
class DataSplits:
    """Train / validation / test datasets of one dataset."""

    train: IndexedTensors
    val: IndexedTensors | None
    test: IndexedTensors
    info: DatasetInfo


def build_splits(
    name: str,
    *,
    data_dir: str | Path | None = None,
    val_size: int = 0,
    train_subset: int | None = None,
    seed: int = 0,
    download: bool = True,
) -> DataSplits:
    """Train (optionally subsampled), validation and test datasets.

    A permutation of the full train split drawn from ``torch.Generator().manual_seed(seed)``
    gives the validation rows (its first ``val_size``) and the training rows (the next
    ``train_subset``, or all the rest). Both keep ascending original order, and the
    validation set does not depend on ``train_subset``. ``index`` values are rows of the
    full train split (for ``test``: rows of the test split).
    """
    info = dataset_info(name)
    x_tr, y_tr = load_split(name, "train", data_dir, download)
    x_te, y_te = load_split(name, "test", data_dir, download)
    n = x_tr.shape[0]
    if not 0 <= val_size < n:
        raise DataError(
            f"{name}: val_size must be in [0, {n - 1}] (the train split has {n} examples), "
            f"got {val_size}"
        )
    if train_subset is not None and not 0 < train_subset <= n - val_size:
        raise DataError(
            f"{name}: train_subset must be in [1, {n - val_size}] ({n} train examples minus "
            f"val_size={val_size}), got {train_subset}"
        )
    full = IndexedTensors(x_tr, y_tr, num_classes=info.num_classes)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_rows, train_rows = perm[:val_size], perm[val_size:]
    if train_subset is not None:
        train_rows = train_rows[:train_subset]
    train = full.subset(train_rows.sort().values)
    val = full.subset(val_rows.sort().values) if val_size else None
    test = IndexedTensors(x_te, y_te, num_classes=info.num_classes)
    logger.info(
        "%s splits: train %d, val %d, test %d (seed %d)",
        name, len(train), 0 if val is None else len(val), len(test), seed,
    )
    return DataSplits(train=train, val=val, test=test, info=info)
