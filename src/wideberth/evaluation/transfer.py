"""Transfer attacks and the MMA paper's "combined" (white-box + transfer) evaluation.

Paper: Ding et al., *MMA Training: Direct Input Space Margin Maximization through
Adversarial Training*, ICLR 2020, §4 ("Measuring adversarial robustness"), App. D and F,
Tables 1, 4–7 (combined) vs 8–11 (white-box only) and 12–15 (their difference).

For a target model and a pool of source models, the adversarial examples generated
white-box on each source (the same attack suite and ε as the white-box evaluation) are
applied to the target. An example is *broken by transfer* at ε when one of them is
misclassified by the target; *combined* success is white-box success OR transfer success,
and (App. E–F: the extra success transfer attacks bring)

    TransferGap(ε) = RobAcc_whitebox(ε) − RobAcc_combined(ε)  ≥ 0,

with the same difference for AvgAcc (k + 1 terms: clean accuracy and the k RobAcc's) and
AvgRobAcc (k terms). A clean error of the target is never robust.

What a source hands over: per attack of the suite and example, PGD's *final iterate* (of the
first restart that broke the source, else of the last restart), not the first iterate that
crossed the source's boundary (:func:`wideberth.evaluate`'s choice, right for white-box
success but barely over the source's boundary, so it transfers worse). This is closest to
the reference code, which saves per source and ε the best of AdverTorch's final iterates.
APGD hands over its highest-loss successful point.

Reuse across ε (as in :func:`wideberth.evaluate`): ε's are processed in increasing order; a
transfer example that breaks the target at ε lies in every larger ball, so the example stays
broken at every larger ε and is never attacked again; :func:`combined_evaluation` also skips
the examples the white-box suite already broke at that ε. Every transfer example is
re-checked (inside its ε-ball up to a 1e-5 relative tolerance, inside [0, 1]) before it
counts; a violation is reported in ``flags`` (:func:`combined_evaluation`) or as a
``RuntimeWarning`` (:func:`transfer_success`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..attacks import attack_context
from ..threat import get_threat, normalize_norm
from .clean import model_device
from .ensemble import EnsembleAttackView, MajorityVoteEnsemble
from .robustness import (
    EvalReport,
    broken_first_by,
    evaluate,
    mma_averages,
    robust_accuracies,
    success_matrix,
)
from .suites import AttackSpec, attack_seed, check_epsilons, check_images, resolve_suite

__all__ = ["CombinedReport", "combined_evaluation", "transfer_examples", "transfer_success"]


def _check_data(x: Tensor, y: Tensor) -> None:
    check_images(x, y)
    if x.shape[0] == 0:
        raise ValueError("x is empty: nothing to evaluate")


def _check_source(source: object) -> nn.Module:
    if isinstance(source, (MajorityVoteEnsemble, EnsembleAttackView)):
        raise ValueError(
            "a majority-vote ensemble cannot be a transfer source: single-model attacks on its "
            "vote score are weak; pass its members as separate sources instead"
        )
    if not isinstance(source, nn.Module):
        raise TypeError(f"models must be nn.Module instances; got {type(source).__name__}")
    return source


def _check_sources(target: nn.Module, sources: Sequence[nn.Module], x: Tensor) -> list[nn.Module]:
    if not isinstance(target, nn.Module):
        raise TypeError(f"the target must be an nn.Module; got {type(target).__name__}")
    sources = [_check_source(s) for s in sources]
    if not sources:
        raise ValueError("sources is empty: give at least one source model to transfer from")
    probe = x[:1]
    with torch.no_grad(), attack_context(target):
        k = target(probe.to(model_device(target))).shape
    for i, s in enumerate(sources):
        with torch.no_grad(), attack_context(s):
            ks = s(probe.to(model_device(s))).shape
        if len(ks) != 2 or ks[1:] != k[1:]:
            raise ValueError(
                f"source {i} returns outputs of shape {list(ks)} but the target {list(k)}: "
                "source and target must classify into the same K classes"
            )
    return sources


def transfer_examples(
    source: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    norm: str,
    eps: float,
    suite: str | Sequence[AttackSpec] = "paper",
    restarts: int | None = None,
    seed: int = 0,
) -> list[Tensor]:
    """The adversarial examples a source hands to transfer attacks: one batch per attack.

    Paper: Ding et al., MMA training, ICLR 2020, §4 and App. D. Each attack of the suite
    runs white-box on ``source`` (attack ``a`` with seed ``seed + 7919·a``, as in
    :func:`wideberth.evaluate`); PGD returns its final iterate (module docstring).

    Args:
        source: classifier ``[B, C, H, W] -> [B, K]`` (logits).
        x: images ``[N, C, H, W]`` in [0, 1] (on the source's device); y: labels ``[N]``.
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
        eps: radius > 0.
        suite, restarts: as in :func:`wideberth.evaluate`.
        seed: attack randomness.

    Returns:
        ``[x_adv_a]`` for every attack ``a`` of the suite, each ``[N, C, H, W]`` with
        ``‖x_adv − x‖ ≤ eps`` in [0, 1].
    """
    norm = normalize_norm(norm)
    source = _check_source(source)
    _check_data(x, y)
    (eps,) = check_epsilons([eps])
    specs, _ = resolve_suite(suite, norm, tuple(x.shape[1:]), restarts)
    return [
        spec.run(source, x, y, norm=norm, eps=eps, seed=attack_seed(seed, a), return_best=False)
        for a, spec in enumerate(specs)
    ]


def _transfer(
    target: nn.Module,
    sources: list[nn.Module],
    x: Tensor,
    y: Tensor,
    norm: str,
    eps_sorted: list[float],
    specs: list[AttackSpec],
    batch_size: int,
    seed: int,
    skip: Tensor | None,
    progress: Callable[[str], None] | None,
) -> tuple[Tensor, Tensor, int]:
    """Per example: the first ε index at which a transfer example broke the target (k: never;
    -1: clean error), the source that did (-1: none), and the number of infeasible examples.

    ``skip`` [k, N] bool: examples not to attack at ε_i (already broken otherwise)."""
    n, k = x.shape[0], len(eps_sorted)
    threat = get_threat(norm)
    tdev = model_device(target)
    first_broken = torch.full((n,), k, dtype=torch.int64)
    by_source = torch.full((n,), -1, dtype=torch.int64)
    violations = 0
    starts = list(range(0, n, batch_size))
    with attack_context(target):
        for b, start in enumerate(starts):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            with torch.no_grad():
                robust = (target(xb.to(tdev)).argmax(1) == yb.to(tdev)).cpu()
            fb = torch.where(robust, k, -1)
            sb = torch.full_like(fb, -1)
            for i, eps in enumerate(eps_sorted):
                alive = robust.clone() if skip is None else robust & ~skip[i, start : start + batch_size]
                for s, source in enumerate(sources):
                    sdev = model_device(source)
                    for a, spec in enumerate(specs):
                        rows = alive.nonzero().squeeze(1)
                        if rows.numel() == 0:
                            break
                        xr = xb[rows].to(sdev)
                        x_adv = spec.run(source, xr, yb[rows].to(sdev), norm=norm, eps=eps,
                                         seed=attack_seed(seed, a), return_best=False)
                        x_adv, xr = x_adv.to(tdev), xr.to(tdev)
                        with torch.no_grad():
                            wrong = (target(x_adv).argmax(1) != yb[rows].to(tdev)).cpu()
                        feasible = threat.contains(xr, x_adv, eps).cpu()
                        violations += int((wrong & ~feasible).sum())
                        hit = rows[wrong & feasible]
                        robust[hit] = False  # broken at every larger ε too
                        alive[hit] = False
                        fb[hit] = i
                        sb[hit] = s
            first_broken[start : start + batch_size] = fb
            by_source[start : start + batch_size] = sb
            if progress is not None:
                progress(f"transfer batch {b + 1}/{len(starts)}: "
                         f"{min(start + batch_size, n)}/{n} examples")
    return first_broken, by_source, violations


def transfer_success(
    target: nn.Module,
    sources: Sequence[nn.Module],
    x: Tensor,
    y: Tensor,
    *,
    norm: str,
    epsilons: Sequence[float],
    suite: str | Sequence[AttackSpec] = "paper",
    restarts: int | None = None,
    batch_size: int = 500,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Tensor:
    """Which examples the sources' white-box adversarial examples break on the target.

    Paper: Ding et al., MMA training, ICLR 2020, §4 and App. D: the
    examples generated white-box on each source model (every attack of ``suite``, same ε)
    are applied to ``target``. Norms: ``"linf"``, ``"l2"``, ``"l1"``.

    Args:
        target: classifier ``[B, C, H, W] -> [B, K]`` (logits, or a
            :class:`~wideberth.evaluation.ensemble.MajorityVoteEnsemble`: only its argmax is
            used); evaluated in eval mode, modes restored.
        sources: non-empty list of classifiers with the same K (not ensembles: pass their
            members). Each is attacked by :func:`transfer_examples` (same seeds for all).
        x: images ``[N, C, H, W]`` in [0, 1]; y: labels ``[N]``.
        norm, epsilons: threat model and radii > 0 (any order; rows in increasing order).
        suite, restarts: the attacks run on every source (see :func:`wideberth.evaluate`).
        batch_size, seed, progress: as in :func:`wideberth.evaluate`.

    Returns:
        bool ``[len(set(epsilons)), N]``: row i is True where the target is broken at the
        i-th smallest ε by some source's example at that or a smaller ε, or misclassifies
        the clean input (a clean error is never robust). Non-decreasing down the rows.
    """
    norm = normalize_norm(norm)
    _check_data(x, y)
    eps_sorted = check_epsilons(epsilons)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    sources = _check_sources(target, sources, x)
    specs, _ = resolve_suite(suite, norm, tuple(x.shape[1:]), restarts)
    first_broken, _, violations = _transfer(
        target, sources, x, y, norm, eps_sorted, specs, batch_size, seed, None, progress
    )
    if violations:
        warnings.warn(f"{violations} transfer example(s) left their ε-ball or the [0, 1] box and "
                      "were not counted: an attack is broken", RuntimeWarning, stacklevel=2)
    return success_matrix(first_broken, len(eps_sorted))


@dataclass
class CombinedReport:
    """The result of :func:`combined_evaluation` (MMA, ICLR 2020, §4, App. F Tables 4–15).

    Attributes:
        n, norm, suite, epsilons, sources: what was evaluated (ε's in increasing order).
        clean_accuracy: the target's clean accuracy.
        robust_accuracy_whitebox, robust_accuracy_combined: ``{str(ε): fraction}``.
        transfer_gap: ``{str(ε): RobAcc_whitebox − RobAcc_combined}`` (≥ 0).
        avg_acc_*, avg_rob_acc_*: AvgAcc (k + 1 terms) and AvgRobAcc (k terms) of both
            sets and their gap (whitebox − combined).
        broken_by_source: ``{str(ε): {source name: count}}``: examples the white-box suite
            left robust at ε that a source's example broke first at ε.
        success_whitebox, success_combined: bool ``[len(epsilons), n]`` (clean errors True).
        flags: the white-box report's flags plus transfer sanity warnings.
    """

    n: int
    norm: str
    suite: str
    epsilons: list[float]
    sources: list[str]
    clean_accuracy: float
    robust_accuracy_whitebox: dict[str, float]
    robust_accuracy_combined: dict[str, float]
    transfer_gap: dict[str, float]
    avg_acc_whitebox: float
    avg_acc_combined: float
    avg_acc_gap: float
    avg_rob_acc_whitebox: float
    avg_rob_acc_combined: float
    avg_rob_acc_gap: float
    broken_by_source: dict[str, dict[str, int]]
    success_whitebox: Tensor
    success_combined: Tensor
    flags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the success matrices left out)."""
        return {k: v for k, v in asdict(self).items() if not k.startswith("success_")}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def combined_evaluation(
    target: nn.Module,
    sources: Sequence[nn.Module],
    x: Tensor,
    y: Tensor,
    *,
    norm: str,
    epsilons: Sequence[float],
    suite: str | Sequence[AttackSpec] = "paper",
    restarts: int | None = None,
    batch_size: int = 500,
    seed: int = 0,
    whitebox: EvalReport | None = None,
    source_names: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> CombinedReport:
    """White-box and combined (white-box + transfer) robust accuracy, and the TransferGap.

    Paper: Ding et al., MMA training, ICLR 2020, §4, App. D and F (Tables 4–15): per ε, an example is robust under the combined set iff the target classifies it
    correctly, no white-box attack of ``suite`` breaks it and no example generated
    white-box on a source breaks it. ``TransferGap(ε) = RobAcc_whitebox(ε) −
    RobAcc_combined(ε)``; the same difference is reported for AvgAcc and AvgRobAcc.
    Norms: ``"linf"``, ``"l2"``, ``"l1"``.

    Args:
        target: classifier ``[B, C, H, W] -> [B, K]`` (logits).
        sources: non-empty list of the other models of the pool (same K; not ensembles).
        x: images ``[N, C, H, W]`` in [0, 1]; y: labels ``[N]``.
        norm, epsilons: threat model and radii > 0.
        suite, restarts: the attacks, used white-box on the target and on every source.
        batch_size, seed, progress: as in :func:`wideberth.evaluate`.
        whitebox: a finished white-box report of ``target`` on the same ``(x, y)``, norm and
            ε's (skips the white-box run). Required when the target is a
            :class:`~wideberth.evaluation.ensemble.MajorityVoteEnsemble`: pass
            ``evaluate_ensemble(...)``, the white-box attacks for ensembles.
        source_names: names in ``broken_by_source`` (default ``source0``, ``source1``, …).

    Returns:
        :class:`CombinedReport`.
    """
    norm = normalize_norm(norm)
    _check_data(x, y)
    eps_sorted = check_epsilons(epsilons)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    sources = _check_sources(target, sources, x)
    names = [f"source{i}" for i in range(len(sources))] if source_names is None else list(source_names)
    if len(names) != len(sources) or len(set(names)) != len(names):
        raise ValueError(f"source_names must be {len(sources)} unique names; got {names}")
    specs, suite_name = resolve_suite(suite, norm, tuple(x.shape[1:]), restarts)
    n, k = x.shape[0], len(eps_sorted)
    if whitebox is None:
        if isinstance(target, MajorityVoteEnsemble):
            raise ValueError(
                "the target is a majority-vote ensemble: single-model attacks on its vote score "
                "are weak; pass whitebox=evaluate_ensemble(members, x, y, ...)"
            )
        whitebox = evaluate(target, x, y, norm=norm, epsilons=eps_sorted, suite=specs,
                            restarts=restarts, batch_size=batch_size, seed=seed, progress=progress)
    elif (whitebox.n != n or whitebox.norm != norm or list(whitebox.epsilons) != eps_sorted
          or tuple(whitebox.success.shape) != (k, n)):
        raise ValueError(
            f"whitebox does not match this evaluation: it has n={whitebox.n}, "
            f"norm={whitebox.norm}, epsilons={whitebox.epsilons}; expected n={n}, norm={norm}, "
            f"epsilons={eps_sorted}"
        )
    wb_success = whitebox.success.cpu().bool()
    first_broken, by_source, violations = _transfer(
        target, sources, x, y, norm, eps_sorted, specs, batch_size, seed, wb_success, progress
    )
    combined = wb_success | success_matrix(first_broken, k)
    rob_wb, rob_comb = robust_accuracies(wb_success, eps_sorted), robust_accuracies(combined, eps_sorted)
    clean = whitebox.clean_accuracy
    avg_acc_wb, avg_rob_wb = mma_averages(clean, rob_wb)
    avg_acc_comb, avg_rob_comb = mma_averages(clean, rob_comb)
    broken_by_source = broken_first_by(first_broken, by_source, names, eps_sorted)
    flags = list(whitebox.flags)
    if violations:
        flags.append(f"{violations} transfer example(s) left their ε-ball or the [0, 1] box and "
                     "were not counted: an attack is broken")
    return CombinedReport(
        n=n, norm=norm, suite=suite_name if whitebox.suite != "ensemble" else f"ensemble+{suite_name}",
        epsilons=eps_sorted, sources=names, clean_accuracy=clean,
        robust_accuracy_whitebox=rob_wb, robust_accuracy_combined=rob_comb,
        transfer_gap={key: rob_wb[key] - rob_comb[key] for key in rob_wb},
        avg_acc_whitebox=avg_acc_wb, avg_acc_combined=avg_acc_comb,
        avg_acc_gap=avg_acc_wb - avg_acc_comb, avg_rob_acc_whitebox=avg_rob_wb,
        avg_rob_acc_combined=avg_rob_comb, avg_rob_acc_gap=avg_rob_wb - avg_rob_comb,
        broken_by_source=broken_by_source, success_whitebox=wb_success, success_combined=combined,
        flags=flags,
    )
