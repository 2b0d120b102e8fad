"""wideberth: margin-based adversarial training and robustness evaluation for PyTorch.

Implements MMA training (Ding et al., ICLR 2020), TRADES (Zhang et al., ICML 2019),
Wu & Yu's average-margin regulariser and the unified min-max framework (Wang et al.),
with the attacks and the evaluation they need. See the README for a tour.
"""

from . import attacks, config, data, methods, minmax, models, train  # noqa: E402
from ._version import __version__  # noqa: E402
from .config import Config, load_config, load_recipe  # noqa: E402
from .evaluation.robustness import EvalReport, evaluate  # noqa: E402  (wb.evaluate: the function)
from .runs import load_model, run_info  # noqa: E402

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
