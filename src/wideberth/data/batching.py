"""In-memory ``(x, y, index)`` datasets, batching with exact resume, augmentation as tensor ops.

:class:`IndexedTensors` keeps ``x`` in its raw dtype, converts it to float32 in ``[0, 1]``
per batch and carries a stable ``index`` per example (its row in the full original
split), which per-example training state (MMA's per-example ε, margin tracking) is keyed
by. :func:`iterate_batches` is the trainer's batcher: every random number of a pass is
drawn from one generator up front, so a pass can restart at any batch and reproduce an
uninterrupted one exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from .registry import DataError

__all__ = [
    "IndexedTensors",
    "apply_cifar_augment",
    "augment_cifar",
    "cifar_augment_params",
    "iterate_batches",
    "num_batches",
    "to_unit",
]


def to_unit(x: Tensor) -> Tensor:
    """``x`` as float32: uint8 images divided by 255 into [0, 1], other dtypes only cast."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    return x.to(torch.float32)


class IndexedTensors(torch.utils.data.Dataset):
    """In-memory dataset of ``(x, y, index)``.

    ``x`` keeps its raw dtype (uint8 images are stored compactly) and is converted to
    float32 in ``[0, 1]`` on access. ``index`` (int64) is the stable id of each example:
    its row in the full original split, kept by :meth:`subset`.
    """

    def __init__(
        self, x: Tensor, y: Tensor, index: Tensor | None = None, num_classes: int | None = None
    ) -> None:
        if x.dtype != torch.uint8 and not x.is_floating_point():
            raise DataError(f"x must be uint8 or floating point, got {x.dtype}")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError(f"y must have shape [{x.shape[0]}], got {list(y.shape)}")
        if index is None:
            index = torch.arange(x.shape[0], device=x.device)
        if index.ndim != 1 or index.shape[0] != x.shape[0]:
            raise DataError(f"index must have shape [{x.shape[0]}], got {list(index.shape)}")
        self.x = x
        self.y = y.to(torch.int64)
        self.index = index.to(torch.int64)
        self._num_classes = num_classes

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        return to_unit(self.x[i]), self.y[i], self.index[i]

    @property
    def num_classes(self) -> int:
        """Number of classes (as given, else ``max(y) + 1``)."""
        if self._num_classes is not None:
            return self._num_classes
        return int(self.y.max()) + 1 if len(self) else 0

    @property
    def device(self) -> torch.device:
        """The device the tensors live on."""
        return self.x.device

    def get_batch(self, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Rows (positions) as x float32 ``[B, C, H, W]`` in [0, 1], y ``[B]``, index ``[B]``."""
        rows = torch.as_tensor(rows, dtype=torch.int64).to(self.x.device)
        return to_unit(self.x[rows]), self.y[rows], self.index[rows]

    def subset(self, rows: Tensor) -> IndexedTensors:
        """A new dataset of the given rows (positions), keeping their original index values."""
        rows = torch.as_tensor(rows, dtype=torch.int64).to(self.x.device)
        return IndexedTensors(self.x[rows], self.y[rows], self.index[rows], self._num_classes)

    def to(self, device: torch.device | str) -> IndexedTensors:
        """The same data on ``device`` (e.g. to batch on the GPU without transfers)."""
        return IndexedTensors(
            self.x.to(device), self.y.to(device), self.index.to(device), self._num_classes
        )

    def tensors(self) -> tuple[Tensor, Tensor]:
        """All of x as float32 in [0, 1] and y."""
        return to_unit(self.x), self.y

    def __repr__(self) -> str:
        return (
            f"IndexedTensors(n={len(self)}, x={tuple(self.x.shape[1:])} {self.x.dtype}, "
            f"device={self.x.device})"
        )


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    """Number of batches in one pass over ``n`` examples."""
    if batch_size <= 0 or n < 0:
        raise DataError(f"expected batch_size > 0 and n >= 0, got {batch_size}, {n}")
    return n // batch_size if drop_last else -(-n // batch_size)


def cifar_augment_params(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random crop offsets ``[n, 2]`` (row, col in 0..8) and flip flags ``[n]`` (p=0.5).

    Draw order (fixed, relied on for exact resume): offsets first, then flips.
    """
    offsets = torch.randint(0, 9, (n, 2), generator=generator, device=generator.device)
    flip = torch.randint(0, 2, (n,), generator=generator, device=generator.device).bool()
    return offsets, flip


def _reflect(i: Tensor, size: int) -> Tensor:
    i = i.abs()
    return torch.where(i > size - 1, 2 * (size - 1) - i, i)


def apply_cifar_augment(x: Tensor, offsets: Tensor, flip: Tensor, pad: int = 4) -> Tensor:
    """Crop ``x`` ``[B, C, H, W]`` from its reflect-padded version at ``offsets``, then flip.

    Equivalent to ``F.pad(x, (pad,) * 4, mode="reflect")[b, :, r:r+H, c:c+W]`` followed by a
    horizontal flip where ``flip[b]``, done with one gather and no Python loop over images.
    """
    b, c, h, w = x.shape
    if pad >= min(h, w):
        raise DataError(f"reflect padding {pad} needs images larger than {pad}, got {h}x{w}")
    offsets = offsets.to(x.device)
    flip = flip.to(x.device)
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None], w - 1 - ar_w, ar_w)  # flip = read columns backwards
    rows = _reflect(offsets[:, :1] + ar_h - pad, h)  # [B, H]
    cols = _reflect(offsets[:, 1:] + cols - pad, w)  # [B, W]
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return x[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def augment_cifar(x: Tensor, generator: torch.Generator) -> Tensor:
    """CIFAR training augmentation: reflect-pad 4, random crop back to H x W per image,
    random horizontal flip with p=0.5. ``x`` is ``[B, C, H, W]``; output has its shape,
    dtype and value range. Randomness comes only from ``generator``.
    """
    offsets, flip = cifar_augment_params(x.shape[0], generator)
    return apply_cifar_augment(x, offsets, flip)


_AUGMENTS: dict[str, tuple[Callable[[int, torch.Generator], tuple[Tensor, ...]], Callable]] = {
    "cifar": (cifar_augment_params, apply_cifar_augment),
}


def iterate_batches(
    ds: IndexedTensors,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    start_batch: int = 0,
    augment: str | None = None,
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """One pass over ``ds`` in batches of ``(x float32 [B, C, H, W] in [0, 1], y, index)``.

    All randomness of the pass (the permutation, then the augmentation parameters of every
    position) is drawn from ``generator`` when this function is *called*, before the first
    batch, so the generator ends in the same state whatever ``start_batch`` is and the
    batches from ``start_batch`` on equal those of an uninterrupted pass. ``shuffle`` or
    ``augment`` without a generator is an error (no hidden global RNG).
    """
    n = len(ds)
    total = num_batches(n, batch_size, drop_last)
    if not 0 <= start_batch <= total:
        raise DataError(f"start_batch must be in [0, {total}], got {start_batch}")
    if augment is not None and augment not in _AUGMENTS:
        raise DataError(f"unknown augmentation {augment!r}; known: {sorted(_AUGMENTS)}")
    if (shuffle or augment is not None) and generator is None:
        raise DataError("shuffle=True or augment needs a seeded torch.Generator")
    if shuffle:
        assert generator is not None
        order = torch.randperm(n, generator=generator, device=generator.device)
    else:
        order = torch.arange(n)
    params: tuple[Tensor, ...] = ()
    if augment is not None:
        assert generator is not None
        draw, apply = _AUGMENTS[augment]
        params = draw(n, generator)
    order = order.to(ds.device)

    def batches() -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        for k in range(start_batch, total):
            sl = slice(k * batch_size, min((k + 1) * batch_size, n))
            x, y, idx = ds.get_batch(order[sl])
            if augment is not None:
                x = apply(x, *(p[sl] for p in params))
            yield x, y, idx

    return batches()
