"""Models from outside the registry: import paths ``package.module:factory`` and the
``wideberth.models`` entry-point group of installed packages.

A *factory* is any callable (a function or an ``nn.Module`` class) returning an
``nn.Module`` that maps images ``[B, C, H, W]`` in [0, 1] to logits ``[B, K]``. It is
called with the model's params as keyword arguments, plus ``input_shape=(C, H, W)`` and
``num_classes=K`` when its signature names them (or takes ``**kwargs``)::

    # mynet.py                                   wideberth train --set model.name=mynet:build
    def build(num_classes, width=16): ...        --set model.params.width=32

An installed package registers names in its metadata::

    [project.entry-points."wideberth.models"]
    tinynet = "mypkg.nets:TinyNet"

Every factory's result is checked: an eval-mode, no-grad forward pass of zeros
``[1, C, H, W]`` must give logits ``[1, K]``. :class:`ModelSource` records where a model
came from (the spec, the module's absolute file, the distribution) so a fresh process —
even in another working directory — can rebuild it from a checkpoint
(:func:`factory_from_record`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

__all__ = [
    "ENTRY_POINT_GROUP",
    "ModelSpecError",
    "ModelSource",
    "bind_factory",
    "call_factory",
    "entry_point_names",
    "factory_from_record",
    "is_import_path",
    "resolve_factory",
    "verify_model",
]

ENTRY_POINT_GROUP = "wideberth.models"
"""The entry-point group through which installed packages register model names."""


class ModelSpecError(ValueError):
    """A model spec (import path, entry point, factory params) cannot give a model."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model's factory came from, as recorded in checkpoints.

    Attributes:
        kind: ``"import"`` (``package.module:factory``) or ``"entry-point"``.
        spec: the spec as given (the import path or the entry-point name).
        module: the factory's module name.
        file: the module's absolute file path (``None`` for a module without one).
        distribution: the installed distribution of an entry point (else ``None``).
    """

    kind: str
    spec: str
    module: str
    file: str | None
    distribution: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the checkpoint's ``meta["model"]`` fields)."""
        return {"source": self.kind, "spec": self.spec, "module": self.module, "file": self.file,
                "distribution": self.distribution}


def is_import_path(spec: str) -> bool:
    """True if ``spec`` has the import-path form ``package.module:attribute``."""
    mod, sep, attr = spec.partition(":")
    return bool(sep and mod and attr)


