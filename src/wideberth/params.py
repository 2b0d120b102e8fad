"""Declarative parameters: one coercer and one validator for every config section and method.

A parameter dataclass declares each field once, with its type, its default and its rules::

    @dataclass
    class PGDATParams(MethodParams):
        eps: float | None = param(None, required=True, ge=0, hint="the perturbation radius")
        steps: int = param(10, ge=0)
        attack_bn: str = param("eval", choices=("eval", "train"))

:func:`validate_params` turns a mapping (YAML, ``--set`` overrides, a dict in code) into an
instance; :func:`validate_fields` checks and coerces an instance in place (the
``__post_init__`` of :class:`Params` calls it, so direct construction is validated too). Both
go through :func:`coerce`, the single place where a value becomes its declared type, and
every failure is a :class:`ConfigError` whose message names the key, the bad value and what
is valid:

* wrong type — ``optim.lr: expected a number, got 'fast' (optim.lr must be a number >= 0)``;
* out of range — ``optim.lr must be >= 0, got -0.1``;
* not a choice — ``unknown params.attack_bn 'frozen'; valid: eval, train
  (params.attack_bn must be one of eval, train)``;
* missing — ``method 'pgd-at' needs params.eps (params.eps is required): <hint>``;
* unknown key — ``unknown key optim.lrr; valid keys of optim: name, lr, ...``.

Coercion rules: an ``int`` widens to ``float``; a string that parses as a number is a
``float`` (YAML 1.1 reads ``1e-3`` as a string; ``.inf`` is accepted too); ``bool`` is never
an ``int``; a tuple is a list; ``None`` only where the annotation allows it. Choices match
case-insensitively and give the declared spelling. The rules of a list field (``convert``,
``choices``, bounds) apply to each entry. Cross-field rules belong in a ``check()`` method
of the dataclass, which raises through :meth:`Params.fail` (or :func:`fail`). This module is
the lowest layer of the library: it imports only the standard library.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

__all__ = [
    "ConfigError",
    "Params",
    "ParamSpec",
    "Scope",
    "coerce",
    "fail",
    "param",
    "param_spec",
    "scope_of",
    "validate_fields",
    "validate_params",
]

T = TypeVar("T")

_META_KEY = "wideberth.param"


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message says what was expected."""


@dataclass(frozen=True)
class ParamSpec:
    """The rules of one field (see :func:`param`)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] | None = None
    convert: Callable[[Any], Any] | None = None
    finite: bool = True
    required: bool = False
    hint: str = ""
    nullable: bool = False  # set while coercing an optional field (for messages only)

    def range_text(self) -> str:
        """The bounds in words: ``">= 0"``, ``"in [0, 1)"``, ``""`` when unbounded."""
        lo, lo_open = (self.gt, True) if self.gt is not None else (self.ge, False)
        hi, hi_open = (self.lt, True) if self.lt is not None else (self.le, False)
        if lo is not None and hi is not None:
            return f"in {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}{')' if hi_open else ']'}"
        if lo is not None:
            return f"{'>' if lo_open else '>='} {_fmt(lo)}"
        if hi is not None:
            return f"{'<' if hi_open else '<='} {_fmt(hi)}"
        return ""

    def in_range(self, v: float) -> bool:
        """Whether ``v`` satisfies the bounds."""
        return not (
            (self.ge is not None and v < self.ge)
            or (self.gt is not None and v <= self.gt)
            or (self.le is not None and v > self.le)
            or (self.lt is not None and v >= self.lt)
        )


#: the rules of a field declared without :func:`param`: its type only (``inf`` allowed).
_PLAIN = ParamSpec(finite=False)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"


def param(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Sequence[str] | None = None,
    convert: Callable[[Any], Any] | None = None,
    finite: bool = True,
    required: bool = False,
    hint: str = "",
) -> Any:
    """A dataclass field with its rules.

    Args:
        default, default_factory: as :func:`dataclasses.field` (neither: the key must be given).
        ge, gt, le, lt: bounds (``>=``, ``>``, ``<=``, ``<``) of a number, or of each entry
            of a list of numbers.
        choices: the valid strings (matched case-insensitively; the declared spelling is kept).
        convert: applied to the raw value (each entry of a list) before the type check, e.g.
            a canonicaliser such as ``normalize_norm``; its ``ValueError``/``TypeError`` is
            reported as the key's error.
        finite: reject ``inf`` (``nan`` is always rejected).
        required: ``None`` (the default) is not a value: the key must be set.
        hint: what the parameter is, appended to its error messages (e.g. typical values).
    """
    spec = ParamSpec(
        ge=ge, gt=gt, le=le, lt=lt, choices=tuple(choices) if choices is not None else None,
        convert=convert, finite=finite, required=required, hint=hint,
    )
    kwargs: dict[str, Any] = {"metadata": {_META_KEY: spec}}
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    if default_factory is not dataclasses.MISSING:
        kwargs["default_factory"] = default_factory
    return dataclasses.field(**kwargs)


def param_spec(f: dataclasses.Field[Any]) -> ParamSpec:
    """The :class:`ParamSpec` of a dataclass field (no rules for a plain field)."""
    spec = f.metadata.get(_META_KEY, _PLAIN)
    assert isinstance(spec, ParamSpec)
    return spec


@dataclass(frozen=True)
class Scope:
    """Where a set of parameters lives, for error messages.

    Attributes:
        where: prefix of every message, e.g. ``"method 'mma'"`` (empty for config sections).
        prefix: how a field is named, e.g. ``"params."`` (``params.eps``) or ``"optim."``.
        path: the dotted path of the mapping in a config, e.g. ``"method.params"``.
        kind: ``"key"`` or ``"parameter"``, for unknown-key messages.
    """

    where: str = ""
    prefix: str = ""
    path: str = ""
    kind: str = "key"

    def key(self, name: str) -> str:
        """The name of field ``name`` in messages."""
        return f"{self.prefix}{name}"

    def child(self, name: str) -> Scope:
        """The scope of the nested section ``name`` of a config."""
        path = f"{self.path}.{name}" if self.path else name
        return Scope(where=self.where, prefix=f"{path}.", path=path, kind=self.kind)

    def error(self, message: str) -> ConfigError:
        """A :class:`ConfigError` with this scope's prefix."""
        return ConfigError(f"{self.where}: {message}" if self.where else message)


