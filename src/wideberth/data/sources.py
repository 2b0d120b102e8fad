"""Where the downloaded datasets come from, and how local copies are found and verified.

- IDX files (MNIST, Fashion-MNIST) are verified by the SHA-256 of their *decompressed*
  payload (Debian recompresses the ``.gz`` files, so compressed hashes differ between
  copies with identical content). A local copy is looked for in the cache folder, in
  ``$WIDEBERTH_FASHION_MNIST_DIR`` (Fashion-MNIST only) and in :data:`SYSTEM_DIRS`.
- Downloads go through pooch with the SHA-256 of the upstream compressed file; pooch
  writes to a temporary file in the target folder and moves it into place only after the
  hash matched, so a failed download never replaces a previous file.
- The CIFAR-10 archive is verified by the SHA-256 of the archive itself, then read by
  :func:`~wideberth.data.formats.read_cifar_archive` without extracting it.

``$WIDEBERTH_MIRROR`` is the base URL of a mirror laid out as ``<mirror>/<dataset>/<file>``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from ..fileio import sha256_file
from .formats import check_labels, parse_idx, read_cifar_archive, read_payload
from .registry import DATASETS, DataError

logger = logging.getLogger(__name__)

__all__ = [
    "FASHION_DIR_ENV",
    "IDX_FILES",
    "MIRROR_ENV",
    "REMOTE",
    "SYSTEM_DIRS",
    "RemoteFile",
    "RemoteSource",
    "load_cifar10",
    "load_idx_split",
]

MIRROR_ENV = "WIDEBERTH_MIRROR"
FASHION_DIR_ENV = "WIDEBERTH_FASHION_MNIST_DIR"

# Remote files. ``sha256`` is the SHA-256 of the upstream compressed file (pooch checks it
# on download); ``raw_sha256`` / ``raw_size`` describe the decompressed payload, which is
# what local copies are verified by.
#
# Where these numbers come from:
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

IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
"""Split → (image file, label file) of the IDX datasets (MNIST, Fashion-MNIST)."""


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
    import pooch  # type: ignore[import-untyped]  # pooch ships no type information
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
        data = read_payload(path)
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


def load_idx_split(
    name: str, split: str, data_dir: Path, download: bool, mirror: str | None
) -> tuple[Tensor, Tensor]:
    """One split of an IDX dataset from ``data_dir/<name>/``, verified (downloaded if allowed).

    Returns x uint8 ``[N, 1, H, W]`` and y int64 ``[N]``; :class:`DataError` for a missing,
    corrupt or wrong-shaped file, naming the file and the fix.
    """
    info = DATASETS[name]
    cache = data_dir / name
    img_name, lab_name = IDX_FILES[split]
    img_data, img_path = _idx_payload(name, img_name, cache, download, mirror)
    lab_data, lab_path = _idx_payload(name, lab_name, cache, download, mirror)
    images = parse_idx(img_data, str(img_path))
    labels = parse_idx(lab_data, str(lab_path))
    _, h, w = info.input_shape
    if images.ndim != 3 or images.shape[1:] != (h, w) or images.dtype != np.uint8:
        raise DataError(
            f"{img_path}: expected uint8 images of shape [N, {h}, {w}], found "
            f"{images.dtype} {list(images.shape)}. Fix: delete it and download it again."
        )
    return check_labels(images[:, None], labels, info, f"{img_path} / {lab_path}")


def load_cifar10(
    split: str, data_dir: Path, download: bool, mirror: str | None
) -> tuple[Tensor, Tensor]:
    """One split of CIFAR-10 from ``data_dir/cifar10/cifar-10-binary.tar.gz``.

    With ``download`` pooch checks (or fetches) the archive by its SHA-256; without, a
    local archive is hashed here. Returns x uint8 ``[N, 3, 32, 32]`` and y int64 ``[N]``.
    """
    spec = REMOTE["cifar10"].files["cifar-10-binary.tar.gz"]
    folder = data_dir / "cifar10"
    target = folder / spec.fname
    if download:
        path = _download("cifar10", spec, folder, mirror)  # verifies (or fetches) by SHA-256
    elif target.is_file():
        found = sha256_file(target)
        if found != spec.sha256:
            raise DataError(
                f"{target}: expected SHA-256 {spec.sha256}, found {found}. "
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
