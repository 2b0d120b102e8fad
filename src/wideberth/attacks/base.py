"""What every attack shares: the model context, input gradients, random starts, the class form.

- :func:`attack_context` puts an ``nn.Module`` in eval mode and switches off
  ``requires_grad`` on its parameters for the duration of an attack, then restores every
  submodule's own train/eval flag and every parameter's ``requires_grad``. Gradients are
  taken with :func:`torch.autograd.grad` with respect to the input only, so parameter
  ``.grad`` fields are never touched.
- :func:`loss_and_grad` is the one forward+backward of an attack iteration: per-example loss
  [B], its input gradient (of the *sum*, so examples never influence each other) and logits.
- :func:`random_start` draws a random start either from a caller's ``torch.Generator``
  (what training methods use) or, by default, from per-example counter-based streams
  keyed by ``(seed, content of the example)`` (:mod:`wideberth.noise`), so an example gets
  the same start whatever else is in its batch and wherever it sits.
- :func:`prepare` validates inputs once at an attack's entry (range, NaN, labels, ε) and
  warns when the model seems to output probabilities instead of logits.
- :class:`Attack` is the small callable-class form: ``atk = PGD(model, eps=0.3); atk(x, y)``;
  :class:`ResultAttack` the same for attacks whose function returns a result object
  (minimal-norm attacks, AN-PGD): calling it returns ``x_adv``, :meth:`ResultAttack.result`
  the whole result.
- :func:`batch_view`, :func:`check_int` and :func:`check_choice` are the small shape and
  argument helpers every attack module shares.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .._checks import check_inputs
from ..noise import GeneratorNoise, KeyedNoise, Noise, example_keys
from ..threat import ThreatModel, as_batch_eps, clip_to_box, eps_vector, get_threat

__all__ = [
    "ModelLike",
    "LossLike",
    "Attack",
    "ResultAttack",
    "attack_context",
    "batch_view",
    "check_choice",
    "check_int",
    "loss_and_grad",
    "prepare",
    "random_start",
    "threat_for",
    "looks_like_probabilities",
    "warn_if_probabilities",
]

log = logging.getLogger(__name__)

ModelLike = nn.Module | Callable[[Tensor], Tensor]
LossLike = str | Callable[..., Tensor]


def batch_view(t: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-example ``[B]`` tensor (any dtype, masks included) to
    ``[B, 1, ..., 1]`` so it broadcasts against ``like`` ``[B, ...]``."""
    return t.reshape((t.shape[0],) + (1,) * (like.dim() - 1))


def check_int(value: int, name: str, minimum: int = 1) -> None:
    """``ValueError`` unless ``value`` is a Python ``int`` (not ``bool``) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")


def check_choice(value: str, name: str, choices: tuple[str, ...]) -> None:
    """``ValueError`` unless ``value`` is one of ``choices`` (the message lists them)."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


@contextmanager
def attack_context(model: ModelLike) -> Iterator[ModelLike]:
    """Eval mode and frozen parameters for the duration of an attack; everything restored.

    Works on any ``nn.Module`` (every submodule's own ``training`` flag and every
    parameter's ``requires_grad`` come back exactly as found) and passes plain callables
    through untouched.
    """
    if not isinstance(model, nn.Module):
        yield model
        return
    modes = [(m, m.training) for m in model.modules()]
    params = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in params:
            p.requires_grad_(False)
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, req in params:
            p.requires_grad_(req)


def loss_and_grad(
    model: ModelLike,
    x_adv: Tensor,
    y: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
) -> tuple[Tensor, Tensor, Tensor]:
    """One forward and backward: ``(loss [B], grad [B, ...], logits [B, K])``, all detached.

    ``loss_fn(logits, y)`` must return per-example losses [B]; the gradient is that of their
    sum with respect to ``x_adv``, so each example's gradient is its own.
    """
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x_adv)
        loss = loss_fn(logits, y)
        (grad,) = torch.autograd.grad(loss.sum(), x_adv)
    return loss.detach(), grad.detach(), logits.detach()


def random_start(
    threat: ThreatModel,
    x: Tensor,
    eps: float | Tensor,
    *,
    generator: torch.Generator | None = None,
    seed: int = 0,
    restart: int = 0,
    sampler: Callable[[Tensor, Tensor, Noise], Tensor] | None = None,
) -> Tensor:
    """A random start δ in ball ∩ box.

    ``sampler(x, eps [B], noise) -> δ`` draws the raw start from ``noise`` (see
    :mod:`wideberth.noise`); it must lie in the ε-ball (default: uniform in the ε-ball,
    ``threat.sample_ball``). It is then clipped to the box, which for a point of the ball
    is its exact projection onto ball ∩ box. With ``generator`` the whole batch is drawn
    from it (reproducible given the generator's state). Without, each example draws from
    its own counter-based stream keyed by ``(seed, restart, content of x[i])``: the start
    of an example does not depend on the rest of its batch (batch independence), and the
    whole batch is still drawn in a few vectorised operations.
    """
    e = eps_vector(eps, x)
    noise: Noise
    if generator is not None:
        noise = GeneratorNoise(generator, x.device, x.dtype)
    else:
        mix = (seed * 1_000_003 + restart * 7_919) & ((1 << 63) - 1)
        noise = KeyedNoise([k ^ mix for k in example_keys(x)], x.device, x.dtype)
    if sampler is None:
        delta = threat.sample_ball(x, as_batch_eps(e, x), noise)
    else:
        delta = sampler(x, e, noise)
    return clip_to_box(x, delta)


