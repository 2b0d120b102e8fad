"""Loading any dataset by name or spec: :func:`load_split`, :func:`load_config_split`,
:func:`load_indexed_splits`, :func:`dataset_info`, :func:`tensors`, :func:`load_eval_data`.

A dataset is named by one string, wherever a name is taken (``data.name``, ``data.test``,
these functions, ``build_splits``):

- a built-in name (:data:`~wideberth.data.registry.DATASETS`);
- a name registered in Python or by an installed package's entry point
  (:mod:`~wideberth.data.catalog`);
- a spec ``npz:PATH``, ``safetensors:PATH`` or ``folder:PATH`` (:mod:`~wideberth.data.specs`:
  relative paths, the seeded train / test carving, what the indices are).

``data_dir`` is where the downloaded datasets live (``data_dir/<name>/``), the folder handed
to registered loaders, and the base of relative spec paths. The bundled ``digits`` and
``toy2d`` need no files: a ``data_dir`` given with them logs one warning per process and
dataset (it is not an error, so one config can switch datasets), never silently nothing.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..config import DataConfig
from .arrays import as_images, as_labels
from .batching import to_unit
from .bundled import TOY2D_SEED, TOY2D_SIZES, digits_split, make_toy2d
from .catalog import RegisteredDataset, lookup_dataset
from .registry import DataError, DatasetInfo, default_data_dir
from .sources import load_cifar10, load_idx_split
from .specs import carve_test, is_spec, merge_infos, parse_spec, read_spec

logger = logging.getLogger(__name__)

__all__ = [
    "IndexedData",
    "dataset_info",
    "load_config_split",
    "load_eval_data",
    "load_indexed_splits",
    "load_split",
    "resolve_data_config",
    "tensors",
]

SPLITS = ("train", "test")
BUNDLED = ("digits", "toy2d")
_warned_data_dir: set[str] = set()


@dataclass(frozen=True)
class IndexedData:
    """Splits of one dataset: ``splits[name] = (x, y, index)`` (``x`` ``[N, C, H, W]``
    uint8 or float32 in [0, 1], ``y`` int64 ``[N]``, ``index`` int64 ``[N]`` the stable
    per-example ids) and the dataset's :class:`DatasetInfo`."""

    splits: dict[str, tuple[Tensor, Tensor, Tensor]]
    info: DatasetInfo


def _check_splits(splits: tuple[str, ...]) -> None:
    for s in splits:
        if s not in SPLITS:
            raise DataError(f"unknown split {s!r}; expected 'train' or 'test'")


def _warn_bundled(name: str, data_dir: str | Path | None) -> None:
    if data_dir is not None and name not in _warned_data_dir:
        _warned_data_dir.add(name)
        logger.warning(
            "data_dir=%s is not used: %r is bundled with wideberth and reads no files "
            "(data_dir matters for downloaded datasets, registered loaders and relative "
            "dataset-spec paths)", data_dir, name,
        )


def _builtin(
    info: DatasetInfo, split: str, data_dir: str | Path | None, download: bool, mirror: str | None
) -> tuple[Tensor, Tensor]:
    name = info.name
    if name in BUNDLED:
        _warn_bundled(name, data_dir)
        if name == "digits":
            return digits_split(split)
        return make_toy2d(
            TOY2D_SIZES[split], TOY2D_SEED + (split == "test"), num_classes=info.num_classes
        )
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if name == "cifar10":
        return load_cifar10(split, root, download, mirror)
    return load_idx_split(name, split, root, download, mirror)


def _registered(
    reg: RegisteredDataset, split: str, data_dir: str | Path | None
) -> tuple[Tensor, Tensor]:
    info = reg.info
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    source = f"dataset {info.name!r} ({reg.origin}), split {split!r}"
    try:
        out = reg.loader(split, root)
    except DataError:
        raise
    except Exception as e:  # the user's loader: report which dataset failed
        raise DataError(f"{source}: the loader failed: {type(e).__name__}: {e}") from e
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise DataError(
            f"{source}: the loader must return a pair (x, y), got {type(out).__name__}"
        )
    x = as_images(out[0], source, shape=info.input_shape)
    return x, as_labels(out[1], x.shape[0], source, num_classes=info.num_classes)


def _spec_data(
    name: str,
    wanted: tuple[str, ...],
    data_dir: str | Path | None,
    test: str | None,
    test_fraction: float,
    split_seed: int,
) -> IndexedData:
    out: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
    if test is None:
        data = read_spec(name, data_dir)
        train_rows, test_rows = carve_test(data.x.shape[0], test_fraction, split_seed)
        rows = {"train": train_rows, "test": test_rows}
        for s in wanted:
            out[s] = (data.x[rows[s]], data.y[rows[s]], rows[s])
        return IndexedData(out, data.info)
    infos: dict[str, DatasetInfo] = {}
    for s in wanted:
        d = read_spec(name if s == "train" else test, data_dir)
        out[s] = (d.x, d.y, torch.arange(d.x.shape[0]))
        infos[s] = d.info
    if len(infos) == 2:
        return IndexedData(out, merge_infos(infos["train"], infos["test"], out["test"][1]))
    return IndexedData(out, infos[wanted[0]])


