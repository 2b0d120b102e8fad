"""Progress bars shared by every long-running loop (training, evaluation, margins, attacks,
min-max, sanity checks): tqdm on standard error, quiet when it is not a terminal."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar", "progress_enabled"]


def progress_enabled(enabled: bool | None = None) -> bool:
    """Whether to draw a bar: ``enabled`` if given, else whether standard error is a
    terminal (so logs, pipes and CI output stay free of carriage-return clutter)."""
    if enabled is not None:
        return bool(enabled)
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(
    total: int | None = None,
    desc: str = "",
    *,
    enabled: bool | None = None,
    unit: str = "it",
    leave: bool = False,
    **kwargs: Any,
) -> tqdm:
    """A tqdm bar of ``total`` steps named ``desc``; disabled (a no-op object with the same
    methods) unless :func:`progress_enabled` says otherwise. Use it as a context manager
    or call ``close()``; ``update(n)`` advances it."""
    return tqdm(
        total=total, desc=desc, unit=unit, leave=leave,
        disable=not progress_enabled(enabled), dynamic_ncols=True, **kwargs,
    )
