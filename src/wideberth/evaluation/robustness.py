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
re-attacked); a point robust at a larger ε was robust at every smaller one. Data —
tensors, a ``Dataset`` or a ``DataLoader`` (:mod:`wideberth.evaluation.streaming`) — are
streamed in batches, so memory does not grow with the dataset, and with ``state_file``
the per-example results (:class:`~wideberth.evaluation.state.EvalState`) are saved after
every batch (atomically) and an interrupted evaluation resumes where it stopped.

Every adversarial example an attack returns is re-checked before it counts: inside its
ε-ball (with a 1e-5 relative tolerance) and the [0, 1] box
(:meth:`wideberth.threat.ThreatModel.contains`), and misclassified by a fresh forward pass.
A violation is reported in ``flags`` (naming the attack) and the example is not counted
broken; this holds for external attacks too (:meth:`AttackSpec.external`). The report's
JSON carries 95 % Clopper–Pearson intervals and the per-example results
(:class:`EvalReport`).
"""

from __future__ import annotations

import copy
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..attacks import attack_context
from ..attacks.base import looks_like_probabilities, warn_if_probabilities
from ..progress import progress_bar
from ..threat import FEASIBILITY_RTOL, get_threat, normalize_norm
from . import sanity as sanity_checks
from .clean import model_device
from .grid import attack_batch
from .state import EvalState, batch_digest, fingerprint
from .statistics import accuracy_interval
from .streaming import Batch, Stream, as_stream
from .suites import (
    SUITES,
    AttackSpec,
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
        ids: ``[n]`` int64 example ids (dataset indices, else positions; ``None`` when
            not kept).
        first_broken: ``[n]`` int64: index into ``epsilons`` of the first radius the
            example was broken at (``len(epsilons)``: never; −1: clean error).
        breaker: ``[n]`` int64: index into ``attacks`` of the attack that broke it (−1).

    :meth:`to_dict` adds 95 % Clopper–Pearson intervals (``clean_accuracy_ci``,
    ``robust_accuracy_ci``; :mod:`wideberth.evaluation.statistics`) and, when kept, the
    per-example results (``per_example``: ``ids``, ``first_broken``, ``breaker``) that let
    ``wideberth compare`` run McNemar's paired test.
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
    ids: Tensor | None = None
    first_broken: Tensor | None = None
    breaker: Tensor | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``success`` left out; see the class docstring)."""
        tensors = ("success", "ids", "first_broken", "breaker")
        d: dict[str, Any] = {f.name: copy.deepcopy(getattr(self, f.name))
                             for f in fields(self) if f.name not in tensors}
        d["clean_accuracy_ci"] = list(accuracy_interval(self.clean_accuracy, self.n))
        d["robust_accuracy_ci"] = {e: list(accuracy_interval(a, self.n))
                                   for e, a in self.robust_accuracy.items()}
        if self.first_broken is not None:
            ids = self.ids if self.ids is not None else torch.arange(self.n)
            breaker = self.breaker if self.breaker is not None else torch.full((self.n,), -1)
            d["per_example"] = {"ids": ids.tolist(), "first_broken": self.first_broken.tolist(),
                                "breaker": breaker.tolist()}
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
    model: nn.Module, stream: Stream, specs: Sequence[AttackSpec], settings: dict[str, Any],
    state_file: str | os.PathLike[str] | None,
) -> EvalState:
    """A fresh :class:`EvalState`, or the one ``state_file`` holds for this evaluation.

    The fingerprint hashes ``settings``, the suite and, for stacked tensors, the data (a
    stream is checked batch by batch instead, :mod:`wideberth.evaluation.state`); a state
    file written before the targeted APGD was renamed ``apgd-t`` (from ``apgd-dlr``) is
    still recognised."""
    n, k = stream.n or 0, len(settings["epsilons"])
    flags = _mode_flags(model)
    if state_file is None:
        return EvalState.start(n, k, flags)
    x, y = stream.x, stream.y
    if not stream.from_tensors:
        settings = {**settings, "stream": True}

    def suite_meta(legacy: bool) -> list[dict[str, Any]]:
        out = []
        for s in specs:
            d = s.meta()
            if legacy and d["attack"] == "apgd-t":
                d["attack"] = "apgd-dlr"
            out.append(d)
        return out

    prints = [fingerprint(model, x, y, {**settings, "suite": suite_meta(False)})]
    if any(s.attack == "apgd-t" for s in specs):
        prints.append(fingerprint(model, x, y, {**settings, "suite": suite_meta(True)}))
    return EvalState.start(n, k, flags, state_file, tuple(prints))


