"""File safety: every file wideberth writes appears whole or not at all.

A file is written to a temporary name in its destination folder, flushed and fsync'ed,
then renamed over the destination (``os.replace`` is atomic on POSIX and Windows), and the
folder is fsync'ed so the rename survives a power cut. A crash at any moment leaves either
the previous file or the new one, never a partial file. This is the lowest layer of the
library: checkpoints, evaluation states and reports, plots and the CLI's outputs all write
through it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "atomic_write_bytes", "atomic_write_text", "atomic_path", "fsync_dir", "replace_atomically",
    "sha256_file",
]


def fsync_dir(path: str | Path) -> None:
    """fsync a folder, so that a rename inside it is durable (a no-op where folders
    cannot be opened, as on Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def replace_atomically(tmp: str | Path, final: str | Path) -> None:
    """fsync the finished temporary file ``tmp`` and rename it over ``final``."""
    tmp, final = Path(tmp), Path(final)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    fsync_dir(final.parent)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path next to ``path`` for a writer that needs a file name (safetensors,
    matplotlib); when the block ends without an exception the file is fsync'ed and renamed
    over ``path``; on an exception it is removed and ``path`` is untouched. ``suffix`` is
    appended to the temporary name (matplotlib picks the format from it)."""
    path = Path(path)
    tmp = _tmp_name(path).with_name(_tmp_name(path).name + suffix)
    try:
        yield tmp
        replace_atomically(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write(path: str | Path, writer: Callable[[Path], object]) -> None:
    with atomic_path(path) as tmp:
        writer(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` via a temporary file, fsync and rename."""
    _write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename."""
    _write(path, lambda tmp: tmp.write_bytes(data))


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of the file ``path``, read in 1 MiB chunks (memory flat in its size)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
