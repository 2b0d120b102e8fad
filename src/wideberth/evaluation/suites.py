"""Attack suites: what :func:`wideberth.evaluate` runs at every ε, resolved through the registry.

An :class:`AttackSpec` names a registered attack (:mod:`wideberth.attacks.registry`: ``pgd``,
``apgd-ce``, ``apgd-t``, ``fgsm``, ``square``, or a minimal-norm attack such as ``fmn``,
which counts at a fixed ε where its distance is within ε) with its iterations and restarts;
PGD also takes a loss, a step size as a fraction of ε and a start. Fixed suites
(:func:`suite_attacks`):

* ``quick``: PGD-20 with CE and with the CW loss, one run each (step 2.5·ε/20);
* ``paper``: the MMA paper's protocol (Ding et al., MMA training, ICLR 2020, §4 and App. D):
  100-step PGD, ``restarts`` random starts split between CE (N − N//2) and CW (N//2), step
  ε/4, or ε/40 for ℓ∞ on 28×28 grey images (MNIST's rule, also used for Fashion-MNIST);
* ``standard``: APGD-CE and targeted APGD-DLR (``apgd-t``; 100 steps each, AutoAttack's
  white-box pair, Croce & Hein, ICML 2020) followed by the ``paper`` PGD.

The i-th attack of a suite draws its randomness from ``seed + 7919·i`` (:func:`attack_seed`),
the same in white-box and transfer evaluations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from torch import Tensor, nn

from .._checks import check_inputs
from ..attacks.registry import AttackEntry, get_attack
from ..threat import normalize_norm
from .external import ExternalAttack, external_seed, resolve_style

__all__ = [
    "SUITES",
    "AttackSpec",
    "attack_seed",
    "check_epsilons",
    "check_images",
    "resolve_suite",
    "suite_attacks",
]

#: the named suites of :func:`suite_attacks`
SUITES = ("quick", "paper", "standard")

#: seed offset between the attacks of a suite
SEED_STRIDE = 7919


@dataclass(frozen=True)
class AttackSpec:
    """One attack of a suite.

    Attributes:
        attack: a registered attack name (:func:`wideberth.attacks.attack_names`): ``"pgd"``,
            ``"apgd-ce"``, ``"apgd-t"`` (targeted DLR, AutoAttack's APGD-T; ``"apgd-dlr"``
            is its deprecated alias), ``"fgsm"``, ``"square"`` (``steps`` = queries), or a
            minimal-norm attack (``"fmn"``, ``"cw-l2"``, ``"anpgd"``: broken where its
            distance is within ε).
        steps: iterations per run.
        restarts: runs (each attacks only the examples earlier runs left unbroken).
        loss: PGD's loss: ``"ce"`` or ``"cw"`` (MMA's evaluation CW loss in AdverTorch's form
            ``max(LM + 50, 0)``, the form of the authors' released evaluation; the paper's
            footnote 10 prints ``min{LM, 0}``; both have LM's gradient where −50 < LM < 0), or
            a callable ``(logits, y) -> [B]`` (give it a ``label``; e.g. an ensemble loss).
        step: PGD's step size as a fraction of ε (``None``: 2.5/steps).
        init: PGD's start (see :func:`wideberth.attacks.pgd`).
        label: name in reports.
        fn: an attack from outside the registry (:meth:`external`; ``attack`` is then
            ``"external"``).

    ``loss``, ``step`` and ``init`` are PGD's options; the other attacks ignore them.
    """

    attack: str
    steps: int
    restarts: int = 1
    loss: str | Callable[[Tensor, Tensor], Tensor] = "ce"
    step: float | None = None
    init: str = "auto"
    label: str = ""
    fn: ExternalAttack | None = None

    @classmethod
    def external(
        cls, fn: Any, *, label: str, style: str = "auto", kind: str = "fixed-eps",
        norms: tuple[str, ...] = (), eps_attribute: str = "eps",
    ) -> AttackSpec:
        """A suite entry running an attack from outside the registry: ``fn(model, x, y,
        eps) -> x_adv``, a torchattacks-style object called ``atk(x, y)`` (its ``eps``
        attribute set to each ε of the grid) or a factory ``make(eps) -> atk``
        (:mod:`wideberth.evaluation.external`). Its outputs are re-checked (ball, box,
        fresh prediction) like every other attack's and it is attributed by ``label``.

        ``kind``: ``"fixed-eps"`` (an output outside the ε-ball is flagged as a broken
        attack) or ``"minimal-norm"`` (outputs count where within ε). ``norms``: the
        threat models it supports (empty: any)."""
        if not label:
            raise ValueError("an external attack needs a label (its name in reports), "
                             "e.g. label='torchattacks-pgd'")
        if kind not in ("fixed-eps", "minimal-norm"):
            raise ValueError(f"kind must be 'fixed-eps' or 'minimal-norm'; got {kind!r}")
        ext = ExternalAttack(fn, resolve_style(fn, style), kind,
                             tuple(normalize_norm(n) for n in norms), eps_attribute)
        return cls("external", 0, 1, label=label, fn=ext)

    @property
    def strict_budget(self) -> bool:
        """Whether an output outside the ε-ball is a bug of the attack: every registered
        attack (the registry's minimal-norm runners already return ``x`` beyond ε) and
        ``kind="fixed-eps"`` external ones."""
        return self.fn is None or self.fn.kind == "fixed-eps"

    def meta(self) -> dict[str, Any]:
        """The spec as JSON-ready settings (what a state file's fingerprint hashes)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "fn"}
        if callable(self.loss):
            d["loss"] = self.name
        if self.fn is not None:
            d["fn"] = self.fn.describe()
        return d

    @property
    def name(self) -> str:
        """The name in reports: ``label``, else e.g. ``pgd-ce-100x5`` or ``apgd-t-100x1``."""
        if self.label:
            return self.label
        if self.fn is not None:
            return self.fn.describe()
        if self.attack == "pgd":
            return f"pgd-{self.loss}-{self.steps}x{self.restarts}"
        return f"{self.attack}-{self.steps}x{self.restarts}"

    def entry(self) -> AttackEntry:
        """The registry entry of :attr:`attack` (an alias resolves silently here: its
        ``DeprecationWarning`` is given once, by :meth:`check`)."""
        return get_attack(self.attack, warn=False)

    def check(self, norm: str) -> None:
        """``ValueError`` unless :attr:`attack` is registered and supports ``norm`` (a
        deprecated alias warns); an external attack checks its ``norms``."""
        if self.fn is not None:
            if self.fn.norms and normalize_norm(norm) not in self.fn.norms:
                raise ValueError(f"the external attack {self.name!r} supports "
                                 f"{'/'.join(self.fn.norms)}; got norm={norm!r}")
            return
        get_attack(self.attack).check_norm(norm)

    def options(self, eps: float, return_best: bool = True) -> dict[str, Any]:
        """The runner options of this spec at radius ``eps`` (beyond norm, ε, steps,
        restarts and seed): PGD's loss, step ``step·ε``, start and iterate choice."""
        if self.fn is not None or self.entry().name != "pgd":
            return {}
        return {
            "step_size": None if self.step is None else self.step * eps,
            "loss": self.loss,
            "loss_kwargs": {"form": "advertorch"} if self.loss == "cw" else None,
            "init": self.init,
            "return_best": return_best,
            # early stop changes nothing for the rows still attacked (every computation is
            # per example) and only saves the work on broken ones; last iterates need the
            # full run
            "early_stop": return_best,
        }

    def run(self, model: nn.Module, x: Tensor, y: Tensor, *, norm: str, eps: float, seed: int,
            return_best: bool = True, batch: int = 0, eps_index: int = 0) -> Tensor:
        """``x_adv`` [B, ...] of this attack on ``x`` [B, C, H, W], ``y`` [B] at radius ``eps``.

        ``return_best=False``: PGD hands over its final iterates (what a transfer source
        gives, :mod:`wideberth.evaluation.transfer`) instead of the first that crossed the
        boundary. Inputs are not re-validated (``check=False``): the evaluation checks them
        once and re-checks every output. An external attack is seeded from ``seed``,
        ``batch`` and ``eps_index`` (:func:`~wideberth.evaluation.external.external_seed`);
        registered attacks key their randomness by example content and ignore the two."""
        if self.fn is not None:
            return self.fn(model, x, y, eps, external_seed(seed, batch, eps_index))
        return self.entry().run(model, x, y, norm=norm, eps=eps, steps=self.steps,
                                restarts=self.restarts, seed=seed, check=False,
                                **self.options(eps, return_best))


def attack_seed(seed: int, index: int) -> int:
    """The seed of the ``index``-th attack of a suite: ``seed + 7919·index``."""
    return seed + SEED_STRIDE * index


def _paper_step(norm: str, image_shape: Sequence[int]) -> float:
    """MMA's step rule (App. D): ε/40 for ℓ∞ on 1×28×28 images (MNIST), else ε/4."""
    return 1 / 40 if norm == "linf" and tuple(image_shape) == (1, 28, 28) else 1 / 4


def suite_attacks(
    suite: str, norm: str, image_shape: Sequence[int], restarts: int | None = None
) -> list[AttackSpec]:
    """The attacks of a named suite for ``norm`` on images of ``image_shape`` (C, H, W).

    ``restarts``: the ``paper`` suite's N (default 10: CIFAR-10's N; the paper's MNIST N is
    50) and the APGD runs of ``standard`` (default 1 each)."""
    norm = normalize_norm(norm)
    if suite == "quick":
        return [AttackSpec("pgd", 20, 1, "ce"), AttackSpec("pgd", 20, 1, "cw")]
    n = 10 if restarts is None else int(restarts)
    if n < 1:
        raise ValueError(f"restarts must be >= 1; got {n}")
    step = _paper_step(norm, image_shape)
    paper = [AttackSpec("pgd", 100, n - n // 2, "ce", step, "advertorch")]
    if n // 2:
        paper.append(AttackSpec("pgd", 100, n // 2, "cw", step, "advertorch"))
    if suite == "paper":
        return paper
    if suite == "standard":
        apgd_runs = 1 if restarts is None else n
        return [AttackSpec("apgd-ce", 100, apgd_runs), AttackSpec("apgd-t", 100, apgd_runs)] + paper
    raise ValueError(f"unknown suite {suite!r}; valid suites: {', '.join(SUITES)}")


def resolve_suite(
    suite: str | Sequence[AttackSpec], norm: str, image_shape: Sequence[int],
    restarts: int | None = None,
) -> tuple[list[AttackSpec], str]:
    """``(specs, suite name)`` of a named suite or a custom list (named ``"custom"``).

    Raises ``ValueError`` for an unknown suite, an empty list or one holding something else
    than :class:`AttackSpec`, an unknown attack or one that does not support ``norm``."""
    if isinstance(suite, str):
        specs, name = suite_attacks(suite, norm, image_shape, restarts), suite
    else:
        specs, name = list(suite), "custom"
        if not specs or not all(isinstance(s, AttackSpec) for s in specs):
            raise ValueError("a custom suite must be a non-empty list of AttackSpec")
    for spec in specs:
        spec.check(norm)
    return specs, name


def check_epsilons(epsilons: Sequence[float]) -> list[float]:
    """The radii sorted increasingly without duplicates; ``ValueError`` unless there is at
    least one and every one is finite and > 0."""
    eps_sorted = sorted({float(e) for e in epsilons})
    if not eps_sorted:
        raise ValueError("epsilons is empty: give at least one radius, e.g. epsilons=[0.1, 0.2]")
    if any(not math.isfinite(e) or e <= 0 for e in eps_sorted):
        raise ValueError(f"every ε must be a finite number > 0; got {list(epsilons)}")
    return eps_sorted


def check_images(x: Tensor, y: Tensor) -> None:
    """``ValueError`` unless ``x`` [N, C, H, W] lies in [0, 1] and ``y`` [N] holds labels."""
    check_inputs(x, y, None)
    if x.dim() != 4:
        raise ValueError(f"x must be images of shape [N, C, H, W]; got shape {list(x.shape)}")
