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
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import os
import re
import sys
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

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
    "load_split",
    "make_toy2d",
    "num_batches",
    "read_cifar_archive",
    "read_idx",
    "tensors",
]

DATA_ENV = "WIDEBERTH_DATA"
MIRROR_ENV = "WIDEBERTH_MIRROR"
FASHION_DIR_ENV = "WIDEBERTH_FASHION_MNIST_DIR"


class DataError(ValueError):
    """Bad input to the data layer: unknown names, bad arguments, corrupt or missing files."""


# ---------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a registered dataset."""

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W)
    augment: str | None  # default training augmentation
    description: str
    class_names: tuple[str, ...] = field(default=())


_DIGIT_NAMES = tuple(str(i) for i in range(10))

DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        "digits", 10, (1, 8, 8), None,
        "scikit-learn's 8x8 handwritten digits (1,797 images, values /16 into [0, 1]); "
        "fixed stratified split: 1,437 train / 360 test (random_state=0).",
        _DIGIT_NAMES,
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", 10, (1, 28, 28), None,
        "Fashion-MNIST, 60,000 train / 10,000 test 28x28 grey images (uint8).",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
    "mnist": DatasetInfo(
        "mnist", 10, (1, 28, 28), None,
        "MNIST handwritten digits, 60,000 train / 10,000 test 28x28 grey images (uint8).",
        _DIGIT_NAMES,
    ),
    "cifar10": DatasetInfo(
        "cifar10", 10, (3, 32, 32), "cifar",
        "CIFAR-10 (binary version), 50,000 train / 10,000 test 32x32 colour images (uint8).",
        ("airplane", "automobile", "bird", "cat", "deer",
         "dog", "frog", "horse", "ship", "truck"),
    ),
    "toy2d": DatasetInfo(
        "toy2d", 3, (1, 1, 2), None,
        "Synthetic 2-D points in [0, 1]^2 stored as [N, 1, 1, 2]: three Gaussian blobs "
        "(std 0.07) centred on a circle of radius 0.3 around (0.5, 0.5); 600 train / 300 test.",
        ("0", "1", "2"),
    ),
}


def list_datasets() -> list[str]:
    """Names of the registered datasets, sorted."""
    return sorted(DATASETS)


def _info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(
            f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}"
        ) from None


def default_data_dir() -> Path:
    """Data folder: ``$WIDEBERTH_DATA`` if set, else ``~/.cache/wideberth/data``."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "wideberth" / "data"


# Remote files. ``sha256`` is the SHA-256 of the upstream compressed file (pooch checks it
# on download); ``raw_sha256`` / ``raw_size`` describe the decompressed payload, which is
# what local copies are verified by.
#
# Sources (see the module's report):
# - MNIST compressed sizes and SHA-256: tensorflow/datasets,
#   tensorflow_datasets/url_checksums/mnist.txt (URLs under storage.googleapis.com/cvdf-datasets).
# - MNIST decompressed SHA-256: published identically by several independent public
#   projects that pin the raw IDX files (found by exact-string search); sizes follow
#   from the IDX format (16 + 60000*784, 8 + 60000, 16 + 10000*784, 8 + 10000).
# - Fashion-MNIST compressed sizes and SHA-256: tensorflow/datasets,
#   tensorflow_datasets/url_checksums/fashion_mnist.txt.
# - Fashion-MNIST decompressed SHA-256: measured from Debian's dataset-fashion-mnist and
#   matching independent public pins of the raw files.
# - CIFAR-10 binary archive size and SHA-256: tensorflow/datasets,
#   tensorflow_datasets/url_checksums/cifar10.txt.


@dataclass(frozen=True)
class RemoteFile:
    """One upstream file: name, compressed size/SHA-256, decompressed size/SHA-256."""

    fname: str
    size: int
    sha256: str
    raw_size: int | None = None
    raw_sha256: str | None = None


@dataclass(frozen=True)
class RemoteSource:
    """Where a dataset's files live upstream."""

    base_url: str
    files: dict[str, RemoteFile]


