"""Tests for wideberth.attacks.random_search: the Square attack (Andriushchenko et al., ECCV 2020).

What is checked (each assertion is a fact that a wrong implementation would break):

- the search moves most points (feasibility for ℓ∞ and ℓ2, scalar and per-example ε, and
  "score-based: the model is never run with gradients enabled, its state is restored" are
  in tests/test_attack_contract.py, for every registered attack);
- the initialisations: ℓ∞ vertical stripes of ±ε (one sign per channel and column), ℓ2 at
  ‖δ‖₂ = ε; the p-schedule; the query budget (and broken examples are not queried again);
- closed-form margins of a linear model: Square breaks every point whose distance to the
  boundary is well below ε and never a point farther than ε;
- gradient masking: on a model that rounds its input (zero input gradient) PGD fails while
  Square breaks most points, which PGD breaks on the same model without the rounding;
- the returned point is never worse (margin loss) than x itself;
- reproducibility for a seed / generator, option validation, run_attack and CLI wiring.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from wideberth.attacks import ATTACK_NAMES, Square, run_attack, square
from wideberth.attacks.projected_gradient import pgd
from wideberth.attacks.random_search import _eta, _propose_l2, _propose_linf, p_selection
from wideberth.cli import build_parser
from wideberth.threat import get_threat

EPS = {"linf": 0.05, "l2": 0.5}
TOL = 1e-5


def _linear(c: int = 1, h: int = 8, w: int = 8, k: int = 3, seed: int = 0) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(c * h * w, k)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(k, c * h * w, generator=g))
        lin.bias.zero_()
    return nn.Sequential(nn.Flatten(), lin)


def _conv(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)
    )


def _images(b: int, c: int = 3, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, 8, 8, generator=g)
    x[:, :, :2] = 0.0  # saturated rows exercise the box
    x[:, :, -2:] = 1.0
    return x


def _margin_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """The paper's L = f_y − max_{j≠y} f_j."""
    with torch.no_grad():
        z = model(x)
    true = z.gather(1, y[:, None]).squeeze(1)
    other = z.scatter(1, y[:, None], float("-inf")).amax(1)
    return true - other


def _linear_distance(model: nn.Sequential, x: Tensor, y: Tensor, norm: str) -> Tensor:
    """Closed-form distance to the decision boundary of a linear model (no box):
    min_{j≠y} (f_y − f_j) / ‖w_y − w_j‖_dual."""
    wt = model[1].weight.detach()
    with torch.no_grad():
        z = model(x)
    dw = wt[y][:, None, :] - wt[None, :, :]  # [B, K, D]
    dual = dw.abs().sum(2) if norm == "linf" else dw.norm(dim=2)
    d = (z.gather(1, y[:, None]) - z) / dual.clamp(min=1e-12)
    return d.scatter(1, y[:, None], float("inf")).amin(1)


