"""Readers of a user's array files: ``.npz`` (numpy, never unpickled) and ``.safetensors``.

Both hold an array ``x`` (images, see :func:`~wideberth.data.arrays.as_images`) and an
array ``y`` (integer labels ``[N]``), and optionally class names: an ``.npz`` as a string
array ``classes`` (``np.array(["cat", "dog"])``), a ``.safetensors`` file as the JSON list
in its header metadata under ``"classes"`` (safetensors holds only numeric tensors).
An ``.npz`` is read with ``numpy.load(allow_pickle=False)``: no Python object in the
file is ever unpickled, so an object array is refused.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from .arrays import as_images, as_labels, to_numpy
from .registry import DataError

__all__ = ["ArrayFile", "check_class_names", "read_array_file", "read_npz", "read_safetensors"]


@dataclass(frozen=True)
class ArrayFile:
    """What an array file holds: ``x`` ``[N, C, H, W]`` (uint8 or float32 in [0, 1]),
    ``y`` int64 ``[N]`` and the class names (empty when the file names none)."""

    x: Tensor
    y: Tensor
    class_names: tuple[str, ...]


def _missing(path: Path, key: str, present: list[str], how: str) -> DataError:
    shown = ", ".join(repr(k) for k in present) or "none"
    return DataError(
        f"{path}: no array {key!r}; arrays present: {shown}. Fix: save the images as 'x' "
        f"and the integer labels as 'y' ({how})."
    )


def check_class_names(names: object, source: str) -> tuple[str, ...]:
    """``names`` (a sequence of strings, none empty, all distinct) as a tuple of strings."""
    arr = np.asarray(names)
    if arr.ndim != 1 or arr.dtype.kind not in "US" or arr.size == 0:
        raise DataError(
            f"{source}: classes must be a non-empty 1-D list of strings, found "
            f"{arr.dtype} {list(arr.shape)}. Fix: classes=np.array(['name0', 'name1', ...])."
        )
    out = tuple(str(s.decode() if isinstance(s, bytes) else s) for s in arr.tolist())
    if len(set(out)) != len(out) or any(not s for s in out):
        raise DataError(f"{source}: class names must be distinct and non-empty, found {out}")
    return out


def _build(x: object, y: object, names: tuple[str, ...], source: str) -> ArrayFile:
    images = as_images(x, source)
    labels = as_labels(y, images.shape[0], source, num_classes=len(names) or None)
    return ArrayFile(images, labels, names)


def read_npz(path: Path) -> ArrayFile:
    """Read ``x``, ``y`` and optional ``classes`` from an ``.npz`` archive (no unpickling)."""
    how = "np.savez(path, x=images, y=labels)"
    if not path.is_file():
        raise DataError(f"{path} does not exist. Fix: check the path of the npz: spec.")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"PK\x03\x04":
        what = "a single .npy array" if magic[:1] == b"\x93" else "not a zip archive"
        raise DataError(
            f"{path}: expected an .npz archive (a zip written by np.savez), found {what}. "
            f"Fix: save it with {how}."
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            present = list(f.files)
            for key in ("x", "y"):
                if key not in present:
                    raise _missing(path, key, present, how)
            x, y = f["x"], f["y"]
            names = check_class_names(f["classes"], f"{path}: classes") if "classes" in present else ()
    except DataError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise DataError(
                f"{path}: holds pickled Python objects (an object array), which wideberth never "
                f"loads. Fix: save numeric arrays only ({how}; classes as a string array)."
            ) from e
        raise DataError(f"{path}: not a readable .npz archive ({e}). Fix: save it with {how}.") from e
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable .npz archive ({e}). Fix: save it with {how}.") from e
    return _build(x, y, names, str(path))


def read_safetensors(path: Path) -> ArrayFile:
    """Read ``x``, ``y`` (and class names from the header metadata) from a ``.safetensors``."""
    from safetensors import SafetensorError, safe_open

    how = 'safetensors.numpy.save_file({"x": images, "y": labels}, path)'
    if not path.is_file():
        raise DataError(f"{path} does not exist. Fix: check the path of the safetensors: spec.")
    try:
        with safe_open(str(path), framework="pt") as f:
            present = list(f.keys())
            for key in ("x", "y"):
                if key not in present:
                    raise _missing(path, key, present, how)
            x, y = f.get_tensor("x"), f.get_tensor("y")
            meta = f.metadata() or {}
    except DataError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise DataError(f"{path}: not a readable safetensors file ({e}). Fix: write it with {how}.") from e
    names: tuple[str, ...] = ()
    if "classes" in meta:
        try:
            listed = json.loads(meta["classes"])
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path}: header metadata 'classes' must be a JSON list of strings, found "
                f"{meta['classes'][:80]!r}. Fix: metadata={{'classes': json.dumps(names)}}."
            ) from e
        names = check_class_names(listed, f"{path}: classes")
    return _build(to_numpy(x, "x", str(path)), to_numpy(y, "y", str(path)), names, str(path))


def read_array_file(kind: str, path: Path) -> ArrayFile:
    """The reader of ``kind`` (``"npz"`` or ``"safetensors"``) applied to ``path``."""
    return read_npz(path) if kind == "npz" else read_safetensors(path)
