"""PGD adversarial training (Madry et al.) and PGD with linear ε scaling (PGDLS).

**PGD-AT** (Madry et al., *Towards Deep Learning Models Resistant to Adversarial Attacks*,
ICLR 2018; the "PGD-ε" baseline of Ding et al., *MMA Training*, ICLR 2020, specs/mma.md §4)
minimises the robust cross-entropy

    min_θ  E  max_{‖δ‖ ≤ ε, x+δ ∈ [0, 1]}  CE(f_θ(x + δ), y)

with the inner maximisation approximated by PGD (:func:`wideberth.attacks.pgd`), and the
θ-update taken on the **last** PGD iterate (as in both papers). Optionally the clean loss is
mixed in: ``(1 − w)·CE(f(x_adv), y) + w·CE(f(x), y)`` (``clean_weight = w``; default 0,
"pure Madry", the MMA paper's default, ambiguity A7 of specs/mma.md §10).

**PGDLS** (MMA paper §4, "PGD with linear scaling") is PGD-AT whose ε grows linearly from 0
to the target over the first ``ramp_epochs`` epochs (50 in the paper), then stays constant.
The ramp is applied per optimiser step (ambiguity A8); see :func:`pgdls_eps` for the exact
convention. The PGD step size scales with the current ε (specs/mma.md §9.21).

Norms: anything :func:`wideberth.threat.get_threat` accepts (``"linf"``, ``"l2"``,
``"l1"``); the papers use ℓ∞ and ℓ2.

MMA's settings (specs/mma.md §6.2, App. C): 40-step (MNIST) / 10-step (CIFAR-10) PGD on the
**soft logit margin** (``attack_loss: slm``) with step ``2.5·ε/steps`` and advertorch's
random start (``init: advertorch``); the θ-loss is CE. SLM and CE give identical sign /
normalised-gradient PGD iterates (Prop. 2.4), but SLM does not saturate in float32.

BatchNorm during the attack (``attack_bn``):

* ``"eval"`` (default; what MMA's and TRADES' code do): the attack runs the model in eval
  mode, so BatchNorm normalises with its running statistics and dropout is off; the model's
  modes (and the BN running statistics) are exactly as before once the attack returns.
  The attack therefore targets a slightly different function (eval-mode BN) from the one
  the loss is computed on (train-mode BN, batch statistics of the adversarial batch).
* ``"train"``: the attack calls the model in train mode (through a plain callable, which
  :func:`wideberth.attacks.pgd` does not mode-switch): BN uses the current batch's
  statistics, as in the loss forward, and dropout is active. Trade-off: every attack
  forward also **updates the BN running statistics** (``steps`` extra momentum updates per
  training step, with statistics of intermediate iterates), and dropout makes the attack's
  gradients noisy. For models without BatchNorm and dropout the two modes are identical.
  Parameters are frozen (``requires_grad=False``) during the attack in both modes, so no
  parameter gradient is built or touched.

Training accuracy: :meth:`PGDAT.loss` returns the logits the loss was computed on, the
**adversarial** ones, so the trainer's ``train_accuracy`` is the running accuracy on the
training attack's outputs (robust training accuracy, what Madry's code logs). Clean
accuracy is logged separately as ``train_clean_accuracy`` (``log_clean_accuracy: true``):
one extra no-grad forward of the clean batch in **eval** mode per step (a train-mode
no-grad forward would move the BN running statistics); each training example's last result
is kept in the per-example state (so the number is exact across resume) and the epoch log
reports the mean over the examples seen so far.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._modes import eval_mode
from ..attacks.projected_gradient import pgd
from ..config import ConfigError
from ..threat import normalize_norm
from .base import Batch, Method, MethodParams, StepContext

__all__ = ["PGDAT", "PGDATParams", "PGDLS", "PGDLSParams", "pgdls_eps", "attack_forward"]

_ATTACK_LOSSES = ("ce", "slm", "lm", "cw")
_INITS = ("uniform", "advertorch", "zero")
_BN_MODES = ("eval", "train")
_PROJECTIONS = ("exact", "approx")

#: per-example state field holding the clean-correct flag (NaN: never seen) of PGD-AT.
CLEAN_FIELD = "pgd_at_clean_correct"


# --------------------------------------------------------------------------- validation helpers

def _number(method: str, name: str, value: Any, *, minimum: float | None = 0.0,
            strict: bool = False, allow_none: bool = False) -> float | None:
    """Coerce ``value`` to a finite float (YAML may give ``'1e-3'`` as a string)."""
    if value is None:
        if allow_none:
            return None
        raise ConfigError(f"method {method!r}: params.{name} is required (a number)")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(
                f"method {method!r}: params.{name} must be a number, got {value!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"method {method!r}: params.{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"method {method!r}: params.{name} must be finite, got {value}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        op = ">" if strict else ">="
        raise ConfigError(f"method {method!r}: params.{name} must be {op} {minimum}, got {value}")
    return value


def _integer(method: str, name: str, value: Any, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"method {method!r}: params.{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"method {method!r}: params.{name} must be >= {minimum}, got {value}")
    return int(value)


def _choice(method: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise ConfigError(
            f"method {method!r}: params.{name} must be one of {', '.join(choices)}, got {value!r}"
        )
    return value.lower()


def _flag(method: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"method {method!r}: params.{name} must be true or false, got {value!r}")
    return value


def _norm(method: str, value: Any) -> str:
    try:
        return normalize_norm(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"method {method!r}: params.norm: {exc}") from None


# --------------------------------------------------------------------------- attack mode

@contextmanager
def _frozen_parameters(model: nn.Module) -> Iterator[None]:
    """``requires_grad=False`` on every parameter for the duration; restored after."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(False)
        yield
    finally:
        for p, req in saved:
            p.requires_grad_(req)


