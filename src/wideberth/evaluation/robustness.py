"""Robust accuracy over an ε grid: attack suites, ε-grid reuse, streaming, resumable state.

``evaluate(model, x, y, norm=..., epsilons=[...], suite=...)`` attacks every example at
every ε with every attack of a suite (:mod:`wideberth.evaluation.suites`: ``quick``,
``paper``, ``standard`` or a list of :class:`AttackSpec`) and reports, per ε, the fraction
of examples that stay correctly classified under **all** of them (the pointwise worst case;
a clean error is never robust), plus the MMA paper's summaries (Ding et al., MMA training,
ICLR 2020, §4, "Measuring adversarial robustness"):

* ``AvgAcc``    = mean of {clean accuracy, RobAcc(ε₁), …, RobAcc(ε_k)} (k + 1 terms);
* ``AvgRobAcc`` = mean of {RobAcc(ε₁), …, RobAcc(ε_k)} (k terms).

Efficiency (what makes an 8-ε curve cheap): ε's are processed in increasing order, and an
attack only ever runs on the examples still robust. A point broken at ε is broken at every
larger ε (its adversarial example lies in every larger ball, so it is reused, never
re-attacked); a point robust at a larger ε was robust at every smaller one. Data are
streamed in batches, so memory does not grow with the dataset, and with ``state_file``
the per-example results (:class:`~wideberth.evaluation.state.EvalState`) are saved after
every batch (atomically) and an interrupted evaluation resumes where it stopped.

Every adversarial example an attack returns is re-checked before it counts: inside its
ε-ball (with a 1e-5 relative tolerance) and the [0, 1] box
(:meth:`wideberth.threat.ThreatModel.contains`), and misclassified by a fresh forward pass.
A violation is reported in ``flags`` and the example is not counted broken.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..attacks import attack_context
from ..attacks.base import looks_like_probabilities, warn_if_probabilities
from ..threat import FEASIBILITY_RTOL, ThreatModel, get_threat, normalize_norm
from . import sanity as sanity_checks
from .clean import model_device
from .state import EvalState, fingerprint
from .suites import (
    SUITES,
    AttackSpec,
    attack_seed,
    check_epsilons,
    check_images,
    resolve_suite,
    suite_attacks,
)

__all__ = [
    "FEASIBILITY_RTOL",
    "SUITES",
    "AttackSpec",
    "EvalReport",
    "broken_first_by",
    "eps_key",
    "evaluate",
    "mma_averages",
    "robust_accuracies",
    "success_matrix",
    "suite_attacks",
]


@dataclass
class EvalReport:
    """The result of :func:`evaluate`.

    Attributes:
        n, norm, suite, epsilons: what was evaluated (ε's as given, in increasing order).
        clean_accuracy: fraction correct on the clean inputs.
        robust_accuracy: ``{str(ε): fraction}`` robust under every attack of the suite.
        avg_acc, avg_rob_acc: the MMA paper's summaries (module docstring).
        success: ``[len(epsilons), n]`` bool: example broken (or clean error) at ε.
        broken_by: ``{str(ε): {attack name: count}}``: which attack broke each example first
            (examples broken at a smaller ε and clean errors are not attributed again).
        attacks: the suite's attack names in the order they ran.
        flags: sanity warnings (an empty list means none fired).
    """

    n: int
    norm: str
    suite: str
    epsilons: list[float]
    clean_accuracy: float
    robust_accuracy: dict[str, float]
    avg_acc: float
    avg_rob_acc: float
    success: Tensor
    broken_by: dict[str, dict[str, int]]
    attacks: list[str]
    flags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``success`` left out; see :attr:`success`)."""
        d = {k: v for k, v in asdict(self).items() if k != "success"}
        return d

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON (``wideberth evaluate --json``)."""
        return json.dumps(self.to_dict(), indent=2)


# --- summaries of per-example results (shared with the transfer evaluation) -------------------

def eps_key(e: float) -> str:
    """The key of radius ``e`` in the reports' dicts (``f"{e:g}"``)."""
    return f"{e:g}"


def success_matrix(first_broken: Tensor, k: int) -> Tensor:
    """bool ``[k, N]`` from the first broken ε index per example ``[N]`` (k: never; −1:
    clean error): row i is True where the example is broken at the i-th radius."""
    if not k:
        return torch.zeros(0, first_broken.shape[0], dtype=torch.bool)
    return torch.stack([first_broken <= i for i in range(k)])


def robust_accuracies(success: Tensor, eps_sorted: Sequence[float]) -> dict[str, float]:
    """``{str(ε): fraction not broken}`` of a success matrix ``[k, N]``."""
    return {eps_key(e): float((~success[i]).double().mean()) for i, e in enumerate(eps_sorted)}


def mma_averages(clean_accuracy: float, robust_accuracy: dict[str, float]) -> tuple[float, float]:
    """``(AvgAcc, AvgRobAcc)``: the mean over clean and robust accuracies (k + 1 terms) and
    over the robust accuracies only (k terms)."""
    k = len(robust_accuracy)
    total = sum(robust_accuracy.values())
    return (clean_accuracy + total) / (k + 1), total / k


def broken_first_by(
    first_broken: Tensor, by: Tensor, names: Sequence[str], eps_sorted: Sequence[float]
) -> dict[str, dict[str, int]]:
    """``{str(ε_i): {names[a]: count}}``: the examples first broken at ε_i by ``a`` (``by``
    [N] holds the index into ``names``, −1 for none)."""
    return {
        eps_key(e): {nm: int(((first_broken == i) & (by == a)).sum()) for a, nm in enumerate(names)}
        for i, e in enumerate(eps_sorted)
    }


# --- one batch over the grid ------------------------------------------------------------------

def _attack_batch(
    model: nn.Module,
    xb: Tensor,
    yb: Tensor,
    correct: Tensor,
    specs: Sequence[AttackSpec],
    threat: ThreatModel,
    eps_sorted: Sequence[float],
    seed: int,
    reuse: str,
) -> tuple[Tensor, Tensor, int]:
    """One batch over the grid: (first broken ε index [B] on the CPU: k = never, −1 = clean
    error; index of the attack that broke it [B] (−1: none); infeasible examples seen)."""
    k = len(eps_sorted)
    fb = torch.where(correct.cpu(), k, -1)
    bb = torch.full_like(fb, -1)
    violations = 0
    adv_norm = torch.full((xb.shape[0],), float("inf"), device=xb.device, dtype=xb.dtype)

    def attack(rows: Tensor, i: int) -> Tensor:
        """Run the suite at ε_i on ``rows`` (each attack on the rows still unbroken);
        returns the rows it broke."""
        nonlocal violations
        eps = eps_sorted[i]
        todo, broke = rows, []
        for a, spec in enumerate(specs):
            if todo.numel() == 0:
                break
            xt, yt = xb[todo], yb[todo]
            x_adv = spec.run(model, xt, yt, norm=threat.name, eps=eps, seed=attack_seed(seed, a))
            with torch.no_grad():
                wrong = model(x_adv).argmax(1) != yt
            d = threat.norm(x_adv - xt)
            feasible = threat.contains(xt, x_adv, eps, distance=d)
            violations += int((wrong & ~feasible).sum())
            ok = wrong & feasible
            hit = todo[ok]
            fb[hit.cpu()] = i
            bb[hit.cpu()] = a
            adv_norm[hit] = d[ok]
            broke.append(hit)
            todo = todo[~ok]
        return torch.cat(broke) if broke else rows[:0]

    if reuse == "up":  # increasing ε: only points robust so far are attacked
        robust = correct.clone()
        for i in range(k):
            rows = robust.nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            robust[attack(rows, i)] = False
        return fb, bb, violations
    # "both", decreasing ε: only points broken at every larger ε are attacked again; an
    # adversarial example found at a larger ε whose norm is within ε_i breaks it at ε_i
    # too (reused); a point robust at ε_i is taken as robust at every smaller ε
    active = correct.clone()
    for i in reversed(range(k)):
        reused = active & (adv_norm <= eps_sorted[i] * (1 + FEASIBILITY_RTOL))
        fb[reused.cpu()] = i
        rows = (active & ~reused).nonzero().squeeze(1)
        still = torch.zeros_like(active)
        if rows.numel():
            still[attack(rows, i)] = True
        active = reused | still
        if not bool(active.any()):
            break
    return fb, bb, violations


# --- the steps of evaluate --------------------------------------------------------------------

def _mode_flags(model: nn.Module) -> list[str]:
    """A flag when dropout or BatchNorm of ``model`` is in train mode."""
    mode_dependent = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)
    if isinstance(model, nn.Module) and any(
        m.training and isinstance(m, mode_dependent) for m in model.modules()
    ):
        return ["the model was in train mode (its dropout/BatchNorm behave differently "
                "there); it was evaluated in eval mode, and its modes were restored"]
    return []


