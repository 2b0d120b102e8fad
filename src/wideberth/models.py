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
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MODELS",
    "ModelEntry",
    "Normalize",
    "PerImageStandardize",
    "build_model",
    "list_models",
    "register_model",
    "uses_batchnorm",
    "LeNet5Madry",
    "SmallCNN",
    "WideResNet",
    "ResNet",
    "MLP",
    "CNNSmall",
]

InputShape = tuple[int, int, int]
Builder = Callable[..., nn.Module]


# --------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelEntry:
    """One registry entry.

    Attributes:
        builder: ``builder(input_shape, num_classes, **kwargs) -> nn.Module``. The keyword
            arguments it accepts (beyond the first two) are the model's options.
        description: one-line description (source paper, what it is).
    """

    builder: Builder
    description: str

    @property
    def options(self) -> dict[str, object]:
        """Keyword options of the builder with their defaults."""
        params = list(inspect.signature(self.builder).parameters.values())[2:]
        return {
            p.name: p.default for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }


MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, description: str) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(input_shape, num_classes, **kwargs)`` under ``name``.

    Raises:
        ValueError: if ``name`` is already registered.
    """

    def decorator(builder: Builder) -> Builder:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name] = ModelEntry(builder=builder, description=description)
        return builder

    return decorator


def list_models() -> list[str]:
    """Sorted names of the registered models."""
    return sorted(MODELS)


def _check_input_shape(input_shape: Sequence[int]) -> InputShape:
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"input_shape must be (C, H, W) with positive ints, got {input_shape!r}")
    return shape  # type: ignore[return-value]


def build_model(
    name: str, input_shape: tuple[int, int, int], num_classes: int, **kwargs: object
) -> nn.Module:
    """Build a registered model.

    Args:
        name: registry name (see :func:`list_models`).
        input_shape: ``(C, H, W)`` of one input image, pixels in [0, 1].
        num_classes: number of logits K.
        **kwargs: model options (see ``MODELS[name].options``).

    Returns:
        An ``nn.Module`` in train mode mapping ``[B, C, H, W]`` to logits ``[B, K]``.
        Models with 2-D convolutions keep their weights in channels-last (NHWC) memory
        format: on CPU their forward pass runs up to 2× faster (cnn-small 2.1×, the
        multi-forward searches of MMA gain most; see ``benchmarks/bench_mma_vs_pgd.py``),
        and inputs may stay in the default layout.

    Raises:
        ValueError: unknown name (message lists the valid names), unknown option
            (message lists the valid options), bad ``input_shape``/``num_classes``, or an
            input too small for the architecture.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(list_models())}")
    entry = MODELS[name]
    valid = entry.options
    bad = sorted(set(kwargs) - set(valid))
    if bad:
        raise ValueError(
            f"unknown option(s) {', '.join(bad)} for model {name!r}; "
            f"valid options: {', '.join(sorted(valid)) or '(none)'}"
        )
    shape = _check_input_shape(input_shape)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    model = entry.builder(shape, num_classes, **kwargs)
    if any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model = model.to(memory_format=torch.channels_last)
    return model


def uses_batchnorm(model: nn.Module) -> bool:
    """True if ``model`` contains any BatchNorm layer (its train/eval mode then matters)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _infer_out_shape(module: nn.Module, input_shape: InputShape) -> torch.Size:
    """Output shape (without batch) of ``module`` on one zero input.

    Runs in eval mode under ``no_grad`` (no BatchNorm statistics are updated, no random
    numbers are drawn) and restores the previous modes of all submodules.
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, *input_shape))
    except RuntimeError as exc:
        raise ValueError(
            f"input shape {input_shape} is too small for {type(module).__name__}: {exc}"
        ) from exc
    finally:
        for m, mode in modes:
            m.training = mode
    if out.numel() == 0:
        raise ValueError(f"input shape {input_shape} collapses the feature map to zero size")
    return out.shape[1:]


# --------------------------------------------------------------------------------------
# Input normalisation layers
# --------------------------------------------------------------------------------------