@contextmanager
def attack_forward(model: nn.Module, bn: str) -> Iterator[Callable[[Tensor], Tensor]]:
    """The forward function a training method's inner attack should call.

    ``bn="eval"``: every submodule in eval mode (BatchNorm running statistics, no dropout),
    parameters frozen; modes and ``requires_grad`` restored on exit. ``bn="train"``: the
    model stays in the mode it is in (train, during training), parameters frozen; the
    returned object is a plain callable, so :mod:`wideberth.attacks` does not switch its
    mode. In train mode, BatchNorm running statistics are updated by every forward.
    """
    if bn not in _BN_MODES:
        raise ValueError(f"bn must be one of {', '.join(_BN_MODES)}; got {bn!r}")
    with _frozen_parameters(model):
        if bn == "eval":
            with eval_mode(model):
                yield model
        else:
            yield lambda t: model(t)


# --------------------------------------------------------------------------- PGD-AT

@dataclass
class PGDATParams(MethodParams):
    """Parameters of PGD adversarial training (``method.name: pgd-at``).

    Attributes:
        norm: threat model, ``"linf"`` (default), ``"l2"`` or ``"l1"``.
        eps: perturbation radius (required); ℓ∞ on [0, 1] pixels (CIFAR-10: write k/255 as
            a number), ℓ2 / ℓ1 raw.
        steps: PGD iterations (MMA: 40 on MNIST, 10 on CIFAR-10).
        step_size: absolute PGD step; ``None`` → ``step_scale·eps/steps``.
        step_scale: multiplier of ``eps/steps`` when ``step_size`` is None (MMA: 2.5).
        attack_loss: loss the attack ascends: ``"ce"`` (default), ``"slm"`` (MMA's
            recipes), ``"lm"`` or ``"cw"``. The θ-loss is always CE.
        init: PGD start, ``"uniform"`` (uniform in ball ∩ box), ``"advertorch"`` (MMA's
            code) or ``"zero"``.
        projection: ``"exact"`` projection onto ball ∩ box, or ``"approx"`` (advertorch's
            clip-then-shrink; identical for ℓ∞).
        clean_weight: w in ``(1 − w)·CE(adv) + w·CE(clean)``; 0 = pure adversarial CE.
        attack_bn: ``"eval"`` (default) or ``"train"``: the model's mode during the attack
            (see the module docstring for the trade-off).
        return_best: train on PGD's best iterate instead of the last one (default False,
            as the papers).
        log_clean_accuracy: one extra eval-mode no-grad clean forward per step to log
            ``train_clean_accuracy`` per epoch.
    """

    norm: str = "linf"
    eps: float | None = None
    steps: int = 10
    step_size: float | None = None
    step_scale: float = 2.5
    attack_loss: str = "ce"
    init: str = "uniform"
    projection: str = "exact"
    clean_weight: float = 0.0
    attack_bn: str = "eval"
    return_best: bool = False
    log_clean_accuracy: bool = True

    _method = "pgd-at"

    def __post_init__(self) -> None:
        m = self._method
        self.norm = _norm(m, self.norm)
        if self.eps is None:
            raise ConfigError(
                f"method {m!r} needs params.eps, the perturbation radius "
                "(e.g. 0.3 for MNIST ℓ∞, 0.03137 = 8/255 for CIFAR-10 ℓ∞, 2.0 for MNIST ℓ2)"
            )
        self.eps = _number(m, "eps", self.eps)
        self.steps = _integer(m, "steps", self.steps, minimum=0)
        self.step_size = _number(m, "step_size", self.step_size, allow_none=True)
        scale = _number(m, "step_scale", self.step_scale)
        assert scale is not None
        self.step_scale = scale
        self.attack_loss = _choice(m, "attack_loss", self.attack_loss, _ATTACK_LOSSES)
        self.init = _choice(m, "init", self.init, _INITS)
        self.projection = _choice(m, "projection", self.projection, _PROJECTIONS)
        w = _number(m, "clean_weight", self.clean_weight)
        assert w is not None
        if w > 1:
            raise ConfigError(f"method {m!r}: params.clean_weight must be in [0, 1], got {w}")
        self.clean_weight = w
        self.attack_bn = _choice(m, "attack_bn", self.attack_bn, _BN_MODES)
        self.return_best = _flag(m, "return_best", self.return_best)
        self.log_clean_accuracy = _flag(m, "log_clean_accuracy", self.log_clean_accuracy)