def _start_state(
    model: nn.Module, x: Tensor, y: Tensor, specs: Sequence[AttackSpec], settings: dict[str, Any],
    state_file: str | os.PathLike[str] | None,
) -> EvalState:
    """A fresh :class:`EvalState`, or the one ``state_file`` holds for this evaluation.

    The fingerprint hashes ``settings`` and the suite; a state file written before the
    targeted APGD was renamed ``apgd-t`` (from ``apgd-dlr``) is still recognised."""
    n, k = x.shape[0], len(settings["epsilons"])
    flags = _mode_flags(model)
    if state_file is None:
        return EvalState.start(n, k, flags)

    def suite_meta(legacy: bool) -> list[dict[str, Any]]:
        out = []
        for s in specs:
            d = {**asdict(s), "loss": s.loss if isinstance(s.loss, str) else s.name}
            if legacy and d["attack"] == "apgd-t":
                d["attack"] = "apgd-dlr"
            out.append(d)
        return out

    prints = [fingerprint(model, x, y, {**settings, "suite": suite_meta(False)})]
    if any(s.attack == "apgd-t" for s in specs):
        prints.append(fingerprint(model, x, y, {**settings, "suite": suite_meta(True)}))
    return EvalState.start(n, k, flags, state_file, tuple(prints))