class _Counting(nn.Module):
    """Wraps a model, recording how many rows each forward pass saw."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.rows: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.rows.append(x.shape[0])
        return self.inner(x)


class _Unbreakable(nn.Module):
    """Class-0 logit 1000 − ‖x − 0.5‖₁: any perturbation lowers the margin, never below 0."""

    def forward(self, x: Tensor) -> Tensor:
        f = 1000.0 - (x - 0.5).abs().flatten(1).sum(1)
        return torch.stack([f, torch.zeros_like(f)], 1)


# --------------------------------------------------------------------------------------
# the search moves
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("per_example", [False, True])
def test_search_moves_most_points(norm, per_example):
    # feasibility, model state and inputs: tests/test_attack_contract.py
    model, x = _conv(), _images(12)
    with torch.no_grad():
        y = model(x).argmax(1)  # correctly classified: none is returned as x for free
    eps: float | Tensor = EPS[norm]
    if per_example:
        eps = torch.linspace(0, 2 * EPS[norm], 12)
    xa = square(model, x, y, norm=norm, eps=eps, n_queries=60)
    # the search really moved (most examples are not returned as x)
    assert int((get_threat(norm).norm(xa - x) > 0).sum()) >= 6


# --------------------------------------------------------------------------------------
# initialisation, schedule, budget
# --------------------------------------------------------------------------------------


def test_linf_init_is_vertical_stripes():
    # one query: the returned point is the initialisation (it lowers the margin)
    x = 0.2 + 0.6 * torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.zeros(5, dtype=torch.long)
    eps = 0.1
    delta = square(_Unbreakable(), x, y, eps=eps, n_queries=1) - x
    assert torch.allclose(delta.abs(), torch.full_like(delta, eps), atol=1e-6)
    # constant along each column (dim H), one sign per (channel, column)
    assert torch.equal(torch.sign(delta), torch.sign(delta[:, :, :1, :]).expand_as(delta))
    signs = torch.sign(delta[:, :, 0, :])
    assert bool((signs > 0).any()) and bool((signs < 0).any())


def test_l2_init_is_on_the_sphere():
    x = 0.3 + 0.4 * torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.zeros(5, dtype=torch.long)
    delta = square(_Unbreakable(), x, y, norm="l2", eps=0.5, n_queries=1) - x
    n = delta.flatten(1).norm(dim=1)
    assert torch.allclose(n, torch.full_like(n, 0.5), rtol=1e-5)


def _eta_by_loops(s: int) -> Tensor:
    """Eq. (3) written out: concentric squares around each half's centre, the square of
    radius k adding 1/(k+1)²; lower half negated; each half, then the whole, unit norm."""

    def bump(a: int, b: int) -> Tensor:
        out = torch.zeros(a, b, dtype=torch.float64)
        for k in range(max(a // 2, b // 2) + 1):
            out[max(a // 2 - k, 0) : a // 2 + k + 1, max(b // 2 - k, 0) : b // 2 + k + 1] += 1 / (k + 1) ** 2
        return out / out.norm()

    eta = torch.zeros(s, s, dtype=torch.float64)
    if s // 2:
        eta[: s // 2] = bump(s // 2, s)
    eta[s // 2 :] = -bump(s - s // 2, s)
    return eta / eta.norm()


@pytest.mark.parametrize("s", [1, 3, 5, 7, 8])
def test_l2_pattern_is_eq3(s):
    assert torch.allclose(_eta(s), _eta_by_loops(s))
    assert bool((_eta(s)[: s // 2] > 0).all()) and bool((_eta(s)[s // 2 :] < 0).all())


def test_p_schedule():
    assert p_selection(0.8, 0, 10000) == 0.8
    assert p_selection(0.8, 10, 10000) == 0.8
    assert p_selection(0.8, 11, 10000) == 0.4
    assert p_selection(0.8, 51, 10000) == 0.2
    assert p_selection(0.8, 9999, 10000) == 0.8 / 512
    # rescaled to the budget: iteration 2 of 1000 is iteration 20 of 10 000
    assert p_selection(0.8, 1, 1000) == 0.8
    assert p_selection(0.8, 2, 1000) == 0.4


class _FixedRng:
    """Stands in for the attack's random source: given window corners, all signs +1."""

    def __init__(self, corners: list[int]) -> None:
        self.corners = list(corners)

    def randint(self, high: int, n: int) -> Tensor:
        v = self.corners.pop(0)
        assert 0 <= v < high
        return torch.full((n,), v)

    def sign(self, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        return torch.ones(shape, dtype=dtype)

    def coin(self, n: int) -> Tensor:
        return torch.zeros(n, dtype=torch.bool)


def _square_mask(top: int, left: int, s: int) -> Tensor:
    m = torch.zeros(8, 8, dtype=torch.bool)
    m[top : top + s, left : left + s] = True
    return m


def test_linf_proposal_changes_one_square_to_eps():
    x = 0.3 + 0.4 * torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    eps = torch.full((2,), 0.1)
    x_best = x - 0.1  # δ = −ε everywhere
    # p = 9/64: a 3×3 window at (2, 4)
    cand = _propose_linf(x, x_best, eps, 9 / 64, _FixedRng([2, 4]))
    win = _square_mask(2, 4, 3)
    assert torch.allclose((cand - x)[:, :, win], torch.full((2, 3, 9), 0.1), atol=1e-6)
    assert torch.equal(cand[:, :, ~win], x_best[:, :, ~win])


def test_l2_proposal_moves_mass_between_two_windows():
    # Algorithm 3: W2 is emptied, W1 receives per channel ‖ν_{W1∪W2}‖² + unused/c, nothing
    # else changes and the total stays ‖δ‖₂ = ε (the box is not active here)
    g = torch.Generator().manual_seed(0)
    x = 0.3 + 0.4 * torch.rand(2, 3, 8, 8, generator=g)
    nu = torch.randn(2, 3, 8, 8, generator=g)
    nu = 0.5 * nu / nu.flatten(1).norm(dim=1).view(-1, 1, 1, 1)  # ‖ν‖ = 0.5 < ε = 0.6
    eps = torch.full((2,), 0.6)
    # p = 9/64: windows of side 3, W1 at (0, 0), W2 at (4, 3)
    cand = _propose_l2(x, x + nu, eps, 9 / 64, _FixedRng([0, 0, 4, 3]))
    new = cand - x
    w1, w2 = _square_mask(0, 0, 3), _square_mask(4, 3, 3)
    assert torch.allclose(new.flatten(1).norm(dim=1), eps, rtol=1e-5)
    assert torch.allclose(new[:, :, ~(w1 | w2)], nu[:, :, ~(w1 | w2)], atol=1e-6)
    assert bool((new[:, :, w2] == 0).all())
    unused = 0.6**2 - 0.5**2
    want = (nu[:, :, w1 | w2] ** 2).sum(2) + unused / 3
    assert torch.allclose((new[:, :, w1] ** 2).sum(2), want, rtol=1e-4)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_query_budget_and_broken_examples_are_not_queried(norm):
    model = _Counting(_Unbreakable())
    x = _images(6, c=1)
    y = torch.tensor([0, 0, 0, 1, 1, 1])  # label 1: already misclassified at x
    xa = square(model, x, y, norm=norm, eps=EPS[norm], n_queries=7, check=False)
    # one forward of the whole batch at x, then 7 queries for each of the 3 correct ones
    assert model.rows == [6] + [3] * 7
    assert torch.equal(xa[3:], x[3:])
    # run_attack maps steps to n_queries
    model.rows.clear()
    run_attack("square", model, x, y, norm=norm, eps=EPS[norm], steps=4, check=False)
    assert model.rows == [6] + [3] * 4


def test_broken_examples_stop_being_queried():
    model = _Counting(_linear(k=2))
    x = 0.3 + 0.4 * torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model.inner(x).argmax(1)
    model.rows.clear()
    xa = square(model, x, y, eps=0.3, n_queries=100, check=False)
    broken = _margin_loss(model.inner, xa, y) < 0
    assert bool(broken.all())
    assert len(model.rows) < 100 and model.rows == sorted(model.rows, reverse=True)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_returned_point_is_never_worse_than_x(norm):
    model, x = _conv(1), _images(16)
    with torch.no_grad():
        y = model(x).argmax(1)
    xa = square(model, x, y, norm=norm, eps=EPS[norm], n_queries=3)
    assert bool((_margin_loss(model, xa, y) <= _margin_loss(model, x, y)).all())


# --------------------------------------------------------------------------------------
# strength
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "norm, eps, n_queries", [("linf", 0.045, 150), ("l2", 0.3, 300)]
)
def test_linear_model_closed_form_margins(norm, eps, n_queries):
    model = _linear()
    x = 0.3 + 0.4 * torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = model(x).argmax(1)
    d = _linear_distance(model, x, y, norm)
    near, far = d < 0.5 * eps, d > eps * (1 + 1e-4)
    assert int(near.sum()) >= 15 and int(far.sum()) >= 5  # both groups are populated
    # the ε-ball stays inside the box, so the closed form is the true distance
    xa = square(model, x, y, norm=norm, eps=eps, n_queries=n_queries)
    broken = _margin_loss(model, xa, y) < 0
    assert float(broken[near].float().mean()) >= 0.95
    assert not bool(broken[far].any())


