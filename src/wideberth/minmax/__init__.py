"""Unified min-max framework (Wang et al., *Adversarial attack generation empowered by
min-max optimization*; specs/minmax.md).

Core: :func:`apgda` (Algorithm 1, alternating projected descent on δ over an ℓ∞/ℓ2/ℓ1 ball ∩
box and projected ascent on per-row domain weights w on the simplex) with the average-loss
and fixed-weight baselines, the exact simplex projection, and the robust ensemble attack
over K models (§2a) with its baselines and metrics.
"""

from .apgda import (
    DELTA_MODES,
    INITS,
    APGDAResult,
    apgda,
    apgda_average,
    apgda_fixed,
    uniform_weights,
    weight_step,
)
from .ensemble import (
    DEFAULT_HPARAMS,
    ENSEMBLE_METHODS,
    W_PRIOR_MNIST,
    W_STATIC_MNIST,
    EnsembleMetrics,
    EnsembleResult,
    MinMaxEnsembleAttack,
    attack_loss,
    ensemble_attack,
    ensemble_domain_losses,
    ensemble_metrics,
    lift,
)
from .simplex import on_simplex, project_simplex, project_simplex_bisection

__all__ = [
    "APGDAResult",
    "DEFAULT_HPARAMS",
    "DELTA_MODES",
    "ENSEMBLE_METHODS",
    "EnsembleMetrics",
    "EnsembleResult",
    "INITS",
    "MinMaxEnsembleAttack",
    "W_PRIOR_MNIST",
    "W_STATIC_MNIST",
    "apgda",
    "apgda_average",
    "apgda_fixed",
    "attack_loss",
    "ensemble_attack",
    "ensemble_domain_losses",
    "ensemble_metrics",
    "lift",
    "on_simplex",
    "project_simplex",
    "project_simplex_bisection",
    "uniform_weights",
    "weight_step",
]