def _sanity_flags(
    model: nn.Module, x: Tensor, y: Tensor, norm: str, eps_max: float, robust_at_max: Tensor,
    seed: int, sanity_n: int,
) -> list[str]:
    """The checks of :mod:`wideberth.evaluation.sanity` on the first ``sanity_n`` examples."""
    m = min(sanity_n, x.shape[0])
    device = model_device(model)
    xs, ys = x[:m].to(device), y[:m].to(device)
    flags = sanity_checks.unbounded_attack_check(model, xs, ys, norm, seed=seed)
    flags += sanity_checks.zero_gradient_check(model, xs, ys)
    flags += sanity_checks.black_box_check(
        model, xs, ys, norm, eps_max, robust_at_max[:m].to(device), seed=seed)
    return flags


def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    norm: str,
    epsilons: Sequence[float],
    suite: str | Sequence[AttackSpec] = "standard",
    restarts: int | None = None,
    batch_size: int = 500,
    seed: int = 0,
    state_file: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
    sanity: bool = True,
    sanity_n: int = 100,
    reuse: str = "up",
) -> EvalReport:
    """Robust accuracy of ``model`` on ``(x, y)`` at every ε of ``epsilons`` under a suite.

    Papers: the MMA paper's evaluation protocol (Ding et al., ICLR 2020, §4 / App. D) and
    AutoAttack's white-box pair (Croce & Hein, ICML 2020). Norms: ``"linf"``, ``"l2"``,
    ``"l1"``.

    Args:
        model: ``nn.Module`` mapping ``[B, C, H, W]`` in [0, 1] to logits ``[B, K]``;
            evaluated in eval mode, modes and gradients restored.
        x: images ``[N, C, H, W]`` in [0, 1] (any device; moved to the model's device batch
            by batch); y: labels ``[N]``.
        norm: threat model.
        epsilons: radii > 0 (any order; reported in increasing order, duplicates removed).
        suite: ``"quick"``, ``"paper"``, ``"standard"`` or a list of :class:`AttackSpec`.
        restarts: the ``paper``/``standard`` suites' N (see :func:`suite_attacks`).
        batch_size: examples per streamed batch.
        seed: attack randomness; results do not depend on ``batch_size`` (per-example streams).
        state_file: JSON file for resuming: per-example results are saved after every
            batch; an existing file of the same evaluation (same data, weights and settings)
            is continued, one of a different evaluation raises ``ValueError``.
        progress: optional callback receiving one line per finished batch.
        reuse: how results are shared across the grid. ``"up"`` (default): ε's in
            increasing order, a point broken at ε counts as broken at every larger ε and
            only the points still robust are attacked: never more robust than independent
            per-ε runs with the same seed. ``"both"``: ε's in decreasing order, only the
            points broken at every larger ε are attacked again, an adversarial example
            whose norm is within a smaller ε is reused there, and a point robust at ε is
            taken as robust at every smaller ε (true robustness is monotone; an attack's
            success need not be, so this can report a point robust at a small ε that an
            independent run there would break): about one full attack per robust point
            instead of one per ε.
        sanity: run the checks of :mod:`wideberth.evaluation.sanity` on the first
            ``sanity_n`` examples (PGD at an unbounded radius, zero input gradients, Square
            on the points the suite left robust at the largest ε) and add their flags.

    Returns:
        :class:`EvalReport`.
    """
    norm = normalize_norm(norm)
    threat = get_threat(norm)
    eps_sorted = check_epsilons(epsilons)
    check_images(x, y)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    if reuse not in ("up", "both"):
        raise ValueError(f"reuse must be 'up' or 'both'; got {reuse!r}")
    specs, suite_name = resolve_suite(suite, norm, tuple(x.shape[1:]), restarts)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"attack names in a suite must be unique; got {names}")

    n = x.shape[0]
    settings = {"norm": norm, "epsilons": eps_sorted, "seed": seed, "batch_size": batch_size,
                "n": n, "reuse": reuse}
    state = _start_state(model, x, y, specs, settings, state_file)
    device = model_device(model)
    starts = range(0, n, batch_size)
    with attack_context(model):
        for b, start in enumerate(starts):
            if b < state.done_batches:
                continue
            xb = x[start : start + batch_size].to(device)
            yb = y[start : start + batch_size].to(device)
            with torch.no_grad():
                logits = model(xb)
            if b == 0:
                warn_if_probabilities(logits)
                if looks_like_probabilities(logits):
                    state.flags.append("the model's outputs look like probabilities, not logits")
            correct = logits.argmax(1) == yb
            state.record(start, *_attack_batch(model, xb, yb, correct, specs, threat, eps_sorted,
                                               seed, reuse))
            if progress is not None:
                progress(f"batch {b + 1}/{len(starts)}: {min(start + batch_size, n)}/{n} examples")
    return _report(model, x, y, state, suite_name, names, norm, eps_sorted, seed,
                   sanity, sanity_n)


