"""Published checkpoints into registry models: :func:`import_weights`.

The released weights of TRADES (Zhang et al., ICML 2019), MMA training (Ding et al., ICLR
2020) and RobustBench (Croce et al., NeurIPS 2021 Datasets and Benchmarks) have the same
shapes as the matching registry models but other parameter names. :func:`import_published`
unwraps the file's container, renames every parameter to ours by the source's rules, and
loads the result **strictly**: a missing, unexpected or mis-shaped key is an error listing
them, never a silently half-loaded model.

=================  =====================================  ==================================
``source``         architecture (their model file)        registry model
=================  =====================================  ==================================
``trades``         ``SmallCNN`` (models/small_cnn.py)     ``smallcnn`` (28×28 MNIST)
``trades``         ``WideResNet`` (models/wideresnet.py)  ``wrn-34-10``
``mma``            advertorch ``LeNet5Madry``             ``lenet5-madry``
``mma``            advertorch ``WideResNet`` (+ per-image ``wrn-28-4``
                   standardisation, ``nn.Sequential``)
``robustbench``    ``WideResNet`` (wide_resnet.py)        ``wrn-28-10``, ``wrn-34-10``
``robustbench``    ``PreActResNet18`` (resnet.py)         ``preact-resnet18``
=================  =====================================  ==================================

TRADES' WideResNet carries an unused ``sub_block1`` group; it is dropped (and listed in
the mapping) unless the target is built with ``sub_block1=True``. BatchNorm's
``num_batches_tracked`` counters, absent from files of old PyTorch versions, are filled
with 0 (they do not affect eval-mode outputs) and listed too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..fileio import sha256_file
from .registry import build_model
from .weights import WeightsError, load_weights, unwrap_state_dict

__all__ = [
    "IMPORT_SOURCES",
    "ImportedWeights",
    "PublishedWeightsError",
    "default_input_shape",
    "import_published",
    "import_weights",
    "rename_published",
]


class PublishedWeightsError(WeightsError):
    """Published weights do not fit the named registry model (keys or shapes differ)."""


_Rules = tuple[tuple[str, str], ...]

_WRN_TRADES: _Rules = (
    (r"^(block[123]|sub_block1)\.layer\.(\d+)\.", r"\1.\2."),
    (r"\.convShortcut\.", ".conv_shortcut."),
)
_WRN_MMA: _Rules = (
    (r"^convgroup([123])\.layer\.(\d+)\.", r"block\1.\2."),
)
_SMALLCNN: _Rules = (
    (r"^feature_extractor\.conv1\.", "features.0."),
    (r"^feature_extractor\.conv2\.", "features.2."),
    (r"^feature_extractor\.conv3\.", "features.5."),
    (r"^feature_extractor\.conv4\.", "features.7."),
    (r"^classifier\.fc1\.", "classifier.0."),
    (r"^classifier\.fc2\.", "classifier.3."),
    (r"^classifier\.fc3\.", "classifier.5."),
)
_LENET: _Rules = (
    (r"^conv1\.", "features.0."),
    (r"^conv2\.", "features.3."),
    (r"^linear1\.", "classifier.0."),
    (r"^linear2\.", "classifier.2."),
)
_PREACT: _Rules = ((r"\.shortcut\.0\.", ".shortcut."),)

IMPORT_SOURCES: dict[str, dict[str, _Rules]] = {
    "trades": {"smallcnn": _SMALLCNN, "wrn-34-10": _WRN_TRADES},
    "mma": {"lenet5-madry": _LENET, "wrn-28-4": _WRN_MMA},
    "robustbench": {"wrn-28-10": _WRN_TRADES, "wrn-34-10": _WRN_TRADES,
                    "preact-resnet18": _PREACT},
}
"""``{source: {registry model: renaming rules}}``: the supported imports."""

_SOURCE_PREFIX = {"mma": {"wrn-28-4": "1."}}  # their nn.Sequential(PerImageStandardize(), WRN)
_HEADS = ("fc.weight", "linear.weight", "classifier.fc3.weight", "linear2.weight")


def default_input_shape(model: str) -> tuple[int, int, int]:
    """The input shape a published model was trained on: 1×28×28 (MNIST) for ``smallcnn``
    and ``lenet5-madry``, else 3×32×32 (CIFAR-10)."""
    return (1, 28, 28) if model in ("smallcnn", "lenet5-madry") else (3, 32, 32)


@dataclass
class ImportedWeights:
    """A published checkpoint loaded into a registry model.

    Attributes:
        model: the registry model in eval mode with the imported weights.
        name_map: ``{their name: our name}`` for every loaded tensor.
        dropped: their names not loaded (TRADES' unused ``sub_block1``).
        filled: our names filled in (``num_batches_tracked`` absent from old files).
        sha256: hex SHA-256 of the file (``None`` when given a state dict).
        file_name: the file's name (``None`` when given a state dict).
    """

    model: nn.Module
    name_map: dict[str, str]
    dropped: list[str] = field(default_factory=list)
    filled: list[str] = field(default_factory=list)
    sha256: str | None = None
    file_name: str | None = None


def _rules(source: str, model: str) -> _Rules:
    if source not in IMPORT_SOURCES:
        raise ValueError(
            f"unknown source {source!r}; choose from {', '.join(sorted(IMPORT_SOURCES))}"
        )
    table = IMPORT_SOURCES[source]
    if model not in table:
        raise ValueError(
            f"source {source!r} has no mapping for model {model!r}; supported: "
            + "; ".join(f"{s}: {', '.join(m)}" for s, m in IMPORT_SOURCES.items())
        )
    return table[model]


def _our_prefix(ours: dict[str, Tensor], model: str) -> str:
    """``"1."`` for wrn-28-4's Sequential(PerImageStandardize, WRN); else ``""``."""
    if model.startswith("wrn-") and "conv1.weight" not in ours and "1.conv1.weight" in ours:
        return "1."
    return ""


def rename_published(
    state: dict[str, Tensor], source: str, model: str, ours: dict[str, Tensor]
) -> tuple[dict[str, Tensor], dict[str, str], list[str], list[str]]:
    """Rename a published state dict to the keys of ``ours`` (our model's ``state_dict()``).

    Returns ``(renamed state, {their name: our name}, dropped names, filled names)``.
    """
    rules = _rules(source, model)
    strip = _SOURCE_PREFIX.get(source, {}).get(model, "")
    if strip and not all(k.startswith(strip) for k in state):
        strip = ""  # a bare network saved without the standardisation wrapper
    prefix = _our_prefix(ours, model)
    renamed: dict[str, Tensor] = {}
    name_map: dict[str, str] = {}
    dropped: list[str] = []
    for theirs, tensor in state.items():
        name = theirs[len(strip):]
        for pattern, repl in rules:
            name = re.sub(pattern, repl, name)
        name = prefix + name
        if name.startswith(prefix + "sub_block1.") and name not in ours:
            dropped.append(theirs)
            continue
        renamed[name] = tensor
        name_map[theirs] = name
    filled = [k for k in ours if k.endswith("num_batches_tracked") and k not in renamed]
    for k in filled:
        renamed[k] = torch.zeros_like(ours[k])
    return renamed, name_map, dropped, filled


def _check_strict(renamed: dict[str, Tensor], ours: dict[str, Tensor], what: str) -> None:
    missing = sorted(set(ours) - set(renamed))
    unexpected = sorted(set(renamed) - set(ours))
    shapes = [
        f"{k}: theirs {tuple(renamed[k].shape)} vs ours {tuple(ours[k].shape)}"
        for k in ours if k in renamed and renamed[k].shape != ours[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:20])}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:20])}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {'; '.join(shapes[:10])}")
        raise PublishedWeightsError(
            f"{what} do not fit: " + "; ".join(parts)
            + " (check --from / --model, and model params such as depth, widen, sub_block1)"
        )


