"""The paper's CIFAR-10 transformation domains (Wang et al., Tables 3, A5 and A6)."""

from __future__ import annotations

from typing import Any

import torch

from .base import Transform
from .deterministic import Brightness, CenterCrop, Gamma, HFlip, Identity, Rotate, VFlip
from .stochastic import RandomApply, RandomCenterCrop

__all__ = ["paper_transforms"]


_SETTINGS: dict[str, str] = {
    "table3": "table3",
    "deterministic": "table3",
    "tablea5": "tableA5",
    "stochastic": "tableA5",
    "tablea6": "tableA6",
    "rotation": "tableA6",
}


def paper_transforms(
    setting: str = "table3",
    *,
    generator: torch.Generator | None = None,
    per_example: bool = True,
) -> list[Transform]:
    """The paper's CIFAR-10 transformation domains (Wang et al. §4.1, App. C.3, D.3).

    * ``"table3"`` / ``"deterministic"`` (K = 6): ori, flh, flv, bri (+0.1, unclipped),
      gam (1.3), crop (central 0.8, TF alignment).
    * ``"tableA6"`` / ``"rotation"`` (K = 7): the Table 3 set plus rot (30° clockwise =
      ``Rotate(-30)``, bilinear, zero padding).
    * ``"tableA5"`` / ``"stochastic"`` (K = 5): ori, flh@0.8, flv@0.8, bri@0.8, and a random
      central crop with fraction U[0.6, 1.0]. ``generator`` and ``per_example`` go to the
      random transforms.

    The paper attacks every set with 20-step ℓ∞ APGDA, ε = 0.03, γ = 10 (captions of
    Tables 3, A5, A6), on 32×32 images (the transforms themselves work at any size).

    Returns:
        A new list of transforms in the paper's column order; ``[t.label for t in ...]`` are
        the table's column names.
    """
    key = _SETTINGS.get(setting.lower().replace(" ", ""))
    if key is None:
        raise ValueError(
            f"unknown paper transformation setting {setting!r}; expected one of"
            f" {sorted(set(_SETTINGS))}"
        )
    if key == "tableA5":
        kw: dict[str, Any] = {"per_example": per_example, "generator": generator}
        return [
            Identity(),
            RandomApply(HFlip(), 0.8, **kw),
            RandomApply(VFlip(), 0.8, **kw),
            RandomApply(Brightness(0.1), 0.8, **kw),
            RandomCenterCrop(0.6, 1.0, **kw),
        ]
    ts: list[Transform] = [
        Identity(),
        HFlip(),
        VFlip(),
        Brightness(0.1),
        Gamma(1.3),
        CenterCrop(0.8),
    ]
    if key == "tableA6":
        ts.append(Rotate(-30.0))
    return ts