def _sanity_flags(
    model: nn.Module, xs: Tensor, ys: Tensor, norm: str, eps_max: float, robust_at_max: Tensor,
    seed: int,
) -> list[str]:
    """The checks of :mod:`wideberth.evaluation.sanity` on ``xs`` [m, C, H, W], ``ys`` [m]
    (the first ``sanity_n`` examples), with a progress bar."""
    device = model_device(model)
    xs, ys = xs.to(device), ys.to(device)
    flags: list[str] = []
    with progress_bar(3, "sanity checks", unit="check") as bar:
        flags += sanity_checks.unbounded_attack_check(model, xs, ys, norm, seed=seed)
        bar.update(1)
        flags += sanity_checks.zero_gradient_check(model, xs, ys)
        bar.update(1)
        flags += sanity_checks.black_box_check(
            model, xs, ys, norm, eps_max, robust_at_max.to(device), seed=seed)
        bar.update(1)
    return flags


def _first_batch_shape(stream: Stream) -> tuple[tuple[int, ...], Iterator[Batch]]:
    """The image shape (C, H, W) of a stream and its batches from the start (the first
    batch is read once and handed on); ``()`` for an empty stream."""
    it = stream.batches()
    first = next(it, None)
    if first is None:
        return (), iter(())
    return tuple(first.x.shape[1:]), itertools.chain([first], it)