REMOTE: dict[str, RemoteSource] = {
    "mnist": RemoteSource(
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        {
            f.fname: f
            for f in (
                RemoteFile(
                    "train-images-idx3-ubyte.gz", 9912422,
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                    47040016,
                    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                ),
                RemoteFile(
                    "train-labels-idx1-ubyte.gz", 28881,
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                    60008,
                    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                ),
                RemoteFile(
                    "t10k-images-idx3-ubyte.gz", 1648877,
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                    7840016,
                    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                ),
                RemoteFile(
                    "t10k-labels-idx1-ubyte.gz", 4542,
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                    10008,
                    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                ),
            )
        },
    ),
    "fashion-mnist": RemoteSource(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {
            f.fname: f
            for f in (
                RemoteFile(
                    "train-images-idx3-ubyte.gz", 26421880,
                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                    47040016,
                    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                ),
                RemoteFile(
                    "train-labels-idx1-ubyte.gz", 29515,
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                    60008,
                    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                ),
                RemoteFile(
                    "t10k-images-idx3-ubyte.gz", 4422102,
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                    7840016,
                    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                ),
                RemoteFile(
                    "t10k-labels-idx1-ubyte.gz", 5148,
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                    10008,
                    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                ),
            )
        },
    ),
    "cifar10": RemoteSource(
        "https://www.cs.toronto.edu/~kriz/",
        {
            "cifar-10-binary.tar.gz": RemoteFile(
                "cifar-10-binary.tar.gz", 170052171,
                "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
            )
        },
    ),
}

# Known system-wide locations (read-only; never downloaded into).
SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


# ---------------------------------------------------------------------------------------
# IDX parsing
# ---------------------------------------------------------------------------------------

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_payload(path: Path) -> bytes:
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


