"""The shared list of attack targets (foolbox's test-target style) for the contract tests.

Every registered attack (:data:`wideberth.attacks.ATTACKS`) × every norm it supports is one
:class:`AttackTarget` with small settings, so a newly registered attack is picked up by
``tests/test_attack_contract.py`` without editing it. A few *variants* (options of one
attack that change its code path: PGD's projection, start and restarts; AN-PGD's direction)
are extra targets for the ball/box and batch-independence properties.

Also here: the small models and inputs the contract tests share.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from wideberth.attacks import ATTACKS, AttackEntry
from wideberth.losses import logit_margin

#: a budget per norm (inputs are 1×8×8 images in [0, 1])
EPS = {"linf": 0.1, "l2": 0.5, "l1": 2.0}

#: small settings per attack: keywords of the fixed-ε runner (``steps``, ``restarts`` and
#: attack options); minimal-norm attacks also pass them to ``minimize`` (minus ``restarts``)
SMALL: dict[str, dict[str, Any]] = {
    "fgsm": {"steps": 1},
    "pgd": {"steps": 5, "restarts": 2},
    "apgd-ce": {"steps": 10, "restarts": 2},
    "apgd-t": {"steps": 8, "n_target_classes": 2},
    "square": {"steps": 40},
    "anpgd": {"steps": 6, "n_search": 8},
    "fmn": {"steps": 40},
    # abort-early fires here: a batch-level abort test would make results batch-dependent
    "cw-l2": {"steps": 100, "binary_search_steps": 3, "initial_const": 10.0, "lr": 0.05},
}

#: small settings of ``minimize`` where they differ from the fixed-ε runner's
SMALL_MINIMIZE: dict[str, dict[str, Any]] = {
    "anpgd": {"rounds": 3, "steps": 20, "n_search": 12},
}

#: option variants (attack → list of extra options) for ball/box and batch independence
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "pgd": [
        {"projection": p, "init": i, **kw}
        for p in ("exact", "approx")
        for i in ("uniform", "advertorch", None)
        for kw in ({}, {"return_best": False}, {"early_stop": True})
    ],
    "anpgd": [{"direction": "actual_norm"}],
}

#: the tolerance of the batch-independence check on a BLAS model (nn.Linear / conv rows are
#: not bitwise batch invariant on CPU; normalised ℓ2 steps carry the last bit into x_adv)
BLAS_ATOL: dict[str, float] = {"apgd-ce": 1e-4, "apgd-t": 1e-4, "fmn": 1e-5, "cw-l2": 1e-5}


@dataclass(frozen=True)
class AttackTarget:
    """One attack at one norm with small settings."""

    entry: AttackEntry
    norm: str
    options: dict[str, Any] = field(default_factory=dict)
    variant: str = ""

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def id(self) -> str:
        return f"{self.name}-{self.norm}" + (f"[{self.variant}]" if self.variant else "")

    @property
    def eps(self) -> float:
        return EPS[self.norm]

    @property
    def minimal_norm(self) -> bool:
        return self.entry.kind == "minimal-norm"

    def run(self, model: Any, x: Tensor, y: Tensor, eps: float | Tensor | None = None,
            **kw: Any) -> Tensor:
        """The fixed-ε runner at ``eps`` (default :attr:`eps`) with the small settings."""
        opts = {**self.options, **kw}
        steps = opts.pop("steps", self.entry.default_steps)
        restarts = opts.pop("restarts", 1)
        seed = opts.pop("seed", 0)
        return self.entry.run(model, x, y, norm=self.norm, eps=self.eps if eps is None else eps,
                              steps=steps, restarts=restarts, seed=seed, **opts)

    def minimize(self, model: Any, x: Tensor, y: Tensor, **kw: Any) -> Any:
        """The minimal-norm search with the small settings."""
        assert self.entry.minimize is not None
        opts = {**self.options, **SMALL_MINIMIZE.get(self.name, {}), **kw}
        opts.pop("restarts", None)
        steps = opts.pop("steps", self.entry.default_steps)
        seed = opts.pop("seed", 0)
        return self.entry.minimize(model, x, y, norm=self.norm, steps=steps, seed=seed, **opts)


def _small(entry: AttackEntry) -> dict[str, Any]:
    return dict(SMALL.get(entry.name, {"steps": min(entry.default_steps, 10)}))


#: every registered attack × every norm it supports
TARGETS: list[AttackTarget] = [
    AttackTarget(entry, norm, _small(entry)) for entry in ATTACKS.values() for norm in entry.norms
]
#: the minimal-norm targets (their ``minimize`` has its own contract)
MINIMAL_TARGETS: list[AttackTarget] = [t for t in TARGETS if t.minimal_norm]
#: TARGETS plus the option variants
VARIANT_TARGETS: list[AttackTarget] = TARGETS + [
    AttackTarget(entry, norm, {**_small(entry), **v},
                 ",".join(f"{k}={val}" for k, val in v.items()))
    for entry in ATTACKS.values()
    for v in VARIANTS.get(entry.name, [])
    for norm in entry.norms
]


def ids(targets: list[AttackTarget]) -> list[str]:
    """pytest ids of ``targets``."""
    return [t.id for t in targets]


# --------------------------------------------------------------------------------------
# models and inputs
# --------------------------------------------------------------------------------------

K = 5


class RowwiseLinear(nn.Module):
    """``x Wᵀ + b`` as a broadcast product and a last-axis sum: unlike a BLAS GEMM (whose
    blocking, and hence rounding, depends on the batch size) every row is computed by the same
    elementwise operations whatever else is in the batch, so results are bitwise batch
    independent."""

    def __init__(self, d_in: int, d_out: int, g: torch.Generator) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_out, d_in, generator=g) / math.sqrt(d_in))
        self.bias = nn.Parameter(0.1 * torch.randn(d_out, generator=g))

    def forward(self, x: Tensor) -> Tensor:
        return (x.flatten(1).unsqueeze(1) * self.weight).sum(-1) + self.bias


def exact_model(seed: int = 0) -> nn.Module:
    """A ReLU MLP on [B, 1, 8, 8] with bitwise batch-independent rows, K = 5 classes."""
    g = torch.Generator().manual_seed(seed)
    return nn.Sequential(RowwiseLinear(64, 24, g), nn.ReLU(), RowwiseLinear(24, K, g)).eval()


def small_cnn(seed: int = 0) -> nn.Module:
    """A tiny conv net on [B, 1, 8, 8], K = 5 classes, no BatchNorm, eval mode (BLAS rows)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(8 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, K),
    ).eval()


