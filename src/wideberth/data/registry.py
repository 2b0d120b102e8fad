"""The dataset registry: what each dataset is, the data layer's error type, the data folder.

Every other module of :mod:`wideberth.data` builds on this one: :class:`DataError` is the
only exception the data layer raises for bad input, and :data:`DATASETS` is the single
source of each built-in dataset's class count, input shape, default augmentation and class
names. (Datasets registered in Python or by entry points: :mod:`~wideberth.data.catalog`;
dataset specs: :mod:`~wideberth.data.specs`.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DATASETS",
    "DATA_ENV",
    "DataError",
    "DatasetInfo",
    "default_data_dir",
]

DATA_ENV = "WIDEBERTH_DATA"


class DataError(ValueError):
    """Bad input to the data layer: unknown names, bad arguments, corrupt or missing files."""


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset: its name (for a spec, the spec with its absolute
    path), class count, input shape ``(C, H, W)``, default training augmentation, a
    description and the class names (empty when unknown)."""

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W)
    augment: str | None  # default training augmentation
    description: str
    class_names: tuple[str, ...] = field(default=())


_DIGIT_NAMES = tuple(str(i) for i in range(10))

DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        "digits", 10, (1, 8, 8), None,
        "scikit-learn's 8x8 handwritten digits (1,797 images, values /16 into [0, 1]); "
        "fixed stratified split: 1,437 train / 360 test (random_state=0).",
        _DIGIT_NAMES,
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", 10, (1, 28, 28), None,
        "Fashion-MNIST, 60,000 train / 10,000 test 28x28 grey images (uint8).",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
    "mnist": DatasetInfo(
        "mnist", 10, (1, 28, 28), None,
        "MNIST handwritten digits, 60,000 train / 10,000 test 28x28 grey images (uint8).",
        _DIGIT_NAMES,
    ),
    "cifar10": DatasetInfo(
        "cifar10", 10, (3, 32, 32), "cifar",
        "CIFAR-10 (binary version), 50,000 train / 10,000 test 32x32 colour images (uint8).",
        ("airplane", "automobile", "bird", "cat", "deer",
         "dog", "frog", "horse", "ship", "truck"),
    ),
    "toy2d": DatasetInfo(
        "toy2d", 3, (1, 1, 2), None,
        "Synthetic 2-D points in [0, 1]^2 stored as [N, 1, 1, 2]: three Gaussian blobs "
        "(std 0.07) centred on a circle of radius 0.3 around (0.5, 0.5); 600 train / 300 test.",
        ("0", "1", "2"),
    ),
}


def default_data_dir() -> Path:
    """Data folder: ``$WIDEBERTH_DATA`` if set, else ``~/.cache/wideberth/data``."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "wideberth" / "data"
