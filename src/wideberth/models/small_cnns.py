"""Small convolutional nets: the MNIST nets of MMA (:class:`LeNet5Madry`) and TRADES
(:class:`SmallCNN`), and :class:`CNNSmall` for CPU runs.

Flatten sizes are computed from the actual ``input_shape`` (a dummy forward pass in eval
mode under ``torch.no_grad`` at construction), so every net works for 8×8 digits, 28×28
MNIST/Fashion-MNIST and 32×32 CIFAR inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .registry import InputShape, register_model

__all__ = ["CNNSmall", "LeNet5Madry", "SmallCNN"]


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
# LeNet5 (Madry MNIST challenge)
# --------------------------------------------------------------------------------------


class LeNet5Madry(nn.Module):
    """The Madry et al. MNIST-challenge CNN, used by MMA training for MNIST.

    Source: Madry et al. 2018 (MNIST challenge model); advertorch ``LeNet5Madry``; MMA
    (Ding et al., ICLR 2020), App. C: "32-channel conv filter + ReLU + size 2 max pooling +
    64-channel conv filter + ReLU + size 2 max pooling + fc layer with 1024 units + ReLU +
    fc layer with 10 output classes", no preprocessing of MNIST images. The 5×5 kernels
    and padding 2 are those of the advertorch model the MMA code builds.

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
        """Logits ``[B, num_classes]`` of images ``x`` ``[B, C, H, W]`` in [0, 1]."""
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
        """Logits ``[B, num_classes]`` of images ``x`` ``[B, C, H, W]`` in [0, 1]."""
        return self.classifier(self.features(x))


@register_model(
    "smallcnn", "TRADES MNIST CNN (C&W): 4 conv 3x3 (32,32,64,64) + FC 200-200-K, dropout"
)
def _build_smallcnn(
    input_shape: InputShape, num_classes: int, drop: float = 0.5, padding: int | None = None
) -> nn.Module:
    return SmallCNN(input_shape, num_classes, drop=drop, padding=padding)


# --------------------------------------------------------------------------------------
# Small CPU CNN
# --------------------------------------------------------------------------------------


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
        """Logits ``[B, num_classes]`` of images ``x`` ``[B, C, H, W]`` in [0, 1]."""
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