class BNNet(nn.Module):
    """Conv + BatchNorm + Dropout: what an attack must run in eval mode and leave as found."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4 * 8 * 8, K)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))


def batch(n: int = 16, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Images [n, 1, 8, 8] in [0, 1] with some pixels exactly on the box faces (so the box is
    active) and random labels in [0, K)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    faces = torch.rand(n, 1, 8, 8, generator=g)
    x = torch.where(faces < 0.2, 0.0, torch.where(faces > 0.9, 1.0, x))
    y = torch.randint(0, K, (n,), generator=g)
    return x, y


def mixed_labels(model: Callable[[Tensor], Tensor], x: Tensor, wrong_every: int = 4) -> tuple[Tensor, Tensor]:
    """Labels = the model's predictions, except every ``wrong_every``-th example, relabelled to
    a wrong class (already misclassified); returns ``(y, wrong mask)``."""
    with torch.no_grad():
        y = model(x).argmax(1)
    wrong = torch.zeros(x.shape[0], dtype=torch.bool)
    wrong[::wrong_every] = True
    y = torch.where(wrong, (y + 1) % K, y)
    return y, wrong


def misclassified(model: Callable[[Tensor], Tensor], x_adv: Tensor, y: Tensor) -> Tensor:
    """``LM(x_adv, y) >= 0`` (ties count as misclassified) [B]."""
    with torch.no_grad():
        return logit_margin(model(x_adv), y) >= 0