def evaluate(
    model: nn.Module,
    x: Tensor | Dataset[Any] | DataLoader[Any] | Iterable[Any],
    y: Tensor | None = None,
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
            by batch) with labels ``y`` [N]; or, with ``y`` omitted, a ``Dataset`` of
            ``(x, y)`` / ``(x, y, index)`` items or a ``DataLoader`` of such batches,
            streamed (:mod:`wideberth.evaluation.streaming`: memory stays flat in N; the
            loader's batches are re-chunked to ``batch_size``, so the numbers are the same
            as on the stacked tensors, bitwise).
        norm: threat model.
        epsilons: radii > 0 (any order; reported in increasing order, duplicates removed).
        suite: ``"quick"``, ``"paper"``, ``"standard"`` or a list of :class:`AttackSpec`
            (registered attacks, or external ones: :meth:`AttackSpec.external`).
        restarts: the ``paper``/``standard`` suites' N (see :func:`suite_attacks`).
        batch_size: examples per evaluated batch.
        seed: attack randomness; the registered attacks' results do not depend on
            ``batch_size`` (per-example streams); an external attack's depend on the batch
            (it is seeded per batch and ε).
        state_file: JSON file for resuming: per-example results are saved after every
            batch; an existing file of the same evaluation (same data, weights and settings)
            is continued, one of a different evaluation raises ``ValueError`` (for a
            stream, when a re-read batch differs from the recorded one).
        progress: optional callback receiving one line per finished batch (besides the
            progress bar drawn on a terminal, :func:`wideberth.progress.progress_bar`).
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
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    if reuse not in ("up", "both"):
        raise ValueError(f"reuse must be 'up' or 'both'; got {reuse!r}")
    stream = as_stream(x, y, batch_size)
    if stream.x is not None and stream.y is not None:
        check_images(stream.x, stream.y)
        shape, batches = tuple(stream.x.shape[1:]), None
    else:
        shape, it = _first_batch_shape(stream)
        batches = it
    specs, suite_name = resolve_suite(suite, norm, shape, restarts)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"attack names in a suite must be unique; got {names}")

    settings = {"norm": norm, "epsilons": eps_sorted, "seed": seed, "batch_size": batch_size,
                "n": stream.n, "reuse": reuse}
    state = _start_state(model, stream, specs, settings, state_file)
    device = model_device(model)
    keep: list[tuple[Tensor, Tensor]] = []  # the first sanity_n examples (a stream's)
    total, n = stream.n_batches, 0
    with attack_context(model), progress_bar(total, "evaluate", unit="batch") as bar:
        if batches is None:  # stacked tensors: done batches are skipped without reading
            starts = range(state.done_batches * batch_size, stream.n or 0, batch_size)
            assert stream.x is not None and stream.y is not None
            batches = (Batch(stream.x[s : s + batch_size], stream.y[s : s + batch_size],
                             torch.arange(s, min(s + batch_size, stream.n or 0)), s,
                             s // batch_size) for s in starts)
            bar.update(state.done_batches)
            n = stream.n or 0
        for batch in batches:
            b, start = batch.index, batch.start
            n = max(n, start + batch.x.shape[0])
            if not stream.from_tensors:
                check_images(batch.x, batch.y)
                if sanity and sum(k[0].shape[0] for k in keep) < sanity_n:
                    keep.append((batch.x[:sanity_n], batch.y[:sanity_n]))
            digest = batch_digest(batch.x, batch.y) if state.path is not None else ""
            if b < state.done_batches:
                state.check_batch(b, digest)
                bar.update(1)
                continue
            xb, yb = batch.x.to(device), batch.y.to(device)
            with torch.no_grad():
                logits = model(xb)
            if b == 0:
                warn_if_probabilities(logits)
                if looks_like_probabilities(logits):
                    state.flags.append("the model's outputs look like probabilities, not logits")
            correct = logits.argmax(1) == yb
            res = attack_batch(model, xb, yb, correct, specs, threat, eps_sorted, seed, reuse, b)
            state.record(start, res.first_broken, res.breaker, res.violations, batch.ids, digest)
            bar.update(1)
            if progress is not None:
                of = f"/{total}" if total is not None else ""
                progress(f"batch {b + 1}{of}: {n}{'/' + str(stream.n) if stream.n else ''} "
                         "examples")
    state.truncate(n)
    if stream.x is not None and stream.y is not None:
        sanity_x, sanity_y = stream.x[:sanity_n], stream.y[:sanity_n]
    else:
        sanity_x = torch.cat([k[0] for k in keep])[:sanity_n] if keep else torch.zeros(0)
        sanity_y = torch.cat([k[1] for k in keep])[:sanity_n] if keep else torch.zeros(0)
    return _report(model, sanity_x, sanity_y, state, suite_name, names, norm, eps_sorted,
                   seed, sanity)


def _report(
    model: nn.Module, sanity_x: Tensor, sanity_y: Tensor, state: EvalState, suite_name: str,
    names: list[str], norm: str, eps_sorted: list[float], seed: int, sanity: bool,
) -> EvalReport:
    """Summarise the per-example results into the report; with ``sanity``, add the flags
    of the sanity checks on ``sanity_x``, ``sanity_y`` (the first ``sanity_n`` examples)."""
    n, k = state.first_broken.shape[0], len(eps_sorted)
    success = success_matrix(state.first_broken, k)
    clean_acc = float((state.first_broken >= 0).double().mean())
    rob = robust_accuracies(success, eps_sorted)
    flags = state.flags
    if state.violations:
        who = ", ".join(f"{a}: {c}" for a, c in state.violations_by.items())
        flags.append(f"{state.violations} adversarial example(s) left their ε-ball or the "
                     "[0, 1] box and were not counted: an attack is broken"
                     + (f" ({who})" if who else ""))
    flags += sanity_checks.monotonicity_check(rob)
    m = sanity_x.shape[0]
    if sanity and n > 0 and m > 0:
        flags += _sanity_flags(model, sanity_x, sanity_y, norm, eps_sorted[-1],
                               ~success[-1][:m], seed)
    avg_acc, avg_rob_acc = mma_averages(clean_acc, rob)
    return EvalReport(
        n=n, norm=norm, suite=suite_name, epsilons=eps_sorted, clean_accuracy=clean_acc,
        robust_accuracy=rob, avg_acc=avg_acc, avg_rob_acc=avg_rob_acc, success=success,
        broken_by=broken_first_by(state.first_broken, state.breaker, names, eps_sorted),
        attacks=names, flags=flags, ids=state.ids.clone(),
        first_broken=state.first_broken.clone(), breaker=state.breaker.clone(),
    )
