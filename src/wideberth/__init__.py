"""wideberth: margin-based adversarial training and robustness evaluation for PyTorch.

Implements MMA training (Ding et al., ICLR 2020), TRADES (Zhang et al., ICML 2019),
Wu & Yu's average-margin regulariser and the unified min-max framework (Wang et al.),
with the attacks and the evaluation they need. See the README for a tour.

The names below are imported on first use (PEP 562), so ``import wideberth`` — and the
``wideberth`` command's ``--help`` and ``--version`` — do not pay for importing PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:  # what the lazy names are, for type checkers and IDEs
    from . import attacks, config, data, methods, minmax, models, train
    from .config import Config, load_config, load_recipe
    from .evaluation.robustness import EvalReport, evaluate
    from .runs import load_model, run_info

__all__ = [
    "__version__",
    "Config",
    "attacks",
    "config",
    "data",
    "EvalReport",
    "evaluate",
    "load_config",
    "load_model",
    "load_recipe",
    "methods",
    "minmax",
    "models",
    "run_info",
    "train",
]

_SUBPACKAGES = ("attacks", "config", "data", "methods", "minmax", "models", "train")
#: public name → the module that defines it (``wb.evaluate`` is the function; its package
#: is ``wideberth.evaluation``)
_NAMES = {
    "Config": "config", "load_config": "config", "load_recipe": "config",
    "EvalReport": "evaluation.robustness", "evaluate": "evaluation.robustness",
    "load_model": "runs", "run_info": "runs",
}


def __getattr__(name: str) -> Any:
    """Import a public subpackage or name of :data:`__all__` on first access."""
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _NAMES:
        value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
