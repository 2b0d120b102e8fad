"""Datasets for wideberth: registry, verified loading, (x, y, index) datasets, batching.

Every dataset is returned as ``x`` of shape ``[N, C, H, W]`` (uint8 for the image sets,
float32 in ``[0, 1]`` for ``digits`` and ``toy2d``) and ``y`` int64 of shape ``[N]``.
:class:`IndexedTensors` converts to float32 in ``[0, 1]`` per batch and carries a stable
``index`` per example (its row in the full original split), which per-example training
state (MMA's per-example ε, margin tracking) is keyed by.

Files from outside are untrusted:

- IDX files (MNIST, Fashion-MNIST) are parsed by :func:`read_idx`, which checks the
  header and the exact payload length, and are verified by the SHA-256 of their
  *decompressed* payload (Debian recompresses the ``.gz`` files, so compressed hashes
  differ between copies with identical content).
- Downloads go through pooch with the SHA-256 of the upstream compressed file; pooch
  writes to a temporary file in the target folder and moves it into place only after the
  hash matched, so a failed download never replaces a previous file.
- The CIFAR-10 binary archive is read member by member straight from the tar file; an
  archive with absolute paths, ``..`` components, links or devices is rejected.

Environment variables: ``WIDEBERTH_DATA`` (data folder, see :func:`default_data_dir`),
``WIDEBERTH_MIRROR`` (base URL of a mirror laid out as ``<mirror>/<dataset>/<file>``),
``WIDEBERTH_FASHION_MNIST_DIR`` (an extra folder holding the Fashion-MNIST IDX files).

Modules (every public name is re-exported here):

- :mod:`~wideberth.data.registry`: :data:`DATASETS`, :class:`DatasetInfo`,
  :class:`DataError`, the data folder;
- :mod:`~wideberth.data.formats`: the IDX and CIFAR-binary readers;
- :mod:`~wideberth.data.sources`: upstream files, local lookup, verified downloads;
- :mod:`~wideberth.data.bundled`: ``digits`` and ``toy2d``, which need no download;
- :mod:`~wideberth.data.loading`: :func:`load_split` and :func:`tensors`;
- :mod:`~wideberth.data.batching`: :class:`IndexedTensors`, :func:`iterate_batches`,
  :func:`num_batches`, CIFAR augmentation as tensor ops;
- :mod:`~wideberth.data.splits`: seeded train / validation carving (:func:`build_splits`).
"""

from __future__ import annotations

from .batching import (
    IndexedTensors,
    apply_cifar_augment,
    augment_cifar,
    cifar_augment_params,
    iterate_batches,
    num_batches,
)
from .bundled import DIGITS_SPLIT_SEED, DIGITS_TEST_SIZE, TOY2D_SEED, TOY2D_SIZES, make_toy2d
from .formats import read_cifar_archive, read_idx
from .loading import load_eval_data, load_split, tensors
from .registry import (
    DATA_ENV,
    DATASETS,
    DataError,
    DatasetInfo,
    default_data_dir,
    list_datasets,
)
from .sources import (
    FASHION_DIR_ENV,
    IDX_FILES,
    MIRROR_ENV,
    REMOTE,
    SYSTEM_DIRS,
    RemoteFile,
    RemoteSource,
)
from .splits import DataSplits, build_splits

__all__ = [
    "DATASETS",
    "DataError",
    "DataSplits",
    "DatasetInfo",
    "IndexedTensors",
    "apply_cifar_augment",
    "augment_cifar",
    "build_splits",
    "cifar_augment_params",
    "default_data_dir",
    "iterate_batches",
    "list_datasets",
    "load_eval_data",
    "load_split",
    "make_toy2d",
    "num_batches",
    "read_cifar_archive",
    "read_idx",
    "tensors",
    # configuration and upstream files (module-level names of the former data.py)
    "DATA_ENV",
    "DIGITS_SPLIT_SEED",
    "DIGITS_TEST_SIZE",
    "FASHION_DIR_ENV",
    "IDX_FILES",
    "MIRROR_ENV",
    "REMOTE",
    "SYSTEM_DIRS",
    "TOY2D_SEED",
    "TOY2D_SIZES",
    "RemoteFile",
    "RemoteSource",
]
