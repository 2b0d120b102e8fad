"""CIFAR-style ResNets: post-activation ResNet-18 (He et al. 2016a, ``resnet18``) and
pre-activation ResNet-18 (He et al. 2016b, ``preact-resnet18``, as in RobustBench)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .registry import InputShape, register_model

__all__ = ["PreActResNet", "ResNet"]


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
        """Logits ``[B, num_classes]`` of images ``x`` ``[B, C, H, W]`` in [0, 1]."""
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


class _PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016b, "Identity mappings in deep residual
    networks"): BN-ReLU-conv3×3-BN-ReLU-conv3×3 + shortcut. The 1×1 shortcut conv (when the
    width or stride changes) takes the **raw** input ``x``, as RobustBench's ``PreActBlock``."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Conv2d | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + shortcut


class PreActResNet(nn.Module):
    """Pre-activation ResNet (He et al. 2016b), CIFAR style; PreAct ResNet-18 by default.

    Stem conv3×3(C→64w) (no BN, no max-pool); four stages of ``blocks`` pre-activation
    blocks with widths 64w, 128w, 256w, 512w and strides 1, 2, 2, 2; global average pool;
    FC K. As RobustBench's ``PreActResNet18`` (used e.g. by Wong et al. 2020, "Fast is
    better than free", and Rice et al. 2020): **no** BN-ReLU before the pool. Global
    average pooling (the reference's 4×4 pool is the same at 32×32) lets any input size
    work. **Has BatchNorm.** PyTorch default initialisation.

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
        stages: list[nn.Module] = []
        in_planes = width
        for i, n in enumerate(blocks):
            planes = width * 2**i
            layers = []
            for j in range(n):
                stride = (1 if i == 0 else 2) if j == 0 else 1
                layers.append(_PreActBlock(in_planes, planes, stride))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` of images ``x`` ``[B, C, H, W]`` in [0, 1]."""
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(out.mean(dim=(2, 3)))


@register_model(
    "preact-resnet18",
    "pre-activation ResNet-18 (RobustBench PreActResNet18: no BN before the pool; BatchNorm)",
)
def _build_preact_resnet18(
    input_shape: InputShape,
    num_classes: int,
    blocks: Sequence[int] = (2, 2, 2, 2),
    width: int = 64,
) -> nn.Module:
    return PreActResNet(input_shape[0], num_classes, blocks=tuple(blocks), width=width)
