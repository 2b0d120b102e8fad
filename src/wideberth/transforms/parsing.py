"""Transforms by name: :data:`TRANSFORMS` and the spec parser :func:`parse_transform`
(``"rotate:-30"``, ``"hflip@0.8"``, ``"hflip+gamma:1.3"``, ``"hflip|vflip"``)."""

from __future__ import annotations

import inspect
import re
from typing import Any

import torch

from .base import Transform
from .deterministic import Brightness, CenterCrop, Gamma, HFlip, Identity, Rotate, VFlip
from .stochastic import Compose, RandomApply, RandomCenterCrop, RandomChoice, RandomRotate

__all__ = ["TRANSFORMS", "parse_transform"]


TRANSFORMS: dict[str, type[Transform]] = {
    "identity": Identity,
    "ori": Identity,
    "hflip": HFlip,
    "flh": HFlip,
    "vflip": VFlip,
    "flv": VFlip,
    "brightness": Brightness,
    "bri": Brightness,
    "gamma": Gamma,
    "gam": Gamma,
    "crop": CenterCrop,
    "rotate": Rotate,
    "rot": Rotate,
    "random_crop": RandomCenterCrop,
    "random_rotate": RandomRotate,
}
"""Name (canonical or the paper's short label) → transform class, for :func:`parse_transform`.

Arguments follow a colon in the class's parameter order; options go as ``key=value``:
``"brightness:0.1,clip=true"``, ``"crop:0.8,align=slice"``, ``"rotate:-30,padding=border"``,
``"random_crop:0.6,1"``, ``"random_rotate:10"``.
"""

_TOKEN = re.compile(
    r"\s*(?:(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>[:,=@+|()]))"
)


def _signature(cls: type[Transform]) -> str:
    """``"rotate:degrees,padding='zeros',mode='bilinear'"``, for error messages."""
    params = [p for p in inspect.signature(cls).parameters.values() if p.name != "generator"]
    if not params:
        return f"{cls.key} (no arguments)"
    return f"{cls.key}:" + ",".join(
        p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
        for p in params
    )


def _known() -> str:
    return ", ".join(sorted(TRANSFORMS))


