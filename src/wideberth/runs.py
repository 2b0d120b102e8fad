"""Run folders and checkpoints from the user's side: find, describe, load a model, and make
a run folder of a published checkpoint (:func:`import_checkpoint`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._version import __version__
from .config import Config, config_from_dict, config_to_dict
from .data import dataset_info, resolve_data_config
from .models import build_model, import_published, is_safetensors_file, model_record, rebuild_model
from .train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    not_a_checkpoint_message,
    read_checkpoint_meta,
    save_checkpoint,
)
from .train.run_folder import RunFolder

__all__ = [
    "default_dataset", "import_checkpoint", "load_model", "load_run_config",
    "resolve_checkpoint", "run_info",
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
    if "imported" in meta:  # a published checkpoint (import_checkpoint): where it came from
        imp = meta["imported"]
        info["imported"] = {k: imp.get(k) for k in ("source", "file_name", "sha256")}
    results = Path(path) / "results.json" if Path(path).is_dir() else None
    if results is not None and results.exists():
        info["test"] = json.loads(results.read_text()).get("test")
    return info


_MNIST_MODELS = ("smallcnn", "lenet5-madry")


def default_dataset(model: str) -> str:
    """The dataset a published ``model`` was trained on: ``mnist`` for ``smallcnn`` and
    ``lenet5-madry`` (TRADES', MMA's MNIST nets), else ``cifar10`` (the WRNs, ResNets)."""
    return "mnist" if model in _MNIST_MODELS else "cifar10"


def _clear_run(folder: RunFolder) -> None:
    """Remove the files a run folder holds (and nothing else in the folder)."""
    for f in (folder.config, folder.metrics, folder.results,
              folder.checkpoint("best"), folder.checkpoint("last")):
        f.unlink(missing_ok=True)


def import_checkpoint(
    file: str | Path,
    source: str,
    model: str,
    out: str | Path,
    *,
    data: str | None = None,
    params: dict[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Make the run folder ``out`` of a published checkpoint, usable by :func:`load_model`,
    ``wideberth evaluate RUN``, ``wideberth info RUN`` and every other command.

    The file is read safely (safetensors, or ``torch.load(weights_only=True)`` only), its
    container and ``module.`` prefix unwrapped, its parameters renamed to the registry
    model's and loaded strictly (:func:`wideberth.models.import_published`; sources:
    TRADES, Zhang et al., ICML 2019; MMA training, Ding et al., ICLR 2020; RobustBench,
    Croce et al., NeurIPS 2021 Datasets and Benchmarks). ``out`` gets the trainer's layout:
    ``config.yaml``, an empty ``metrics.jsonl`` and ``checkpoints/best.safetensors`` =
    ``last.safetensors`` (model weights only, position 0). The checkpoint's metadata records
    the provenance under ``"imported"``: source, original file name, its SHA-256, the
    ``{their name: our name}`` map and any dropped / filled names.

    Args:
        file: the published weights file.
        source: ``"trades"``, ``"mma"`` or ``"robustbench"``.
        model: the registry model (``wideberth.models.IMPORT_SOURCES[source]`` lists them).
        out: the run folder to create.
        data: the dataset (name or spec) the run is evaluated on; default
            :func:`default_dataset` (``mnist`` / ``cifar10``). Its input shape and class count
            must fit the weights.
        params: registry options of ``model`` (e.g. ``{"sub_block1": True}``).
        force: replace the run files of an existing run folder.

    Returns:
        ``out`` as a ``Path``.

    Raises:
        FileExistsError: ``out`` already holds a run and ``force`` is false.
        ValueError: unknown source or model, the weights do not fit (keys listed), the file
            is refused, or the dataset's classes differ from the weights'.
    """
    folder = RunFolder(out)
    if folder.path.exists() and not force and (
        folder.holds_run() or folder.config.exists() or folder.checkpoint("best").exists()
    ):
        raise FileExistsError(
            f"{folder.path} already holds a run; choose another --out or pass --force "
            "(force=True) to replace its run files"
        )
    cfg = Config()
    cfg.data.name = data if data is not None else default_dataset(model)
    cfg.data = resolve_data_config(cfg.data)
    info = dataset_info(cfg.data.name, cfg.data.data_dir)
    options = dict(params or {})
    c, h, w = info.input_shape
    imported = import_published(Path(file), source, model, (c, h, w), None, **options)
    with torch.no_grad():  # the model is in eval mode
        k = int(imported.model(torch.zeros(1, *info.input_shape)).shape[1])
    if k != info.num_classes:
        raise ValueError(
            f"the weights in {file} give {k} logits but dataset {cfg.data.name!r} has "
            f"{info.num_classes} classes; name the dataset they were trained on with --data"
        )
    cfg.model.name = model
    cfg.model.params = options
    net = imported.model
    meta: dict[str, Any] = {
        "config": config_to_dict(cfg),
        "data": {"name": info.name, "input_shape": list(info.input_shape),
                 "num_classes": info.num_classes, "num_train": 0, "num_val": 0},
        "model": {"name": model, "num_parameters": sum(p.numel() for p in net.parameters()),
                  **model_record(model, options)},
        "position": {"epoch": 0, "batch_in_epoch": 0, "step": 0},
        "best": None,
        "total_steps": 0,
        "steps_per_epoch": 0,
        "versions": {"wideberth": __version__, "torch": torch.__version__},
        "imported": {
            "source": source, "file_name": imported.file_name, "sha256": imported.sha256,
            "name_map": imported.name_map, "dropped": imported.dropped,
            "filled": imported.filled,
        },
    }
    if force:
        _clear_run(folder)
    folder.create(cfg)
    state = net.state_dict()
    for which in ("last", "best"):
        save_checkpoint(folder.checkpoint(which), model_state=state, meta=meta, save_rng=False)
    return folder.path
