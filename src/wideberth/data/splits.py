"""Seeded train / validation carving: :class:`DataSplits` and :func:`build_splits`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import DataConfig
from .batching import IndexedTensors
from .loading import load_indexed_splits, resolve_data_config
from .registry import DataError, DatasetInfo

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
    name: str | DataConfig,
    *,
    data_dir: str | Path | None = None,
    val_size: int = 0,
    train_subset: int | None = None,
    seed: int = 0,
    download: bool = True,
    test: str | None = None,
    test_fraction: float = 0.2,
) -> DataSplits:
    """Train (optionally subsampled), validation and test datasets.

    ``name`` is a dataset name or spec (see :mod:`wideberth.data.loading`); ``test`` and
    ``test_fraction`` give a spec's test split (a second spec, or the seeded carving with
    seed ``seed``). Given a whole :class:`~wideberth.config.DataConfig` instead, its fields
    (``name``, ``test``, ``test_fraction``, ``data_dir``, ``download``, ``val_size``,
    ``train_subset``, ``split_seed``) are used and the keyword arguments are not; its paths
    are first made absolute **in place** (:func:`~wideberth.data.loading.resolve_data_config`),
    so the config a run records names the same files from any directory.

    A permutation of the full train split drawn from ``torch.Generator().manual_seed(seed)``
    gives the validation rows (its first ``val_size``) and the training rows (the next
    ``train_subset``, or all the rest). Both keep ascending original order, and the
    validation set does not depend on ``train_subset``. ``index`` values are rows of the
    full train split (for ``test``: rows of the test split) — for a spec, rows of the file
    the examples came from, so a carved train and test split have disjoint indices.
    """
    if isinstance(name, DataConfig):
        resolved = resolve_data_config(name)
        name.name, name.test, name.data_dir = resolved.name, resolved.test, resolved.data_dir
        return build_splits(
            resolved.name, data_dir=resolved.data_dir, val_size=resolved.val_size,
            train_subset=resolved.train_subset, seed=resolved.split_seed,
            download=resolved.download, test=resolved.test, test_fraction=resolved.test_fraction,
        )
    data = load_indexed_splits(
        name, data_dir, download, test=test, test_fraction=test_fraction, split_seed=seed
    )
    info = data.info
    x_tr, y_tr, i_tr = data.splits["train"]
    x_te, y_te, i_te = data.splits["test"]
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
    full = IndexedTensors(x_tr, y_tr, i_tr, num_classes=info.num_classes)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_rows, train_rows = perm[:val_size], perm[val_size:]
    if train_subset is not None:
        train_rows = train_rows[:train_subset]
    train = full.subset(train_rows.sort().values)
    val = full.subset(val_rows.sort().values) if val_size else None
    test_ds = IndexedTensors(x_te, y_te, i_te, num_classes=info.num_classes)
    logger.info(
        "%s splits: train %d, val %d, test %d (seed %d)",
        name, len(train), 0 if val is None else len(val), len(test_ds), seed,
    )
    return DataSplits(train=train, val=val, test=test_ds, info=info)