class PGDAT(Method):
    """Madry et al. (ICLR 2018) PGD adversarial training; MMA's PGD-ε baseline.

    Loss per batch (model in train mode, mean over the batch)::

        x_adv = PGD(f, x, y; norm, ε, steps, step, attack_loss)      (detached, last iterate)
        L = (1 − w)·CE(f(x_adv), y) + w·CE(f(x), y)                   (w = clean_weight)

    The attack's random start draws from ``ctx.generator`` (reproducible, resume-exact).
    Returns ``(L, f(x_adv))``: the adversarial logits (see the module docstring).
    """

    name = "pgd-at"
    Params = PGDATParams
    params: PGDATParams

    def __init__(self, params: MethodParams) -> None:
        super().__init__(params)
        self._last_eps: float | None = None

    # -- hooks for PGDLS
    def current_eps(self, ctx: StepContext) -> float:
        """ε used at this step (constant for PGD-AT)."""
        assert self.params.eps is not None
        return self.params.eps

    def step_size_for(self, eps: float) -> float:
        """PGD step for radius ``eps``: ``step_size·eps/target`` (scaled with ε, so equal to
        ``step_size`` at the target), or ``step_scale·eps/steps`` when ``step_size`` is None."""
        p = self.params
        assert p.eps is not None
        if p.step_size is None:
            return p.step_scale * eps / max(p.steps, 1)
        if p.eps == 0:
            return 0.0
        return p.step_size if eps == p.eps else p.step_size * eps / p.eps

    # -- Method API
    def setup(self, model: nn.Module, state: Any, num_train: int) -> None:
        if self.params.log_clean_accuracy:
            state.register(CLEAN_FIELD, default=math.nan)

    def adversarial(self, model: nn.Module, x: Tensor, y: Tensor, eps: float,
                    generator: torch.Generator | None) -> Tensor:
        """The training attack's output for ``(x, y)`` at radius ``eps`` (detached)."""
        p = self.params
        if eps == 0 or p.steps == 0:
            return x.detach()
        with attack_forward(model, p.attack_bn) as fwd:
            return pgd(
                fwd,
                x,
                y,
                norm=p.norm,
                eps=eps,
                steps=p.steps,
                step_size=self.step_size_for(eps),
                loss=p.attack_loss,
                init=p.init,
                return_best=p.return_best,
                projection=p.projection,
                generator=generator,
                check=False,  # training data is valid; a check forward would move BN stats
            )

    def loss(self, model: nn.Module, batch: Batch, ctx: StepContext) -> tuple[Tensor, Tensor]:
        p = self.params
        x, y = batch.x, batch.y
        eps = self.current_eps(ctx)
        self._last_eps = eps
        if p.log_clean_accuracy and ctx.state is not None and CLEAN_FIELD in ctx.state:
            with torch.no_grad(), eval_mode(model):
                correct = (model(x).argmax(1) == y).float()
            ctx.state.set(CLEAN_FIELD, batch.index, correct)
        x_adv = self.adversarial(model, x, y, eps, ctx.generator)
        logits_adv = model(x_adv)
        loss = F.cross_entropy(logits_adv, y)
        if p.clean_weight > 0:
            loss_clean = F.cross_entropy(model(x), y)
            loss = (1 - p.clean_weight) * loss + p.clean_weight * loss_clean
        return loss, logits_adv

    def epoch_logs(self, state: Any, epoch: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self._last_eps is not None:
            out["eps"] = self._last_eps
        if self.params.log_clean_accuracy and state is not None and CLEAN_FIELD in state:
            v = state.all(CLEAN_FIELD)
            seen = ~torch.isnan(v)
            if bool(seen.any()):
                out["train_clean_accuracy"] = float(v[seen].mean())
        return out


# --------------------------------------------------------------------------- PGDLS

def pgdls_eps(step: int, steps_per_epoch: int, eps: float, ramp_epochs: float) -> float:
    """ε of PGDLS at (0-based) optimiser step ``step``.

    ``ε_t = eps · min(1, (step + 1) / (ramp_epochs · steps_per_epoch))``: the linear ramp
    ε(t) = eps·t/T, T = ramp_epochs·steps_per_epoch, is 0 at the start of training (t = 0)
    and each step uses its value at the **end** of the step (t = step + 1). So step 0 uses
    eps/T (no step is spent at ε = 0), and ε reaches ``eps`` exactly at the last step of
    epoch ``ramp_epochs`` (step T − 1), then stays there. ``ramp_epochs = 0`` gives
    ``eps`` throughout (plain PGD-AT).
    """
    if step < 0 or steps_per_epoch <= 0:
        raise ValueError(
            f"step must be >= 0 and steps_per_epoch > 0; got {step}, {steps_per_epoch}"
        )
    if ramp_epochs < 0:
        raise ValueError(f"ramp_epochs must be >= 0; got {ramp_epochs}")
    total = ramp_epochs * steps_per_epoch
    if step + 1 >= total:
        return float(eps)
    return float(eps) * (step + 1) / total


@dataclass
class PGDLSParams(PGDATParams):
    """PGD-AT parameters plus ``ramp_epochs`` (default 50, the MMA paper's): the number of
    epochs over which ε grows linearly from 0 to ``eps`` (per step, see :func:`pgdls_eps`).
    An explicit ``step_size`` is the step at the full ``eps`` and scales with the current ε."""

    ramp_epochs: float = 50

    _method = "pgdls"

    def __post_init__(self) -> None:
        super().__post_init__()
        r = _number(self._method, "ramp_epochs", self.ramp_epochs)
        assert r is not None
        self.ramp_epochs = r


class PGDLS(PGDAT):
    """PGD with Linear Scaling (Ding et al., MMA training, ICLR 2020, §4): PGD-AT whose ε
    ramps linearly from 0 to ``eps`` over ``ramp_epochs`` epochs (per step), then stays.

    Loss: as :class:`PGDAT` at ``ε_t = pgdls_eps(ctx.step, ctx.steps_per_epoch, eps,
    ramp_epochs)``, with the PGD step scaled by ``ε_t/eps``. ``epoch_logs`` reports the ε
    of the epoch's last step as ``eps``.
    """

    name = "pgdls"
    Params = PGDLSParams
    params: PGDLSParams

    def current_eps(self, ctx: StepContext) -> float:
        p = self.params
        assert p.eps is not None
        return pgdls_eps(ctx.step, ctx.steps_per_epoch, p.eps, p.ramp_epochs)
