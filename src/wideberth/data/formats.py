"""File formats of the downloaded datasets: IDX (MNIST, Fashion-MNIST) and the CIFAR-10
binary archive.

Files from outside are untrusted. :func:`read_idx` checks the IDX header and the exact
payload length; :func:`read_cifar_archive` reads the CIFAR-10 archive member by member
straight from the tar file, after :func:`check_member` has rejected any archive with
absolute paths, ``..`` components, links or devices.
"""

from __future__ import annotations

import gzip
import math
import re
import tarfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch import Tensor

from .registry import DATASETS, DataError, DatasetInfo

__all__ = [
    "CIFAR_MEMBERS",
    "CIFAR_RECORD",
    "IDX_DTYPES",
    "check_labels",
    "check_member",
    "parse_idx",
    "read_cifar_archive",
    "read_idx",
    "read_payload",
]

# ---------------------------------------------------------------------------------------
# IDX parsing
# ---------------------------------------------------------------------------------------

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_payload(path: Path) -> bytes:
    """The file's bytes, gunzipped if it starts with the gzip magic."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from e
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as e:
            raise DataError(
                f"{path}: expected a complete gzip stream, found a damaged or truncated one "
                f"({e}). Fix: delete it and let wideberth download it again."
            ) from e
    return data


def parse_idx(data: bytes, source: str) -> np.ndarray:
    """Parse the bytes of an IDX file into a native-endian array (``source`` names it in errors).

    Checks the magic, the type code and that the payload is exactly ``prod(dims) * itemsize``
    bytes; raises :class:`DataError` otherwise.
    """
    fix = "Fix: delete it and let wideberth download it again (or restore the original file)."
    if len(data) < 4:
        raise DataError(f"{source}: expected an IDX header (4 bytes), found {len(data)} bytes. {fix}")
    z0, z1, code, ndim = data[0], data[1], data[2], data[3]
    if z0 != 0 or z1 != 0:
        raise DataError(
            f"{source}: expected IDX magic 0x00 0x00 <type> <ndim>, found "
            f"0x{z0:02x} 0x{z1:02x}; this is not an IDX file. {fix}"
        )
    if code not in IDX_DTYPES:
        raise DataError(
            f"{source}: expected an IDX type code in "
            f"{{{', '.join(f'0x{c:02x}' for c in IDX_DTYPES)}}}, found 0x{code:02x}. {fix}"
        )
    if ndim == 0:
        raise DataError(f"{source}: expected at least one IDX dimension, found 0. {fix}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{source}: expected a {header}-byte IDX header, found {len(data)} bytes. {fix}"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        what = "truncated" if found < expected else "has trailing bytes"
        raise DataError(
            f"{source}: IDX header says shape {dims} of {dtype.name} = {expected} payload bytes, "
            f"found {found} ({what}). {fix}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a native-endian numpy array.

    Raises :class:`DataError` naming the file for a damaged gzip stream, a wrong magic,
    an unknown type code, or a payload whose length differs from ``prod(dims) * itemsize``.
    """
    path = Path(path)
    return parse_idx(read_payload(path), str(path))


def check_labels(
    x: np.ndarray, labels: np.ndarray, info: DatasetInfo, source: str
) -> tuple[Tensor, Tensor]:
    """``x`` and ``labels`` as tensors (y int64) after checking one label per image, each in
    ``[0, info.num_classes)``; :class:`DataError` naming ``source`` otherwise."""
    if labels.ndim != 1 or labels.shape[0] != x.shape[0]:
        raise DataError(
            f"{source}: expected one label per image ({x.shape[0]}), found labels of shape "
            f"{list(labels.shape)}. Fix: delete the files and download them again."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= info.num_classes):
        raise DataError(
            f"{source}: expected labels in [0, {info.num_classes - 1}], found values in "
            f"[{labels.min()}, {labels.max()}]. Fix: delete the files and download them again."
        )
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------------------------------
# CIFAR-10 (binary version)
# ---------------------------------------------------------------------------------------

CIFAR_RECORD = 1 + 3 * 32 * 32
_CIFAR_DIR = "cifar-10-batches-bin"
CIFAR_MEMBERS = {
    "train": tuple(f"{_CIFAR_DIR}/data_batch_{i}.bin" for i in range(1, 6)),
    "test": (f"{_CIFAR_DIR}/test_batch.bin",),
}


def check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Reject members that could escape a target folder or are not plain files/folders."""
    name = member.name
    parts = PurePosixPath(name).parts
    bad = None
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        bad = "an absolute path"
    elif ".." in parts or "\\" in name:
        bad = "a path that leaves the target folder"
    elif not (member.isfile() or member.isdir()):
        bad = "a link or special file"
    if bad:
        raise DataError(
            f"{archive}: member {name!r} is {bad}; the archive is unsafe and was not read. "
            "Fix: delete it and let wideberth download it again."
        )


def read_cifar_archive(path: str | Path, split: str) -> tuple[Tensor, Tensor]:
    """Read one split of the CIFAR-10 binary archive without extracting it.

    Every member is checked first (no absolute paths, ``..``, links or devices); the needed
    ``.bin`` members must be regular files whose size is a multiple of 3,073 bytes.
    Returns x uint8 ``[N, 3, 32, 32]`` and y int64 ``[N]``.
    """
    path = Path(path)
    wanted = CIFAR_MEMBERS[split]
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                check_member(member, path)
                name = member.name.removeprefix("./")
                if name in wanted:
                    f = tar.extractfile(member) if member.isfile() else None
                    if f is None:
                        raise DataError(f"{path}: member {name!r} is not a regular file")
                    found[name] = f.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(
            f"{path}: expected a readable tar.gz archive, found a damaged one ({e}). "
            "Fix: delete it and let wideberth download it again."
        ) from e
    missing = [m for m in wanted if m not in found]
    if missing:
        raise DataError(
            f"{path}: expected members {list(wanted)}, missing {missing}. "
            "Fix: delete it and let wideberth download it again."
        )
    chunks = []
    for m in wanted:
        data = found[m]
        if len(data) == 0 or len(data) % CIFAR_RECORD:
            raise DataError(
                f"{path}:{m}: expected a size that is a positive multiple of {CIFAR_RECORD} "
                f"bytes, found {len(data)}. Fix: delete it and let wideberth download it again."
            )
        chunks.append(np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD))
    rec = np.concatenate(chunks)
    x = rec[:, 1:].reshape(-1, 3, 32, 32)
    return check_labels(x, rec[:, 0].copy(), DATASETS["cifar10"], str(path))
