"""Dataset specs: a user's data named by a string, ``KIND:PATH``.

- ``npz:PATH`` and ``safetensors:PATH``: arrays ``x`` and ``y`` (and class names), see
  :mod:`~wideberth.data.user_files`;
- ``folder:PATH``: one sub-folder of PNG/JPEG images per class, see
  :mod:`~wideberth.data.image_folder`.

**Paths.** A relative ``PATH`` is resolved against ``data_dir`` when one is given
(``data.data_dir``), else against the current directory, and ``~`` is expanded. Training
records the spec with its absolute path in the run's config (``config.yaml`` and every
checkpoint), so ``wideberth evaluate RUN`` re-reads the same file from any directory.

**Train and test.** With a second spec for the test split (``data.test``) each file is one
split. Without one, the file's ``N`` examples are carved by a seeded split: the test rows
are the first ``round(test_fraction * N)`` (at least 1, at most ``N - 1``) of
``numpy.random.default_rng(split_seed).permutation(N)``, the train rows all the others,
both in ascending order. numpy's PCG64 stream is fixed across platforms and versions, so a
fresh process derives the same rows.

**Indices.** An example's stable index (what per-example state such as MMA's ε is keyed
by) is its row in the file it came from, for the train and the test split alike: with a
carved split the train and test indices are disjoint sets of rows of the one file.

**Description.** A spec's :class:`~wideberth.data.registry.DatasetInfo`: ``name`` the
spec with its absolute path, ``num_classes`` the number of class names when the file gives
them, else ``max(y) + 1``; ``input_shape`` the images' ``(C, H, W)``; ``augment`` None.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .image_folder import read_image_folder
from .registry import DataError, DatasetInfo
from .user_files import read_array_file

__all__ = [
    "SPEC_KINDS",
    "DatasetSpec",
    "SpecData",
    "carve_test",
    "is_spec",
    "merge_infos",
    "parse_spec",
    "read_spec",
    "resolve_spec",
]

SPEC_KINDS = ("npz", "safetensors", "folder")


def is_spec(name: str) -> bool:
    """Whether ``name`` is a dataset spec (``npz:``, ``safetensors:`` or ``folder:`` prefix)."""
    kind, sep, _ = name.partition(":")
    return bool(sep) and kind in SPEC_KINDS


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed spec: its kind and its absolute path; ``str()`` gives ``KIND:PATH``."""

    kind: str
    path: Path

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}"


def parse_spec(spec: str, data_dir: str | Path | None = None) -> DatasetSpec:
    """Parse ``KIND:PATH`` and resolve ``PATH`` (against ``data_dir``, else the current
    directory); :class:`DataError` for an unknown kind or an empty path."""
    kind, sep, raw = spec.partition(":")
    if not sep or kind not in SPEC_KINDS:
        raise DataError(
            f"{spec!r} is not a dataset spec; expected one of "
            f"{', '.join(k + ':PATH' for k in SPEC_KINDS)}"
        )
    if not raw.strip():
        raise DataError(f"dataset spec {spec!r} names no path. Fix: {kind}:path/to/data")
    path = Path(raw).expanduser()
    if not path.is_absolute():
        base = Path(data_dir).expanduser() if data_dir is not None else Path.cwd()
        path = base / path
    return DatasetSpec(kind, Path(os.path.abspath(path)))


def resolve_spec(spec: str, data_dir: str | Path | None = None) -> str:
    """``spec`` with its path made absolute (see :func:`parse_spec`)."""
    return str(parse_spec(spec, data_dir))


@dataclass(frozen=True)
class SpecData:
    """Everything a spec's file holds: ``x`` ``[N, C, H, W]`` (uint8 or float32 in [0, 1]),
    ``y`` int64 ``[N]`` and its :class:`DatasetInfo`."""

    x: Tensor
    y: Tensor
    info: DatasetInfo


def read_spec(spec: str | DatasetSpec, data_dir: str | Path | None = None) -> SpecData:
    """Read every example of ``spec``: :class:`DataError` naming the file for a missing
    file, missing arrays, wrong shapes or dtypes, out-of-range labels or bad images."""
    s = spec if isinstance(spec, DatasetSpec) else parse_spec(spec, data_dir)
    if s.kind == "folder":
        folder = read_image_folder(s.path)
        x, y, names = folder.x, folder.y, folder.class_names
    else:
        if not s.path.exists():
            raise DataError(
                f"{s}: {s.path} does not exist. Fix: check the path (relative paths are "
                "resolved against data.data_dir when it is set, else the current directory)."
            )
        arrays = read_array_file(s.kind, s.path)
        x, y, names = arrays.x, arrays.y, arrays.class_names
    k = len(names) if names else int(y.max()) + 1
    c, h, w = x.shape[1:]
    info = DatasetInfo(
        str(s), k, (int(c), int(h), int(w)), None,
        f"{s.kind} dataset {s.path}: {x.shape[0]} examples of {c}x{h}x{w}, {k} classes",
        names,
    )
    return SpecData(x, y, info)


def carve_test(n: int, test_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded train / test rows of ``n`` examples: ``(train_rows, test_rows)``, int64,
    ascending, disjoint, together ``0..n-1``; the test rows are the first
    ``round(test_fraction * n)`` (clamped to ``[1, n - 1]``) of
    ``numpy.random.default_rng(seed).permutation(n)``."""
    if n < 2:
        raise DataError(f"a dataset needs at least 2 examples to carve a test split, got {n}")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = min(max(int(round(test_fraction * n)), 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    test = torch.from_numpy(np.sort(perm[:n_test]).astype(np.int64))
    train = torch.from_numpy(np.sort(perm[n_test:]).astype(np.int64))
    return train, test


def merge_infos(train: DatasetInfo, test: DatasetInfo, y_test: Tensor) -> DatasetInfo:
    """The description of a dataset whose test split is another spec: the train spec's, with
    as many classes as either file needs; :class:`DataError` when the two files' images
    differ in shape, their class names disagree, or a test label exceeds the train file's
    named classes."""
    if train.input_shape != test.input_shape:
        raise DataError(
            f"the test spec {test.name} has images of shape {list(test.input_shape)}, the "
            f"train spec {train.name} {list(train.input_shape)}. Fix: give both splits the "
            "same image size and channels."
        )
    if train.class_names and test.class_names and train.class_names != test.class_names:
        raise DataError(
            f"the class names of {test.name} {list(test.class_names)} differ from those of "
            f"{train.name} {list(train.class_names)}. Fix: store the same classes, in the same order."
        )
    names = train.class_names or test.class_names
    k = len(names) if names else max(train.num_classes, test.num_classes)
    if len(y_test) and int(y_test.max()) >= k:
        raise DataError(
            f"{test.name}: test labels reach {int(y_test.max())}, but {train.name} names "
            f"{k} classes. Fix: use the same label coding in both files."
        )
    return DatasetInfo(train.name, k, train.input_shape, None, train.description, names)
