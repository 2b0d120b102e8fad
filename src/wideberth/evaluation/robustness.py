"""Robust accuracy over an ε grid: attack suites, ε-grid reuse, streaming, resumable state.

``evaluate(model, x, y, norm=..., epsilons=[...], suite=...)`` attacks every example at
every ε with every attack of a suite and reports, per ε, the fraction of examples that
stay correctly classified under **all** of them (the pointwise worst case; a clean error is
never robust), plus the MMA paper's summaries (specs/mma.md §5.1):

* ``AvgAcc``    = mean of {clean accuracy, RobAcc(ε₁), …, RobAcc(ε_k)} (k + 1 terms);
* ``AvgRobAcc`` = mean of {RobAcc(ε₁), …, RobAcc(ε_k)} (k terms).

Suites (fixed presets; pass a list of :class:`AttackSpec` for a custom one):

* ``quick``: PGD-20 with CE and with the CW loss, one run each (step 2.5·ε/20);
* ``paper``: MMA's protocol (specs/mma.md §5.2): 100-step PGD, ``restarts`` random starts
  split between CE (N − N//2) and CW (N//2), step ε/4, or ε/40 for ℓ∞ on 28×28 grey
  images (MNIST's rule, also used for Fashion-MNIST);
* ``standard``: APGD-CE and targeted APGD-DLR (100 steps each, AutoAttack's white-box
  pair) followed by the ``paper`` PGD.

Efficiency (what makes an 8-ε curve cheap): ε's are processed in increasing order, and an
attack only ever runs on the examples still robust. A point broken at ε is broken at every
larger ε (its adversarial example lies in every larger ball, so it is reused, never
re-attacked); a point robust at a larger ε was robust at every smaller one. Data are
streamed in batches, so memory does not grow with the dataset, and with ``state_file``
the per-example results are saved after every batch (atomically) and an interrupted
evaluation resumes where it stopped.

Every adversarial example an attack returns is re-checked before it counts: inside its
ε-ball (with a 1e-5 relative tolerance) and the [0, 1] box, and misclassified by a fresh
forward pass. A violation is reported in ``flags`` and the example is not counted broken.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_inputs
from ..attacks.auto_pgd import apgd_ce, apgd_dlr_targeted
from ..attacks.base import attack_context, looks_like_probabilities, warn_if_probabilities
from ..attacks.projected_gradient import pgd
from ..fileio import atomic_write_text
from ..threat import get_threat, normalize_norm
from . import sanity as sanity_checks
from .clean import model_device

__all__ = ["AttackSpec", "EvalReport", "SUITES", "suite_attacks", "evaluate"]

FEASIBILITY_RTOL = 1e-5


@dataclass(frozen=True)
class AttackSpec:
    """One attack of a suite.

    Attributes:
        attack: ``"pgd"``, ``"apgd-ce"`` or ``"apgd-dlr"`` (targeted DLR, AutoAttack's APGD-T).
        steps: iterations per run.
        restarts: runs (each attacks only the examples earlier runs left unbroken).
        loss: PGD's loss: ``"ce"`` or ``"cw"`` (MMA's evaluation CW loss, AdverTorch's
            ``max(LM + 50, 0)``, specs/mma.md ambiguity A10), or a
            callable ``(logits, y) -> [B]`` (give it a ``label``; e.g. an ensemble loss).
        step: PGD's step size as a fraction of ε (``None``: 2.5/steps).
        init: PGD's start (see :func:`wideberth.attacks.pgd`).
        label: name in reports.
    """

    attack: str
    steps: int
    restarts: int = 1
    loss: str | Callable[[Tensor, Tensor], Tensor] = "ce"
    step: float | None = None
    init: str = "auto"
    label: str = ""

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        if self.attack == "pgd":
            return f"pgd-{self.loss}-{self.steps}x{self.restarts}"
        return f"{self.attack}-{self.steps}x{self.restarts}"


def _paper_step(norm: str, image_shape: Sequence[int]) -> float:
    """MMA's step rule: ε/40 for ℓ∞ on 1×28×28 images (MNIST), else ε/4."""
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
        return [AttackSpec("apgd-ce", 100, apgd_runs), AttackSpec("apgd-dlr", 100, apgd_runs)] + paper
    raise ValueError(f"unknown suite {suite!r}; valid suites: {', '.join(SUITES)}")


SUITES = ("quick", "paper", "standard")


