"""Differentiable image transformations for the robust attack over transformations.

Wang et al., "Towards a unified min-max framework for adversarial exploration and
robustness" (ICLR 2020 submission), §2.2, eq. (7): the attack minimises, over one
perturbation δ,

    max_{w ∈ simplex}  Σ_i w_i E_{t ~ p_i}[ f(t(x0 + δ); y0, M) ] − γ/2 ‖w − 1/K‖²,

where every domain ``p_i`` is a family of data transformations. EOT (Athalye et al.) is
the special case ``w_i = 1/K``. This package provides the transformations ``t``: plain
torch ops on images ``x`` of shape ``[B, C, H, W]`` with values in [0, 1], differentiable
with respect to ``x`` (the attack back-propagates through them), with no torchvision.

Deterministic transforms (Table 3 / Table A6 of the paper):

* :class:`Identity` ("ori"), :class:`HFlip` ("flh"), :class:`VFlip` ("flv");
* :class:`Brightness` ("bri"): **additive** ``x + delta`` (the authors' code uses
  ``tf.image.adjust_brightness(delta=0.1)``), not clipped unless ``clip=True``;
* :class:`Gamma` ("gam"): ``x ** gamma`` (``tf.image.adjust_gamma(gamma=1.3)``);
* :class:`CenterCrop` ("crop"): the central ``scale × scale`` area resized back to
  ``H × W`` bilinearly, by default with TF ``crop_and_resize`` alignment;
* :class:`Rotate` ("rot"): rotation about the image centre (positive = counter-clockwise,
  as in TF and torchvision); the paper's "30° clockwise" is ``Rotate(-30)``.

Stochastic transforms (Table A5, App. C.3): :class:`RandomApply` (apply a transform with
probability ``p``), :class:`RandomCenterCrop` (side fraction uniform in
``[min_scale, max_scale]``), :class:`RandomRotate` (angle uniform in ``[-max_degrees,
max_degrees]``) and :class:`RandomChoice` (one of several transforms). Random draws are
**per example** by default (App. C.3 does not say how the samples are drawn; this is the
library's choice); ``per_example=False`` draws once per call and shares the draw across the
batch, as the authors' code does. Each call draws afresh, so the expectation
``E_{t ~ p_i}`` of eq. (7) is estimated by averaging the loss over calls.

Every transform has a ``name`` (parseable by :func:`parse_transform`, e.g.
``"rotate:-30"``, ``"hflip@0.8"``, ``"hflip+gamma:1.3"``, ``"hflip|vflip"``) and a
``label`` (the paper's column name, e.g. ``"rot"``). :func:`paper_transforms` returns the
paper's CIFAR-10 domain sets.

Modules (every public name is re-exported here): :mod:`~wideberth.transforms.base` (the
:class:`Transform` base class), :mod:`~wideberth.transforms.sampling` (affine resampling),
:mod:`~wideberth.transforms.deterministic`, :mod:`~wideberth.transforms.stochastic`
(composition and random transforms), :mod:`~wideberth.transforms.parsing`
(:func:`parse_transform`) and :mod:`~wideberth.transforms.paper` (:func:`paper_transforms`).
"""

from __future__ import annotations

from .base import Transform
from .deterministic import Brightness, CenterCrop, Gamma, HFlip, Identity, Rotate, VFlip
from .paper import paper_transforms
from .parsing import TRANSFORMS, parse_transform
from .stochastic import Compose, RandomApply, RandomCenterCrop, RandomChoice, RandomRotate

__all__ = [
    "Transform",
    "Identity",
    "HFlip",
    "VFlip",
    "Brightness",
    "Gamma",
    "CenterCrop",
    "Rotate",
    "Compose",
    "RandomApply",
    "RandomCenterCrop",
    "RandomRotate",
    "RandomChoice",
    "TRANSFORMS",
    "parse_transform",
    "paper_transforms",
]
