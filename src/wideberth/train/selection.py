"""Validation metrics that can select a run's ``best`` checkpoint (``eval.selection_metric``).

Each metric gets the model in eval mode and the whole validation split. Besides clean
accuracy and loss, two robust ones come built in:

- ``pgd_accuracy``: robust accuracy under PGD (CE loss, ``eval.attack_steps`` steps of
  2.5·ε/steps, a uniform random start) at ``eval.eps`` in ``eval.norm``;
- ``anpgd_margin``: the MMA paper's rule (Ding et al., MMA training, ICLR 2020, App. C:
  "we monitor the average margin from AN-PGD on the validation set and choose the model
  with largest average margin"): the mean test-time AN-PGD margin, PGD at ``eval.eps``
  then an LM bisection up to ``eval.margin_eps_max`` (1.05·d_max, as in the authors'
  code), misclassified examples included (their margin is ≈ 0).

:func:`validation_metrics` computes what the trainer logs as ``val_*`` and
:func:`improves` decides whether an epoch becomes the new ``best``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..config import Config
from ..data import IndexedTensors
from ..evaluation.clean import clean_metrics

__all__ = [
    "ValidationMetric",
    "VALIDATION_METRICS",
    "improves",
    "register_validation_metric",
    "validation_metrics",
]


@dataclass(frozen=True)
class ValidationMetric:
    """A number computed on the validation split that can select the ``best`` checkpoint.

    ``fn(model, x, y, cfg)`` gets the model in eval mode and the whole validation set.
    """

    fn: Callable[[nn.Module, Tensor, Tensor, Config], float]
    higher_is_better: bool


def _batches(x: Tensor, y: Tensor, size: int) -> list[tuple[Tensor, Tensor]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, x.shape[0], size)]


def _pgd_accuracy(model: nn.Module, x: Tensor, y: Tensor, cfg: Config) -> float:
    from ..attacks import pgd

    e = cfg.eval
    correct = 0
    for xb, yb in _batches(x, y, cfg.data.eval_batch_size):
        xa = pgd(model, xb, yb, norm=e.norm, eps=e.eps, steps=e.attack_steps, seed=cfg.run.seed,
                 check=False)
        with torch.no_grad():
            correct += int((model(xa).argmax(1) == yb).sum())
    return correct / x.shape[0]


def _anpgd_margin(model: nn.Module, x: Tensor, y: Tensor, cfg: Config) -> float:
    from ..attacks import average_margin

    e = cfg.eval
    assert e.margin_eps_max is not None  # validated in config
    return average_margin(
        model, x, y, batch_size=cfg.data.eval_batch_size, norm=e.norm, test_eps=e.eps,
        eps_max=e.margin_eps_max, steps=e.attack_steps, seed=cfg.run.seed, check=False,
    )


VALIDATION_METRICS: dict[str, ValidationMetric] = {
    "clean_accuracy": ValidationMetric(
        lambda m, x, y, cfg: clean_metrics(m, x, y, cfg.data.eval_batch_size)["clean_accuracy"],
        True,
    ),
    "loss": ValidationMetric(
        lambda m, x, y, cfg: clean_metrics(m, x, y, cfg.data.eval_batch_size)["loss"], False
    ),
    "pgd_accuracy": ValidationMetric(_pgd_accuracy, True),
    "anpgd_margin": ValidationMetric(_anpgd_margin, True),
}


def register_validation_metric(name: str, metric: ValidationMetric) -> None:
    """Make ``name`` usable as ``eval.selection_metric``."""
    VALIDATION_METRICS[name] = metric


def validation_metrics(model: nn.Module, val: IndexedTensors, cfg: Config) -> dict[str, float]:
    """Clean accuracy and loss on the whole split ``val``, plus ``eval.selection_metric``."""
    x, y, _ = val.get_batch(torch.arange(len(val)))
    out = clean_metrics(model, x, y, cfg.data.eval_batch_size)
    metric = cfg.eval.selection_metric
    if metric not in out:
        out[metric] = VALIDATION_METRICS[metric].fn(model, x, y, cfg)
    return {k: v for k, v in out.items() if k != "n"}


def improves(best: dict[str, Any], val: dict[str, float], metric: str) -> bool:
    """Whether validation metrics ``val`` beat ``best`` (``value``, ``val_loss``) on ``metric``.

    A tie on the metric (common for accuracy on a small validation split) goes to the
    lower validation loss.
    """
    value = val[metric]
    higher = VALIDATION_METRICS[metric].higher_is_better
    better = best["value"] is None or (value > best["value"] if higher else value < best["value"])
    tie = value == best["value"] and val["loss"] < best.get("val_loss", math.inf)
    return better or tie