def _run_spec(spec: AttackSpec, model: nn.Module, x: Tensor, y: Tensor, norm: str, eps: float, seed: int,
              return_best: bool = True) -> Tensor:
    """x_adv of one suite attack; ``return_best=False``: PGD's final iterates (for transfer)."""
    if spec.attack == "pgd":
        loss_kwargs = {"form": "advertorch"} if spec.loss == "cw" else None
        step = None if spec.step is None else spec.step * eps
        # early stop changes nothing for the rows still attacked (every computation is per
        # example) and only saves the work on broken ones; last iterates need the full run
        return pgd(model, x, y, norm=norm, eps=eps, steps=spec.steps, step_size=step, loss=spec.loss,
                   loss_kwargs=loss_kwargs, restarts=spec.restarts, init=spec.init, seed=seed,
                   return_best=return_best, early_stop=return_best, check=False)
    if spec.attack == "apgd-ce":
        return apgd_ce(model, x, y, norm=norm, eps=eps, steps=spec.steps, restarts=spec.restarts,
                       seed=seed, check=False)
    if spec.attack == "apgd-dlr":
        return apgd_dlr_targeted(model, x, y, norm=norm, eps=eps, steps=spec.steps,
                                 restarts=spec.restarts, seed=seed, check=False)
    raise ValueError(f"unknown attack {spec.attack!r} in a suite; valid: pgd, apgd-ce, apgd-dlr")


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
        return json.dumps(self.to_dict(), indent=2)


def _eps_key(e: float) -> str:
    return f"{e:g}"