class PerImageStandardize(nn.Module):
    """TensorFlow's ``per_image_standardization`` as a layer.

    For each image ``x`` (all ``N = C*H*W`` values together)::

        y = (x - mean(x)) / max(std(x), 1 / sqrt(N))

    ``std`` is the **population** standard deviation (divide by N), as in TensorFlow. The
    MMA reference code (advertorch's ``PerImageStandardize``) uses torch's unbiased std
    instead; the relative difference is ``1 - sqrt((N-1)/N)`` ≈ 1.6e-4 for CIFAR (N=3072).
    The floor ``1/sqrt(N)`` keeps constant images finite (they map to 0), and is applied
    to the variance (``max(var, 1/N)``) so gradients stay finite there too.

    Input ``[B, C, H, W]`` (any ``[B, ...]``), output of the same shape. No parameters.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        n = flat.shape[1]
        mean = flat.mean(dim=1, keepdim=True)
        centered = flat - mean
        var = centered.pow(2).mean(dim=1, keepdim=True)
        std = var.clamp_min(1.0 / n).sqrt()
        return (centered / std).view_as(x)


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std``, with ``mean`` and ``std`` stored as buffers.

    Args:
        mean: one value per channel.
        std: one positive value per channel.

    Input ``[B, C, H, W]``, output of the same shape. The buffers are saved in the state
    dict and follow ``.to(device)``.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.shape != std_t.shape:
            raise ValueError(f"mean and std differ in length: {len(mean_t)} vs {len(std_t)}")
        if not bool((std_t > 0).all()):
            raise ValueError("std must be positive")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


# --------------------------------------------------------------------------------------
# LeNet5 (Madry MNIST challenge)
# --------------------------------------------------------------------------------------


class LeNet5Madry(nn.Module):
    """The Madry et al. MNIST-challenge CNN, used by MMA training for MNIST.

    Source: Madry et al. 2018 (MNIST challenge model); advertorch ``LeNet5Madry``; MMA
    (Ding et al., ICLR 2020) §6.1 of ``specs/mma.md``.

    conv(C→32w, 5×5, pad 2) → ReLU → maxpool 2 → conv(32w→64w, 5×5, pad 2) → ReLU →
    maxpool 2 → flatten → FC 1024w → ReLU → FC K, with ``w`` the ``widen`` factor.
    At 28×28 the flatten size is 7·7·64 = 3136; at 8×8 it is 2·2·64. No BatchNorm, no
    input preprocessing, PyTorch default initialisation (as in advertorch).

    Input ``[B, C, H, W]`` in [0, 1]; output logits ``[B, num_classes]``.
    """

    def __init__(self, input_shape: InputShape, num_classes: int, widen: float = 1) -> None:
        super().__init__()
        c1, c2, hidden = int(32 * widen), int(64 * widen), int(1024 * widen)
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], c1, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        flat = _infer_out_shape(self.features, input_shape).numel()
        self.classifier = nn.Sequential(
            nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model("lenet5-madry", "MMA/Madry MNIST CNN: 2 conv (32, 64; 5x5) + FC 1024 + FC K")
def _build_lenet5_madry(input_shape: InputShape, num_classes: int, widen: float = 1) -> nn.Module:
    return LeNet5Madry(input_shape, num_classes, widen=widen)


# --------------------------------------------------------------------------------------
# SmallCNN (TRADES MNIST / Carlini-Wagner)
# --------------------------------------------------------------------------------------


class SmallCNN(nn.Module):
    """TRADES' MNIST CNN (the Carlini–Wagner 4 conv + 3 FC net).

    Source: Zhang et al. 2019 (TRADES) §5.3, ``models/small_cnn.py`` of the TRADES repo;
    Carlini & Wagner 2017.

    conv3×3(C→32) → ReLU → conv3×3(32→32) → ReLU → maxpool 2 → conv3×3(32→64) → ReLU →
    conv3×3(64→64) → ReLU → maxpool 2 → flatten → FC 200 → ReLU → Dropout(``drop``) →
    FC 200 → ReLU → FC K. No BatchNorm; **has dropout** (train/eval mode matters).

    Initialisation as in TRADES: convs Kaiming-normal (fan-in, ReLU gain) with zero bias,
    hidden FCs PyTorch default, and the **last FC zero** (weight and bias), so a fresh
    model outputs all-zero logits and its input gradient is exactly zero until the first
    update.

    Padding: the original convs are unpadded (faithful at 28×28: flatten 64·4·4 = 1024;
    at 32×32: 64·5·5). **Deviation:** with ``padding=None`` (default) the convs use
    ``padding=1`` when unpadded convs would collapse the map (e.g. 8×8 digits), which
    gives 64·2·2 there. Pass ``padding=0`` or ``1`` to force either.

    Input ``[B, C, H, W]`` in [0, 1]; output logits ``[B, num_classes]``.
    """

    def __init__(
        self,
        input_shape: InputShape,
        num_classes: int,
        drop: float = 0.5,
        padding: int | None = None,
    ) -> None:
        super().__init__()
        if padding is None:
            h, w = input_shape[1:]
            # unpadded: s -> s-4 -> (s-4)//2 -> ... -4 -> //2 must stay >= 1
            ok = all(((s - 4) // 2 - 4) // 2 >= 1 for s in (h, w))
            padding = 0 if ok else 1
        self.padding = padding
        c = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=padding),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=padding),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 64, 3, padding=padding),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=padding),
            nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Flatten(),
        )
        flat = _infer_out_shape(self.features, input_shape).numel()
        self.classifier = nn.Sequential(
            nn.Linear(flat, 200),
            nn.ReLU(),
            nn.Dropout(drop),
            nn.Linear(200, 200),
            nn.ReLU(),
            nn.Linear(200, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        last = self.classifier[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model(
    "smallcnn", "TRADES MNIST CNN (C&W): 4 conv 3x3 (32,32,64,64) + FC 200-200-K, dropout"
)
def _build_smallcnn(
    input_shape: InputShape, num_classes: int, drop: float = 0.5, padding: int | None = None
) -> nn.Module:
    return SmallCNN(input_shape, num_classes, drop=drop, padding=padding)


# --------------------------------------------------------------------------------------
# Pre-activation WideResNet (Zagoruyko & Komodakis; MMA and TRADES CIFAR nets)
# --------------------------------------------------------------------------------------


class _WideBasicBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3×3-BN-ReLU-(dropout)-conv3×3 + shortcut.

    As in the reference implementations (xternalz WideResNet-pytorch, used by advertorch
    and TRADES), when the width changes the 1×1 shortcut conv takes the **activated**
    input ``relu(bn1(x))``; when it does not, the identity shortcut takes raw ``x``.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.conv_shortcut: nn.Conv2d | None = None
        if in_planes != out_planes or stride != 1:
            self.conv_shortcut = nn.Conv2d(
                in_planes, out_planes, 1, stride=stride, padding=0, bias=False
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(out)
        out = F.relu(self.bn2(self.conv1(out)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        return self.conv2(out) + shortcut


def _wide_group(
    n: int, in_planes: int, out_planes: int, stride: int, dropout: float
) -> nn.Sequential:
    return nn.Sequential(
        *[
            _WideBasicBlock(
                in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, dropout
            )
            for i in range(n)
        ]
    )


class WideResNet(nn.Module):
    """Pre-activation WideResNet (Zagoruyko & Komodakis 2016), CIFAR style.

    depth = 6n + 4 gives n pre-activation basic blocks per group; widths 16 → 16k → 32k →
    64k for widen factor k; strides 1, 2, 2; final BN → ReLU → global average pool → FC.
    **Has BatchNorm.** Global average pooling (instead of the references' fixed 8×8 pool,
    identical at 32×32) lets any input size work.

    Initialisation as in the references: conv weights He-normal N(0, 2/(k·k·out_ch)), BN
    weight 1 and bias 0, Linear bias 0 (Linear weight: PyTorch default).

    Args:
        in_channels: input channels C.
        num_classes: logits K.
        depth: 6n + 4 (28 → n=4, 34 → n=5).
        widen: widen factor k.
        dropout: dropout rate inside blocks (0 in MMA and TRADES).
        sub_block1: add TRADES' **unused** ``sub_block1`` group (same shape as ``block1``)
            so TRADES checkpoints load with all keys; it never enters ``forward``.

    Input ``[B, C, H, W]``; output logits ``[B, num_classes]``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        depth: int = 28,
        widen: int = 4,
        dropout: float = 0.0,
        sub_block1: bool = False,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4 with n >= 1, got {depth}")
        n = (int(depth) - 4) // 6
        widths = [16, int(16 * widen), int(32 * widen), int(64 * widen)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = _wide_group(n, widths[0], widths[1], 1, dropout)
        self.sub_block1: nn.Sequential | None = None
        if sub_block1:
            self.sub_block1 = _wide_group(n, widths[0], widths[1], 1, dropout)
        self.block2 = _wide_group(n, widths[1], widths[2], 2, dropout)
        self.block3 = _wide_group(n, widths[2], widths[3], 2, dropout)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.block3(self.block2(self.block1(out)))
        out = F.relu(self.bn1(out))
        out = out.mean(dim=(2, 3))
        return self.fc(out)


@register_model(
    "wrn-28-4",
    "MMA CIFAR-10 net: PerImageStandardize + pre-activation WideResNet-28-4 (BatchNorm)",
)
def _build_wrn_28_4(
    input_shape: InputShape,
    num_classes: int,
    depth: int = 28,
    widen: int = 4,
    dropout: float = 0.0,
    standardize: bool = True,
) -> nn.Module:
    """MMA's CIFAR-10 model (Ding et al., ICLR 2020; advertorch ``get_cifar10_wrn28_widen_factor``).

    ``nn.Sequential(PerImageStandardize(), WideResNet(depth=28, widen=4))``: the
    standardisation is the model's first layer, as in the MMA code; ``standardize=False``
    drops it. Has BatchNorm. Output ``[B, num_classes]``.
    """
    net = WideResNet(input_shape[0], num_classes, depth=depth, widen=widen, dropout=dropout)
    if not standardize:
        return net
    return nn.Sequential(PerImageStandardize(), net)


@register_model(
    "wrn-34-10",
    "TRADES CIFAR-10 net: pre-activation WideResNet-34-10, no input normalisation (BatchNorm)",
)
def _build_wrn_34_10(
    input_shape: InputShape,
    num_classes: int,
    depth: int = 34,
    widen: int = 10,
    dropout: float = 0.0,
    sub_block1: bool = False,
) -> nn.Module:
    """TRADES' CIFAR-10 model (Zhang et al. 2019, ``models/wideresnet.py``).

    A :class:`WideResNet` of depth 34, widen 10 (≈46.2M parameters), no input
    normalisation. ``sub_block1=True`` adds TRADES' unused ``sub_block1`` parameters for
    checkpoint compatibility. Has BatchNorm. Output ``[B, num_classes]``.
    """
    return WideResNet(
        input_shape[0],
        num_classes,
        depth=depth,
        widen=widen,
        dropout=dropout,
        sub_block1=sub_block1,
    )


# --------------------------------------------------------------------------------------
# CIFAR-style ResNet-18
# --------------------------------------------------------------------------------------


class _BasicBlock(nn.Module):
    """Post-activation ResNet basic block (He et al. 2016) with a 1×1 conv-BN projection."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet (He et al. 2016) with BasicBlocks; ResNet-18 by default.

    Stem conv3×3(C→64w)-BN-ReLU (no max-pool); four stages of ``blocks`` BasicBlocks with
    widths 64w, 128w, 256w, 512w and strides 1, 2, 2, 2; global average pool; FC K.
    **Has BatchNorm.** This is the usual CIFAR ResNet-18 (e.g. TRADES ``models/resnet.py``,
    used in TRADES §5.2) with global average pooling instead of a fixed 4×4 pool, so any
    input size works (≥ 8 recommended). PyTorch default initialisation.

    Input ``[B, C, H, W]``; output logits ``[B, num_classes]``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        blocks: Sequence[int] = (2, 2, 2, 2),
        width: int = 64,
    ) -> None:
        super().__init__()
        if len(blocks) != 4:
            raise ValueError(f"blocks must have 4 entries, got {blocks!r}")
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages: list[nn.Module] = []
        in_planes = width
        for i, n in enumerate(blocks):
            planes = width * 2**i
            layers = []
            for j in range(n):
                layers.append(_BasicBlock(in_planes, planes, (1 if i == 0 else 2) if j == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(out.mean(dim=(2, 3)))


@register_model(
    "resnet18", "CIFAR-style ResNet-18 (3x3 stem, no max-pool, global avg pool; BatchNorm)"
)
def _build_resnet18(
    input_shape: InputShape,
    num_classes: int,
    blocks: Sequence[int] = (2, 2, 2, 2),
    width: int = 64,
) -> nn.Module:
    return ResNet(input_shape[0], num_classes, blocks=tuple(blocks), width=width)


# --------------------------------------------------------------------------------------
# MLP and small CPU CNN
# --------------------------------------------------------------------------------------


class MLP(nn.Module):
    """Fully connected ReLU network: flatten → (Linear → ReLU) × len(hidden) → Linear K.

    Wu & Yu's MNIST-/CIFAR-MLP is ``hidden=(1024,)`` (the default); ``hidden=()`` is
    multiclass logistic regression (their MNIST-LR / CIFAR-LR). Works for any input shape,
    including toy2d points ``(1, 1, 2)``. No BatchNorm.

    Input ``[B, *input_shape]``; output logits ``[B, num_classes]``.
    """

    def __init__(
        self, input_shape: InputShape, num_classes: int, hidden: Sequence[int] = (1024,)
    ) -> None:
        super().__init__()
        dims = [math.prod(input_shape), *(int(h) for h in hidden)]
        layers: list[nn.Module] = [nn.Flatten()]
        for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(d_in, d_out), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_model(
    "mlp", "MLP: flatten -> ReLU hidden layers (default 1024) -> K; hidden=() is linear"
)
def _build_mlp(
    input_shape: InputShape, num_classes: int, hidden: Sequence[int] = (1024,)
) -> nn.Module:
    return MLP(input_shape, num_classes, hidden=tuple(hidden))


class CNNSmall(nn.Module):
    """A small CNN sized for CPU runs (Fashion-MNIST, digits, quick tests). Not from a paper.

    conv3×3(C→c1, pad 1) → [BN] → ReLU → maxpool 2 → conv3×3(c1→c2, pad 1) → [BN] → ReLU →
    maxpool 2 → flatten → FC ``hidden`` → ReLU → FC K, with ``channels=(c1, c2)``
    (default (32, 64)) and ``hidden=128``. At 28×28 the flatten size is 7·7·64, at 8×8
    2·2·64. **No BatchNorm** unless ``batchnorm=True``. PyTorch default initialisation.

    Input ``[B, C, H, W]`` in [0, 1] with H, W ≥ 4; output logits ``[B, num_classes]``.
    """

    def __init__(
        self,
        input_shape: InputShape,
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        if len(channels) != 2:
            raise ValueError(f"channels must have 2 entries, got {channels!r}")
        c1, c2 = (int(c) for c in channels)
        layers: list[nn.Module] = []
        for c_in, c_out in ((input_shape[0], c1), (c1, c2)):
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(c_out))
            layers += [nn.ReLU(), nn.MaxPool2d(2)]
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        flat = _infer_out_shape(self.features, input_shape).numel()
        self.classifier = nn.Sequential(
            nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model("cnn-small", "small CPU CNN: conv 32 -> conv 64 (3x3, max-pool) -> FC 128 -> K")
def _build_cnn_small(
    input_shape: InputShape,
    num_classes: int,
    channels: Sequence[int] = (32, 64),
    hidden: int = 128,
    batchnorm: bool = False,
) -> nn.Module:
    return CNNSmall(
        input_shape, num_classes, channels=tuple(channels), hidden=hidden, batchnorm=batchnorm
    )
