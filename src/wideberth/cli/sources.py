"""Where a command's model and examples come from: a run folder (or checkpoint), or bare
weights — ``--model SPEC --weights FILE --data SPEC`` — with no run folder at all.

Bare weights are read by :func:`wideberth.models.load_weights` (safetensors, or a
``.pt``/``.pth`` file read only with ``torch.load(weights_only=True)``; a file that needs
full unpickling is refused, nothing in it runs) and loaded **strictly** into the model that
:func:`wideberth.models.build_model` builds for the data's input shape and class count.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import fileio

__all__ = ["Source", "check_source", "load_source", "load_state_strictly"]


@dataclass
class Source:
    """A command's model (eval mode, on ``device``), its examples ``x`` [N, C, H, W] in
    [0, 1] and ``y`` [N], the dataset's name, and ``record``: what a JSON report says about
    where the model came from (``run`` and ``checkpoint``, or ``model``, ``model_params``,
    ``weights`` and ``weights_sha256``)."""

    model: Any
    x: Any
    y: Any
    device: Any
    dataset: str
    record: dict[str, Any] = field(default_factory=dict)


def check_source(args: argparse.Namespace, command: str) -> None:
    """Raise ``ValueError`` (a usage error) unless ``args`` name exactly one source: a RUN,
    or ``--model`` and ``--weights`` (with ``--data``)."""
    model, weights = getattr(args, "model", None), getattr(args, "weights", None)
    data = getattr(args, "data", None)
    bare = [o for o, v in (("--model", model), ("--weights", weights), ("--data", data),
                           ("--model-params", getattr(args, "model_params", None)))
            if v is not None]
    usage = (f"usage: wideberth {command} RUN ...  or  wideberth {command} --model SPEC "
             "--weights FILE --data SPEC ...")
    if args.run is not None and bare:
        raise ValueError(f"give either a run folder ({args.run}) or {', '.join(bare)}, not both; "
                         + usage)
    if args.run is None:
        if not bare:
            raise ValueError(f"no model given: name a run folder or checkpoint, or bare weights "
                             f"with --model and --weights; {usage}")
        if model is None or weights is None:
            missing = "--model" if model is None else "--weights"
            raise ValueError(f"bare weights need both --model and --weights ({missing} is "
                             f"missing); {usage}")
        if data is None:
            raise ValueError("--weights needs --data: the examples to use, a dataset name "
                             "(e.g. digits) or npz:PATH / safetensors:PATH / folder:PATH")


def load_state_strictly(model: Any, state: dict[str, Any], weights: str, spec: str) -> None:
    """Load ``state`` into ``model`` with ``strict=True``; on a mismatch raise ``ValueError``
    naming the missing and unexpected parameter names (and shape mismatches), with a hint to
    ``wideberth import`` for published checkpoints whose names differ from ours."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
                    for k in set(state) & set(expected)
                    if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or shapes:
        def some(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" … ({len(keys)} in all)" if len(keys) > 8 else "")

        parts = [f"missing: {some(missing)}" if missing else "",
                 f"unexpected: {some(unexpected)}" if unexpected else "",
                 f"shape mismatch: {some(shapes)}" if shapes else ""]
        raise ValueError(
            f"the weights in {weights} do not fit model {spec!r} "
            f"({'; '.join(p for p in parts if p)}). Check --model and --model-params; a "
            "published TRADES, MMA or RobustBench checkpoint uses other parameter names: "
            "convert it with `wideberth import FILE --from trades|mma|robustbench --model NAME "
            "--out RUN` and use the run folder")
    model.load_state_dict(state, strict=True)


def _model_params(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    import yaml

    try:
        params = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"--model-params is not valid YAML: {exc}") from exc
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ValueError(f"--model-params must be a YAML mapping such as '{{hidden: [16]}}'; "
                         f"got {text!r}")
    return {str(k): v for k, v in params.items()}


def _load_bare(args: argparse.Namespace, device: Any) -> Source:
    from ..data import load_eval_data
    from ..models import build_model, load_weights

    params = _model_params(args.model_params)
    state = load_weights(args.weights)  # before building anything: a refused file stops here
    x, y, info = load_eval_data(args.data, split=args.split)
    c, h, w = info.input_shape
    model = build_model(args.model, (c, h, w), info.num_classes, **params)
    load_state_strictly(model, state, str(args.weights), args.model)
    model.to(device).eval()
    n = x.shape[0] if args.n is None else min(args.n, x.shape[0])
    record = {"model": args.model, "model_params": params,
              "weights": str(Path(args.weights).resolve()),
              "weights_sha256": fileio.sha256_file(args.weights)}
    return Source(model, x[:n], y[:n], device, info.name, record)


def load_source(args: argparse.Namespace, command: str) -> Source:
    """The model and the first ``args.n`` examples (all if None) that ``args`` name: the
    run ``args.run`` (its ``args.which`` checkpoint and ``args.split`` of its own data), or
    bare weights (``args.model``, ``args.model_params``, ``args.weights``, ``args.data``)."""
    import torch

    from ..train import resolve_device

    check_source(args, command)
    device = resolve_device(args.device or "auto")
    if args.run is None:
        return _load_bare(args, device)
    from ..data import IndexedTensors, load_split
    from ..runs import load_model, load_run_config, resolve_checkpoint

    cfg = load_run_config(args.run)
    model = load_model(args.run, which=args.which, device=device)
    x_raw, y_raw = load_split(cfg.data, args.split)  # the run's split, from its whole DataConfig
    ds = IndexedTensors(x_raw, y_raw)
    n = len(ds) if args.n is None else min(args.n, len(ds))
    x, y, _ = ds.get_batch(torch.arange(n))
    record = {"run": str(args.run), "checkpoint": str(resolve_checkpoint(args.run, args.which))}
    return Source(model, x, y, device, cfg.data.name, record)
