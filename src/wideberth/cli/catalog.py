"""What the parser shows without importing PyTorch: the registered attacks' names, kinds,
norms, one-line summaries, papers, aliases and default steps, and the evaluation suites'
names. ``wideberth --help``, ``--version`` and every ``wideberth CMD --help`` build their
choices and help texts from this table, so they answer in a fraction of a second; the
commands themselves look every name up in :data:`wideberth.attacks.ATTACKS` and the
suites again when they run. ``tests/test_cli_front_door.py`` checks that this table equals
the registry entry for entry, so it cannot drift from it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ATTACK_INFO", "SUITE_NAMES", "AttackInfo", "attack_info", "info_names"]


@dataclass(frozen=True)
class AttackInfo:
    """What a help text says about one registered attack (the fields of
    :class:`wideberth.attacks.registry.AttackEntry` that need no PyTorch)."""

    name: str
    kind: str
    norms: tuple[str, ...]
    summary: str
    paper: str
    aliases: tuple[str, ...] = ()
    default_steps: int = 100


_P = ("linf", "l2", "l1")

#: the attack registry, in registration order, as the parser shows it
ATTACK_INFO: tuple[AttackInfo, ...] = (
    AttackInfo("fgsm", "fixed-eps", _P,
               "one gradient step of size ε (FGSM for ℓ∞, FGM for ℓ2/ℓ1)",
               "Goodfellow, Shlens & Szegedy, ICLR 2015", default_steps=1),
    AttackInfo("pgd", "fixed-eps", _P,
               "projected gradient descent, CE loss, restarts, best iterate",
               "Madry et al., ICLR 2018", default_steps=40),
    AttackInfo("apgd-ce", "fixed-eps", ("linf", "l2"),
               "APGD on the cross-entropy (AutoAttack's first)", "Croce & Hein, ICML 2020"),
    AttackInfo("apgd-t", "fixed-eps", ("linf", "l2"),
               "targeted APGD on the DLR loss over the top classes", "Croce & Hein, ICML 2020",
               aliases=("apgd-dlr",)),
    AttackInfo("square", "fixed-eps", ("linf", "l2"),
               "score-based black-box Square attack (--steps is the query budget; 5000 in the "
               "paper)", "Andriushchenko et al., ECCV 2020", default_steps=5000),
    AttackInfo("anpgd", "minimal-norm", _P,
               "MMA's adaptive-norm PGD: shortest successful perturbation along the PGD ray",
               "Ding et al., ICLR 2020 (MMA), Algorithm 1", default_steps=50),
    AttackInfo("fmn", "minimal-norm", _P,
               "fast minimum-norm attack (counts where its distance ≤ ε)",
               "Pintor et al., NeurIPS 2021"),
    AttackInfo("cw-l2", "minimal-norm", ("l2",),
               "Carlini-Wagner ℓ2 (counts where its distance ≤ ε)",
               "Carlini & Wagner, IEEE S&P 2017", aliases=("cw",)),
)

#: the evaluation suites (:data:`wideberth.evaluation.SUITES`), in their order
SUITE_NAMES: tuple[str, ...] = ("quick", "paper", "standard")


def info_names(kind: str | None = None) -> tuple[str, ...]:
    """Canonical names of the attacks in :data:`ATTACK_INFO`, optionally of one ``kind``."""
    return tuple(a.name for a in ATTACK_INFO if kind is None or a.kind == kind)


def attack_info(name: str) -> AttackInfo | None:
    """The entry of ``name`` (a canonical name or an alias), or None if it is not listed."""
    for a in ATTACK_INFO:
        if name == a.name or name in a.aliases:
            return a
    return None
