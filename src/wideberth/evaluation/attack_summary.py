"""One attack over a whole split, summarised: clean and robust accuracy and the sizes of the
perturbations (what ``wideberth attack`` prints), with the adversarial examples kept.

:func:`summarize_attack` runs any registered attack (:func:`wideberth.attacks.run_attack`)
batch by batch at one budget ε and returns an :class:`AttackSummary`; its
:meth:`~AttackSummary.save` writes the adversarial examples as safetensors, atomically.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..attacks import attack_context, get_attack, run_attack
from ..fileio import atomic_path
from ..progress import progress_bar
from ..threat import get_threat
from .clean import model_device
from .streaming import as_stream

__all__ = ["AttackSummary", "norm_quartiles", "summarize_attack"]


def norm_quartiles(values: Tensor) -> dict[str, float] | None:
    """``{"mean", "q1", "median", "q3", "max"}`` of ``values`` [N] (as float32), or None
    when there are none."""
    v = values.detach().float().cpu()
    if v.numel() == 0:
        return None
    q = torch.quantile(v, torch.tensor([0.25, 0.5, 0.75]))
    return {"mean": float(v.mean()), "q1": float(q[0]), "median": float(q[1]),
            "q3": float(q[2]), "max": float(v.max())}


@dataclass(frozen=True)
class AttackSummary:
    """The outcome of one attack on ``N`` examples (tensors on the CPU).

    Attributes:
        attack: canonical attack name (``"apgd-t"`` for the alias ``"apgd-dlr"``).
        norm: canonical threat-model norm (``"linf"``, ``"l2"``, ``"l1"``).
        eps, steps, restarts, seed: the attack's settings.
        x_adv: ``[N, ...]`` adversarial examples (in the ε-ball and the [0, 1] box);
            ``[0, ...]`` when they were not kept (``keep_adversarial=False``).
        y: ``[N]`` labels.
        clean_correct: ``[N]`` bool, the model is right on the clean example.
        robust_correct: ``[N]`` bool, the model is still right on ``x_adv``.
        distances: ``[N]`` ``‖x_adv − x‖`` in ``norm`` (:meth:`ThreatModel.norm`).
    """

    attack: str
    norm: str
    eps: float
    steps: int
    restarts: int
    seed: int
    x_adv: Tensor
    y: Tensor
    clean_correct: Tensor
    robust_correct: Tensor
    distances: Tensor

    @property
    def n(self) -> int:
        """Number of examples attacked."""
        return int(self.y.shape[0])

    @property
    def clean_accuracy(self) -> float:
        """Fraction of clean examples classified correctly."""
        return float(self.clean_correct.float().mean())

    @property
    def robust_accuracy(self) -> float:
        """Fraction of adversarial examples still classified correctly."""
        return float(self.robust_correct.float().mean())

    @property
    def broken(self) -> Tensor:
        """``[N]`` bool: right on the clean example, wrong on its adversarial one."""
        return self.clean_correct & ~self.robust_correct

    @property
    def quartiles_all(self) -> dict[str, float] | None:
        """:func:`norm_quartiles` of every example's perturbation norm."""
        return norm_quartiles(self.distances)

    @property
    def quartiles_broken(self) -> dict[str, float] | None:
        """:func:`norm_quartiles` of the broken examples' perturbation norms (None if none)."""
        return norm_quartiles(self.distances[self.broken])

    def to_dict(self) -> dict[str, Any]:
        """The settings and statistics as plain JSON-ready values (no tensors)."""
        return {
            "attack": self.attack, "norm": self.norm, "eps": self.eps, "steps": self.steps,
            "restarts": self.restarts, "seed": self.seed, "n": self.n,
            "clean_accuracy": self.clean_accuracy, "robust_accuracy": self.robust_accuracy,
            "broken": int(self.broken.sum()),
            "perturbation_norm": {"all": self.quartiles_all, "broken": self.quartiles_broken},
        }

    def save(self, path: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write ``x_adv`` and ``y`` to the safetensors file ``path`` atomically (a temporary
        file renamed over ``path``); ``metadata`` (values stringified, default
        :meth:`to_dict`'s settings) is stored as JSON under the header key ``"wideberth"``."""
        from safetensors.torch import save_file

        if self.x_adv.shape[0] != self.n:
            raise ValueError("the adversarial examples were not kept (a streamed attack keeps "
                             "none by default): run summarize_attack with "
                             "keep_adversarial=True to save them")
        path = Path(path)
        meta = dict(metadata) if metadata is not None else {
            k: v for k, v in self.to_dict().items() if k != "perturbation_norm"}
        with atomic_path(path) as tmp:
            save_file({"x_adv": self.x_adv.contiguous(), "y": self.y.contiguous()}, str(tmp),
                      metadata={"wideberth": json.dumps({k: str(v) for k, v in meta.items()})})
        return path


def summarize_attack(
    model: nn.Module,
    x: Tensor | Any,
    y: Tensor | None = None,
    *,
    attack: str = "pgd",
    norm: str = "linf",
    eps: float,
    steps: int = 40,
    restarts: int = 1,
    seed: int = 0,
    batch_size: int = 500,
    device: torch.device | str | None = None,
    keep_adversarial: bool | None = None,
    **options: Any,
) -> AttackSummary:
    """Attack ``x`` [N, ...] (in [0, 1]), ``y`` [N] with the registered attack ``attack``
    at budget ``eps`` in ``batch_size`` batches and summarise the outcome.

    Every batch is moved to ``device`` (default: the model's), attacked with
    :func:`wideberth.attacks.run_attack` (``steps``, ``restarts``, ``seed`` and ``options``
    passed on; every attack gives an example the same result whatever else is in its batch)
    and classified clean and adversarial (in eval mode; the model's modes are restored
    after). A deprecated attack alias resolves to its
    canonical name (with a ``DeprecationWarning``); an unknown attack, or a norm the attack
    does not support, raises ``ValueError`` before any work.

    ``x`` may also be a ``Dataset`` / ``DataLoader`` with ``y`` omitted
    (:mod:`wideberth.evaluation.streaming`), streamed in ``batch_size`` batches.
    ``keep_adversarial``: keep ``x_adv`` (default: for tensors yes, for a stream no, so
    memory stays flat: only per-example booleans and distances are kept).
    """
    entry = get_attack(attack)
    canonical_norm = entry.check_norm(norm)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    stream = as_stream(x, y, batch_size)
    keep = stream.from_tensors if keep_adversarial is None else bool(keep_adversarial)
    threat = get_threat(canonical_norm)
    dev = torch.device(device) if device is not None else model_device(model)
    x_adv_all, clean_ok, adv_ok, dists, ys = [], [], [], [], []
    with progress_bar(stream.n_batches, f"attack {entry.name}", unit="batch") as bar:
        for b in stream.batches():
            xb, yb = b.x.to(dev), b.y.to(dev)
            xa = run_attack(entry.name, model, xb, yb, norm=norm, eps=eps, steps=steps,
                            restarts=restarts, seed=seed, **options)
            with torch.no_grad(), attack_context(model):
                clean_ok.append((model(xb).argmax(1) == yb).cpu())
                adv_ok.append((model(xa).argmax(1) == yb).cpu())
            xa_cpu = xa.detach().cpu()
            dists.append(threat.norm(xa_cpu - b.x))
            ys.append(b.y)
            if keep:
                x_adv_all.append(xa_cpu)
            bar.update(1)
    if not ys:
        raise ValueError("no examples to attack")
    x_adv = torch.cat(x_adv_all) if keep else torch.zeros(0, *xa_cpu.shape[1:])
    return AttackSummary(
        attack=entry.name, norm=canonical_norm, eps=float(eps), steps=steps,
        restarts=restarts, seed=seed, x_adv=x_adv, y=torch.cat(ys),
        clean_correct=torch.cat(clean_ok), robust_correct=torch.cat(adv_ok),
        distances=torch.cat(dists),
    )
