"""Every dataset known by name: the built-in ones, those registered in Python, and those of
installed packages' ``wideberth.datasets`` entry points.

**In Python**: ``register_dataset(name, loader, num_classes=, input_shape=, ...)``, where
``loader(split, data_dir) -> (x, y)`` is called with ``split`` ``"train"`` or ``"test"``
and ``data_dir`` a :class:`~pathlib.Path` (``data.data_dir``, else
:func:`~wideberth.data.registry.default_data_dir`). A registration lives as long as the
process: a run trained on it cannot be re-evaluated by another process (``wideberth
evaluate RUN``) unless that process registers it again — use a dataset spec
(``npz:PATH``, ``safetensors:PATH``, ``folder:PATH``) or an entry point for that.

**Entry points** (group ``wideberth.datasets``): the entry point's name is the dataset name
and its value ``package.module:obj`` names a *loader carrying its description*: a callable
``obj(split, data_dir) -> (x, y)`` with attributes ``num_classes`` and ``input_shape``
(``(C, H, W)``) and optionally ``description``, ``class_names`` and ``augment``. A
function with those attributes set, or an instance of a class with ``__call__`` and those
attributes, both qualify. In ``pyproject.toml``::

    [project.entry-points."wideberth.datasets"]
    my-set = "my_package.data:my_set"

Entry points are listed by :func:`list_datasets` without being imported; one is imported
the first time its name is used, and an entry point that fails to import or does not follow
the convention is a :class:`~wideberth.data.registry.DataError` naming it. Built-in names
cannot be replaced; a Python registration wins over an entry point of the same name.
"""

from __future__ import annotations

import importlib.metadata as metadata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .registry import DATASETS, DataError, DatasetInfo

__all__ = [
    "ENTRY_POINT_GROUP",
    "Loader",
    "RegisteredDataset",
    "list_datasets",
    "lookup_dataset",
    "register_dataset",
    "unregister_dataset",
]

ENTRY_POINT_GROUP = "wideberth.datasets"

Loader = Callable[[str, Path], tuple[Any, Any]]
"""``loader(split, data_dir) -> (x, y)``: images and integer labels of ``split``."""

SPEC_HINT = (
    "A dataset registered with wideberth.data.register_dataset exists only in the process "
    "that registered it; to train or evaluate in another process (e.g. `wideberth evaluate "
    "RUN`) use a dataset spec (npz:PATH, safetensors:PATH, folder:PATH) or install a "
    f"package with a {ENTRY_POINT_GROUP!r} entry point."
)


@dataclass(frozen=True)
class RegisteredDataset:
    """A dataset outside :data:`~wideberth.data.registry.DATASETS`: its description, its
    loader and where it came from (``"python"`` or the entry point)."""

    info: DatasetInfo
    loader: Loader
    origin: str


_PYTHON: dict[str, RegisteredDataset] = {}
_FROM_ENTRY_POINTS: dict[str, RegisteredDataset] = {}


def _make_info(
    name: str,
    *,
    num_classes: Any,
    input_shape: Any,
    description: Any,
    class_names: Any,
    augment: Any,
    where: str,
) -> DatasetInfo:
    if not isinstance(name, str) or not name or ":" in name or any(c.isspace() for c in name):
        raise DataError(
            f"{where}: a dataset name must be a non-empty string without ':' or spaces (those "
            f"mark dataset specs), got {name!r}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise DataError(f"{where}: num_classes must be an integer >= 1, got {num_classes!r}")
    shape = tuple(input_shape) if isinstance(input_shape, Sequence) else None
    if (
        shape is None
        or len(shape) != 3
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape)
    ):
        raise DataError(
            f"{where}: input_shape must be (C, H, W), three positive integers, got {input_shape!r}"
        )
    names = tuple(str(n) for n in class_names)
    if names and len(names) != num_classes:
        raise DataError(
            f"{where}: class_names has {len(names)} names for num_classes={num_classes}"
        )
    if augment not in (None, "cifar"):
        raise DataError(f"{where}: augment must be None or 'cifar', got {augment!r}")
    return DatasetInfo(name, num_classes, (shape[0], shape[1], shape[2]), augment, str(description), names)