def _fingerprint(model: nn.Module, x: Tensor, y: Tensor, meta: dict[str, Any]) -> str:
    """Identifies an evaluation for resuming: the data, the settings and the weights."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(meta, sort_keys=True).encode())
    h.update(x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    h.update(y.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
    for k, v in sorted(model.state_dict().items()) if isinstance(model, nn.Module) else []:
        h.update(k.encode())
        h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _attack_batch(
    model: nn.Module,
    xb: Tensor,
    yb: Tensor,
    correct: Tensor,
    specs: Sequence[AttackSpec],
    norm: str,
    eps_sorted: Sequence[float],
    seed: int,
    reuse: str,
) -> tuple[Tensor, Tensor, int]:
    """One batch over the grid: (first broken ε index [B] on the CPU: k = never, −1 = clean
    error; index of the attack that broke it [B] (−1: none); infeasible examples seen)."""
    threat = get_threat(norm)
    k = len(eps_sorted)
    fb = torch.where(correct.cpu(), k, -1)
    bb = torch.full_like(fb, -1)
    violations = 0
    adv_norm = torch.full((xb.shape[0],), math.inf, device=xb.device, dtype=xb.dtype)

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
            x_adv = _run_spec(spec, model, xt, yt, norm, eps, seed + 7919 * a)
            with torch.no_grad():
                wrong = model(x_adv).argmax(1) != yt
            d = threat.norm(x_adv - xt)
            feasible = (d <= eps * (1 + FEASIBILITY_RTOL)) & (x_adv >= 0).flatten(1).all(1) & (
                x_adv <= 1).flatten(1).all(1)
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

    Papers: the MMA paper's evaluation protocol (Ding et al., ICLR 2020, §5 / App. D) and
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
    get_threat(norm)
    eps_sorted = sorted({float(e) for e in epsilons})
    if not eps_sorted:
        raise ValueError("epsilons is empty: give at least one radius, e.g. epsilons=[0.1, 0.2]")
    if any(not math.isfinite(e) or e <= 0 for e in eps_sorted):
        raise ValueError(f"every ε must be a finite number > 0; got {list(epsilons)}")
    check_inputs(x, y, None)
    if x.dim() != 4:
        raise ValueError(f"x must be images of shape [N, C, H, W]; got shape {list(x.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    if reuse not in ("up", "both"):
        raise ValueError(f"reuse must be 'up' or 'both'; got {reuse!r}")
    if isinstance(suite, str):
        specs = suite_attacks(suite, norm, tuple(x.shape[1:]), restarts)
        suite_name = suite
    else:
        specs = list(suite)
        if not specs or not all(isinstance(s, AttackSpec) for s in specs):
            raise ValueError("a custom suite must be a non-empty list of AttackSpec")
        suite_name = "custom"
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"attack names in a suite must be unique; got {names}")

    n, k = x.shape[0], len(eps_sorted)
    device = model_device(model)
    flags: list[str] = []
    mode_dependent = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)
    if isinstance(model, nn.Module) and any(
        m.training and isinstance(m, mode_dependent) for m in model.modules()
    ):
        flags.append("the model was in train mode (its dropout/BatchNorm behave differently "
                     "there); it was evaluated in eval mode, and its modes were restored")

    # per-example results: first ε index at which the example was broken (k: never),
    # -1 for a clean error; and the attack that broke it first
    first_broken = torch.full((n,), k, dtype=torch.int64)
    breaker = torch.full((n,), -1, dtype=torch.int64)
    violations = 0
    done_batches = 0
    suite_meta = [{**asdict(s), "loss": s.loss if isinstance(s.loss, str) else s.name} for s in specs]
    meta = {"norm": norm, "epsilons": eps_sorted, "suite": suite_meta,
            "seed": seed, "batch_size": batch_size, "n": n, "reuse": reuse}
    state_path = Path(state_file) if state_file is not None else None
    fingerprint = _fingerprint(model, x, y, meta) if state_path is not None else ""
    if state_path is not None and state_path.exists():
        saved = json.loads(state_path.read_text(encoding="utf-8"))
        if saved.get("fingerprint") != fingerprint:
            raise ValueError(
                f"{state_path} holds the state of a different evaluation (other data, weights "
                "or settings); delete it or choose another state_file"
            )
        done_batches = int(saved["done_batches"])
        first_broken = torch.tensor(saved["first_broken"], dtype=torch.int64)
        breaker = torch.tensor(saved["breaker"], dtype=torch.int64)
        violations = int(saved["violations"])
        flags = list(saved["flags"])

    starts = list(range(0, n, batch_size))
    with attack_context(model):
        for b, start in enumerate(starts):
            if b < done_batches:
                continue
            xb = x[start : start + batch_size].to(device)
            yb = y[start : start + batch_size].to(device)
            with torch.no_grad():
                logits = model(xb)
            if b == 0:
                warn_if_probabilities(logits)
                if looks_like_probabilities(logits):
                    flags.append("the model's outputs look like probabilities, not logits")
            fb, bb, bad = _attack_batch(model, xb, yb, logits.argmax(1) == yb, specs, norm,
                                        eps_sorted, seed, reuse)
            violations += bad
            first_broken[start : start + batch_size] = fb
            breaker[start : start + batch_size] = bb
            if state_path is not None:
                atomic_write_text(state_path, json.dumps({
                    "fingerprint": fingerprint, "done_batches": b + 1,
                    "first_broken": first_broken.tolist(), "breaker": breaker.tolist(),
                    "violations": violations, "flags": flags,
                }))
            if progress is not None:
                progress(f"batch {b + 1}/{len(starts)}: {min(start + batch_size, n)}/{n} examples")

    success = torch.stack([first_broken <= i for i in range(k)]) if k else torch.zeros(0, n, dtype=torch.bool)
    clean_acc = float((first_broken >= 0).double().mean())
    rob = {_eps_key(e): float((~success[i]).double().mean()) for i, e in enumerate(eps_sorted)}
    rob_values = list(rob.values())
    broken_by = {
        _eps_key(e): {names[a]: int(((first_broken == i) & (breaker == a)).sum()) for a in range(len(specs))}
        for i, e in enumerate(eps_sorted)
    }
    if violations:
        flags.append(f"{violations} adversarial example(s) left their ε-ball or the [0, 1] box and "
                     "were not counted: an attack is broken")
    flags += sanity_checks.monotonicity_check(rob)
    if sanity and n > 0:
        m = min(sanity_n, n)
        xs, ys = x[:m].to(device), y[:m].to(device)
        flags += sanity_checks.unbounded_attack_check(model, xs, ys, norm, seed=seed)
        flags += sanity_checks.zero_gradient_check(model, xs, ys)
        flags += sanity_checks.black_box_check(
            model, xs, ys, norm, eps_sorted[-1], ~success[-1, :m].to(device), seed=seed)
    return EvalReport(
        n=n, norm=norm, suite=suite_name, epsilons=eps_sorted, clean_accuracy=clean_acc,
        robust_accuracy=rob, avg_acc=(clean_acc + sum(rob_values)) / (k + 1),
        avg_rob_acc=sum(rob_values) / k, success=success, broken_by=broken_by, attacks=names,
        flags=flags,
    )