def looks_like_probabilities(logits: Tensor) -> bool:
    """True when every row of ``logits`` [B, K] lies in [0, 1] and sums to 1 (K ≥ 2)."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        return False
    lg = logits.detach()
    return bool(((lg >= 0) & (lg <= 1)).all()) and torch.allclose(
        lg.sum(1), torch.ones_like(lg[:, 0]), atol=1e-3
    )


def warn_if_probabilities(logits: Tensor) -> None:
    """Warn when outputs look like probabilities (rows in [0, 1] summing to 1): attacks
    need logits, and a softmax output saturates their gradients (a classic masked eval)."""
    if looks_like_probabilities(logits):
        warnings.warn(
            "the model's outputs look like probabilities (in [0, 1], rows summing to 1); "
            "attacks expect logits: remove the final softmax (attacking probabilities "
            "weakens gradient attacks and overstates robustness)",
            UserWarning,
            stacklevel=3,
        )


def prepare(
    model: ModelLike,
    x: Tensor,
    y: Tensor,
    eps: float | Tensor | None = None,
    norm: str | float | ThreatModel | None = None,
    *,
    check_outputs: bool = True,
) -> tuple[ThreatModel | None, int]:
    """Validate an attack's inputs once; return the threat model and the number of classes.

    Raises ``ValueError`` for x outside [0, 1], NaN/inf, bad labels, ε < 0 or of the wrong
    shape; warns if the model's outputs look like probabilities.
    """
    check_inputs(x, y, eps)
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch; nothing to attack")
    threat = get_threat(norm) if norm is not None else None
    with torch.no_grad(), attack_context(model):
        logits = model(x[: min(8, x.shape[0])])
    if logits.dim() != 2:
        raise ValueError(f"the model must return logits of shape [B, K]; got shape {list(logits.shape)}")
    num_classes = int(logits.shape[1])
    check_inputs(x, y, None, num_classes)
    if check_outputs:
        warn_if_probabilities(logits)
    return threat, num_classes


def threat_for(
    model: ModelLike, x: Tensor, y: Tensor, norm: str | float | ThreatModel, check: bool
) -> ThreatModel:
    """The threat model of ``norm``; with ``check`` the inputs are validated first, as
    :func:`prepare` does (the entry of every margin estimator)."""
    if not check:
        return get_threat(norm)
    threat, _ = prepare(model, x, y, None, norm)
    assert threat is not None
    return threat


class Attack:
    """Callable-class form of a functional attack: ``atk = PGD(model, eps=0.3); atk(x, y)``.

    Subclasses set ``fn`` (the functional attack, ``fn(model, x, y, **kwargs) -> x_adv``).
    Keyword arguments given at construction are defaults; those given at call time win.
    """

    fn: ClassVar[Callable[..., Tensor]]

    def __init__(self, model: ModelLike, **kwargs: Any) -> None:
        self.model = model
        self.kwargs = kwargs

    def __call__(self, x: Tensor, y: Tensor, **kwargs: Any) -> Tensor:
        return type(self).fn(self.model, x, y, **{**self.kwargs, **kwargs})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{type(self).__name__}({args})"


class ResultAttack(Attack):
    """Callable-class form of an attack whose function returns a result object.

    Subclasses set ``result_fn`` (``result_fn(model, x, y, **kwargs) -> result`` with an
    ``x_adv`` [B, ...] attribute, e.g. a
    :class:`~wideberth.attacks.minimal_norm.MinimalNormResult`) and ``fn`` (the same attack
    returning only ``x_adv``). ``atk(x, y)`` returns ``x_adv``; :meth:`result` returns the
    whole result. Construction keywords are defaults; call keywords win.
    """

    result_fn: ClassVar[Callable[..., Any]]

    def result(self, x: Tensor, y: Tensor, **kwargs: Any) -> Any:
        """Run the attack on x [B, ...], y [B] and return its full result object."""
        return type(self).result_fn(self.model, x, y, **{**self.kwargs, **kwargs})

    def __call__(self, x: Tensor, y: Tensor, **kwargs: Any) -> Tensor:
        x_adv: Tensor = self.result(x, y, **kwargs).x_adv
        return x_adv