def register_dataset(
    name: str,
    loader: Loader,
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    description: str = "",
    class_names: Sequence[str] = (),
    augment: str | None = None,
) -> DatasetInfo:
    """Register ``loader`` as dataset ``name`` for this process; returns its :class:`DatasetInfo`.

    ``loader(split, data_dir) -> (x, y)``: ``x`` images (numpy or tensor, ``[N, C, H, W]``
    or ``[N, H, W, C]`` matching ``input_shape = (C, H, W)``; uint8, or float in [0, 1]),
    ``y`` integer labels ``[N]`` in ``[0, num_classes)``; both are checked on every load.
    Per-example indices are rows of what the loader returns, so it must return the same
    rows in the same order every time. Registering a name again replaces the earlier Python
    registration; a built-in name is refused. (See the module docstring for how long a
    registration lives.)
    """
    if name in DATASETS:
        raise DataError(f"register_dataset: {name!r} is a built-in dataset; choose another name")
    if not callable(loader):
        raise DataError(f"register_dataset({name!r}): loader must be callable, got {loader!r}")
    info = _make_info(
        name, num_classes=num_classes, input_shape=input_shape, description=description,
        class_names=class_names, augment=augment, where=f"register_dataset({name!r})",
    )
    _PYTHON[name] = RegisteredDataset(info, loader, "python")
    return info


def unregister_dataset(name: str) -> None:
    """Forget a dataset registered with :func:`register_dataset` (no error if there is none)."""
    _PYTHON.pop(name, None)


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _describe(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    source = f" (installed by {dist.name})" if dist is not None else ""
    return f"entry point {ep.name!r} = {ep.value!r} of group {ENTRY_POINT_GROUP!r}{source}"


def _load_entry_point(ep: metadata.EntryPoint) -> RegisteredDataset:
    where = _describe(ep)
    try:
        obj = ep.load()
    except Exception as e:  # any import-time failure of a third-party package
        raise DataError(
            f"dataset {where} failed to load: {type(e).__name__}: {e}. Fix: repair or "
            "reinstall the package that provides it, or uninstall it."
        ) from e
    missing = [a for a in ("num_classes", "input_shape") if not hasattr(obj, a)]
    if not callable(obj) or missing:
        what = "is not callable" if not callable(obj) else f"lacks {', '.join(missing)}"
        raise DataError(
            f"dataset {where}: {obj!r} {what}. An entry point must name a loader "
            "`obj(split, data_dir) -> (x, y)` carrying attributes num_classes and input_shape "
            "(and optionally description, class_names, augment)."
        )
    info = _make_info(
        ep.name,
        num_classes=obj.num_classes,
        input_shape=obj.input_shape,
        description=getattr(obj, "description", "") or f"from {ep.value}",
        class_names=getattr(obj, "class_names", ()) or (),
        augment=getattr(obj, "augment", None),
        where=f"dataset {where}",
    )
    return RegisteredDataset(info, obj, where)


def list_datasets() -> list[str]:
    """Names of every dataset known by name, sorted: built-in, registered in this process,
    and installed packages' entry points (listed without importing them)."""
    return sorted(set(DATASETS) | set(_PYTHON) | set(_entry_points()))


def lookup_dataset(name: str) -> DatasetInfo | RegisteredDataset:
    """A built-in dataset's :class:`DatasetInfo`, or the :class:`RegisteredDataset` of a
    Python registration or (imported now, once) an entry point; :class:`DataError` listing
    the known names, and how to make a dataset known in every process, if ``name`` is none."""
    if name in DATASETS:
        return DATASETS[name]
    if name in _PYTHON:
        return _PYTHON[name]
    if name in _FROM_ENTRY_POINTS:
        return _FROM_ENTRY_POINTS[name]
    eps = _entry_points()
    if name in eps:
        reg = _FROM_ENTRY_POINTS[name] = _load_entry_point(eps[name])
        return reg
    hint = ""
    for kind, ends in (("npz", (".npz",)), ("safetensors", (".safetensors",))):
        if name.lower().endswith(ends):
            hint = f" Did you mean {kind}:{name}?"
    if not hint and Path(name).expanduser().is_dir():
        hint = f" Did you mean folder:{name}?"
    raise DataError(
        f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}.{hint} "
        + SPEC_HINT
    )