class _Parser:
    """Recursive descent over ``choice := seq ('|' seq)*; seq := term ('+' term)*;
    term := primary ('@' number)?; primary := '(' choice ')' | word (':' args)?``."""

    def __init__(self, text: str, generator: torch.Generator | None, per_example: bool):
        self.text = text
        self.generator = generator
        self.per_example = per_example
        self.toks: list[tuple[str, str]] = []
        pos = 0
        stripped = text.rstrip()
        while pos < len(stripped):
            m = _TOKEN.match(stripped, pos)
            if m is None or m.end() == pos:
                raise self._err(f"unexpected character {stripped[pos:].lstrip()[:1]!r}")
            kind = m.lastgroup or ""
            self.toks.append((kind, m.group(kind)))
            pos = m.end()
        self.i = 0

    def _err(self, msg: str) -> ValueError:
        return ValueError(
            f"bad transform spec {self.text!r}: {msg}. Expected e.g. 'rotate:-30', 'hflip@0.8',"
            f" 'hflip+gamma:1.3' or 'hflip|vflip'; known names: {_known()}"
        )

    def _peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _take(self, value: str | None = None, kind: str | None = None) -> str:
        t = self._peek()
        if t is None or (value is not None and t[1] != value) or (kind and t[0] != kind):
            if value is not None:
                want = repr(value)
            else:  # callers pass kind="num" or kind="word"
                want = "a number" if kind == "num" else "a name"
            got = "end of text" if t is None else repr(t[1])
            raise self._err(f"expected {want}, got {got}")
        self.i += 1
        return t[1]

    def parse(self) -> Transform:
        if not self.toks:
            raise self._err("empty")
        t = self._choice()
        if self._peek() is not None:
            raise self._err(f"unexpected {self._peek()[1]!r}")  # type: ignore[index]
        return t

    def _choice(self) -> Transform:
        items = [self._seq()]
        while self._peek() == ("op", "|"):
            self.i += 1
            items.append(self._seq())
        if len(items) == 1:
            return items[0]
        return RandomChoice(tuple(items), generator=self.generator)

    def _seq(self) -> Transform:
        items = [self._term()]
        while self._peek() == ("op", "+"):
            self.i += 1
            items.append(self._term())
        return items[0] if len(items) == 1 else Compose(tuple(items))

    def _term(self) -> Transform:
        t = self._primary()
        if self._peek() == ("op", "@"):
            self.i += 1
            p = float(self._take(kind="num"))
            try:
                t = RandomApply(t, p, per_example=self.per_example, generator=self.generator)
            except ValueError as e:
                raise self._err(str(e)) from None
        return t

    def _primary(self) -> Transform:
        if self._peek() == ("op", "("):
            self.i += 1
            t = self._choice()
            self._take(")")
            return t
        word = self._take(kind="word")
        cls = TRANSFORMS.get(word.lower())
        if cls is None:
            raise self._err(f"unknown transform {word!r}")
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        if self._peek() == ("op", ":"):
            self.i += 1
            while True:
                tok = self._peek()
                if tok is None or tok[0] == "op":
                    raise self._err(f"missing argument after {word!r}")
                self.i += 1
                if self._peek() == ("op", "=") and tok[0] == "word":
                    self.i += 1
                    v = self._peek()
                    if v is None or v[0] == "op":
                        raise self._err(f"missing value for {tok[1]!r}")
                    self.i += 1
                    kwargs[tok[1]] = _value(v)
                else:
                    if kwargs:
                        raise self._err("positional argument after key=value")
                    if tok[0] != "num":
                        raise self._err(f"argument {tok[1]!r} of {word!r} is not a number")
                    args.append(float(tok[1]))
                if self._peek() != ("op", ","):
                    break
                self.i += 1
        if cls.random:
            kwargs.setdefault("per_example", self.per_example)
            kwargs["generator"] = self.generator
        try:
            return cls(*args, **kwargs)
        except TypeError as e:
            raise self._err(
                f"wrong arguments for {word!r} (signature {_signature(cls)}): {e}"
            ) from None
        except ValueError as e:
            raise self._err(str(e)) from None


def _value(tok: tuple[str, str]) -> Any:
    kind, text = tok
    if kind == "num":
        return float(text)
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    return text


def parse_transform(
    spec: str | Transform,
    *,
    generator: torch.Generator | None = None,
    per_example: bool = True,
) -> Transform:
    """Build a transform from its name, e.g. ``parse_transform("rotate:15") == Rotate(15)``.

    Grammar (``|`` binds loosest, then ``+``, then ``@``; parentheses group)::

        spec    := seq ('|' seq)*              # RandomChoice
        seq     := term ('+' term)*            # Compose, applied left to right
        term    := primary ('@' p)?            # RandomApply with probability p
        primary := '(' spec ')' | NAME (':' args)?
        args    := number (',' number)* (',' key=value)*

    ``NAME`` is a key of :data:`TRANSFORMS` (canonical names and the paper's labels ori, flh,
    flv, bri, gam, crop, rot). ``parse_transform(t.name) == t`` for every transform ``t``
    built with default ``per_example`` (a single-element :class:`Compose` comes back as its
    element). A :class:`Transform` is returned unchanged.

    Args:
        spec: the text (or a transform).
        generator: given to every random transform built.
        per_example: for every random transform (except ``|``, which draws once per call).

    Raises:
        ValueError: unknown name, bad syntax, wrong arguments or invalid parameter values;
            the message quotes the spec and lists the known names.
    """
    if isinstance(spec, Transform):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"transform spec must be a string; got {type(spec).__name__}")
    return _Parser(spec, generator, per_example).parse()