def _report(
    model: nn.Module, x: Tensor, y: Tensor, state: EvalState, suite_name: str,
    names: list[str], norm: str, eps_sorted: list[float], seed: int, sanity: bool,
    sanity_n: int,
) -> EvalReport:
    """Summarise the per-example results into the report; with ``sanity``, add the flags
    of the sanity checks on the first ``sanity_n`` examples."""
    n, k = x.shape[0], len(eps_sorted)
    success = success_matrix(state.first_broken, k)
    clean_acc = float((state.first_broken >= 0).double().mean())
    rob = robust_accuracies(success, eps_sorted)
    flags = state.flags
    if state.violations:
        flags.append(f"{state.violations} adversarial example(s) left their ε-ball or the "
                     "[0, 1] box and were not counted: an attack is broken")
    flags += sanity_checks.monotonicity_check(rob)
    if sanity and n > 0:
        flags += _sanity_flags(model, x, y, norm, eps_sorted[-1], ~success[-1], seed, sanity_n)
    avg_acc, avg_rob_acc = mma_averages(clean_acc, rob)
    return EvalReport(
        n=n, norm=norm, suite=suite_name, epsilons=eps_sorted, clean_accuracy=clean_acc,
        robust_accuracy=rob, avg_acc=avg_acc, avg_rob_acc=avg_rob_acc, success=success,
        broken_by=broken_first_by(state.first_broken, state.breaker, names, eps_sorted),
        attacks=names, flags=flags,
    )