def load_indexed_splits(
    name: str,
    data_dir: str | Path | None = None,
    download: bool = True,
    *,
    splits: tuple[str, ...] = SPLITS,
    test: str | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    mirror: str | None = None,
) -> IndexedData:
    """The ``splits`` of dataset ``name`` with their stable indices, each file read once.

    ``test`` (a spec or name) is the test split of a spec ``name``; without it a spec's file
    is carved by ``test_fraction`` and ``split_seed`` (:func:`~wideberth.data.specs.carve_test`).
    Indices: rows of the split for named datasets, rows of the file for specs. ``info``
    describes the files read (with both splits of two specs: the train spec, with as many
    classes as either file needs).
    """
    _check_splits(splits)
    if test is not None and not is_spec(name):
        raise DataError(
            f"data.test={test!r} is for dataset specs; {name!r} is a named dataset with its "
            "own test split. Fix: remove data.test, or name the train data by a spec."
        )
    if is_spec(name):
        data = _spec_data(name, splits, data_dir, test, test_fraction, split_seed)
    else:
        found = lookup_dataset(name)
        info = found if isinstance(found, DatasetInfo) else found.info
        out = {}
        for s in splits:
            if isinstance(found, DatasetInfo):
                x, y = _builtin(found, s, data_dir, download, mirror)
            else:
                x, y = _registered(found, s, data_dir)
            out[s] = (x, y, torch.arange(x.shape[0]))
        data = IndexedData(out, info)
    for s, (x, _, _) in data.splits.items():
        logger.debug("loaded %s/%s: x %s %s", name, s, tuple(x.shape), x.dtype)
    return data


def load_split(
    name: str | DataConfig,
    split: str,
    data_dir: str | Path | None = None,
    download: bool = True,
    *,
    test: str | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    mirror: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Load one split of a dataset (a name or a spec, see the module docstring).

    Args:
        name: a dataset name or spec — or a whole :class:`~wideberth.config.DataConfig`,
            whose fields then replace the other arguments (:func:`load_config_split`).
        split: ``"train"`` or ``"test"``.
        data_dir: folder holding ``<name>/`` subfolders (default :func:`default_data_dir`);
            handed to registered loaders; base of relative spec paths.
        download: fetch missing files (verified by SHA-256) into ``data_dir/<name>/``.
        test, test_fraction, split_seed: a spec's test split (see :func:`load_indexed_splits`).
        mirror: base URL replacing the upstream one (files at ``<mirror>/<name>/<file>``);
            defaults to ``$WIDEBERTH_MIRROR``.

    Returns:
        ``x`` ``[N, C, H, W]`` (uint8 for image sets, float32 in [0, 1] otherwise) and
        ``y`` int64 ``[N]``.
    """
    if isinstance(name, DataConfig):
        return load_config_split(name, split)
    x, y, _ = load_indexed_splits(
        name, data_dir, download, splits=(split,), test=test,
        test_fraction=test_fraction, split_seed=split_seed, mirror=mirror,
    ).splits[split]
    return x, y


def resolve_data_config(data_cfg: DataConfig) -> DataConfig:
    """A copy of ``data_cfg`` with absolute paths: ``data_dir`` and the paths of the specs
    ``name`` and ``test`` (relative ones resolved against ``data_dir``, else the current
    directory), so the config means the same data from any directory."""
    data_dir = data_cfg.data_dir
    if data_dir is not None:
        data_dir = str(Path(data_dir).expanduser().absolute())

    def fix(spec: str | None) -> str | None:
        return str(parse_spec(spec, data_dir)) if spec is not None and is_spec(spec) else spec

    name = fix(data_cfg.name)
    assert name is not None
    return dataclasses.replace(data_cfg, name=name, test=fix(data_cfg.test), data_dir=data_dir)


def load_config_split(data_cfg: DataConfig, split: str) -> tuple[Tensor, Tensor]:
    """The ``split`` of a run's data exactly as training saw it, from its whole
    :class:`~wideberth.config.DataConfig` (``name``, ``test``, ``test_fraction``,
    ``split_seed``, ``data_dir``, ``download``): ``"test"`` is the split the run was tested
    on, ``"train"`` the full training split (before ``val_size`` / ``train_subset``)."""
    d = resolve_data_config(data_cfg)
    return load_split(
        d.name, split, d.data_dir, d.download,
        test=d.test, test_fraction=d.test_fraction, split_seed=d.split_seed,
    )


def dataset_info(name: str, data_dir: str | Path | None = None) -> DatasetInfo:
    """The :class:`DatasetInfo` of a dataset name or spec (a spec's file is read for it);
    :class:`DataError` listing the known names for an unknown one."""
    if is_spec(name):
        return read_spec(name, data_dir).info
    found = lookup_dataset(name)
    return found if isinstance(found, DatasetInfo) else found.info


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

    ``name`` is a dataset name or a spec (a spec's ``split`` is its carved part, with the
    default ``test_fraction`` 0.2 and ``split_seed`` 0). ``n`` picks a seeded random
    subset: the first ``n`` rows of
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

    A dataset name gives its ``split``; a dataset spec given alone (``--data npz:mine.npz``)
    gives **all** its examples, in file order — the file is the data to evaluate (``split``
    is then not used). To evaluate a run on the test split it was trained with, use
    :func:`load_config_split` with the run's config instead.
    """
    if is_spec(spec):
        data = read_spec(spec, data_dir)
        return to_unit(data.x), data.y, data.info
    _check_splits((split,))
    found = load_indexed_splits(spec, data_dir, download, splits=(split,))
    x, y, _ = found.splits[split]
    return to_unit(x), y, found.info
