"""The state of a streamed evaluation: per-example results, saved after every batch.

:func:`wideberth.evaluate` keeps one :class:`EvalState`: per example the index of the first
ε at which it was broken (``k`` = never, −1 = clean error) and the attack that broke it, the
infeasible adversarial examples seen, the flags raised and the batches done. With a
``state_file`` it is written atomically after every batch as JSON::

    {"fingerprint": ..., "done_batches": b, "first_broken": [...], "breaker": [...],
     "violations": v, "violations_by": {...}, "flags": [...], "ids": [...],
     "batch_digests": [...]}

and an interrupted evaluation resumes from it. The fingerprint (:func:`fingerprint`) hashes
the data, the weights and the settings, so a file of another evaluation is refused. A
stream (``Dataset`` / ``DataLoader``) cannot be hashed before it is read: its fingerprint
covers the weights and settings only, and every finished batch's data digest
(:func:`batch_digest`) is saved; on resume the skipped batches are read again and each must
match its digest, else ``ValueError`` (other data, or a shuffling loader).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..fileio import atomic_write_text

__all__ = ["EvalState", "batch_digest", "fingerprint"]


def batch_digest(x: Tensor, y: Tensor) -> str:
    """A hash of one batch's images ``x`` [B, ...] and labels ``y`` [B]."""
    h = hashlib.blake2b(digest_size=16)
    h.update(x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    h.update(y.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


def fingerprint(model: nn.Module, x: Tensor | None, y: Tensor | None, meta: dict[str, Any]) -> str:
    """Identifies an evaluation for resuming: a hash of ``meta`` (the settings, JSON-ready),
    the data ``x`` [N, ...], ``y`` [N] (``None`` for a stream: see the module docstring)
    and the model's weights."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(meta, sort_keys=True).encode())
    if x is not None and y is not None:
        h.update(x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        h.update(y.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
    for k, v in sorted(model.state_dict().items()) if isinstance(model, nn.Module) else []:
        h.update(k.encode())
        h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class EvalState:
    """Per-example results of an evaluation of ``n`` examples on a grid of ``k`` radii.

    Attributes:
        first_broken: int64 [n] on the CPU: index of the first ε the example was broken at
            (``k``: never; −1: clean error).
        breaker: int64 [n]: index of the suite attack that broke it first (−1: none).
        violations: adversarial examples that left their ball or the box (not counted).
        violations_by: the same per attack name.
        flags: sanity warnings raised so far.
        ids: int64 [n]: the examples' ids (dataset indices, else positions).
        batch_digests: :func:`batch_digest` of every finished batch.
        done_batches: batches finished (a resumed evaluation skips them).
        path: the state file (``None``: kept in memory only).
        fingerprint: what identifies this evaluation in the state file.
    """

    first_broken: Tensor
    breaker: Tensor
    violations: int = 0
    flags: list[str] = field(default_factory=list)
    done_batches: int = 0
    ids: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    violations_by: dict[str, int] = field(default_factory=dict)
    batch_digests: list[str] = field(default_factory=list)
    path: Path | None = None
    fingerprint: str = ""

    @classmethod
    def start(
        cls,
        n: int,
        k: int,
        flags: list[str],
        path: str | os.PathLike[str] | None = None,
        fingerprints: tuple[str, ...] = ("",),
    ) -> EvalState:
        """A fresh state, or the one saved at ``path`` when that file exists.

        ``fingerprints``: this evaluation's fingerprint first, then older spellings of the
        same evaluation a saved file may carry (e.g. from before an attack was renamed); a
        file with none of them raises ``ValueError``. The state keeps the first one, so the
        next save writes the current fingerprint. ``n`` may be 0 for a stream of unknown
        length: :meth:`record` grows the per-example tensors."""
        p = Path(path) if path is not None else None
        state = cls(
            first_broken=torch.full((n,), k, dtype=torch.int64),
            breaker=torch.full((n,), -1, dtype=torch.int64),
            flags=list(flags), path=p, fingerprint=fingerprints[0],
            ids=torch.arange(n, dtype=torch.int64),
        )
        if p is not None and p.exists():
            saved = json.loads(p.read_text(encoding="utf-8"))
            if saved.get("fingerprint") not in fingerprints:
                raise ValueError(
                    f"{p} holds the state of a different evaluation (other data, weights "
                    "or settings); delete it or choose another state_file"
                )
            state.done_batches = int(saved["done_batches"])
            state.first_broken = torch.tensor(saved["first_broken"], dtype=torch.int64)
            state.breaker = torch.tensor(saved["breaker"], dtype=torch.int64)
            state.violations = int(saved["violations"])
            state.flags = list(saved["flags"])
            state.violations_by = dict(saved.get("violations_by", {}))
            state.batch_digests = list(saved.get("batch_digests", []))
            if "ids" in saved:
                state.ids = torch.tensor(saved["ids"], dtype=torch.int64)
            elif state.ids.shape[0] != state.first_broken.shape[0]:
                state.ids = torch.arange(state.first_broken.shape[0], dtype=torch.int64)
        return state

    def check_batch(self, batch: int, digest: str) -> None:
        """``ValueError`` unless the finished batch ``batch`` was recorded with ``digest``
        (nothing to check for files written before digests were kept)."""
        if batch < len(self.batch_digests) and self.batch_digests[batch] != digest:
            raise ValueError(
                f"batch {batch} of the data differs from the one {self.path} recorded: the "
                "state file belongs to other data (or the loader shuffles); delete it or "
                "choose another state_file")

    def record(self, start: int, first_broken: Tensor, breaker: Tensor,
               violations: int | dict[str, int], ids: Tensor | None = None,
               digest: str = "") -> None:
        """Store one finished batch (examples ``start : start + B``, ids ``ids`` [B]) and
        save; the per-example tensors grow when the stream is longer than announced.
        ``violations``: a count or ``{attack name: count}``."""
        stop = start + first_broken.shape[0]
        if stop > self.first_broken.shape[0]:
            grow = stop - self.first_broken.shape[0]
            k = int(first_broken.max()) if first_broken.numel() else 0
            self.first_broken = torch.cat([self.first_broken, torch.full((grow,), k)])
            self.breaker = torch.cat([self.breaker, torch.full((grow,), -1)])
            self.ids = torch.cat([self.ids, torch.arange(start, stop)])
        self.first_broken[start:stop] = first_broken
        self.breaker[start:stop] = breaker
        if ids is not None:
            self.ids[start:stop] = ids
        by = violations if isinstance(violations, dict) else {}
        self.violations += sum(by.values()) if isinstance(violations, dict) else violations
        for name, c in by.items():
            self.violations_by[name] = self.violations_by.get(name, 0) + c
        self.batch_digests.append(digest)
        self.done_batches += 1
        self.save()

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` examples (a stream shorter than announced)."""
        self.first_broken, self.breaker, self.ids = (
            self.first_broken[:n], self.breaker[:n], self.ids[:n])

    def to_json(self) -> str:
        """The state file's content."""
        return json.dumps({
            "fingerprint": self.fingerprint, "done_batches": self.done_batches,
            "first_broken": self.first_broken.tolist(), "breaker": self.breaker.tolist(),
            "violations": self.violations, "violations_by": self.violations_by,
            "flags": self.flags, "ids": self.ids.tolist(), "batch_digests": self.batch_digests,
        })

    def save(self) -> None:
        """Write the state file atomically (nothing without a ``path``)."""
        if self.path is not None:
            atomic_write_text(self.path, self.to_json())
