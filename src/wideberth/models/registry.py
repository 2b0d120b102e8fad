"""The model registry: :func:`register_model`, :func:`build_model`, :func:`list_models`.

Each model family module registers its builders with :func:`register_model` when it is
imported; importing :mod:`wideberth.models` imports all of them, so :data:`MODELS` is
complete whenever any of its modules is in use. :func:`build_model` also accepts an import
path ``package.module:factory`` and the names installed packages register in the
``wideberth.models`` entry-point group (:mod:`wideberth.models.external`);
:func:`model_record` says where a spec's model comes from (recorded in checkpoints) and
:func:`rebuild_model` builds it again from that record in a fresh process.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .external import (
    ModelSpecError,
    bind_factory,
    call_factory,
    entry_point_names,
    factory_from_record,
    is_import_path,
    resolve_factory,
    verify_model,
)

__all__ = [
    "MODELS",
    "Builder",
    "InputShape",
    "ModelEntry",
    "build_model",
    "list_models",
    "model_record",
    "rebuild_model",
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
    """Sorted names of the registered models and of the models installed packages register
    in the ``wideberth.models`` entry-point group (listed without loading them)."""
    return sorted(set(MODELS) | set(entry_point_names()))


def _check_input_shape(input_shape: Sequence[int]) -> InputShape:
    """``input_shape`` as a ``(C, H, W)`` tuple of positive ints, else ValueError."""
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"input_shape must be (C, H, W) with positive ints, got {input_shape!r}")
    return shape


def _unknown(name: str) -> ModelSpecError:
    return ModelSpecError(
        f"unknown model {name!r}; valid models: {', '.join(list_models())}; or give an "
        "import path 'package.module:factory' (e.g. 'mynet:build' for a mynet.py in the "
        "current directory)"
    )


def _finish(model: nn.Module) -> nn.Module:
    if any(isinstance(m, nn.Conv2d) for m in model.modules()):
        # Module.to accepts memory_format at run time; torch's type stubs leave it out.
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def _check_num_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")


def _build_external(
    factory: Callable[..., Any], spec: str, shape: InputShape, num_classes: int,
    params: dict[str, Any],
) -> nn.Module:
    model = call_factory(factory, spec, shape, num_classes, params)
    return _finish(verify_model(model, spec, shape, num_classes))


def build_model(
    name: str, input_shape: tuple[int, int, int], num_classes: int, **kwargs: object
) -> nn.Module:
    """Build a model from its spec: a registry name, a name an installed package registers
    in the ``wideberth.models`` entry-point group, or an import path
    ``package.module:factory`` (the attribute may be dotted; the current directory is on
    ``sys.path`` for the import, as with ``python -m``).

    A factory (import path or entry point) is called with ``**kwargs`` plus
    ``input_shape`` and ``num_classes`` when its signature names them (or takes
    ``**kwargs``); it may be a class. Its result must be an ``nn.Module`` whose eval-mode,
    no-grad forward pass of zeros ``[1, C, H, W]`` gives logits ``[1, K]``.

    Args:
        name: the model spec (see :func:`list_models` for the names).
        input_shape: ``(C, H, W)`` of one input image, pixels in [0, 1].
        num_classes: number of logits K.
        **kwargs: model options (``MODELS[name].options``) or the factory's parameters.

    Returns:
        An ``nn.Module`` in train mode mapping ``[B, C, H, W]`` to logits ``[B, K]``.
        Models with 2-D convolutions keep their weights in channels-last (NHWC) memory
        format: on CPU their forward pass runs up to 2× faster (cnn-small 2.1×, the
        multi-forward searches of MMA gain most; see ``benchmarks/bench_mma_vs_pgd.py``),
        and inputs may stay in the default layout.

    Raises:
        ModelSpecError (a ValueError): unknown name (message lists the valid names), a
            module or factory that cannot be found, params the factory does not take, or a
            result of the wrong type or output shape.
        ValueError: unknown registry option (message lists the valid options), bad
            ``input_shape``/``num_classes``, or an input too small for the architecture.
    """
    shape = _check_input_shape(input_shape)
    _check_num_classes(num_classes)
    if name not in MODELS:
        found = resolve_factory(name)
        if found is None:
            raise _unknown(name)
        return _build_external(found[0], name, shape, num_classes, dict(kwargs))
    _check_options(name, dict(kwargs))
    return _finish(MODELS[name].builder(shape, num_classes, **kwargs))


def _check_options(name: str, kwargs: dict[str, Any]) -> None:
    valid = MODELS[name].options
    bad = sorted(set(kwargs) - set(valid))
    if bad:
        raise ModelSpecError(
            f"unknown option(s) {', '.join(bad)} for model {name!r}; "
            f"valid options: {', '.join(sorted(valid)) or '(none)'}"
        )


def model_record(name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Where the model ``name`` comes from, as a JSON-able dict for checkpoints.

    Keys: ``source`` (``"registry"`` for wideberth's own models, ``"registered"`` for a
    builder registered with :func:`register_model` elsewhere, ``"import"``,
    ``"entry-point"``), ``spec``, ``module``, ``file`` (absolute path of the module),
    ``distribution`` (entry points) and ``params`` (the model's keyword arguments).
    Resolving imports an import path's module and loads an entry point, and ``params`` are
    checked against the builder's options or the factory's signature (nothing is built), so
    a missing module or factory or a bad parameter fails here, before any data loads.

    Raises:
        ModelSpecError: unknown name, a module or factory that cannot be found, or params
            the builder or factory does not take.
    """
    params = dict(params or {})
    if name in MODELS:
        _check_options(name, params)
        builder = MODELS[name].builder
        module = getattr(builder, "__module__", "") or ""
        file = getattr(sys.modules.get(module), "__file__", None)
        return {
            "source": "registry" if module.startswith("wideberth.") else "registered",
            "spec": name, "module": module, "file": str(Path(file).resolve()) if file else None,
            "distribution": None, "params": params,
        }
    found = resolve_factory(name)
    if found is None:
        raise _unknown(name)
    factory, source = found
    bind_factory(factory, name, (1, 1, 1), 1, params)
    return {**source.to_dict(), "params": params}


