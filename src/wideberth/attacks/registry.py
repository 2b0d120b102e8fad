"""The attack registry: every attack of wideberth, registered once.

One table (:data:`ATTACKS`) names each attack with its canonical name, its **kind** and the
norms it supports, and holds the functions that run it. Everything that picks an attack by
name reads this table: ``wideberth attack --attack`` (choices and help), the evaluation
suites (:class:`wideberth.evaluation.AttackSpec`), :func:`wideberth.attacks.estimate_margin`
(its ``method``) and the shared attack contract tests.

Kinds:

* ``"fixed-eps"``: the attack searches inside a ball of given radius ε and returns
  ``x_adv`` [B, ...] in ball ∩ box (FGSM, PGD, APGD-CE, APGD-T, Square).
* ``"minimal-norm"``: the attack looks for the *smallest* perturbation that changes the
  prediction and returns a :class:`MinimalNormResult`-like object with ``distance`` [B],
  ``found`` [B] and ``x_adv`` (FMN, CW-ℓ2, AN-PGD's search). At a fixed budget ε it counts
  only where ``distance ≤ ε`` (elsewhere ``x`` itself is returned).

Every entry has a uniform fixed-ε runner
``run(model, x, y, *, norm, eps, steps, restarts, seed, check, **options) -> x_adv`` and,
for minimal-norm attacks, a uniform search
``minimize(model, x, y, *, norm, steps, seed, check, **options) -> result``.

The fixed-ε runner of FMN and CW-ℓ2 thresholds their search (``run.__wrapped__`` is the
``minimize`` it thresholds); AN-PGD's runner is one AN-PGD pass at ``ε_init = ε_max = ε``
per example (Ding et al., ICLR 2020, Algorithm 1, with a logit-margin bisection keeping the
smallest verified scale), and its ``minimize`` is the repeated margin search
:func:`~wideberth.attacks.mma_margins.anpgd_margin`.

Register an attack of your own with :func:`register_attack` (it then appears in the CLI,
the suites and the contract tests). :func:`attack_table` renders the table (the attacks
table of :mod:`wideberth.attacks` is its text).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from .._checks import check_eps
from ..threat import eps_vector, normalize_norm
from .anpgd import an_pgd
from .auto_pgd import apgd_ce, apgd_dlr_targeted
from .base import ModelLike, prepare
from .carlini_wagner import cw_l2
from .fast_minimum_norm import fmn
from .mma_margins import anpgd_margin
from .projected_gradient import fgm, pgd
from .random_search import square

__all__ = [
    "ATTACKS",
    "AttackEntry",
    "AttackKind",
    "MinimalNormLike",
    "attack_names",
    "attack_table",
    "get_attack",
    "register_attack",
    "run_attack",
]

AttackKind = Literal["fixed-eps", "minimal-norm"]
KINDS: tuple[str, ...] = ("fixed-eps", "minimal-norm")


class MinimalNormLike(Protocol):
    """What a minimal-norm search returns: per-example distances and points."""

    distance: Tensor
    found: Tensor
    x_adv: Tensor


@dataclass(frozen=True)
class AttackEntry:
    """One registered attack.

    Attributes:
        name: canonical name (lower case, ``-`` separated), e.g. ``"apgd-t"``.
        kind: ``"fixed-eps"`` or ``"minimal-norm"``.
        norms: canonical norms it supports (``"linf"``, ``"l2"``, ``"l1"``).
        summary: one line for help texts.
        paper: the paper it implements (authors, venue, year).
        run: the fixed-ε runner ``run(model, x, y, *, norm, eps, steps, restarts, seed,
            check, **options) -> x_adv [B, ...]``.
        function: the public function a user calls directly (``wideberth.attacks.pgd`` …).
        minimize: minimal-norm attacks only: ``minimize(model, x, y, *, norm, steps, seed,
            check, **options)`` returning ``distance`` [B], ``found`` [B], ``x_adv``.
        gradient_free: the attack only queries the model's scores (no gradients).
        aliases: other names still accepted: :func:`get_attack` warns
            (``DeprecationWarning``) unless ``warn=False``; ``estimate_margin`` accepts the
            aliases of minimal-norm attacks (``"cw"``) silently.
        default_steps: the iterations (or queries) used when the caller gives none.
    """

    name: str
    kind: AttackKind
    norms: tuple[str, ...]
    summary: str
    paper: str
    run: Callable[..., Tensor]
    function: Callable[..., Any]
    minimize: Callable[..., MinimalNormLike] | None = None
    gradient_free: bool = False
    aliases: tuple[str, ...] = field(default_factory=tuple)
    default_steps: int = 100

    def supports(self, norm: str) -> bool:
        """Whether the attack supports ``norm`` (aliases such as ``"inf"`` accepted)."""
        return normalize_norm(norm) in self.norms

    def check_norm(self, norm: str) -> str:
        """The canonical ``norm``, or a ``ValueError`` naming the supported ones."""
        canonical = normalize_norm(norm)
        if canonical not in self.norms:
            raise ValueError(
                f"attack {self.name!r} supports norm {', '.join(self.norms)}; got {norm!r}"
            )
        return canonical


_REGISTRY: dict[str, AttackEntry] = {}
_ALIASES: dict[str, str] = {}

#: canonical name → entry (read-only view of the registry)
ATTACKS: Mapping[str, AttackEntry] = MappingProxyType(_REGISTRY)


def register_attack(entry: AttackEntry, *, replace: bool = False) -> AttackEntry:
    """Add ``entry`` to the registry (``replace=True`` to overwrite an entry of that name)."""
    if entry.kind not in KINDS:
        raise ValueError(f"attack kind must be one of {', '.join(KINDS)}; got {entry.kind!r}")
    if entry.kind == "minimal-norm" and entry.minimize is None:
        raise ValueError(f"minimal-norm attack {entry.name!r} needs a minimize function")
    taken = set(_REGISTRY) | set(_ALIASES)
    for name in (entry.name, *entry.aliases):
        if name in taken and not replace:
            raise ValueError(f"attack name {name!r} is already registered")
    _REGISTRY[entry.name] = entry
    for alias in entry.aliases:
        _ALIASES[alias] = entry.name
    return entry


def attack_names(kind: str | None = None, norm: str | None = None) -> tuple[str, ...]:
    """Canonical names of the registered attacks, optionally of one ``kind`` and/or
    supporting ``norm``, in registration order."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    canonical = None if norm is None else normalize_norm(norm)
    return tuple(
        e.name for e in _REGISTRY.values()
        if (kind is None or e.kind == kind) and (canonical is None or canonical in e.norms)
    )