def fail(message: str, scope: Scope | None = None) -> NoReturn:
    """Raise the :class:`ConfigError` ``message`` (prefixed by the scope's ``where``)."""
    raise (scope or Scope()).error(message)


# --------------------------------------------------------------------------- coercion

class _Mismatch(Exception):
    """The value does not have the declared type (a union then tries its next member)."""


def _kind(tp: Any) -> str:
    """The declared type in words: ``"an integer"``, ``"a list of numbers"``, ..."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_kind(a) for a in args if a is not type(None))
    if origin is list:
        return f"a list of {_plural(args[0]) if args else 'values'}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return f"a mapping of {getattr(tp, '__name__', 'section')} keys"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _plural(tp: Any) -> str:
    names = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}
    return names.get(tp, _kind(tp))


def _nullable(tp: Any) -> bool:
    union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    return union and type(None) in typing.get_args(tp)


def _scalar_types(tp: Any) -> list[Any]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return [t for a in args for t in _scalar_types(a)]
    if origin is list:
        return _scalar_types(args[0]) if args else []
    return [tp]


def _requirement(tp: Any, spec: ParamSpec, *, with_kind: bool) -> str:
    """What a valid value is: ``"an integer >= 1"``, ``">= 0"``, ``"one of a, b"``, ..."""
    scalars = [t for t in _scalar_types(tp) if t is not type(None)]
    integer = bool(scalars) and all(t is int for t in scalars)
    if spec.choices is not None:
        text = f"one of {', '.join(spec.choices)}"
    else:
        rng = spec.range_text()  # a float's range alone says it: ">= 0", "in [0, 1]"
        text = rng if rng and not (integer or with_kind) else f"{_kind(tp)} {rng}".strip()
    if (_nullable(tp) or spec.nullable) and not spec.required:
        text += " or null"
    return text


def _missing(key: str, spec: ParamSpec, scope: Scope) -> ConfigError:
    what = f"{scope.where} needs {key} ({key} is required)" if scope.where else f"{key} is required"
    return ConfigError(f"{what}: {spec.hint}" if spec.hint else what)


def _with_hint(message: str, spec: ParamSpec) -> str:
    """``message`` with the field's hint: inside its closing parenthesis, or appended."""
    if not spec.hint:
        return message
    if message.endswith(")"):
        return f"{message[:-1]}; {spec.hint})"
    return f"{message} ({spec.hint})"


def coerce(
    value: Any, tp: Any, key: str, spec: ParamSpec = _PLAIN, scope: Scope | None = None
) -> Any:
    """``value`` as the annotation ``tp`` under the rules ``spec``; :class:`ConfigError` if not.

    ``key`` names the value in messages (``"optim.lr"``, ``"params.eps"``); ``scope`` adds
    its ``where`` prefix and is passed on to nested dataclass sections.
    """
    scope = scope or Scope()
    if value is None:
        if spec.required:
            raise _missing(key, spec, scope)
        if tp is Any or _nullable(tp):
            return None
    try:
        return _coerce(value, tp, key, spec, scope)
    except _Mismatch:
        raise scope.error(_with_hint(
            f"{key}: expected {_kind(tp)}, got {value!r} "
            f"({key} must be {_requirement(tp, spec, with_kind=True)})", spec)) from None


