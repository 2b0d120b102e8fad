"""Threat models: the ℓ∞, ℓ2 and ℓ1 balls intersected with the input box [0, 1].

A threat model is a small strategy object (in the style of MadryLab ``robustness``'s
``AttackerStep``) that an iterative attack calls for the four things that depend on the norm:

* :meth:`ThreatModel.random_init` – a uniform random start inside ball ∩ box;
* :meth:`ThreatModel.step` – the steepest-ascent step for a gradient (sign, normalised,
  sparse top-k);
* :meth:`ThreatModel.project` – the **exact** Euclidean projection onto ball ∩ box;
* :meth:`ThreatModel.norm` / :meth:`ThreatModel.dual_norm` – per-example norms;
* :meth:`ThreatModel.contains` – the feasibility judge of an attack's output (in the ε-ball,
  up to a relative tolerance, and in the box).

Conventions used throughout:

* Perturbations ``delta`` have the shape of the inputs ``x``, ``[B, ...]``; norms are taken
  over all non-batch dimensions (C×H×W flattened), per example, and return shape ``[B]``.
* Inputs are in the box ``[0, 1]``, so a feasible perturbation satisfies
  ``-x <= delta <= 1 - x``.
* Every ε (and every step size) is a Python float or a per-example tensor of shape ``[B]``;
  :func:`as_batch_eps` broadcasts either to ``[B, 1, ..., 1]``.
* Nothing is tied to a device or dtype: everything is taken from the tensors passed in.
  Inputs are never modified in place.

Projection signature (one for all norms)::

    delta = threat.project(delta, x, eps)

returns the δ such that ``x + δ`` is the Euclidean projection of ``x + delta`` onto
``{x' : ‖x' − x‖_p ≤ ε} ∩ [0, 1]^d``. For ℓ∞ this is a clamp (the set is a product of
intervals). For ℓ2 and ℓ1 it is computed exactly as in Proposition 1 / Appendix B (Eqs. 21–22) of Wang
et al., "Towards a unified min-max framework for adversarial exploration and robustness"
(2019) – **not** "project onto the ball, then clip", which AdverTorch does and which is
offered as :meth:`ThreatModel.project_approx`. The result
is always feasible: ``norm(delta) <= eps * (1 + 1e-5)`` and ``x + delta ∈ [0, 1]``.
For general box bounds (e.g. a universal perturbation whose box is the intersection over a
group of images) use :meth:`ThreatModel.project_box` with explicit ``lo <= 0 <= hi``.

Validation of user inputs (``x`` in [0, 1], labels, ε) lives in :mod:`wideberth._checks`
and is re-exported here as :func:`check_inputs`.

Modules: :mod:`~wideberth.threat.base` (the base class and shape helpers),
:mod:`~wideberth.threat.linf`, :mod:`~wideberth.threat.l2`, :mod:`~wideberth.threat.l1` (one
norm each, with its exact projection) and :mod:`~wideberth.threat.norms` (names and lookup).
"""

from __future__ import annotations

from .._checks import check_eps, check_inputs
from .base import FEASIBILITY_RTOL, ThreatModel, as_batch_eps, clip_to_box, eps_vector
from .l1 import L1Ball, project_l1_box
from .l2 import L2Ball, project_l2_box
from .linf import LinfBall, project_linf_box
from .norms import NORMS, get_threat, normalize_norm

__all__ = [
    "FEASIBILITY_RTOL",
    "NORMS",
    "L1Ball",
    "L2Ball",
    "LinfBall",
    "ThreatModel",
    "as_batch_eps",
    "check_eps",
    "check_inputs",
    "clip_to_box",
    "eps_vector",
    "get_threat",
    "normalize_norm",
    "project_l1_box",
    "project_l2_box",
    "project_linf_box",
]