def _parse_idx(data: bytes, source: str) -> np.ndarray:
    fix = "Fix: delete it and let wideberth download it again (or restore the original file)."
    if len(data) < 4:
        raise DataError(f"{source}: expected an IDX header (4 bytes), found {len(data)} bytes. {fix}")
    z0, z1, code, ndim = data[0], data[1], data[2], data[3]
    if z0 != 0 or z1 != 0:
        raise DataError(
            f"{source}: expected IDX magic 0x00 0x00 <type> <ndim>, found "
            f"0x{z0:02x} 0x{z1:02x}; this is not an IDX file. {fix}"
        )
    if code not in _IDX_DTYPES:
        raise DataError(
            f"{source}: expected an IDX type code in "
            f"{{{', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)}}}, found 0x{code:02x}. {fix}"
        )
    if ndim == 0:
        raise DataError(f"{source}: expected at least one IDX dimension, found 0. {fix}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{source}: expected a {header}-byte IDX header, found {len(data)} bytes. {fix}"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
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
    return _parse_idx(_read_payload(path), str(path))


# ---------------------------------------------------------------------------------------
# Finding, verifying and downloading files
# ---------------------------------------------------------------------------------------


def _mirror_url(name: str, mirror: str | None) -> str:
    mirror = mirror or os.environ.get(MIRROR_ENV)
    if mirror:
        return mirror.rstrip("/") + f"/{name}/"
    return REMOTE[name].base_url


def _download(name: str, spec: RemoteFile, folder: Path, mirror: str | None) -> Path:
    """Fetch ``spec`` into ``folder`` with pooch; pooch verifies the compressed SHA-256."""
    import pooch
    import requests

    url = _mirror_url(name, mirror) + spec.fname
    target = folder / spec.fname
    logger.info("downloading %s to %s", url, target)
    try:
        out = pooch.retrieve(
            url,
            known_hash=f"sha256:{spec.sha256}",
            fname=spec.fname,
            path=folder,
            progressbar=sys.stderr.isatty(),
        )
    except requests.exceptions.RequestException as e:
        raise DataError(
            f"could not download {url}: {e}. Fix: check the network, set {MIRROR_ENV} to a "
            f"mirror laid out as <mirror>/{name}/{spec.fname}, or put the file in {folder} "
            "yourself."
        ) from e
    except ValueError as e:
        m = re.search(r"got ([0-9a-fA-F]{64})", str(e))
        found = m.group(1).lower() if m else f"unknown ({e})"
        raise DataError(
            f"{spec.fname} downloaded from {url} failed verification: expected SHA-256 "
            f"{spec.sha256}, found {found}. The download was discarded and {target} was left "
            f"as it was. Fix: retry (the transfer may have been corrupted), or check that the "
            f"mirror serves the original file, or place a verified copy in {folder}."
        ) from e
    except OSError as e:
        raise DataError(f"could not write {target}: {e}. Fix: pass a writable data_dir.") from e
    return Path(out)


def _local_candidates(name: str, spec: RemoteFile, cache: Path) -> list[tuple[Path, bool]]:
    """Existing local copies of ``spec`` as (path, in_cache), in lookup order."""
    raw_name = spec.fname.removesuffix(".gz")
    dirs: list[tuple[Path, bool]] = [(cache, True)]
    if name == "fashion-mnist" and os.environ.get(FASHION_DIR_ENV):
        dirs.append((Path(os.environ[FASHION_DIR_ENV]).expanduser(), False))
    dirs += [(d, False) for d in SYSTEM_DIRS.get(name, ())]
    out = []
    for d, in_cache in dirs:
        for fname in (spec.fname, raw_name):
            if (d / fname).is_file():
                out.append((d / fname, in_cache))
    return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _verified_payload(path: Path, spec: RemoteFile) -> tuple[bytes | None, str]:
    """Decompressed payload if it matches ``spec`` (None otherwise) and the hash found."""
    try:
        data = _read_payload(path)
    except DataError as e:
        return None, f"an unreadable file ({e})"
    found = _sha256(data)
    if spec.raw_sha256 is None:  # pragma: no cover - every IDX file in REMOTE has one
        raise DataError(f"no decompressed SHA-256 is known for {spec.fname}; cannot verify {path}")
    if spec.raw_size is not None and len(data) != spec.raw_size:
        return None, f"{found} ({len(data)} bytes, expected {spec.raw_size})"
    return (data if found == spec.raw_sha256 else None), found


def _missing_message(name: str, spec: RemoteFile, cache: Path) -> str:
    looked = [str(cache)] + [str(d) for d in SYSTEM_DIRS.get(name, ())]
    if name == "fashion-mnist" and os.environ.get(FASHION_DIR_ENV):
        looked.insert(1, os.environ[FASHION_DIR_ENV])
    fixes = []
    if name == "fashion-mnist":
        fixes.append("`apt-get install dataset-fashion-mnist`")
    fixes += [
        f"pass data_dir= a folder whose {name}/ subfolder holds the files",
        f"allow download=True (from {_mirror_url(name, None)})",
    ]
    return (
        f"{name}: {spec.fname} (or its uncompressed form) not found; looked in "
        f"{', '.join(looked)} and download=False. Fix: " + ", or ".join(fixes) + "."
    )


def _idx_payload(
    name: str, fname: str, cache: Path, download: bool, mirror: str | None
) -> tuple[bytes, Path]:
    """Verified decompressed payload of one IDX file and the path it came from."""
    spec = REMOTE[name].files[fname]
    for path, in_cache in _local_candidates(name, spec, cache):
        data, found = _verified_payload(path, spec)
        if data is not None:
            logger.debug("verified %s", path)
            return data, path
        if in_cache and download and path.name == spec.fname:
            logger.warning("%s failed verification (found %s); downloading it again", path, found)
            break
        where = "delete it and let wideberth download it again" if in_cache else (
            "reinstall the package that provides it (e.g. `apt-get install --reinstall "
            "dataset-fashion-mnist`) or point data_dir at a good copy"
        )
        raise DataError(
            f"{path}: expected decompressed SHA-256 {spec.raw_sha256} "
            f"({spec.raw_size} bytes), found {found}. The file is corrupt or a different "
            f"version. Fix: {where}."
        )
    else:
        if not download:
            raise DataError(_missing_message(name, spec, cache))
    path = _download(name, spec, cache, mirror)
    data, found = _verified_payload(path, spec)
    if data is None:
        raise DataError(
            f"{path}: passed the compressed checksum but its payload has SHA-256 {found}, "
            f"expected {spec.raw_sha256}. Fix: delete it and report the mismatch."
        )
    return data, path


def _load_idx_split(
    name: str, split: str, data_dir: Path, download: bool, mirror: str | None
) -> tuple[Tensor, Tensor]:
    info = DATASETS[name]
    cache = data_dir / name
    img_name, lab_name = _IDX_FILES[split]
    img_data, img_path = _idx_payload(name, img_name, cache, download, mirror)
    lab_data, lab_path = _idx_payload(name, lab_name, cache, download, mirror)
    images = _parse_idx(img_data, str(img_path))
    labels = _parse_idx(lab_data, str(lab_path))
    _, h, w = info.input_shape
    if images.ndim != 3 or images.shape[1:] != (h, w) or images.dtype != np.uint8:
        raise DataError(
            f"{img_path}: expected uint8 images of shape [N, {h}, {w}], found "
            f"{images.dtype} {list(images.shape)}. Fix: delete it and download it again."
        )
    return _check_labels(images[:, None], labels, info, f"{img_path} / {lab_path}")


def _check_labels(
    x: np.ndarray, labels: np.ndarray, info: DatasetInfo, source: str
) -> tuple[Tensor, Tensor]:
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

_CIFAR_RECORD = 1 + 3 * 32 * 32
_CIFAR_DIR = "cifar-10-batches-bin"
_CIFAR_MEMBERS = {
    "train": tuple(f"{_CIFAR_DIR}/data_batch_{i}.bin" for i in range(1, 6)),
    "test": (f"{_CIFAR_DIR}/test_batch.bin",),
}


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
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
    wanted = _CIFAR_MEMBERS[split]
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                _check_member(member, path)
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
        if len(data) == 0 or len(data) % _CIFAR_RECORD:
            raise DataError(
                f"{path}:{m}: expected a size that is a positive multiple of {_CIFAR_RECORD} "
                f"bytes, found {len(data)}. Fix: delete it and let wideberth download it again."
            )
        chunks.append(np.frombuffer(data, dtype=np.uint8).reshape(-1, _CIFAR_RECORD))
    rec = np.concatenate(chunks)
    x = rec[:, 1:].reshape(-1, 3, 32, 32)
    return _check_labels(x, rec[:, 0].copy(), DATASETS["cifar10"], str(path))


def _load_cifar10(
    split: str, data_dir: Path, download: bool, mirror: str | None
) -> tuple[Tensor, Tensor]:
    spec = REMOTE["cifar10"].files["cifar-10-binary.tar.gz"]
    folder = data_dir / "cifar10"
    target = folder / spec.fname
    if download:
        path = _download("cifar10", spec, folder, mirror)  # verifies (or fetches) by SHA-256
    elif target.is_file():
        h = hashlib.sha256()
        with target.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != spec.sha256:
            raise DataError(
                f"{target}: expected SHA-256 {spec.sha256}, found {h.hexdigest()}. "
                "Fix: delete it and let wideberth download it again (download=True)."
            )
        path = target
    else:
        raise DataError(
            f"cifar10: {target} not found and download=False. Fix: allow download=True "
            f"(from {_mirror_url('cifar10', mirror)}), or pass data_dir= a folder whose "
            f"cifar10/ subfolder holds {spec.fname}."
        )
    return read_cifar_archive(path, split)


# ---------------------------------------------------------------------------------------
# Bundled and synthetic sets
# ---------------------------------------------------------------------------------------

DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0
TOY2D_SEED = 20200
TOY2D_SIZES = {"train": 600, "test": 300}


def _load_digits(split: str) -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / 16.0
    target = np.asarray(bunch.target, dtype=np.int64)
    train_rows, test_rows = train_test_split(
        np.arange(len(target)),
        test_size=DIGITS_TEST_SIZE,
        stratify=target,
        random_state=DIGITS_SPLIT_SEED,
    )
    rows = np.sort(train_rows if split == "train" else test_rows)
    return torch.from_numpy(images[rows][:, None].copy()), torch.from_numpy(target[rows])


def make_toy2d(
    n: int, seed: int, *, num_classes: int = 3, std: float = 0.07, radius: float = 0.3
) -> tuple[Tensor, Tensor]:
    """Gaussian blobs in the unit square, returned as x float32 ``[n, 1, 1, 2]``, y ``[n]``.

    Class ``k`` is centred at ``0.5 + radius * (cos t_k, sin t_k)``, ``t_k = pi/2 + 2 pi k / K``;
    labels cycle ``0, 1, ..., K-1, 0, ...``; points are clipped to ``[0, 1]``. Coordinates
    are on the same scale as pixels, so ℓp margins are directly in input units.
    """
    if n < 0 or num_classes < 1:
        raise DataError(f"make_toy2d: expected n >= 0 and num_classes >= 1, got {n}, {num_classes}")
    rng = np.random.default_rng(seed)
    y = np.arange(n) % num_classes
    t = np.pi / 2 + 2 * np.pi * np.arange(num_classes) / num_classes
    centres = 0.5 + radius * np.stack([np.cos(t), np.sin(t)], axis=1)
    x = centres[y] + std * rng.standard_normal((n, 2))
    x = np.clip(x, 0.0, 1.0).astype(np.float32)
    return torch.from_numpy(x.reshape(n, 1, 1, 2)), torch.from_numpy(y.astype(np.int64))


# ---------------------------------------------------------------------------------------
# Public loading
# ---------------------------------------------------------------------------------------


def load_split(
    name: str,
    split: str,
    data_dir: str | Path | None = None,
    download: bool = True,
    *,
    mirror: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Load one split of a registered dataset.

    Args:
        name: a key of :data:`DATASETS`.
        split: ``"train"`` or ``"test"``.
        data_dir: folder holding ``<name>/`` subfolders (default :func:`default_data_dir`).
        download: fetch missing files (verified by SHA-256) into ``data_dir/<name>/``.
        mirror: base URL replacing the upstream one (files at ``<mirror>/<name>/<file>``);
            defaults to ``$WIDEBERTH_MIRROR``.

    Returns:
        ``x`` ``[N, C, H, W]`` (uint8 for image sets, float32 in [0, 1] for ``digits`` and
        ``toy2d``) and ``y`` int64 ``[N]``.
    """
    info = _info(name)
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; expected 'train' or 'test'")
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if name == "digits":
        x, y = _load_digits(split)
    elif name == "toy2d":
        x, y = make_toy2d(
            TOY2D_SIZES[split], TOY2D_SEED + (split == "test"), num_classes=info.num_classes
        )
    elif name == "cifar10":
        x, y = _load_cifar10(split, root, download, mirror)
    else:
        x, y = _load_idx_split(name, split, root, download, mirror)
    logger.debug("loaded %s/%s: x %s %s", name, split, tuple(x.shape), x.dtype)
    return x, y


# ---------------------------------------------------------------------------------------
# Datasets and batching
# ---------------------------------------------------------------------------------------


def _to_unit(x: Tensor) -> Tensor:
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
        return _to_unit(self.x[i]), self.y[i], self.index[i]

    @property
    def num_classes(self) -> int:
        """Number of classes (as given, else ``max(y) + 1``)."""
        if self._num_classes is not None:
            return self._num_classes
        return int(self.y.max()) + 1 if len(self) else 0

    @property
    def device(self) -> torch.device:
        return self.x.device

    def get_batch(self, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Rows (positions) as x float32 ``[B, C, H, W]`` in [0, 1], y ``[B]``, index ``[B]``."""
        rows = torch.as_tensor(rows, dtype=torch.int64).to(self.x.device)
        return _to_unit(self.x[rows]), self.y[rows], self.index[rows]

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
        return _to_unit(self.x), self.y

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


@dataclass
class DataSplits:
    """Train / validation / test datasets of one dataset."""

    train: IndexedTensors
    val: IndexedTensors | None
    test: IndexedTensors
    info: DatasetInfo


def build_splits(
    name: str,
    *,
    data_dir: str | Path | None = None,
    val_size: int = 0,
    train_subset: int | None = None,
    seed: int = 0,
    download: bool = True,
) -> DataSplits:
    """Train (optionally subsampled), validation and test datasets.

    A permutation of the full train split drawn from ``torch.Generator().manual_seed(seed)``
    gives the validation rows (its first ``val_size``) and the training rows (the next
    ``train_subset``, or all the rest). Both keep ascending original order, and the
    validation set does not depend on ``train_subset``. ``index`` values are rows of the
    full train split (for ``test``: rows of the test split).
    """
    info = _info(name)
    x_tr, y_tr = load_split(name, "train", data_dir, download)
    x_te, y_te = load_split(name, "test", data_dir, download)
    n = x_tr.shape[0]
    if not 0 <= val_size < n:
        raise DataError(
            f"{name}: val_size must be in [0, {n - 1}] (the train split has {n} examples), "
            f"got {val_size}"
        )
    if train_subset is not None and not 0 < train_subset <= n - val_size:
        raise DataError(
            f"{name}: train_subset must be in [1, {n - val_size}] ({n} train examples minus "
            f"val_size={val_size}), got {train_subset}"
        )
    full = IndexedTensors(x_tr, y_tr, num_classes=info.num_classes)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_rows, train_rows = perm[:val_size], perm[val_size:]
    if train_subset is not None:
        train_rows = train_rows[:train_subset]
    train = full.subset(train_rows.sort().values)
    val = full.subset(val_rows.sort().values) if val_size else None
    test = IndexedTensors(x_te, y_te, num_classes=info.num_classes)
    logger.info(
        "%s splits: train %d, val %d, test %d (seed %d)",
        name, len(train), 0 if val is None else len(val), len(test), seed,
    )
    return DataSplits(train=train, val=val, test=test, info=info)


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

    ``n`` picks a seeded random subset: the first ``n`` rows of
    ``torch.randperm(N, generator=torch.Generator().manual_seed(seed))``, in that order,
    so smaller ``n`` give prefixes of larger ones. ``n=None`` returns the whole split.
    """
    x, y = load_split(name, split, data_dir, download)
    if n is not None:
        if not 0 < n <= x.shape[0]:
            raise DataError(f"{name}/{split}: n must be in [1, {x.shape[0]}], got {n}")
        rows = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
        x, y = x[rows], y[rows]
    return _to_unit(x), y