def _coerce(value: Any, tp: Any, key: str, spec: ParamSpec, scope: Scope) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if type(None) in args and not spec.nullable:
            spec = dataclasses.replace(spec, nullable=True)
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, spec, scope)
            except _Mismatch:
                continue
        raise _Mismatch
    if dataclasses.is_dataclass(tp):
        assert isinstance(tp, type)
        child = scope.child(key.rsplit(".", 1)[-1])
        if isinstance(value, tp):  # already built (a default): check it in place
            validate_fields(value, child)
            return value
        if not isinstance(value, Mapping):
            raise _Mismatch
        return validate_params(tp, value, scope=child)
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise _Mismatch
        item_tp = args[0] if args else Any
        return [coerce(v, item_tp, f"{key}[{i}]", spec, scope) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch
        return dict(value)
    if spec.convert is not None:
        try:
            value = spec.convert(value)
        except (ValueError, TypeError) as exc:
            raise scope.error(f"{key}: {exc}") from None
    value = _scalar(value, tp)
    return _constrain(value, tp, key, spec, scope)


def _scalar(value: Any, tp: Any) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise _Mismatch
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Mismatch
        return int(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            text = value.strip().lower()
            text = {".inf": "inf", "+.inf": "inf", "-.inf": "-inf"}.get(text, text)
            try:
                return float(text)
            except ValueError:
                raise _Mismatch from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Mismatch
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _Mismatch
        return value
    raise TypeError(f"unsupported parameter type {tp!r}")  # a declaration bug, not a value


def _constrain(value: Any, tp: Any, key: str, spec: ParamSpec, scope: Scope) -> Any:
    if isinstance(value, str) and spec.choices is not None:
        for choice in spec.choices:
            if value == choice or value.lower() == choice.lower():
                return choice
        valid = ", ".join(spec.choices + (("null",) if spec.nullable and not spec.required else ()))
        raise scope.error(_with_hint(
            f"unknown {key} {value!r}; valid: {valid} ({key} must be one of {valid})", spec))
    if isinstance(value, float):
        if math.isnan(value):
            raise scope.error(_with_hint(f"{key} must be a number, got nan", spec))
        if spec.finite and math.isinf(value):
            raise scope.error(_with_hint(f"{key} must be finite, got {value}", spec))
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not spec.in_range(value):
        raise scope.error(_with_hint(
            f"{key} must be {_requirement(tp, spec, with_kind=False)}, got {value!r}", spec))
    return value


# --------------------------------------------------------------------------- dataclasses

def scope_of(cls: type) -> Scope:
    """The scope a parameter class declares (``param_scope()``), or the root scope."""
    get = getattr(cls, "param_scope", None)
    return get() if callable(get) else Scope()


def validate_fields(obj: Any, scope: Scope | None = None) -> None:
    """Coerce and check every field of the dataclass instance ``obj`` in place, then run its
    ``check()`` (cross-field rules), if it has one."""
    cls = type(obj)
    scope = scope if scope is not None else scope_of(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        new = coerce(value, hints[f.name], scope.key(f.name), param_spec(f), scope)
        if new is not value:
            object.__setattr__(obj, f.name, new)
    check = getattr(obj, "check", None)
    if callable(check):
        check()


def validate_params(cls: type[T], mapping: Mapping[str, Any] | None, *,
                    scope: Scope | None = None) -> T:
    """Build the dataclass ``cls`` from ``mapping`` (missing keys take their defaults).

    Unknown keys and missing required keys are errors that list the valid keys; every value
    is coerced and checked (:func:`coerce`), then ``check()`` runs. ``scope`` names the
    mapping in messages (default: ``cls.param_scope()``, or none).
    """
    scope = scope if scope is not None else scope_of(cls)
    data = dict(mapping or {})
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    names = [f.name for f in fields]
    unknown = [k for k in data if k not in names]
    if unknown:
        dotted = f"{scope.path}.{unknown[0]}" if scope.path else str(unknown[0])
        owner = scope.where or scope.path
        none = f"(none: this {owner or 'section'} takes no {scope.kind}s)"
        of = f" of {owner}" if owner else ""
        raise ConfigError(
            f"unknown {scope.kind} {dotted}; valid {scope.kind}s{of}: {', '.join(names) or none}"
        )
    for f in fields:
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.name not in data and no_default:
            raise _missing(scope.key(f.name), param_spec(f), scope)
    if isinstance(cls, type) and issubclass(cls, Params):
        return cls(**data)  # validates itself in __post_init__
    obj = cls(**data)
    validate_fields(obj, scope)
    return obj


class Params:
    """Base of a self-validating parameter dataclass: construction runs
    :func:`validate_fields` in the class's :meth:`param_scope`. Subclasses are
    ``@dataclass``\\ es; cross-field rules go in :meth:`check`."""

    @classmethod
    def param_scope(cls) -> Scope:
        """How the fields are named in messages (default: by their bare names)."""
        return Scope()

    def __post_init__(self) -> None:
        validate_fields(self, type(self).param_scope())

    def check(self) -> None:
        """Cross-field rules, run after every field is coerced (default: none)."""

    def fail(self, message: str) -> NoReturn:
        """Raise a :class:`ConfigError` with this class's scope prefix."""
        fail(message, type(self).param_scope())