def _registered_elsewhere(record: dict[str, Any]) -> ModelSpecError:
    name, module = record.get("spec"), record.get("module")
    return ModelSpecError(
        f"model {name!r} was registered in Python with register_model (in module "
        f"{module!r}) by the process that trained this run, so a fresh process cannot "
        "rebuild it: import the code that registers it before loading, or train with an "
        "import path model.name='package.module:factory' (e.g. 'mynet:build'), which "
        "checkpoints record and every process can rebuild"
    )


def rebuild_model(
    record: dict[str, Any], input_shape: tuple[int, int, int], num_classes: int,
    **kwargs: object,
) -> nn.Module:
    """Build a model again from its :func:`model_record` (as a checkpoint stores it).

    An import path whose module is not importable here (another working directory, a fresh
    process) is loaded from its recorded absolute file. A builder that was registered with
    :func:`register_model` outside wideberth is re-registered by importing its recorded
    module when that is possible (not ``__main__``); otherwise the error says why it cannot
    be rebuilt and suggests the import-path form. Same return and errors as
    :func:`build_model`.
    """
    name = str(record["spec"])
    source = record.get("source")
    if source in ("import", "entry-point") and name not in MODELS:
        shape = _check_input_shape(input_shape)
        _check_num_classes(num_classes)
        return _build_external(factory_from_record(record), name, shape, num_classes,
                               dict(kwargs))
    if source == "registered" and name not in MODELS:
        module = record.get("module")
        if module and module != "__main__":
            try:
                importlib.import_module(str(module))
            except ImportError as exc:
                raise _registered_elsewhere(record) from exc
        if name not in MODELS:
            raise _registered_elsewhere(record)
    if name not in MODELS and not is_import_path(name) and resolve_factory(name) is None:
        raise ModelSpecError(
            f"{_unknown(name)}; if the run was trained with a model registered in Python "
            "(register_model), register it again before loading, or use an import path"
        )
    return build_model(name, input_shape, num_classes, **kwargs)


def uses_batchnorm(model: nn.Module) -> bool:
    """True if ``model`` contains any BatchNorm layer (its train/eval mode then matters)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
