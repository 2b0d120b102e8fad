"""Training objectives, one module each, behind one registry.

========================  ============================================================
name                      method (module)
========================  ============================================================
``standard``              clean cross-entropy (``standard``)
``pgd-at``, ``pgdls``     Madry PGD adversarial training; PGDLS ramps ε linearly (``pgd_at``)
``trades``                TRADES, Zhang et al. 2019 (``trades``)
``mma``, ``omma``         MMA / OMMA training, Ding et al. 2020 (``mma``)
``avg-margin``, ``lcr``   Wu & Yu's average-margin regulariser; its LCR baseline (``avg_margin``)
``minmax-at``             multi-perturbation AT, Wang et al. min-max §2d: minmax/avg/max (``minmax_at``)
``uat``                   universal adversarial training, Shafahi et al.; min-max App. E.2 (``uat``)
========================  ============================================================

``build_method(cfg.method)`` turns a :class:`~wideberth.config.MethodConfig` into a
:class:`Method`; ``list_methods()`` names what is available.
"""

from __future__ import annotations

from ..config import ConfigError, MethodConfig
from .avg_margin import LCR, AverageMargin
from .base import Batch, Method, MethodParams, StepContext
from .minmax_at import MinMaxAT
from .mma import MMA, OMMA
from .pgd_at import PGDAT, PGDLS
from .standard import Standard
from .trades import TRADES
from .uat import UAT

__all__ = [
    "Batch",
    "Method",
    "MethodParams",
    "StepContext",
    "METHODS",
    "build_method",
    "list_methods",
    "register_method",
]

METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Add a :class:`Method` subclass to the registry under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    METHODS[cls.name] = cls
    return cls


for _cls in (Standard, PGDAT, PGDLS, TRADES, MMA, OMMA, AverageMargin, LCR, MinMaxAT, UAT):
    register_method(_cls)


def list_methods() -> list[str]:
    """Names of the registered training methods."""
    return sorted(METHODS)


def build_method(cfg: MethodConfig) -> Method:
    """Instantiate the method a config names, with its validated parameters."""
    if cfg.name not in METHODS:
        raise ConfigError(
            f"unknown method {cfg.name!r}; available methods: {', '.join(list_methods())}"
        )
    cls = METHODS[cfg.name]
    return cls(cls.Params.from_dict(dict(cfg.params), cfg.name))
