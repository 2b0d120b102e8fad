"""The state of a streamed evaluation: per-example results, saved after every batch.

:func:`wideberth.evaluate` keeps one :class:`EvalState`: per example the index of the first
ε at which it was broken (``k`` = never, −1 = clean error) and the attack that broke it, the
infeasible adversarial examples seen, the flags raised and the batches done. With a
``state_file`` it is written atomically after every batch as JSON::

    {"fingerprint": ..., "done_batches": b, "first_broken": [...], "breaker": [...],
     "violations": v, "flags": [...]}

and an interrupted evaluation resumes from it. The fingerprint (:func:`fingerprint`) hashes
the data, the weights and the settings, so a file of another evaluation is refused.
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

__all__ = ["EvalState", "fingerprint"]


def fingerprint(model: nn.Module, x: Tensor, y: Tensor, meta: dict[str, Any]) -> str:
    """Identifies an evaluation for resuming: a hash of ``meta`` (the settings, JSON-ready),
    the data ``x`` [N, ...], ``y`` [N] and the model's weights."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(meta, sort_keys=True).encode())
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
        flags: sanity warnings raised so far.
        done_batches: batches finished (a resumed evaluation skips them).
        path: the state file (``None``: kept in memory only).
        fingerprint: what identifies this evaluation in the state file.
    """

    first_broken: Tensor
    breaker: Tensor
    violations: int = 0
    flags: list[str] = field(default_factory=list)
    done_batches: int = 0
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
        next save writes the current fingerprint."""
        p = Path(path) if path is not None else None
        state = cls(
            first_broken=torch.full((n,), k, dtype=torch.int64),
            breaker=torch.full((n,), -1, dtype=torch.int64),
            flags=list(flags), path=p, fingerprint=fingerprints[0],
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
        return state

    def record(self, start: int, first_broken: Tensor, breaker: Tensor, violations: int) -> None:
        """Store one finished batch (examples ``start : start + B``) and save."""
        stop = start + first_broken.shape[0]
        self.first_broken[start:stop] = first_broken
        self.breaker[start:stop] = breaker
        self.violations += violations
        self.done_batches += 1
        self.save()

    def to_json(self) -> str:
        """The state file's content."""
        return json.dumps({
            "fingerprint": self.fingerprint, "done_batches": self.done_batches,
            "first_broken": self.first_broken.tolist(), "breaker": self.breaker.tolist(),
            "violations": self.violations, "flags": self.flags,
        })

    def save(self) -> None:
        """Write the state file atomically (nothing without a ``path``)."""
        if self.path is not None:
            atomic_write_text(self.path, self.to_json())