class _Rounded(nn.Module):
    """A linear model on the input rounded to 8 levels: input gradient 0 almost everywhere."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(torch.round(x * 7) / 7)


@pytest.mark.parametrize("norm, eps, n_queries", [("linf", 0.1, 200), ("l2", 0.8, 300)])
def test_square_sees_through_gradient_masking(norm, eps, n_queries):
    inner = _linear()
    masked = _Rounded(inner)
    x = torch.rand(48, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = masked(x).argmax(1)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(masked(xg), y), xg)
    assert float(g.abs().max()) == 0.0  # the gradient is masked

    def broken_rate(model: nn.Module, xa: Tensor) -> float:
        return float((_margin_loss(model, xa, y) < 0).float().mean())

    x_pgd = pgd(masked, x, y, norm=norm, eps=eps, steps=20)
    x_sq = square(masked, x, y, norm=norm, eps=eps, n_queries=n_queries)
    assert broken_rate(masked, x_pgd) <= 0.1
    assert broken_rate(masked, x_sq) >= 0.75
    # the points are not robust: without the rounding, PGD breaks most of them
    assert broken_rate(inner, pgd(inner, x, y, norm=norm, eps=eps, steps=20)) >= 0.75


# --------------------------------------------------------------------------------------
# reproducibility, API, validation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_reproducible_for_a_seed(norm):
    model, x = _conv(), _images(8)
    y = torch.arange(8) % 5
    kw = dict(norm=norm, eps=EPS[norm], n_queries=30)
    a = square(model, x, y, seed=3, **kw)
    b = square(model, x, y, seed=3, **kw)
    c = square(model, x, y, seed=4, **kw)
    d = square(model, x, y, generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(a, b) and torch.equal(a, d)
    assert not torch.equal(a, c)


def test_class_form():
    model, x = _conv(), _images(4)
    y = torch.arange(4)
    atk = Square(model, norm="l2", eps=0.5, n_queries=10)
    assert torch.equal(atk(x, y), square(model, x, y, norm="l2", eps=0.5, n_queries=10))
    assert torch.equal(atk(x, y, seed=5), square(model, x, y, norm="l2", eps=0.5, n_queries=10, seed=5))
    assert "Square(" in repr(atk)


def test_cli_accepts_square():
    assert "square" in ATTACK_NAMES
    args = build_parser().parse_args(["attack", "RUN", "--attack", "square", "--eps", "0.1"])
    assert args.attack == "square"


@pytest.mark.parametrize(
    "change",
    [
        # x, y and ε: tests/test_attack_contract.py
        dict(norm="l1"),
        dict(norm="l7"),
        dict(n_queries=0),
        dict(n_queries=2.5),
        dict(p_init=0.0),
        dict(p_init=1.5),
    ],
)
def test_bad_input_raises(change):
    kw = dict(
        model=_linear(), x=torch.full((2, 1, 8, 8), 0.5), y=torch.zeros(2, dtype=torch.long),
        norm="linf", eps=0.1, n_queries=5,
    )
    kw.update(change)
    with pytest.raises(ValueError):
        square(kw.pop("model"), kw.pop("x"), kw.pop("y"), **kw)


def test_non_image_input_raises():
    model = nn.Linear(6, 3)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        square(model, torch.rand(2, 6), torch.zeros(2, dtype=torch.long), eps=0.1, n_queries=3)
