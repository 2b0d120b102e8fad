"""Robustness evaluation: robust accuracy over ε grids, transfer, ensembles, margins, reports.

=====================  =====================================================================
module                 what it holds
=====================  =====================================================================
``robustness``         :func:`evaluate` (``wb.evaluate``) and :class:`EvalReport`: robust
                       accuracy under a suite at every ε, AvgAcc / AvgRobAcc (MMA, §4)
``suites``             :class:`AttackSpec`, :data:`SUITES`, :func:`suite_attacks`: the
                       attacks of a suite, resolved through the attack registry
``state``              :class:`EvalState`: per-example results, the resumable state file
``grid``               one batch over the ε grid, every output re-verified
``streaming``          tensors, a ``Dataset`` or a ``DataLoader`` as batches (flat memory)
``external``           attacks from outside the registry in a suite (torchattacks & co.)
``statistics``         Clopper–Pearson intervals, McNemar's exact paired test
``comparison``         what ``compare`` adds: differing settings, paired tests
``transfer``           transfer attacks and the combined (white-box + transfer) evaluation,
                       TransferGap (MMA, App. D–F)
``ensemble``           majority-vote ensembles and the MMA paper's ensemble attacks (App. D)
``margins``            minimal-perturbation distances (MMA Tables 2–3, TRADES' AVC metric)
``sanity``             checks that flag a weak evaluation (gradient masking, broken attacks)
``report``, ``plots``  the papers' tables in Markdown, curves, histograms, report folders
``clean``              clean accuracy and loss, batched, in eval mode
``attack_summary``     the statistics of one attack run (``wideberth attack``)
=====================  =====================================================================
"""

from __future__ import annotations

from .attack_summary import AttackSummary, norm_quartiles, summarize_attack
from .clean import clean_metrics, model_device, predict
from .comparison import measurement_notes, paired_tests
from .ensemble import (
    ENSEMBLE_ATTACKS,
    EnsembleAttackView,
    EnsembleLoss,
    MajorityVoteEnsemble,
    custom_ensemble_loss,
    ensemble_attacks,
    evaluate_ensemble,
    majority_vote_scores,
    naive_ensemble_loss,
    split_view_output,
)
from .external import ExternalAttack
from .margins import min_perturbation_distance
from .plots import (
    decision_boundary,
    margin_histogram,
    margin_histogram_grid,
    margin_histograms_by_epoch,
    training_curves,
)
from .report import (
    loss_along_ray,
    markdown_table,
    plot_loss_slices,
    plot_robust_accuracy,
    write_report,
)
from .robustness import EvalReport, evaluate
from .sanity import (
    black_box_check,
    monotonicity_check,
    unbounded_attack_check,
    unbounded_radius,
    zero_gradient_check,
)
from .state import EvalState
from .statistics import clopper_pearson, mcnemar
from .streaming import as_stream
from .suites import SUITES, AttackSpec, resolve_suite, suite_attacks
from .transfer import CombinedReport, combined_evaluation, transfer_examples, transfer_success

__all__ = [
    "ENSEMBLE_ATTACKS",
    "SUITES",
    "AttackSpec",
    "AttackSummary",
    "CombinedReport",
    "EnsembleAttackView",
    "EnsembleLoss",
    "EvalReport",
    "EvalState",
    "ExternalAttack",
    "MajorityVoteEnsemble",
    "as_stream",
    "black_box_check",
    "clean_metrics",
    "clopper_pearson",
    "combined_evaluation",
    "custom_ensemble_loss",
    "decision_boundary",
    "ensemble_attacks",
    "evaluate",
    "evaluate_ensemble",
    "loss_along_ray",
    "majority_vote_scores",
    "margin_histogram",
    "margin_histogram_grid",
    "margin_histograms_by_epoch",
    "markdown_table",
    "mcnemar",
    "measurement_notes",
    "min_perturbation_distance",
    "model_device",
    "monotonicity_check",
    "naive_ensemble_loss",
    "paired_tests",
    "norm_quartiles",
    "plot_loss_slices",
    "plot_robust_accuracy",
    "predict",
    "resolve_suite",
    "split_view_output",
    "suite_attacks",
    "summarize_attack",
    "training_curves",
    "transfer_examples",
    "transfer_success",
    "unbounded_attack_check",
    "unbounded_radius",
    "write_report",
    "zero_gradient_check",
]
