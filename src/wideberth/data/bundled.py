"""Datasets that need no download: scikit-learn's 8x8 digits and the synthetic toy2d."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .registry import DataError

__all__ = [
    "DIGITS_SPLIT_SEED",
    "DIGITS_TEST_SIZE",
    "TOY2D_SEED",
    "TOY2D_SIZES",
    "digits_split",
    "make_toy2d",
]

DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0
TOY2D_SEED = 20200
TOY2D_SIZES = {"train": 600, "test": 300}


def digits_split(split: str) -> tuple[Tensor, Tensor]:
    """The ``"train"`` or ``"test"`` split of scikit-learn's digits: x float32 ``[N, 1, 8, 8]``
    in [0, 1] (values / 16), y int64 ``[N]``, rows in ascending original order.

    The split is fixed: stratified, :data:`DIGITS_TEST_SIZE` test images,
    ``random_state=DIGITS_SPLIT_SEED``.
    """
    # scikit-learn ships no type information
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]
    from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / 16.0
    target = np.asarray(bunch.target, dtype=np.int64)
    train_rows, test_rows = train_test_split(
        np.arange(len(target)),
        test_size=DIGITS_TEST_SIZE,
        stratify=target,
        random_state=DIGITS_SPLIT_SEED,
    )
    rows = np.sort(train_rows if split == "train" else test_rows)
    return torch.from_numpy(images[rows][:, None].copy()), torch.from_numpy(target[rows])


def make_toy2d(
    n: int, seed: int, *, num_classes: int = 3, std: float = 0.07, radius: float = 0.3
) -> tuple[Tensor, Tensor]:
    """Gaussian blobs in the unit square, returned as x float32 ``[n, 1, 1, 2]``, y ``[n]``.

    Class ``k`` is centred at ``0.5 + radius * (cos t_k, sin t_k)``, ``t_k = pi/2 + 2 pi k / K``;
    labels cycle ``0, 1, ..., K-1, 0, ...``; points are clipped to ``[0, 1]``. Coordinates
    are on the same scale as pixels, so ℓp margins are directly in input units.
    """
    if n < 0 or num_classes < 1:
        raise DataError(f"make_toy2d: expected n >= 0 and num_classes >= 1, got {n}, {num_classes}")
    rng = np.random.default_rng(seed)
    y = np.arange(n) % num_classes
    t = np.pi / 2 + 2 * np.pi * np.arange(num_classes) / num_classes
    centres = 0.5 + radius * np.stack([np.cos(t), np.sin(t)], axis=1)
    x = centres[y] + std * rng.standard_normal((n, 2))
    x = np.clip(x, 0.0, 1.0).astype(np.float32)
    return torch.from_numpy(x.reshape(n, 1, 1, 2)), torch.from_numpy(y.astype(np.int64))
