"""What a training run is made of, built from its config: device, data, model, method,
optimiser, per-example state and the step budget.

:func:`build_run_parts` builds them in a fixed order with torch's generator seeded from
``(run.seed, "init")`` before the model, so the same config always starts from the same
weights; :func:`derive_seed` gives every other seed of the run (epoch order, steps).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import __version__
from ..config import Config, ConfigError, OptimConfig, config_to_dict
from ..data import DataSplits, build_splits, num_batches
from ..example_state import ExampleState
from ..methods import Method, build_method
from ..models import model_record, rebuild_model
from .checkpoint import CheckpointError
from .selection import VALIDATION_METRICS

__all__ = ["RunParts", "build_run_parts", "derive_seed", "make_optimizer", "resolve_device"]


def derive_seed(seed: int, *keys: object) -> int:
    """A stable 63-bit seed from a base seed and any keys (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"run.device={name!r} but CUDA is not available here; use --device cpu or auto"
        )
    return torch.device(name)


def make_optimizer(model: nn.Module, o: OptimConfig) -> torch.optim.Optimizer:
    """SGD (with momentum / Nesterov) or Adam over ``model``'s parameters, as ``o`` says."""
    params = model.parameters()
    if o.name == "sgd":
        return torch.optim.SGD(
            params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay
        )
    beta1, beta2 = o.betas
    return torch.optim.Adam(params, lr=o.lr, betas=(beta1, beta2), weight_decay=o.weight_decay)


def _augment_kind(cfg: Config, splits: DataSplits) -> str | None:
    a = cfg.data.augment
    if a == "auto":
        return splits.info.augment
    return None if a in (None, "none") else a


@dataclass
class RunParts:
    """The pieces of one run (see :func:`build_run_parts`).

    ``augment`` is the training augmentation (``None`` for none); ``total_steps`` the
    budget in optimiser steps, ``steps_per_epoch`` the batches of one pass over the
    training split (the last one may be short) and ``total_epochs`` the epochs the budget
    touches.
    """

    cfg: Config
    device: torch.device
    splits: DataSplits
    augment: str | None
    model: nn.Module
    method: Method
    optimizer: torch.optim.Optimizer
    state: ExampleState
    steps_per_epoch: int
    total_steps: int
    total_epochs: int
    model_source: dict[str, Any] = field(default_factory=dict)

    def checkpoint_meta(self, **extra: Any) -> dict[str, Any]:
        """A checkpoint's metadata: the config, data, model, budget and versions, then ``extra``."""
        info = self.splits.info
        return {
            "config": config_to_dict(self.cfg),
            "data": {
                "name": info.name,
                "input_shape": list(info.input_shape),
                "num_classes": info.num_classes,
                "num_train": len(self.splits.train),
                "num_val": len(self.splits.val) if self.splits.val is not None else 0,
            },
            "model": {
                "name": self.cfg.model.name,
                "num_parameters": sum(p.numel() for p in self.model.parameters()),
                **self.model_source,  # source, spec, module, file, distribution, params
            },
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "versions": {"wideberth": __version__, "torch": torch.__version__},
            **extra,
        }


def resumable_model(meta: dict[str, Any], run_dir: str | Path) -> dict[str, Any] | None:
    """The model record of a checkpoint's ``meta`` to resume its run with (``None`` for
    checkpoints written before models were recorded); a run folder of imported weights
    (``wideberth import``) has no training state and is refused with what to do instead."""
    if "imported" in meta:
        raise CheckpointError(
            f"{run_dir} holds imported weights (wideberth import), not a training run: there "
            "is no optimiser state to resume; fine-tune with `wideberth train` instead"
        )
    record = meta.get("model", {})
    return record if isinstance(record, dict) and record.get("source") else None


def build_run_parts(cfg: Config, model_source: dict[str, Any] | None = None) -> RunParts:
    """Build device, data splits, model, method (set up on the data), optimiser and budget.

    ``model_source`` is a resumed run's recorded model (:func:`resumable_model`): the model
    is rebuilt from it, so an import-path model resumes from any working directory."""
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = resolve_device(cfg.run.device)
    d = cfg.data
    # Resolve the model spec first: a missing module/factory or a bad param fails before data loads.
    if model_source is None:
        model_source = model_record(cfg.model.name, cfg.model.params)
    splits = build_splits(d)  # the whole DataConfig; spec paths made absolute in cfg.data
    info = splits.info
    augment = _augment_kind(cfg, splits)
    if cfg.eval.selection_metric not in VALIDATION_METRICS:
        raise ConfigError(
            f"unknown eval.selection_metric {cfg.eval.selection_metric!r}; "
            f"available: {', '.join(sorted(VALIDATION_METRICS))}"
        )
    torch.manual_seed(derive_seed(cfg.run.seed, "init"))
    c, h, w = info.input_shape
    model = rebuild_model(model_source, (c, h, w), info.num_classes, **cfg.model.params).to(device)
    method = build_method(cfg.method)
    optimizer = make_optimizer(model, cfg.optim)
    n_train = len(splits.train)
    steps_per_epoch = num_batches(n_train, d.batch_size, drop_last=False)
    if cfg.run.steps is not None:
        total_steps = cfg.run.steps
    else:
        assert cfg.run.epochs is not None  # validated in config: one of the two is set
        total_steps = cfg.run.epochs * steps_per_epoch
    total_epochs = math.ceil(total_steps / steps_per_epoch)
    indices = [splits.train.index]
    if splits.val is not None:
        indices.append(splits.val.index)
    state = ExampleState(int(torch.cat(indices).max()) + 1)
    method.setup(model, state, n_train)
    method.bind_train_data(splits.train, d.eval_batch_size)
    return RunParts(
        cfg, device, splits, augment, model, method, optimizer, state, steps_per_epoch, total_steps,
        total_epochs, model_source,
    )
