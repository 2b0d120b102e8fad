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
``wrn-28-10``      RobustBench's standard WRN-28-10, no normalisation          yes
``resnet18``       CIFAR-style ResNet-18 (TRADES' §5.2 CIFAR model)            yes
``preact-resnet18`` pre-activation ResNet-18 (RobustBench ``PreActResNet18``)  yes
``mlp``            flatten → ReLU hidden layers → K (``hidden=()``: linear)    no
``cnn-small``      small CNN for CPU runs (Fashion-MNIST, digits)              optional
=================  ==========================================================  =========

Beyond the registry, :func:`build_model` accepts an import path
``"package.module:factory"`` (a function or ``nn.Module`` class in the user's code; the
current directory is importable) and names that installed packages register in the
``wideberth.models`` entry-point group; checkpoints record where the model came from
(:func:`model_record`) so any process rebuilds it (:func:`rebuild_model`).
:func:`load_weights` reads bare weight files safely (safetensors, or ``torch.load`` with
``weights_only=True`` only) and :func:`import_weights` loads TRADES, MMA and RobustBench
checkpoints into the matching registry models.

Flatten sizes are computed from the actual ``input_shape`` (a dummy forward pass in eval
mode under ``torch.no_grad`` at construction), so every convolutional entry works for
8×8 digits, 28×28 MNIST/Fashion-MNIST and 32×32 CIFAR inputs. :func:`uses_batchnorm`
tells whether a built model contains BatchNorm layers.

Modules (every public name is re-exported here): :mod:`~wideberth.models.registry`
(registration and :func:`build_model`), :mod:`~wideberth.models.external` (import paths,
entry points), :mod:`~wideberth.models.weights` (safe weight files),
:mod:`~wideberth.models.published` (published checkpoints),
:mod:`~wideberth.models.normalization`,
:mod:`~wideberth.models.small_cnns` (``lenet5-madry``, ``smallcnn``, ``cnn-small``),
:mod:`~wideberth.models.wide_resnet` (``wrn-28-4``, ``wrn-34-10``, ``wrn-28-10``),
:mod:`~wideberth.models.resnet` (``resnet18``, ``preact-resnet18``) and :mod:`~wideberth.models.fully_connected`
(``mlp``).
"""

from __future__ import annotations

# Importing the family modules registers their builders in MODELS (list_models() sorts them).
from .external import ENTRY_POINT_GROUP, ModelSource, ModelSpecError
from .fully_connected import MLP
from .normalization import Normalize, PerImageStandardize
from .published import (
    IMPORT_SOURCES,
    ImportedWeights,
    PublishedWeightsError,
    default_input_shape,
    import_published,
    import_weights,
)
from .registry import (
    MODELS,
    Builder,
    InputShape,
    ModelEntry,
    build_model,
    list_models,
    model_record,
    rebuild_model,
    register_model,
    uses_batchnorm,
)
from .resnet import PreActResNet, ResNet
from .small_cnns import CNNSmall, LeNet5Madry, SmallCNN
from .weights import WeightsError, is_safetensors_file, load_weights, unwrap_state_dict
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
    "unwrap_state_dict",
    "is_safetensors_file",
    "WeightsError",
    "model_record",
    "rebuild_model",
    "ModelSpecError",
    "ModelSource",
    "ENTRY_POINT_GROUP",
    "import_weights",
    "import_published",
    "ImportedWeights",
    "PublishedWeightsError",
    "IMPORT_SOURCES",
    "default_input_shape",
    "PreActResNet",
    "LeNet5Madry",
    "SmallCNN",
    "WideResNet",
    "ResNet",
    "MLP",
    "CNNSmall",
    "Builder",
    "InputShape",
]
