"""Datasets for wideberth: registry, verified loading, (x, y, index) datasets, batching.

A dataset is named by a built-in name (``digits``, ``mnist``, ...), a name registered with
:func:`register_dataset` or by an installed package's ``wideberth.datasets`` entry point,
or a dataset spec: ``npz:PATH``, ``safetensors:PATH`` (arrays ``x`` and ``y``) or
``folder:PATH`` (one sub-folder of images per class). Any of them works wherever a name
is taken (``data.name``, ``data.test``, :func:`load_split`, :func:`build_splits`,
:func:`dataset_info`, :func:`tensors`, :func:`load_eval_data`).

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
- :mod:`~wideberth.data.catalog`: :func:`register_dataset`, the ``wideberth.datasets``
  entry points, :func:`list_datasets`;
- :mod:`~wideberth.data.specs`: dataset specs (paths, the seeded train / test carving,
  indices), read by :mod:`~wideberth.data.user_files` (npz, safetensors) and
  :mod:`~wideberth.data.image_folder` (Pillow), checked by :mod:`~wideberth.data.arrays`;
- :mod:`~wideberth.data.formats`: the IDX and CIFAR-binary readers;
- :mod:`~wideberth.data.sources`: upstream files, local lookup, verified downloads;
- :mod:`~wideberth.data.bundled`: ``digits`` and ``toy2d``, which need no download;
- :mod:`~wideberth.data.loading`: :func:`load_split`, :func:`load_config_split`,
  :func:`dataset_info`, :func:`tensors`, :func:`load_eval_data`;
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
from .catalog import ENTRY_POINT_GROUP, list_datasets, register_dataset, unregister_dataset
from .formats import read_cifar_archive, read_idx
from .loading import (
    IndexedData,
    dataset_info,
    load_config_split,
    load_eval_data,
    load_indexed_splits,
    load_split,
    resolve_data_config,
    tensors,
)
from .registry import DATA_ENV, DATASETS, DataError, DatasetInfo, default_data_dir
from .sources import (
    FASHION_DIR_ENV,
    IDX_FILES,
    MIRROR_ENV,
    REMOTE,
    SYSTEM_DIRS,
    RemoteFile,
    RemoteSource,
)
from .specs import SPEC_KINDS, carve_test, is_spec, resolve_spec
from .splits import DataSplits, build_splits

__all__ = [
    "DATASETS",
    "ENTRY_POINT_GROUP",
    "SPEC_KINDS",
    "DataError",
    "DataSplits",
    "DatasetInfo",
    "IndexedTensors",
    "apply_cifar_augment",
    "augment_cifar",
    "IndexedData",
    "build_splits",
    "carve_test",
    "cifar_augment_params",
    "dataset_info",
    "default_data_dir",
    "is_spec",
    "iterate_batches",
    "list_datasets",
    "load_config_split",
    "load_eval_data",
    "load_indexed_splits",
    "load_split",
    "make_toy2d",
    "num_batches",
    "read_cifar_archive",
    "read_idx",
    "register_dataset",
    "resolve_data_config",
    "resolve_spec",
    "tensors",
    "unregister_dataset",
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
