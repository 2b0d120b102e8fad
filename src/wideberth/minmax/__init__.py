"""Unified min-max framework (Wang et al. 2021, *Adversarial attack generation empowered by
min-max optimization*, NeurIPS).

Core: :func:`apgda` (§3.1 Algorithm 1, alternating projected descent on δ over an
ℓ∞/ℓ2/ℓ1 ball ∩ box and projected ascent on per-row domain weights w on the simplex) with
the average-loss and fixed-weight baselines, and the exact simplex projection. One driver
(:mod:`~wideberth.minmax.problem`: :class:`DomainProblem`, :func:`solve`,
:class:`MinMaxResult`) runs the three robust attacks of §2.2, each a small adapter: the
ensemble attack over K models (eq. (5)) with its baselines and metrics, the universal
perturbation over a group of K inputs (eq. (6)) and the robust attack over K data
transformations (eq. (7), EOT baseline).
"""

from .descent_ascent import (
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
from .metrics import MultiNormMetrics, multi_norm_metrics, worst_case_auc
from .problem import DomainProblem, MinMaxResult, solve
from .simplex import on_simplex, project_simplex, project_simplex_bisection
from .transforms_attack import (
    TRANSFORM_HPARAMS,
    TRANSFORM_METHODS,
    TransformAttackResult,
    TransformMetrics,
    bind_generator,
    resolve_transforms,
    transform_attack,
    transform_domain_losses,
    transform_metrics,
)
from .universal import (
    UNIVERSAL_HPARAMS,
    UNIVERSAL_METHODS,
    UniversalMetrics,
    UniversalResult,
    group_box,
    universal_attack,
    universal_domain_losses,
    universal_metrics,
)

__all__ = [
    "APGDAResult",
    "DEFAULT_HPARAMS",
    "DELTA_MODES",
    "DomainProblem",
    "ENSEMBLE_METHODS",
    "EnsembleMetrics",
    "EnsembleResult",
    "INITS",
    "MinMaxResult",
    "MinMaxEnsembleAttack",
    "MultiNormMetrics",
    "TRANSFORM_HPARAMS",
    "TRANSFORM_METHODS",
    "TransformAttackResult",
    "TransformMetrics",
    "UNIVERSAL_HPARAMS",
    "UNIVERSAL_METHODS",
    "UniversalMetrics",
    "UniversalResult",
    "W_PRIOR_MNIST",
    "W_STATIC_MNIST",
    "apgda",
    "apgda_average",
    "apgda_fixed",
    "attack_loss",
    "bind_generator",
    "ensemble_attack",
    "ensemble_domain_losses",
    "ensemble_metrics",
    "group_box",
    "lift",
    "multi_norm_metrics",
    "on_simplex",
    "project_simplex",
    "project_simplex_bisection",
    "resolve_transforms",
    "solve",
    "transform_attack",
    "transform_domain_losses",
    "transform_metrics",
    "uniform_weights",
    "universal_attack",
    "universal_domain_losses",
    "universal_metrics",
    "weight_step",
    "worst_case_auc",
]
