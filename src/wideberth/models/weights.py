"""Reading bare weight files safely: :func:`load_weights`, :func:`unwrap_state_dict`.

Only two readers ever touch a file: safetensors (no code at all) and
``torch.load(weights_only=True)``, PyTorch's restricted unpickler that builds tensors,
containers and numbers and refuses every other object. A ``.pt``/``.pth`` file that needs
full unpickling (a pickled ``nn.Module``, an ``argparse.Namespace`` in the checkpoint,
...) is refused with a :class:`WeightsError`; nothing in it runs.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "CONTAINER_KEYS",
    "WeightsError",
    "is_safetensors_file",
    "load_weights",
    "unwrap_state_dict",
]

CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net")
"""Keys under which training scripts commonly nest the state dict (tried in this order)."""


class WeightsError(ValueError):
    """A weight file cannot be read safely, or does not hold a state dict."""


def is_safetensors_file(path: str | Path) -> bool:
    """True if ``path`` starts like a safetensors file (an 8-byte little-endian header length,
    then a JSON object that fits in the file); reads only the header."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                return False
            (n,) = struct.unpack("<Q", head)
            size = Path(path).stat().st_size
            if n < 2 or n > size - 8 or n > 100_000_000:
                return False
            header = fh.read(n)
    except OSError:
        return False
    try:
        return isinstance(json.loads(header), dict)
    except (UnicodeDecodeError, ValueError):
        return False


def unwrap_state_dict(obj: Any, *, source: str = "the weights") -> dict[str, Tensor]:
    """The ``{name: tensor}`` state dict inside ``obj``.

    Unwraps the usual containers (``{"state_dict": …}``, ``{"model_state_dict": …}``,
    ``{"model": …}``, ``{"net": …}``, also nested) and strips the ``module.`` prefix that
    ``nn.DataParallel`` / ``DistributedDataParallel`` add to every name.

    Raises:
        WeightsError: ``obj`` holds no mapping of names to tensors (the message says what it
            holds).
    """
    seen = 0
    while isinstance(obj, Mapping) and seen < 4:
        if obj and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
            break
        inner = next((obj[k] for k in CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj, seen = inner, seen + 1
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(
            f"{source} hold a {type(obj).__name__}, not a state dict (a mapping of parameter "
            f"names to tensors, possibly under one of the keys {', '.join(CONTAINER_KEYS)})"
        )
    bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, Tensor))]
    if bad:
        keys = ", ".join(map(repr, list(obj)[:8]))
        raise WeightsError(
            f"{source} are not a state dict: entries {', '.join(map(repr, bad[:5]))} are not "
            f"tensors (top-level keys: {keys}); save model.state_dict()"
        )
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _refused_global(exc: Exception) -> str | None:
    """The global (``module.name``) the restricted unpickler refused to build, or ``None``
    when the error is not such a refusal (a damaged or foreign file)."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return found.group(1)
    return "an object" if "Unsupported class" in text else None


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """The state dict stored in ``path``: a safetensors file (recognised by its content,
    whatever its extension), or a ``.pt``/``.pth`` file read only with
    ``torch.load(weights_only=True)`` (never full unpickling). Containers and a
    ``module.`` prefix are unwrapped (:func:`unwrap_state_dict`).

    Returns:
        ``{parameter name: tensor}`` on CPU.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        WeightsError: the file needs full unpickling (refused, not executed: the message
            says how to re-save it), is unreadable, or holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if is_safetensors_file(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return unwrap_state_dict(load_file(str(path)), source=str(path))
        except (SafetensorError, OSError) as exc:
            raise WeightsError(f"{path} is a damaged safetensors file: {exc}") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _refused_global(exc)
        if refused is None:
            raise WeightsError(
                f"{path} is neither a safetensors file nor a readable torch.save file "
                "(the restricted unpickler cannot parse it: a damaged or foreign file)"
            ) from None
        raise WeightsError(
            f"refused to read {path}: it holds Python objects beyond tensors and containers "
            f"(it asks for {refused}), and loading them would run code from the file (full "
            "unpickling), which wideberth never does. Fix: in the environment that made it, "
            "re-save only the weights, torch.save(model.state_dict(), 'weights.pt'), or "
            "convert them to safetensors "
            "(safetensors.torch.save_file(model.state_dict(), 'weights.safetensors'))."
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise WeightsError(
            f"{path} is neither a safetensors file nor a readable torch.save file: {exc}"
        ) from exc
    return unwrap_state_dict(obj, source=str(path))
