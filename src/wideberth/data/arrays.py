"""Checking arrays that come from outside: a user's images and labels as wideberth tensors.

Every dataset that does not come from :data:`~wideberth.data.registry.DATASETS` — a
``npz:`` / ``safetensors:`` file, an image folder, a loader registered with
:func:`~wideberth.data.catalog.register_dataset` — goes through :func:`as_images` and
:func:`as_labels`, so all of them accept the same layouts and fail with the same messages.

Images: ``[N, C, H, W]``, ``[N, H, W, C]`` (taken as channels-last only when that is
unambiguous, see :func:`as_images`) or ``[N, H, W]`` (grey); ``uint8`` (0..255, kept as
``uint8``, divided by 255 per batch) or floating point in ``[0, 1]`` (returned as float32).
Labels: integers ``[N]`` in ``[0, K)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .registry import DataError

__all__ = ["CHANNEL_COUNTS", "as_images", "as_labels", "to_numpy"]

CHANNEL_COUNTS = (1, 3, 4)
"""Channel counts that mark an axis as the channel axis (grey, RGB, RGBA)."""


def to_numpy(a: Any, what: str, source: str) -> np.ndarray:
    """``a`` (a numpy array, a tensor or a nested sequence) as a numpy array; bfloat16 and
    other dtypes numpy lacks are cast to float32 first."""
    if isinstance(a, Tensor):
        t = a.detach().cpu()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.to(torch.float32)
        return t.numpy()
    try:
        arr = np.asarray(a)
    except (TypeError, ValueError) as e:
        raise DataError(f"{source}: {what} is not an array ({type(a).__name__}: {e})") from e
    if arr.dtype == object:
        raise DataError(
            f"{source}: {what} is an array of Python objects; expected numbers. Fix: build it "
            "with a numeric dtype (np.uint8 images, np.int64 labels)."
        )
    return arr


def _layout(shape: tuple[int, ...], expected: tuple[int, int, int] | None) -> str:
    """``"nchw"``, ``"nhwc"`` or ``"nhw"`` for an image array of ``shape``."""
    if len(shape) == 3:
        return "nhw"
    if expected is not None:
        c, h, w = expected
        if shape[1:] == (c, h, w):
            return "nchw"
        if shape[1:] == (h, w, c):
            return "nhwc"
        return "mismatch"
    if shape[3] in CHANNEL_COUNTS and shape[1] not in CHANNEL_COUNTS:
        return "nhwc"
    return "nchw"


def as_images(
    x: Any, source: str, *, shape: tuple[int, int, int] | None = None
) -> Tensor:
    """Images ``x`` as a ``[N, C, H, W]`` tensor: ``uint8`` kept, floats as float32.

    Layout: a 3-D array ``[N, H, W]`` is grey (``C = 1``). A 4-D array is channels-last
    ``[N, H, W, C]`` only when that is unambiguous — its last dimension is 1, 3 or 4 and its
    second is not — and ``[N, C, H, W]`` otherwise (``[N, 3, 8, 3]`` is read as 3 channels of
    8×3). With ``shape = (C, H, W)`` given (a registered dataset's input shape) the layout
    is the one that matches it. Values: ``uint8``, or floating point, finite and in
    ``[0, 1]``. :class:`DataError` naming ``source`` for anything else, with the fix.
    """
    arr = to_numpy(x, "x", source)
    if arr.ndim not in (3, 4):
        raise DataError(
            f"{source}: x must have shape [N, C, H, W], [N, H, W, C] or [N, H, W] (grey), "
            f"found {list(arr.shape)}. Fix: reshape the images to one of those layouts."
        )
    if arr.shape[0] == 0:
        raise DataError(f"{source}: x holds no examples (shape {list(arr.shape)})")
    layout = _layout(arr.shape, shape)
    if layout == "mismatch":
        assert shape is not None
        c, h, w = shape
        raise DataError(
            f"{source}: x has shape {list(arr.shape)}, which matches neither the declared input "
            f"shape [N, {c}, {h}, {w}] nor [N, {h}, {w}, {c}]. Fix: return images of that shape "
            "or declare the right input_shape."
        )
    if layout == "nhw":
        arr = arr[:, None]
    elif layout == "nhwc":
        arr = arr.transpose(0, 3, 1, 2)
    if shape is not None and arr.shape[1:] != tuple(shape):
        raise DataError(
            f"{source}: x has images of shape {list(arr.shape[1:])}, the dataset declares "
            f"{list(shape)}. Fix: return images of the declared shape."
        )
    if arr.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(arr))
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataError(
            f"{source}: x must be uint8 (0..255) or floating point in [0, 1], found dtype "
            f"{arr.dtype}. Fix: x.astype(np.uint8) for 0..255 pixel values, or "
            "x.astype(np.float32) / 255."
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise DataError(f"{source}: x holds NaN or infinite values. Fix: clean the images.")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        raise DataError(
            f"{source}: float images must lie in [0, 1], found values in [{lo:g}, {hi:g}]. "
            "Fix: divide 0..255 values by 255 (or store them as uint8); undo any "
            "normalisation (models normalise inside, their inputs are in [0, 1])."
        )
    return torch.from_numpy(arr)


def as_labels(
    y: Any, n: int, source: str, *, num_classes: int | None = None
) -> Tensor:
    """Labels ``y`` as an int64 ``[n]`` tensor, each in ``[0, num_classes)`` (``>= 0`` when
    ``num_classes`` is None); :class:`DataError` naming ``source`` otherwise."""
    arr = to_numpy(y, "y", source)
    if arr.ndim == 2 and arr.shape[1] == 1:
        hint = " Fix: y.ravel() (one integer label per example)."
    elif arr.ndim == 2 and arr.shape == (n, arr.shape[1]):
        hint = " Fix: y.argmax(1) for one-hot labels (one integer label per example)."
    else:
        hint = " Fix: give one integer label per example."
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(
            f"{source}: y must have shape [{n}] (one label per image), found "
            f"{list(arr.shape)}.{hint}"
        )
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(
            f"{source}: y must hold integer class labels, found dtype {arr.dtype}. "
            "Fix: y.astype(np.int64) if the values are whole numbers 0..K-1."
        )
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        top = "K-1" if num_classes is None else str(num_classes - 1)
        raise DataError(
            f"{source}: labels must lie in [0, {top}], found values in [{lo}, {hi}]. "
            "Fix: map the labels to 0..K-1 (np.unique(y, return_inverse=True))."
        )
    return torch.from_numpy(arr.astype(np.int64))
