"""Checkpoints: one safetensors file per checkpoint, written atomically. No pickle.

A checkpoint file holds every tensor of a run's state under a prefix:

- ``model.<name>``: the model's ``state_dict``;
- ``optim.<param-id>.<key>``: the optimiser's per-parameter tensors (momentum, Adam moments);
- ``example_state.<field>``: the per-example store (MMA's ε, ...);
- ``method.<name>``: method-level tensors (``Method.state_dict``, e.g. UAT's perturbation);
- ``rng.torch`` and ``rng.cuda.<i>``: random-number-generator states.

Everything else (the resolved config, epoch, step, metrics, the optimiser's hyperparameters,
the dataset's shape) is one JSON document stored in the safetensors header's metadata under
``"wideberth"``. Keeping it in the same file makes the write atomic as a whole: the tensors
and the JSON are written to a temporary file in the same folder, flushed and fsync'ed, then
renamed over the old checkpoint. A crash at any point leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from ..fileio import replace_atomically
from ..models import is_safetensors_file

__all__ = [
    "FORMAT",
    "CheckpointError",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_meta",
    "not_a_checkpoint_message",
    "optimizer_to_flat",
    "optimizer_from_flat",
]

FORMAT = "wideberth-checkpoint/1"
_META_KEY = "wideberth"


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or not a wideberth checkpoint."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: tensors grouped by prefix, and the JSON metadata."""

    model: dict[str, Tensor]
    optim: dict[str, Tensor]
    example_state: dict[str, Tensor]
    rng: dict[str, Tensor]
    meta: dict[str, Any]
    method: dict[str, Tensor] = field(default_factory=dict)


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors and a JSON-able remainder."""
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
        for g in sd["param_groups"]
    ]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_flat(tensors: dict[str, Tensor], info: dict[str, Any]) -> dict[str, Any]:
    """Rebuild a state dict that ``optimizer.load_state_dict`` accepts."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, entries in info.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(entries)
    groups = []
    for g in info["param_groups"]:
        g = dict(g)
        if "betas" in g and isinstance(g["betas"], list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    path: str | Path,
    *,
    model_state: dict[str, Tensor],
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    example_state: dict[str, Tensor] | None = None,
    method_state: dict[str, Tensor] | None = None,
    save_rng: bool = True,
) -> Path:
    """Write a checkpoint atomically to ``path`` (a ``.safetensors`` file) and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Tensor] = {}
    for name, t in model_state.items():
        tensors[f"model.{name}"] = t
    meta = dict(meta)
    if optimizer is not None:
        opt_tensors, opt_info = optimizer_to_flat(optimizer)
        tensors.update({f"optim.{k}": v for k, v in opt_tensors.items()})
        meta["optimizer"] = opt_info
    for name, t in (example_state or {}).items():
        tensors[f"example_state.{name}"] = t
    for name, t in (method_state or {}).items():
        tensors[f"method.{name}"] = t
    if save_rng:
        tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
    # safetensors wants contiguous CPU tensors that share no memory.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    meta["format"] = FORMAT
    header = {_META_KEY: json.dumps(meta, allow_nan=True)}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=header)
        replace_atomically(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def not_a_checkpoint_message(path: str | Path) -> str:
    """What to say about a file that is not a safetensors file (a ``.pt``, ``.pth``, ...)."""
    return (
        f"{path} is not a wideberth checkpoint (not a safetensors file: a .pt/.pth file of "
        "another training script, or a damaged checkpoint). To use bare weights, name the "
        "model: `--model SPEC --weights FILE` (SPEC a registry name or "
        "'package.module:factory'); to turn a TRADES, MMA or RobustBench checkpoint into a "
        "run folder: `wideberth import FILE --from trades|mma|robustbench --model NAME "
        "--out RUN`"
    )


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a checkpoint, without loading its tensors."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint {path} does not exist") from exc
    except (SafetensorError, OSError) as exc:
        if not is_safetensors_file(path):
            raise CheckpointError(not_a_checkpoint_message(path)) from exc
        raise CheckpointError(
            f"{path} is not a readable safetensors checkpoint ({exc}); it may be truncated: "
            "use another checkpoint of the run (checkpoints/last.safetensors or best.safetensors)"
        ) from exc
    if _META_KEY not in header:
        raise CheckpointError(
            f"{path} is a safetensors file but not a wideberth checkpoint (no '{_META_KEY}' metadata)"
        )
    meta = json.loads(header[_META_KEY])
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {meta.get('format')!r}; this wideberth reads {FORMAT!r}"
        )
    return meta


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load every tensor of a checkpoint (onto ``device``) and its metadata."""
    path = Path(path)
    meta = read_checkpoint_meta(path)
    groups: dict[str, dict[str, Tensor]] = {
        "model": {}, "optim": {}, "example_state": {}, "rng": {}, "method": {}}
    with safe_open(str(path), framework="pt", device="cpu") as fh:
        for key in fh.keys():
            prefix, _, name = key.partition(".")
            if prefix not in groups:
                raise CheckpointError(f"{path}: unexpected tensor {key!r}")
            t = fh.get_tensor(key)
            groups[prefix][name] = t if prefix == "rng" else t.to(device)
    return Checkpoint(meta=meta, **groups)