@contextmanager
def _cwd_on_path() -> Iterator[None]:
    """The current directory first on ``sys.path`` for the block, as ``python -m`` has it."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _module_file(module: ModuleType) -> str | None:
    file = getattr(module, "__file__", None)
    return str(Path(file).resolve()) if file else None


def _import_module(name: str, spec: str) -> ModuleType:
    with _cwd_on_path():
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if missing and name != missing and not name.startswith(missing + "."):
                raise ModelSpecError(
                    f"model {spec!r}: module {name!r} was found but importing it failed: "
                    f"{exc} (a dependency of it is missing; install {missing!r})"
                ) from exc
            raise ModelSpecError(
                f"model {spec!r}: cannot import module {name!r} (not found on sys.path or in "
                f"the current directory {os.getcwd()}); give 'package.module:factory' for an "
                "importable module, e.g. 'mynet:build' for a mynet.py in the current directory"
            ) from exc


def _import_file(name: str, file: str, spec: str) -> ModuleType:
    """Import ``file`` as module ``name`` (the fallback when ``name`` is not importable)."""
    if not Path(file).is_file():
        raise ModelSpecError(
            f"model {spec!r}: module {name!r} is not importable here and its recorded file "
            f"{file} does not exist; make {name!r} importable (install it or run from its "
            "folder) to rebuild this model"
        )
    loader_spec = importlib.util.spec_from_file_location(name, file)
    if loader_spec is None or loader_spec.loader is None:
        raise ModelSpecError(f"model {spec!r}: cannot load {file} as a Python module")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception:
        sys.modules.pop(name, None)
        raise
    return module


def _attribute(module: ModuleType, attr: str, spec: str) -> Any:
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in vars(module) if not n.startswith("_"))
            callables = [n for n in names if callable(getattr(module, n))]
            raise ModelSpecError(
                f"model {spec!r}: module {module.__name__!r} ({_module_file(module)}) has no "
                f"attribute {attr!r}; its public callables: {', '.join(callables) or '(none)'}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelSpecError(
            f"model {spec!r}: {module.__name__}.{attr} is a {type(obj).__name__}, not a "
            "callable; name a function or an nn.Module class returning the model"
        )
    return obj


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def entry_point_names() -> list[str]:
    """Names registered by installed packages in the ``wideberth.models`` group (not loaded)."""
    return sorted(_entry_points())


def _distribution(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return str(dist.name) if dist is not None else "(unknown distribution)"


def resolve_factory(spec: str) -> tuple[Callable[..., Any], ModelSource] | None:
    """The factory a spec names and where it came from, or ``None`` if ``spec`` is neither
    an import path nor an entry-point name.

    Raises:
        ModelSpecError: the module cannot be imported, has no such attribute (the message
            lists its callables), the attribute is not callable, or an entry point is broken
            (the message names its distribution).
    """
    if is_import_path(spec):
        mod_name, _, attr = spec.partition(":")
        module = _import_module(mod_name, spec)
        factory = _attribute(module, attr, spec)
        return factory, ModelSource("import", spec, mod_name, _module_file(module))
    ep = _entry_points().get(spec)
    if ep is None:
        return None
    dist = _distribution(ep)
    try:
        factory = ep.load()
    except Exception as exc:
        raise ModelSpecError(
            f"model {spec!r} is registered by the installed package {dist!r} (entry point "
            f"{ep.value!r}) but loading it failed: {type(exc).__name__}: {exc}; fix or "
            f"reinstall {dist!r}"
        ) from exc
    if not callable(factory):
        raise ModelSpecError(
            f"model {spec!r} from package {dist!r}: entry point {ep.value!r} is a "
            f"{type(factory).__name__}, not a callable"
        )
    mod_name = ep.value.partition(":")[0].strip()
    ep_module = sys.modules.get(mod_name)
    return factory, ModelSource(
        "entry-point", spec, mod_name, _module_file(ep_module) if ep_module else None, dist
    )


def factory_from_record(record: dict[str, Any]) -> Callable[..., Any]:
    """The factory of a checkpoint's model record (:meth:`ModelSource.to_dict` fields).

    An import path is imported normally when its module is importable here; otherwise the
    recorded file is loaded with ``importlib.util.spec_from_file_location``. An entry point
    is looked up by name among the installed packages.
    """
    spec = str(record["spec"])
    if record.get("source") == "entry-point":
        found = resolve_factory(spec)
        if found is None:
            raise ModelSpecError(
                f"model {spec!r} came from the entry point of package "
                f"{record.get('distribution')!r}, which is not installed here; install it"
            )
        return found[0]
    mod_name, _, attr = spec.partition(":")
    loaded = sys.modules.get(mod_name)
    if loaded is not None:
        module = loaded
    else:
        try:
            module = _import_module(mod_name, spec)
        except ModelSpecError:
            file = record.get("file")
            if not file:
                raise
            module = _import_file(mod_name, str(file), spec)
    return _attribute(module, attr, spec)


def _signature(factory: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(factory)
    except (TypeError, ValueError):
        return None


def bind_factory(
    factory: Callable[..., Any],
    spec: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    params: dict[str, Any],
) -> dict[str, Any]:
    """The keyword arguments :func:`call_factory` passes: ``params`` plus ``input_shape``
    and ``num_classes`` where the factory's signature names them (or takes ``**kwargs``),
    checked against the signature without calling the factory.

    Raises:
        ModelSpecError: params the factory does not take, or required parameters missing
            (the message lists the factory's parameters).
    """
    sig = _signature(factory)
    kwargs = dict(params)
    if sig is None:
        return kwargs
    ps = sig.parameters
    var_kw = any(p.kind is p.VAR_KEYWORD for p in ps.values())
    for name, value in (("input_shape", input_shape), ("num_classes", num_classes)):
        if (name in ps or var_kw) and name not in kwargs:
            kwargs[name] = value
    try:
        sig.bind(**kwargs)
    except TypeError as exc:
        listed = ", ".join(str(p) for p in ps.values() if p.kind is not p.VAR_POSITIONAL)
        raise ModelSpecError(
            f"model {spec!r}: bad params {sorted(params)} ({exc}); the factory takes: "
            f"{listed or '(no parameters)'} (input_shape and num_classes are passed when "
            "named); set the others with model.params"
        ) from exc
    return kwargs


def call_factory(
    factory: Callable[..., Any],
    spec: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    params: dict[str, Any],
) -> Any:
    """Call ``factory(**params)``, adding ``input_shape`` and ``num_classes`` if it accepts
    them (:func:`bind_factory`); same errors."""
    return factory(**bind_factory(factory, spec, input_shape, num_classes, params))


def verify_model(model: Any, spec: str, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """``model`` if it is an ``nn.Module`` whose eval-mode, no-grad forward pass of zeros
    ``[1, C, H, W]`` gives logits ``[1, K]``; the modes of all submodules are restored.

    Raises:
        ModelSpecError: not a module, the forward pass fails, or the output shape is wrong
            (the message gives the expected and the actual shape).
    """
    if not isinstance(model, nn.Module):
        raise ModelSpecError(
            f"model {spec!r}: the factory returned a {type(model).__name__}, not an nn.Module"
        )
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            ref = next(iter(model.parameters()), None)
            x = torch.zeros(1, *input_shape, device=ref.device if ref is not None else None)
            out = model(x)
    except Exception as exc:
        raise ModelSpecError(
            f"model {spec!r}: forward pass of zeros [1, {', '.join(map(str, input_shape))}] "
            f"failed: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        for m, mode in modes:
            m.training = mode
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (1, num_classes):
        raise ModelSpecError(
            f"model {spec!r}: input [1, {', '.join(map(str, input_shape))}] must give logits "
            f"of shape [1, {num_classes}], got {shape}; the factory receives input_shape and "
            "num_classes when its signature names them"
        )
    return model
