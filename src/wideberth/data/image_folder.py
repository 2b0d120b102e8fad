"""A folder of images, one sub-folder per class, read with Pillow: the ``folder:PATH`` spec.

Layout ``PATH/<class name>/<image>.png|.jpg|.jpeg`` (extensions in any case). Classes are
the sub-folder names sorted as strings (label ``k`` is the ``k``-th name); images are read
in sorted file-name order within each class, class after class, and that order is the row
order (the examples' stable indices). Hidden entries (names starting with ``.``) are
skipped; other files are ignored with a log message.

Every image must have the same size and the same kind of colour: grey images (Pillow
modes ``1``, ``L``, ``LA``) become one channel ``L``, colour ones (``RGB``, ``RGBA``,
``P``, ``CMYK``, ``YCbCr``) three channels ``RGB`` (alpha dropped); the first image fixes
both, and an image that differs is an error naming it. Result: ``x`` uint8 ``[N, C, H, W]``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .registry import DataError

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_SUFFIXES", "ImageFolder", "read_image_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_GREY = {"1": "L", "L": "L", "LA": "L"}
_COLOUR = {m: "RGB" for m in ("RGB", "RGBA", "P", "CMYK", "YCbCr")}


@dataclass(frozen=True)
class ImageFolder:
    """The images of a folder: ``x`` uint8 ``[N, C, H, W]``, ``y`` int64 ``[N]``, the sorted
    class names and each row's file."""

    x: Tensor
    y: Tensor
    class_names: tuple[str, ...]
    files: tuple[Path, ...]


def _class_files(root: Path) -> list[tuple[str, list[Path]]]:
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise DataError(
            f"{root} {what}. Fix: folder:PATH names a folder with one sub-folder of images "
            "per class (PATH/<class>/<image>.png)."
        )
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(
            f"{root}: holds no class sub-folders. Fix: put each class's images in its own "
            "sub-folder (PATH/<class>/<image>.png)."
        )
    out = []
    for d in classes:
        files: list[Path] = []
        other: list[Path] = []
        for p in sorted(d.iterdir()):
            if p.name.startswith("."):
                continue
            (files if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES else other).append(p)
        if other:
            logger.info("%s: ignoring %d entries that are not .png/.jpg/.jpeg files", d, len(other))
        if not files:
            raise DataError(
                f"{d}: class folder holds no images ({', '.join(IMAGE_SUFFIXES)}). Fix: add "
                "its images or remove the folder."
            )
        out.append((d.name, files))
    return out


def _read(path: Path) -> tuple[np.ndarray, str]:
    """One image as a uint8 array ``[H, W]`` or ``[H, W, 3]`` and its channel kind."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            kind = _GREY.get(mode) or _COLOUR.get(mode)
            if kind is None:
                raise DataError(
                    f"{path}: unsupported image mode {mode!r}. Fix: save it as 8-bit grey "
                    "(L) or RGB."
                )
            return np.asarray(img.convert(kind), dtype=np.uint8), kind
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot read this image ({e}). Fix: replace or remove it.") from e


def read_image_folder(root: Path) -> ImageFolder:
    """Read every image under ``root`` (see the module docstring for the layout and rules)."""
    groups = _class_files(root)
    images: list[np.ndarray] = []
    labels: list[int] = []
    files: list[Path] = []
    first: tuple[Path, str, tuple[int, ...]] | None = None
    for label, (_, paths) in enumerate(groups):
        for p in paths:
            arr, kind = _read(p)
            if first is None:
                first = (p, kind, arr.shape)
            elif (kind, arr.shape) != first[1:]:
                f_path, f_kind, f_shape = first
                raise DataError(
                    f"{p}: {kind} image of {arr.shape[1]}x{arr.shape[0]} pixels, but {f_path} "
                    f"(the first image) is {f_kind} of {f_shape[1]}x{f_shape[0]}; all images "
                    "of a folder: dataset must have the same size and the same colour mode. "
                    "Fix: resize / convert the images to one size and mode."
                )
            images.append(arr)
            labels.append(label)
            files.append(p)
    x = np.stack(images)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return ImageFolder(
        torch.from_numpy(np.ascontiguousarray(x)),
        torch.tensor(labels, dtype=torch.int64),
        tuple(name for name, _ in groups),
        tuple(files),
    )
