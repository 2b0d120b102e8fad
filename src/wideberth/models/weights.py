"""Reading bare weight files safely: :func:`load_weights`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

__all__ = ["load_weights"]


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """The state dict stored in ``path``: a safetensors file, or a ``.pt``/``.pth`` file read
    only with ``torch.load(weights_only=True)`` (never full unpickling).

    Returns:
        ``{parameter name: tensor}`` on CPU.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state