def _infer_num_classes(state: dict[str, Tensor]) -> int | None:
    for k in _HEADS:
        for name, t in state.items():
            if (name == k or name.endswith("." + k)) and t.dim() == 2:
                return int(t.shape[0])
    return None


def import_published(
    state_or_path: str | Path | dict[str, Tensor] | Any,
    source: str,
    model: str,
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
    **params: object,
) -> ImportedWeights:
    """Load a published checkpoint into the registry model ``model`` (see the module
    docstring for the supported ``source`` / ``model`` pairs) and say how it was mapped.

    Args:
        state_or_path: a weights file (safetensors, or ``.pt``/``.pth`` read with
            ``torch.load(weights_only=True)`` only) or an already loaded state dict;
            containers (``{"state_dict": …}``, ``{"model": …}``, …) and a ``module.``
            prefix are unwrapped.
        source: ``"trades"``, ``"mma"`` or ``"robustbench"``.
        model: the registry model name.
        input_shape: ``(C, H, W)``; default :func:`default_input_shape`.
        num_classes: K; default: the rows of the file's last layer.
        **params: registry options of ``model`` (e.g. ``sub_block1=True``).

    Raises:
        ValueError: unknown source or unsupported model.
        PublishedWeightsError (a WeightsError, a ValueError): keys missing, unexpected or of other
            shapes after renaming (all listed); the file is refused or holds no state dict.
    """
    sha = file_name = None
    if isinstance(state_or_path, (str, Path)):
        path = Path(state_or_path)
        state = load_weights(path)
        sha = sha256_file(path)
        file_name = path.name
    else:
        state = unwrap_state_dict(state_or_path, source="the given state dict")
    _rules(source, model)
    shape = tuple(input_shape) if input_shape is not None else default_input_shape(model)
    k = num_classes if num_classes is not None else _infer_num_classes(state) or 10
    net = build_model(model, shape, k, **params)  # type: ignore[arg-type]
    ours = net.state_dict()
    renamed, name_map, dropped, filled = rename_published(state, source, model, ours)
    _check_strict(renamed, ours, f"{source} weights{f' in {file_name}' if file_name else ''} "
                                 f"and model {model!r}")
    net.load_state_dict(renamed, strict=True)
    return ImportedWeights(net.eval(), name_map, dropped, filled, sha, file_name)


def import_weights(
    state_or_path: str | Path | dict[str, Tensor] | Any,
    source: str,
    model: str,
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
    **params: object,
) -> nn.Module:
    """The registry model ``model`` (eval mode) with a published checkpoint's weights,
    renamed and loaded strictly; :func:`import_published` with the model only."""
    return import_published(
        state_or_path, source, model, input_shape, num_classes, **params
    ).model
