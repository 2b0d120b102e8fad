"""The model registry: :func:`register_model`, :func:`build_model`, :func:`list_models`.

Each model family module registers its builders with :func:`register_model` when it is
imported; importing :mod:`wideberth.models` imports all of them, so :data:`MODELS` is
complete whenever any of its modules is in use.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "MODELS",
    "Builder",
    "InputShape",
    "ModelEntry",
    "build_model",
    "list_models",
    "register_model",
    "uses_batchnorm",
]

InputShape = tuple[int, int, int]
"""``(C, H, W)`` of one input image."""
Builder = Callable[..., nn.Module]
"""``builder(input_shape, num_classes, **options) -> nn.Module``."""


@dataclass(frozen=True)
class ModelEntry:
    """One registry entry.

    Attributes:
        builder: ``builder(input_shape, num_classes, **kwargs) -> nn.Module``. The keyword
            arguments it accepts (beyond the first two) are the model's options.
        description: one-line description (source paper, what it is).
    """

    builder: Builder
    description: str

    @property
    def options(self) -> dict[str, object]:
        """Keyword options of the builder with their defaults."""
        params = list(inspect.signature(self.builder).parameters.values())[2:]
        return {
            p.name: p.default for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }


MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, description: str) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(input_shape, num_classes, **kwargs)`` under ``name``.

    Raises:
        ValueError: if ``name`` is already registered.
    """

    def decorator(builder: Builder) -> Builder:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name] = ModelEntry(builder=builder, description=description)
        return builder

    return decorator


def list_models() -> list[str]:
    """Sorted names of the registered models."""
    return sorted(MODELS)


def _check_input_shape(input_shape: Sequence[int]) -> InputShape:
    """``input_shape`` as a ``(C, H, W)`` tuple of positive ints, else ValueError."""
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"input_shape must be (C, H, W) with positive ints, got {input_shape!r}")
    return shape


def build_model(
    name: str, input_shape: tuple[int, int, int], num_classes: int, **kwargs: object
) -> nn.Module:
    """Build a registered model.

    Args:
        name: registry name (see :func:`list_models`).
        input_shape: ``(C, H, W)`` of one input image, pixels in [0, 1].
        num_classes: number of logits K.
        **kwargs: model options (see ``MODELS[name].options``).

    Returns:
        An ``nn.Module`` in train mode mapping ``[B, C, H, W]`` to logits ``[B, K]``.
        Models with 2-D convolutions keep their weights in channels-last (NHWC) memory
        format: on CPU their forward pass runs up to 2× faster (cnn-small 2.1×, the
        multi-forward searches of MMA gain most; see ``benchmarks/bench_mma_vs_pgd.py``),
        and inputs may stay in the default layout.

    Raises:
        ValueError: unknown name (message lists the valid names), unknown option
            (message lists the valid options), bad ``input_shape``/``num_classes``, or an
            input too small for the architecture.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    entry = MODELS[name]
    valid = entry.options
    bad = sorted(set(kwargs) - set(valid))
    if bad:
        raise ValueError(
            f"unknown option(s) {', '.join(bad)} for model {name!r}; "
            f"valid options: {', '.join(sorted(valid)) or '(none)'}"
        )
    shape = _check_input_shape(input_shape)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    model = entry.builder(shape, num_classes, **kwargs)
    if any(isinstance(m, nn.Conv2d) for m in model.modules()):
        # Module.to accepts memory_format at run time; torch's type stubs leave it out.
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def uses_batchnorm(model: nn.Module) -> bool:
    """True if ``model`` contains any BatchNorm layer (its train/eval mode then matters)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
