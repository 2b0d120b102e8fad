"""Model registry: the papers' architectures and small CPU models.

Every model takes images in **[0, 1] pixel space**, shape ``[B, C, H, W]``, and returns
logits of shape ``[B, num_classes]``. Any input normalisation is a layer *inside* the
model (:class:`PerImageStandardize`, :class:`Normalize`), so attacks, ε and clipping always
act on raw pixels.

Build models by name::

    from wideberth.models import build_model, list_models
    model = build_model("lenet5-madry", input_shape=(1, 28, 28), num_classes=10)
    model = build_model("cnn-small", (1, 8, 8), 10, channels=(16, 32))

Registered models (``list_models()``; BatchNorm matters to training methods, which pick
the BatchNorm mode deliberately, and to attacks, which run in eval mode):

=================  ==========================================================  =========
name               source                                                      BatchNorm
=================  ==========================================================  =========
``lenet5-madry``   MMA's MNIST net (Madry et al. MNIST challenge, advertorch)  no
``smallcnn``       TRADES' MNIST net (C&W 4 conv + 3 FC, dropout 0.5)          no
``wrn-28-4``       MMA's CIFAR-10 net: pre-act WRN-28-4 + per-image standardize yes
``wrn-34-10``      TRADES' CIFAR-10 net: pre-act WRN-34-10, no normalisation   yes
``resnet18``       CIFAR-style ResNet-18 (TRADES' §5.2 CIFAR model)            yes
``mlp``            flatten → ReLU hidden layers → K (``hidden=()``: linear)    no
``cnn-small``      small CNN for CPU runs (Fashion-MNIST, digits)              optional
=================  ==========================================================  =========

Flatten sizes are computed from the actual ``input_shape`` (a dummy forward pass in eval
mode under ``torch.no_grad`` at construction), so every convolutional entry works for
8×8 digits, 28×28 MNIST/Fashion-MNIST and 32×32 CIFAR inputs. :func:`uses_batchnorm`
tells whether a built model contains BatchNorm layers.

Modules (every public name is re-exported here): :mod:`~wideberth.models.registry`
(registration and :func:`build_model`), :mod:`~wideberth.models.normalization`,
:mod:`~wideberth.models.small_cnns` (``lenet5-madry``, ``smallcnn``, ``cnn-small``),
:mod:`~wideberth.models.wide_resnet` (``wrn-28-4``, ``wrn-34-10``),
:mod:`~wideberth.models.resnet` (``resnet18``) and :mod:`~wideberth.models.fully_connected`
(``mlp``).
"""

from __future__ import annotations

# Importing the family modules registers their builders in MODELS (list_models() sorts them).
from .fully_connected import MLP
from .normalization import Normalize, PerImageStandardize
from .registry import (
    MODELS,
    Builder,
    InputShape,
    ModelEntry,
    build_model,
    list_models,
    register_model,
    uses_batchnorm,
)
from .resnet import ResNet
from .small_cnns import CNNSmall, LeNet5Madry, SmallCNN
from .weights import load_weights
from .wide_resnet import WideResNet

__all__ = [
    "MODELS",
    "ModelEntry",
    "Normalize",
    "PerImageStandardize",
    "build_model",
    "list_models",
    "register_model",
    "uses_batchnorm",
    "load_weights",
    "LeNet5Madry",
    "SmallCNN",
    "WideResNet",
    "ResNet",
    "MLP",
    "CNNSmall",
    "Builder",
    "InputShape",
]