def get_attack(name: str, *, warn: bool = True) -> AttackEntry:
    """The entry registered as ``name``; an alias resolves (with a ``DeprecationWarning``
    unless ``warn=False``), an unknown name raises ``ValueError`` listing the valid names."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _ALIASES:
        target = _ALIASES[name]
        if warn:
            warnings.warn(f"attack name {name!r} is deprecated; use {target!r}",
                          DeprecationWarning, stacklevel=2)
        return _REGISTRY[target]
    raise ValueError(f"unknown attack {name!r}; choose from {', '.join(_REGISTRY)}")


def attack_table() -> str:
    """The registry as a reStructuredText table (name, kind, paper, norms), in registration
    order: the attacks table of :mod:`wideberth.attacks` is this text."""
    rows = [("attack", "kind", "paper", "norms")]
    rows += [(e.name + "".join(f" / {a}" for a in e.aliases), e.kind, e.paper, ", ".join(e.norms))
             for e in _REGISTRY.values()]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    rule = "  ".join("=" * w for w in widths)
    lines = [rule, "  ".join(c.ljust(w) for c, w in zip(rows[0], widths, strict=True)).rstrip(),
             rule]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in rows[1:]]
    return "\n".join([*lines, rule])


def run_attack(
    name: str,
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    *,
    norm: str = "linf",
    eps: float,
    steps: int = 40,
    restarts: int = 1,
    seed: int = 0,
    **options: Any,
) -> Tensor:
    """Run the attack registered as ``name`` at budget ``eps``; returns x_adv [B, ...].

    ``steps`` is the iteration count (Square: the query budget), ``restarts`` the number of
    runs where the attack has restarts; other keywords go to the attack's function. Shapes:
    x [B, ...] in [0, 1], y [B], eps a float or a per-example tensor [B].
    """
    entry = get_attack(name)
    entry.check_norm(norm)
    return entry.run(model, x, y, norm=norm, eps=eps, steps=steps, restarts=restarts,
                     seed=seed, **options)


def _within_budget(res: MinimalNormLike, x: Tensor, eps: float | Tensor) -> Tensor:
    """``res.x_adv`` where the minimal perturbation is found and ≤ ε, else ``x``."""
    e = torch.as_tensor(eps, dtype=res.distance.dtype, device=res.distance.device)
    within = res.found & (res.distance <= e)
    return torch.where(within.view(-1, *([1] * (x.dim() - 1))), res.x_adv, x)


# --- runners: the table's uniform signatures over each attack's own function -----------------

def _run_fgsm(model: ModelLike, x: Tensor, y: Tensor, *, norm: str, eps: float | Tensor,
              steps: int = 1, restarts: int = 1, seed: int = 0, **kw: Any) -> Tensor:
    return fgm(model, x, y, norm=norm, eps=eps, **kw)


def _run_pgd(model: ModelLike, x: Tensor, y: Tensor, *, norm: str, eps: float | Tensor,
             steps: int = 40, restarts: int = 1, seed: int = 0, **kw: Any) -> Tensor:
    return pgd(model, x, y, norm=norm, eps=eps, steps=steps, restarts=restarts, seed=seed, **kw)


def _run_apgd_ce(model: ModelLike, x: Tensor, y: Tensor, *, norm: str, eps: float | Tensor,
                 steps: int = 100, restarts: int = 1, seed: int = 0, **kw: Any) -> Tensor:
    return apgd_ce(model, x, y, norm=norm, eps=eps, steps=steps, restarts=restarts, seed=seed,
                   **kw)


def _run_apgd_t(model: ModelLike, x: Tensor, y: Tensor, *, norm: str, eps: float | Tensor,
                steps: int = 100, restarts: int = 1, seed: int = 0, **kw: Any) -> Tensor:
    return apgd_dlr_targeted(model, x, y, norm=norm, eps=eps, steps=steps, restarts=restarts,
                             seed=seed, **kw)


def _run_square(model: ModelLike, x: Tensor, y: Tensor, *, norm: str, eps: float | Tensor,
                steps: int = 5000, restarts: int = 1, seed: int = 0, **kw: Any) -> Tensor:
    return square(model, x, y, norm=norm, eps=eps, n_queries=steps, seed=seed, **kw)


def _run_anpgd(model: ModelLike, x: Tensor, y: Tensor, *, norm: str, eps: float | Tensor,
               steps: int = 40, restarts: int = 1, seed: int = 0, check: bool = True,
               **kw: Any) -> Tensor:
    # AN-PGD at ε_init = ε_max = ε (per example): PGD in the ε-ball, then the LM bisection
    # along its ray keeps the smallest verified scale; ε = 0 rows stay at x (AN-PGD needs ε > 0)
    if check:
        prepare(model, x, y, eps, norm)
    e = eps_vector(eps, x).detach()
    out = x.detach().clone()
    rows = torch.nonzero(e > 0).squeeze(1)
    if rows.numel() > 0:
        res = an_pgd(model, x[rows], y.to(x.device)[rows], norm=norm, eps_init=e[rows],
                     eps_max=e[rows], steps=steps, search_loss="lm", return_mode="upper",
                     seed=seed, check=False, **kw)
        out[rows] = res.x_adv
    return out


def _minimize_fmn(model: ModelLike, x: Tensor, y: Tensor, *, norm: str, steps: int = 100,
                  seed: int = 0, **kw: Any) -> MinimalNormLike:
    return fmn(model, x, y, norm=norm, steps=steps, **kw)  # deterministic: no seed


def _minimize_cw(model: ModelLike, x: Tensor, y: Tensor, *, norm: str = "l2",
                 steps: int | None = None, seed: int = 0, **kw: Any) -> MinimalNormLike:
    if normalize_norm(norm) != "l2":
        raise ValueError(f"Carlini-Wagner is an l2 attack; got norm={norm!r}")
    if steps is not None:
        kw["steps"] = steps
    return cw_l2(model, x, y, **kw)  # deterministic: no seed


def _minimize_anpgd(model: ModelLike, x: Tensor, y: Tensor, *, norm: str, steps: int = 50,
                    seed: int = 0, **kw: Any) -> MinimalNormLike:
    return anpgd_margin(model, x, y, norm, steps=steps, seed=seed, **kw)


def _fixed_eps_of(minimize: Callable[..., MinimalNormLike]) -> Callable[..., Tensor]:
    """The fixed-ε runner of a minimal-norm attack: its point where ``distance <= ε``
    (and found), ``x`` elsewhere."""

    def run(model: ModelLike, x: Tensor, y: Tensor, *, norm: str, eps: float | Tensor,
            steps: int = 100, restarts: int = 1, seed: int = 0, check: bool = True,
            **kw: Any) -> Tensor:
        if check:
            check_eps(eps, x.shape[0])
        res = minimize(model, x, y, norm=norm, steps=steps, seed=seed, check=check, **kw)
        return _within_budget(res, x, eps)

    run.__wrapped__ = minimize  # type: ignore[attr-defined]  # the search it thresholds
    return run


_P = ("linf", "l2", "l1")

register_attack(AttackEntry(
    "fgsm", "fixed-eps", _P, "one gradient step of size ε (FGSM for ℓ∞, FGM for ℓ2/ℓ1)",
    "Goodfellow, Shlens & Szegedy, ICLR 2015", _run_fgsm, fgm, default_steps=1))
register_attack(AttackEntry(
    "pgd", "fixed-eps", _P, "projected gradient descent, CE loss, restarts, best iterate",
    "Madry et al., ICLR 2018", _run_pgd, pgd, default_steps=40))
register_attack(AttackEntry(
    "apgd-ce", "fixed-eps", ("linf", "l2"), "APGD on the cross-entropy (AutoAttack's first)",
    "Croce & Hein, ICML 2020", _run_apgd_ce, apgd_ce))
register_attack(AttackEntry(
    "apgd-t", "fixed-eps", ("linf", "l2"), "targeted APGD on the DLR loss over the top classes",
    "Croce & Hein, ICML 2020", _run_apgd_t, apgd_dlr_targeted, aliases=("apgd-dlr",)))
register_attack(AttackEntry(
    "square", "fixed-eps", ("linf", "l2"),
    "score-based black-box Square attack (--steps is the query budget; 5000 in the paper)",
    "Andriushchenko et al., ECCV 2020", _run_square, square, gradient_free=True,
    default_steps=5000))
register_attack(AttackEntry(
    "anpgd", "minimal-norm", _P,
    "MMA's adaptive-norm PGD: shortest successful perturbation along the PGD ray",
    "Ding et al., ICLR 2020 (MMA), Algorithm 1", _run_anpgd, an_pgd, minimize=_minimize_anpgd,
    default_steps=50))
register_attack(AttackEntry(
    "fmn", "minimal-norm", _P, "fast minimum-norm attack (counts where its distance ≤ ε)",
    "Pintor et al., NeurIPS 2021", _fixed_eps_of(_minimize_fmn), fmn, minimize=_minimize_fmn))
register_attack(AttackEntry(
    "cw-l2", "minimal-norm", ("l2",), "Carlini-Wagner ℓ2 (counts where its distance ≤ ε)",
    "Carlini & Wagner, IEEE S&P 2017", _fixed_eps_of(_minimize_cw), cw_l2, minimize=_minimize_cw,
    aliases=("cw",)))
