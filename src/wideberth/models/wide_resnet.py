"""Pre-activation WideResNet (Zagoruyko & Komodakis 2016): the CIFAR-10 nets of MMA
(``wrn-28-4``), TRADES (``wrn-34-10``) and RobustBench's standard WRN-28-10 (``wrn-28-10``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .normalization import PerImageStandardize
from .registry import InputShape, register_model

__all__ = ["WideResNet"]


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
        sub_block1: add TRADES' **unused** ``sub_block1`` group (same shape as ``block1``);
            it never enters ``forward``. A TRADES (or RobustBench) file does **not** load
            into this module with ``load_state_dict``: its names differ
            (``block1.layer.0.convShortcut`` vs ``block1.0.conv_shortcut``). Import it with
            :func:`wideberth.models.import_weights` (``source="trades"``), which renames the
            keys and loads strictly; it drops the ``sub_block1`` entries unless the model is
            built with ``sub_block1=True``, which keeps them.
        bias_last: give the final Linear a bias (RobustBench's ``bias_last``; default True).

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
        bias_last: bool = True,
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
        self.fc = nn.Linear(widths[3], num_classes, bias=bias_last)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` of images ``x`` ``[B, C, H, W]`` in [0, 1]."""
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
    correction: int = 1,
) -> nn.Module:
    """MMA's CIFAR-10 model (Ding et al., ICLR 2020; advertorch ``get_cifar10_wrn28_widen_factor``).

    ``nn.Sequential(PerImageStandardize(), WideResNet(depth=28, widen=4))``: the
    standardisation is the model's first layer, as in the MMA code; ``standardize=False``
    drops it. ``correction=1`` divides by the unbiased standard deviation, as the MMA code
    does (``correction=0``: TensorFlow's population one). Has BatchNorm. Output
    ``[B, num_classes]``.
    """
    net = WideResNet(input_shape[0], num_classes, depth=depth, widen=widen, dropout=dropout)
    if not standardize:
        return net
    return nn.Sequential(PerImageStandardize(correction=correction), net)


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
    bias_last: bool = True,
) -> nn.Module:
    """TRADES' CIFAR-10 model (Zhang et al. 2019, ``models/wideresnet.py``), also
    RobustBench's WRN-34-10 architecture.

    A :class:`WideResNet` of depth 34, widen 10 (≈46.2M parameters), no input
    normalisation. ``sub_block1=True`` adds TRADES' unused ``sub_block1`` parameters, so
    a TRADES state dict imported with :func:`wideberth.models.import_weights` keeps all its
    keys (TRADES files need that renaming import; they do not load with
    ``load_state_dict``). Has BatchNorm. Output
    ``[B, num_classes]``.
    """
    return WideResNet(
        input_shape[0], num_classes, depth=depth, widen=widen, dropout=dropout,
        sub_block1=sub_block1, bias_last=bias_last,
    )


@register_model(
    "wrn-28-10",
    "RobustBench's standard CIFAR-10 net: pre-activation WideResNet-28-10, no normalisation",
)
def _build_wrn_28_10(
    input_shape: InputShape,
    num_classes: int,
    depth: int = 28,
    widen: int = 10,
    dropout: float = 0.0,
    sub_block1: bool = False,
    bias_last: bool = True,
) -> nn.Module:
    """RobustBench's WideResNet-28-10 (``model_zoo/architectures/wide_resnet.py``; Croce et
    al. 2021, the ``Standard`` CIFAR-10 entry and many adversarially trained ones).

    A :class:`WideResNet` of depth 28, widen 10 (≈36.5M parameters), no input
    normalisation. Has BatchNorm. Output ``[B, num_classes]``.
    """
    return WideResNet(
        input_shape[0], num_classes, depth=depth, widen=widen, dropout=dropout,
        sub_block1=sub_block1, bias_last=bias_last,
    )
