"""The entry points that load a registered dataset: :func:`load_split` and :func:`tensors`."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor

from .batching import to_unit
from .bundled import TOY2D_SEED, TOY2D_SIZES, digits_split, make_toy2d
from .registry import DataError, DatasetInfo, dataset_info, default_data_dir
from .sources import load_cifar10, load_idx_split

logger = logging.getLogger(__name__)

__all__ = ["load_eval_data", "load_split", "tensors"]


def load_split(
    name: str,
    split: str,
    data_dir: str | Path | None = None,
    download: bool = True,
    *,
    mirror: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Load one split of a registered dataset.

    Args:
        name: a key of :data:`DATASETS`.
        split: ``"train"`` or ``"test"``.
        data_dir: folder holding ``<name>/`` subfolders (default :func:`default_data_dir`).
        download: fetch missing files (verified by SHA-256) into ``data_dir/<name>/``.
        mirror: base URL replacing the upstream one (files at ``<mirror>/<name>/<file>``);
            defaults to ``$WIDEBERTH_MIRROR``.

    Returns:
        ``x`` ``[N, C, H, W]`` (uint8 for image sets, float32 in [0, 1] for ``digits`` and
        ``toy2d``) and ``y`` int64 ``[N]``.
    """
    info = dataset_info(name)
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; expected 'train' or 'test'")
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if name == "digits":
        x, y = digits_split(split)
    elif name == "toy2d":
        x, y = make_toy2d(
            TOY2D_SIZES[split], TOY2D_SEED + (split == "test"), num_classes=info.num_classes
        )
    elif name == "cifar10":
        x, y = load_cifar10(split, root, download, mirror)
    else:
        x, y = load_idx_split(name, split, root, download, mirror)
    logger.debug("loaded %s/%s: x %s %s", name, split, tuple(x.shape), x.dtype)
    return x, y


def tensors(
    name: str,
    split: str = "test",
    n: int | None = None,
    *,
    data_dir: str | Path | None = None,
    seed: int = 0,
    download: bool = True,
) -> tuple[Tensor, Tensor]:
    """Quick access: x float32 in [0, 1] ``[N, C, H, W]`` and y int64 ``[N]``.

    ``n`` picks a seeded random subset: the first ``n`` rows of
    ``torch.randperm(N, generator=torch.Generator().manual_seed(seed))``, in that order,
    so smaller ``n`` give prefixes of larger ones. ``n=None`` returns the whole split.
    """
    x, y = load_split(name, split, data_dir, download)
    if n is not None:
        if not 0 < n <= x.shape[0]:
            raise DataError(f"{name}/{split}: n must be in [1, {x.shape[0]}], got {n}")
        rows = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
        x, y = x[rows], y[rows]
    return to_unit(x), y


def load_eval_data(
    spec: str, split: str = "test", data_dir: str | Path | None = None, download: bool = True
) -> tuple[Tensor, Tensor, DatasetInfo]:
    """The examples to evaluate on that ``spec`` names: ``x`` float32 in [0, 1]
    ``[N, C, H, W]``, ``y`` int64 ``[N]`` and the dataset's :class:`DatasetInfo`.

    ``spec`` is a registered dataset name (its ``split``).
    """
    x, y = load_split(spec, split, data_dir, download)
    return to_unit(x), y, dataset_info(spec)
