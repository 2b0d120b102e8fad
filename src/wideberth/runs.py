"""Run folders and checkpoints from the user's side: find, describe, load a model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import Config, config_from_dict
from .models import build_model, is_safetensors_file, rebuild_model
from .train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    not_a_checkpoint_message,
    read_checkpoint_meta,
)

__all__ = [
    "load_model", "load_run_config", "resolve_checkpoint", "run_info",
]


def resolve_checkpoint(path: str | Path, which: str = "best") -> Path:
    """The checkpoint file a path means: a ``.safetensors`` file as given, or a run folder's
    ``checkpoints/<which>.safetensors`` (``best`` falls back to ``last``)."""
    path = Path(path)
    if path.is_file():
        if not is_safetensors_file(path):
            raise CheckpointError(not_a_checkpoint_message(path))
        return path
    if path.is_dir():
        candidates = [which] + (["last"] if which == "best" else [])
        for name in candidates:
            p = path / "checkpoints" / f"{name}.safetensors"
            if p.exists():
                return p
        raise CheckpointError(
            f"{path} is a folder but holds no checkpoints/{which}.safetensors; "
            "is it a wideberth run folder? (`wideberth train --out DIR` makes one)"
        )
    raise CheckpointError(f"{path} does not exist; give a run folder or a .safetensors checkpoint")


def load_run_config(path: str | Path) -> Config:
    """The resolved config a run or checkpoint was trained with."""
    return config_from_dict(read_checkpoint_meta(resolve_checkpoint(path))["config"])


def load_model(
    path: str | Path, *, which: str = "best", device: str | torch.device = "cpu"
) -> nn.Module:
    """Rebuild the model of a run folder or checkpoint and load its weights.

    Returns an ``nn.Module`` in eval mode on ``device`` whose inputs are images in [0, 1]
    (normalisation, if any, is a layer inside it) and whose outputs are logits [B, K].

    The model is rebuilt from the checkpoint's record of where it came from
    (:func:`wideberth.models.rebuild_model`): a registry name, an installed package's
    entry point, or an import path ``package.module:factory`` (loaded from its recorded
    file when the module is not importable here), so a fresh process in any directory
    needs no registration code. A model registered only in Python (``register_model`` in a
    script) cannot be rebuilt so; the error says so and suggests the import-path form.

    Raises:
        CheckpointError: no checkpoint there, or a file that is not a wideberth checkpoint.
        ModelSpecError (a ValueError): the model cannot be rebuilt here.
    """
    ckpt = load_checkpoint(resolve_checkpoint(path, which), device=device)
    cfg = config_from_dict(ckpt.meta["config"])
    data = ckpt.meta["data"]
    shape, k = tuple(data["input_shape"]), data["num_classes"]
    record = ckpt.meta.get("model") or {}
    if "source" in record and "spec" in record:
        model = rebuild_model(record, shape, k, **cfg.model.params)
    else:  # checkpoints written before the model's source was recorded
        model = build_model(cfg.model.name, shape, k, **cfg.model.params)
    model.load_state_dict(ckpt.model)
    return model.to(device).eval()


def run_info(path: str | Path) -> dict[str, Any]:
    """A summary of a run folder or checkpoint: config, position, best, test results."""
    ckpt_path = resolve_checkpoint(path, "last")
    meta = read_checkpoint_meta(ckpt_path)
    info: dict[str, Any] = {
        "checkpoint": str(ckpt_path),
        "data": meta["data"],
        "model": meta["model"],
        "method": meta["config"]["method"],
        "position": meta.get("position"),
        "total_steps": meta.get("total_steps"),
        "best": meta.get("best"),
        "train_time_s": meta.get("train_time"),
        "versions": meta.get("versions"),
    }
    results = Path(path) / "results.json" if Path(path).is_dir() else None
    if results is not None and results.exists():
        info["test"] = json.loads(results.read_text()).get("test")
    return info
