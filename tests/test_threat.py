"""Tests for wideberth.threat (ℓ∞ / ℓ2 / ℓ1 ball ∩ box) and wideberth._checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wideberth.threat import (
    FEASIBILITY_RTOL,
    L1Ball,
    L2Ball,
    LinfBall,
    as_batch_eps,
    check_inputs,
    clip_to_box,
    eps_vector,
    get_threat,
    normalize_norm,
    project_l1_box,
    project_l2_box,
)

NORMS = ["linf", "l2", "l1"]
HYP = settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def make_case(seed: int, shape: tuple[int, ...], eps_scale: float, per_example: bool, dtype):
    """x in [0,1] with some coordinates exactly on the box faces, a far-away point v, and ε."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=dtype)
    faces = torch.rand(shape, generator=g, dtype=dtype)
    x = torch.where(faces < 0.15, 0.0, torch.where(faces > 0.85, 1.0, x))
    v = torch.randn(shape, generator=g, dtype=dtype) * (0.1 + 3 * torch.rand((), generator=g))
    if per_example:
        eps = eps_scale * torch.rand(shape[0], generator=g, dtype=dtype)
        eps[0] = 0.0  # a zero budget must also work
    else:
        eps = float(eps_scale)
    return x, v, eps


shapes = st.sampled_from([(1, 1), (3, 7), (2, 2, 3, 3), (4, 1, 5, 5), (2, 64)])
case_args = st.tuples(
    st.integers(0, 2**31 - 1),
    shapes,
    st.sampled_from([0.0, 1e-3, 0.05, 0.3, 1.0, 4.0, 50.0]),
    st.booleans(),
)


def ball_norm(norm: str, t: torch.Tensor) -> torch.Tensor:
    return get_threat(norm).norm(t)


# --------------------------------------------------------------------------------------
# registry and eps broadcasting
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "alias,expected",
    [
        ("linf", "linf"),
        ("Linf", "linf"),
        ("inf", "linf"),
        (float("inf"), "linf"),
        (math.inf, "linf"),
        ("L2", "l2"),
        (2, "l2"),
        (2.0, "l2"),
        ("l1", "l1"),
        (1, "l1"),
    ],
)
def test_normalize_norm(alias, expected):
    assert normalize_norm(alias) == expected
    assert get_threat(alias).name == expected


@pytest.mark.parametrize("bad", ["l3", 3, 0, "", True, None])
def test_unknown_norm_lists_valid(bad):
    with pytest.raises(ValueError, match="linf, l2, l1"):
        get_threat(bad)


def test_get_threat_kwargs_and_passthrough():
    t = get_threat("l1", l1_sparsity=0.9)
    assert isinstance(t, L1Ball) and t.l1_sparsity == 0.9
    assert get_threat(t) is t
    assert isinstance(get_threat(2), L2Ball) and isinstance(get_threat("inf"), LinfBall)


def test_as_batch_eps_shapes():
    x = torch.zeros(3, 2, 4, 4, dtype=torch.float64)
    e = as_batch_eps(0.5, x)
    assert e.shape == (3, 1, 1, 1) and e.dtype == torch.float64
    e = as_batch_eps(torch.tensor([0.1, 0.2, 0.3]), x)
    assert e.shape == (3, 1, 1, 1) and e.dtype == torch.float64
    assert torch.equal(e.flatten(), torch.tensor([0.1, 0.2, 0.3]).double())
    assert as_batch_eps(torch.tensor(0.2), x).shape == (3, 1, 1, 1)
    assert eps_vector(0.3, x).shape == (3,)
    with pytest.raises(ValueError, match=r"shape \[B\] = \[3\]"):
        as_batch_eps(torch.ones(4), x)
    with pytest.raises(ValueError):
        as_batch_eps(torch.ones(3, 1), x)


def test_clip_to_box():
    x = torch.tensor([[0.0, 0.5, 1.0]])
    d = torch.tensor([[-0.3, 0.7, 0.2]])
    out = clip_to_box(x, d)
    assert torch.equal(out, torch.tensor([[0.0, 0.5, 0.0]]))
    assert torch.equal(d, torch.tensor([[-0.3, 0.7, 0.2]]))  # not modified in place


# --------------------------------------------------------------------------------------
# projections: feasibility, idempotence, exactness
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", NORMS)
@HYP
@given(args=case_args)
def test_projection_feasible_and_idempotent(norm, args):
    seed, shape, eps_scale, per_example = args
    x, v, eps = make_case(seed, shape, eps_scale, per_example, torch.float32)
    t = get_threat(norm)
    v0 = v.clone()
    d = t.project(v, x, eps)
    assert torch.equal(v, v0)  # input untouched
    assert d.shape == v.shape and d.dtype == v.dtype
    assert torch.isfinite(d).all()
    e = eps_vector(eps, x)
    assert (t.norm(d) <= e * (1 + 1e-5) + 1e-7).all()
    xa = x + d
    assert xa.min() >= 0 and xa.max() <= 1
    d2 = t.project(d, x, eps)
    scale = 1e-5 * (1 + e.max())
    assert (d2 - d).abs().max() <= scale
    # points already feasible are fixed points
    r = t.random_init(x, eps, torch.Generator().manual_seed(seed))
    assert (t.project(r, x, eps) - r).abs().max() <= scale


def variational_gap(norm: str, v, d, x, eps, n_random: int = 200, seed: int = 0) -> float:
    """max over sampled feasible z of <v - d, z - d> / (|v-d| |z-d|); <= 0 iff d is the
    Euclidean projection (over the sample). Also samples feasible points close to d."""
    t = get_threat(norm)
    g = torch.Generator().manual_seed(seed)
    b = x.shape[0]
    worst = -math.inf
    for i in range(n_random):
        if i % 2 == 0:
            z = t.random_init(x, eps, g)
        else:  # local feasible points: perturb d and shrink into ball ∩ box
            z = t.project_approx(
                d + 1e-3 * torch.randn(d.shape, generator=g, dtype=d.dtype), x, eps
            )
            z = 0.999 * z  # strictly feasible (box contains 0)
        a = (v - d).reshape(b, -1)
        c = (z - d).reshape(b, -1)
        num = (a * c).sum(1)
        den = a.norm(dim=1) * c.norm(dim=1) + 1e-30
        worst = max(worst, float((num / den).max()))
    return worst


@pytest.mark.parametrize("norm", ["l2", "l1"])
@settings(max_examples=15, deadline=None, database=None)
@given(args=case_args)
def test_projection_is_nearest_feasible_point(norm, args):
    seed, shape, eps_scale, per_example = args
    x, v, eps = make_case(seed, shape, eps_scale, per_example, torch.float64)
    t = get_threat(norm)
    d = t.project(v, x, eps)
    dist = (v - d).reshape(x.shape[0], -1).norm(dim=1)
    # no sampled feasible point is closer than d ...
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(50):
        z = t.random_init(x, eps, g)
        dz = (v - z).reshape(x.shape[0], -1).norm(dim=1)
        assert (dist <= dz + 1e-9).all()
        # ... nor any point on the segment toward it (convexity: a small step from d toward a
        # feasible z must not reduce the distance), which is the variational inequality
        zz = d + 1e-3 * (z - d)
        dzz = (v - zz).reshape(x.shape[0], -1).norm(dim=1)
        assert (dist <= dzz + 1e-12).all()
    assert variational_gap(norm, v, d, x, eps, n_random=40, seed=seed) <= 1e-6


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_projection_kkt_conditions(norm):
    """KKT of min ½‖δ−v‖² s.t. ‖δ‖_p ≤ ε, lo ≤ δ ≤ hi: δ = clip(shrink(v)), ‖δ‖ = ε if the
    clipped v is outside the ball, checked against an independent per-example bisection."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(6, 40, generator=g, dtype=torch.float64)
    v = 2 * torch.randn(6, 40, generator=g, dtype=torch.float64)
    eps = torch.tensor([0.0, 0.01, 0.5, 1.0, 3.0, 100.0], dtype=torch.float64)
    t = get_threat(norm)
    d = t.project(v, x, eps)
    for i in range(6):
        lo, hi, vi, e = -x[i], 1 - x[i], v[i], float(eps[i])
        clipped = vi.clamp(lo, hi)
        n_clip = clipped.norm() if norm == "l2" else clipped.abs().sum()
        if n_clip <= e:
            torch.testing.assert_close(d[i], clipped)
            continue
        # the multiplier of the ball constraint, recovered by a scalar brute-force search
        if norm == "l2":
            ss = torch.linspace(0, 1, 200001, dtype=torch.float64)
            vals = (vi[None] * ss[:, None]).clamp(lo, hi).norm(dim=1)
        else:
            ss = torch.linspace(0, float(vi.abs().max()), 200001, dtype=torch.float64)
            soft = torch.sign(vi)[None] * (vi.abs()[None] - ss[:, None]).clamp(min=0)
            vals = soft.clamp(lo, hi).abs().sum(1)
        j = int((vals - e).abs().argmin())
        if norm == "l2":
            ref = (vi * ss[j]).clamp(lo, hi)
        else:
            ref = (torch.sign(vi) * (vi.abs() - ss[j]).clamp(min=0)).clamp(lo, hi)
        assert (d[i] - ref).abs().max() < 2e-4
        nd = d[i].norm() if norm == "l2" else d[i].abs().sum()
        assert abs(float(nd) - e) <= 1e-9 * max(e, 1)


def _reference_projection(norm: str, v, x, eps, iters: int = 200):
    """Plain float64 bisection on the KKT multiplier (no geometric steps, no refinement)."""
    lo, hi = -x, 1 - x
    if norm == "l2":

        def delta(m):  # m = 1/(1+λ) ∈ [0, 1]
            return (v * m[:, None]).clamp(lo, hi)

        a, b = torch.zeros(v.shape[0], dtype=v.dtype), torch.ones(v.shape[0], dtype=v.dtype)
        for _ in range(iters):
            mid = (a + b) / 2
            ok = delta(mid).norm(dim=1) <= eps
            a, b = torch.where(ok, mid, a), torch.where(ok, b, mid)
        return delta(a)

    def delta(tau):
        return (torch.sign(v) * (v.abs() - tau[:, None]).clamp(min=0)).clamp(lo, hi)

    a, b = torch.zeros(v.shape[0], dtype=v.dtype), v.abs().amax(1)
    for _ in range(iters):
        mid = (a + b) / 2
        ok = delta(mid).abs().sum(1) <= eps
        a, b = torch.where(ok, a, mid), torch.where(ok, mid, b)
    return delta(b)


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_projection_matches_reference_bisection_high_dim(norm):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3 * 32 * 32, generator=g, dtype=torch.float64)
    x[:, ::7] = 1.0
    v = torch.randn(8, 3 * 32 * 32, generator=g, dtype=torch.float64) * 0.3
    eps = torch.tensor([0.0, 1e-4, 0.1, 1.0, 2.0, 5.0, 20.0, 1e3], dtype=torch.float64)
    d = get_threat(norm).project(v, x, eps)
    ref = _reference_projection(norm, v, x, eps)
    torch.testing.assert_close(d, ref, rtol=0, atol=1e-9)


def _scipy_projection(norm: str, v: np.ndarray, lo: np.ndarray, hi: np.ndarray, eps: float):
    """Reference solution of min ½‖z − v‖² s.t. ‖z‖_p ≤ ε, lo ≤ z ≤ hi with SLSQP."""
    opt = pytest.importorskip("scipy.optimize")
    dim = v.shape[0]
    if norm == "l2":
        res = opt.minimize(
            lambda z: 0.5 * np.sum((z - v) ** 2),
            np.zeros(dim),
            jac=lambda z: z - v,
            bounds=list(zip(lo, hi, strict=True)),
            constraints=[
                {"type": "ineq", "fun": lambda z: eps**2 - np.sum(z**2), "jac": lambda z: -2 * z}
            ],
            method="SLSQP",
            options={"ftol": 1e-12, "maxiter": 500},
        )
        return res, res.x

    # ℓ1: split z = p − n with p, n ≥ 0 so that the ball constraint is linear
    def f(w):
        return 0.5 * np.sum((w[:dim] - w[dim:] - v) ** 2)

    def jac(w):
        r = w[:dim] - w[dim:] - v
        return np.concatenate([r, -r])

    res = opt.minimize(
        f,
        np.zeros(2 * dim),
        jac=jac,
        bounds=list(zip(np.zeros(dim), hi, strict=True))
        + list(zip(np.zeros(dim), -lo, strict=True)),
        constraints=[
            {"type": "ineq", "fun": lambda w: eps - np.sum(w), "jac": lambda w: -np.ones(2 * dim)}
        ],
        method="SLSQP",
        options={"ftol": 1e-12, "maxiter": 500},
    )
    return res, res.x[:dim] - res.x[dim:]


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_projection_matches_scipy(norm):
    pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(0)
    for _trial in range(8):
        dim = 6
        x = rng.uniform(0, 1, dim)
        x[rng.uniform(size=dim) < 0.2] = 1.0
        v = rng.normal(0, 1.5, dim)
        eps = float(rng.choice([0.2, 0.7, 1.5]))
        res, ref = _scipy_projection(norm, v, -x, 1 - x, eps)
        # SLSQP sometimes stops with "positive directional derivative" at the optimum;
        # judge its answer by feasibility instead of its status flag
        nref = np.linalg.norm(ref) if norm == "l2" else np.abs(ref).sum()
        assert nref <= eps + 1e-6 and (ref >= -x - 1e-8).all() and (ref <= 1 - x + 1e-8).all()
        d = get_threat(norm).project(torch.tensor(v)[None], torch.tensor(x)[None], eps)[0].numpy()
        np.testing.assert_allclose(d, ref, atol=1e-5)
        # ours is never worse than the solver's answer
        assert np.sum((d - v) ** 2) <= np.sum((ref - v) ** 2) + 1e-10


def test_l2_inactive_box_is_rescale():
    g = torch.Generator().manual_seed(0)
    x = torch.full((4, 50), 0.5, dtype=torch.float64)
    v = torch.randn(4, 50, generator=g, dtype=torch.float64) * 0.05
    eps = torch.tensor([0.01, 0.1, 0.3, 10.0], dtype=torch.float64)
    d = L2Ball().project(v, x, eps)
    expected = v * torch.clamp(eps / v.norm(dim=1), max=1)[:, None]
    assert (expected.abs() < 0.5).all()  # box indeed inactive
    torch.testing.assert_close(d, expected, rtol=1e-10, atol=1e-12)


def test_exact_differs_from_ball_then_clip():
    """A case where rescale-then-clip is feasible but strictly farther than the exact
    projection: the exact one uses the budget freed by the clipped coordinate."""
    x = torch.tensor([[0.9, 0.5]], dtype=torch.float64)
    v = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    eps = 0.5
    for norm in ["l2", "l1"]:
        t = get_threat(norm)
        exact = t.project(v, x, eps)
        approx = t.project_box(v, -math.inf, math.inf, eps).clamp(-x, 1 - x)
        dist_exact = (exact - v).norm()
        dist_approx = (approx - v).norm()
        assert dist_exact < dist_approx - 1e-3
        assert float(t.norm(exact)) == pytest.approx(eps, rel=1e-9)
    # l2 exact: first coordinate is clipped to 0.1, the second gets sqrt(0.25 - 0.01)
    e2 = L2Ball().project(v, x, eps)
    torch.testing.assert_close(e2, torch.tensor([[0.1, math.sqrt(0.24)]], dtype=torch.float64))
    e1 = L1Ball().project(v, x, eps)
    torch.testing.assert_close(e1, torch.tensor([[0.1, 0.4]], dtype=torch.float64))


def test_projection_general_box_and_ball_only():
    # universal-perturbation style: one delta, box = intersection over a group
    xs = torch.rand(5, 3, 4, generator=torch.Generator().manual_seed(1))
    lo = (-xs).amax(0, keepdim=True)
    hi = (1 - xs).amin(0, keepdim=True)
    v = torch.randn(1, 3, 4, generator=torch.Generator().manual_seed(2))
    for norm in NORMS:
        t = get_threat(norm)
        d = t.project_box(v, lo, hi, 0.5)
        assert (d >= lo).all() and (d <= hi).all()
        assert float(t.norm(d)) <= 0.5 * (1 + 1e-5)
        assert ((xs + d) >= 0).all() and ((xs + d) <= 1).all()
        b = t.project_ball(v * 10, 0.5)
        assert float(t.norm(b)) == pytest.approx(0.5, rel=1e-5)
    # l1 ball-only projection of a simple vector: soft-threshold with tau = 0.5
    v1 = torch.tensor([[3.0, -2.0, 0.1]], dtype=torch.float64)
    torch.testing.assert_close(
        project_l1_box(v1, -math.inf, math.inf, 2.0),
        torch.tensor([[1.5, -0.5, 0.0]], dtype=torch.float64),
    )
    torch.testing.assert_close(project_l2_box(v1, -math.inf, math.inf, 1.0), v1 / v1.norm())


def test_projection_batch_independent():
    x, v, _ = make_case(7, (6, 3, 5, 5), 1.0, False, torch.float32)
    eps = torch.tensor([0.0, 0.05, 0.5, 1.0, 2.0, 8.0])
    for norm in NORMS:
        t = get_threat(norm)
        full = t.project(v, x, eps)
        for i in range(6):
            one = t.project(v[i : i + 1], x[i : i + 1], eps[i : i + 1])
            torch.testing.assert_close(one[0], full[i], rtol=0, atol=1e-6)


def test_project_approx_feasible_but_not_exact():
    x, v, _ = make_case(11, (4, 30), 1.0, False, torch.float64)
    for norm in ["l2", "l1"]:
        t = get_threat(norm)
        a = t.project_approx(v, x, 0.8)
        e = t.project(v, x, 0.8)
        assert (t.norm(a) <= 0.8 * (1 + 1e-9)).all()
        assert ((x + a) >= 0).all() and ((x + a) <= 1).all()
        da = (a - v).norm(dim=1)
        de = (e - v).norm(dim=1)
        assert (de <= da + 1e-9).all()


def test_projection_float32_extreme_ratio():
    """‖v‖/ε up to ~1e9 in float32 still lands on the sphere (geometric bisection for ℓ2,
    threshold relative to max|v| for ℓ1, closed-form refinement for both)."""
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(4, 300, generator=g)
        v = torch.randn(4, 300, generator=g) * 10 ** (2 + seed % 4)
        for norm in ["l2", "l1"]:
            t = get_threat(norm)
            n = t.norm(t.project(v, x, 1e-3))
            assert (n <= 1e-3 * (1 + 1e-5)).all() and (n >= 1e-3 * (1 - 1e-4)).all(), (seed, norm)


@pytest.mark.parametrize("shape", [(0, 5), (0, 3, 2, 2), (2, 0)])
def test_empty_batches_and_inputs(shape):
    x, v = torch.rand(shape), torch.randn(shape)
    for norm in NORMS:
        t = get_threat(norm)
        for out in (t.project(v, x, 0.1), t.random_init(x, 0.1), t.step(v, 0.1)):
            assert out.shape == shape
        assert t.norm(v).shape == (shape[0],)


def test_projection_keeps_gradient_path():
    v = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    x = torch.full((2, 5), 0.5, dtype=torch.float64)
    for norm in NORMS:
        d = get_threat(norm).project(v, x, 0.3)
        d.sum().backward()
        assert v.grad is not None and torch.isfinite(v.grad).all()
        v.grad = None


# --------------------------------------------------------------------------------------
# random init
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", NORMS)
def test_random_init_feasible_and_reproducible(norm):
    x, _, _ = make_case(0, (8, 1, 6, 6), 1.0, False, torch.float32)
    eps = torch.linspace(0, 2, 8)
    t = get_threat(norm)
    r1 = t.random_init(x, eps, torch.Generator().manual_seed(123))
    r2 = t.random_init(x, eps, torch.Generator().manual_seed(123))
    r3 = t.random_init(x, eps, torch.Generator().manual_seed(124))
    assert torch.equal(r1, r2)
    assert not torch.equal(r1, r3)
    assert (t.norm(r1) <= eps * (1 + 1e-5) + 1e-7).all()
    assert ((x + r1) >= 0).all() and ((x + r1) <= 1).all()
    assert (r1[0] == 0).all()  # eps = 0 → zero start


@pytest.mark.parametrize("norm", NORMS)
def test_random_init_uniform_in_ball(norm):
    """Without an active box the start is uniform in the ball: P(‖δ‖ ≤ rε) = r^d."""
    d = 4
    x = torch.full((20000, d), 0.5, dtype=torch.float64)
    t = get_threat(norm)
    r = t.random_init(x, 0.1, torch.Generator().manual_seed(0))
    radii = (t.norm(r) / 0.1).numpy()
    assert radii.max() <= 1 + 1e-12
    for q in [0.5, 0.8, 0.95]:
        assert abs(np.mean(radii <= q) - q**d) < 0.015
    # symmetric: each coordinate has mean ~0 and both signs
    assert abs(float(r.mean())) < 2e-3
    if norm == "l1":  # direction is uniform on the ℓ1 sphere: |δ_1|/‖δ‖₁ ~ Beta(1, d-1)
        share = (r[:, 0].abs() / t.norm(r)).numpy()
        assert abs(share.mean() - 1 / d) < 0.01


def test_random_init_does_not_touch_global_rng_with_generator():
    x = torch.full((2, 5), 0.5)
    torch.manual_seed(0)
    a = torch.rand(3)
    torch.manual_seed(0)
    for norm in NORMS:
        get_threat(norm).random_init(x, 0.1, torch.Generator())
    b = torch.rand(3)
    assert torch.equal(a, b)


# --------------------------------------------------------------------------------------
# steps
# --------------------------------------------------------------------------------------


def test_linf_step():
    g = torch.tensor([[0.3, -2.0, 0.0], [1.0, 1.0, -1.0]])
    s = LinfBall().step(g, torch.tensor([0.1, 0.2]))
    torch.testing.assert_close(s, torch.tensor([[0.1, -0.1, 0.0], [0.2, 0.2, -0.2]]))


def test_l2_step_unit_norm_per_example_and_scale_safe():
    g = torch.randn(4, 3, 5, 5)
    g[1] *= 1e-30  # tiny but non-zero
    g[2] *= 1e30  # huge
    g[3] = 0
    alpha = torch.tensor([0.5, 1.0, 2.0, 3.0])
    s = L2Ball().step(g, alpha)
    assert torch.isfinite(s).all()
    n = L2Ball().norm(s)
    torch.testing.assert_close(n[:3], alpha[:3])
    assert n[3] == 0
    cos = torch.nn.functional.cosine_similarity(s[0].flatten(), g[0].flatten(), dim=0)
    assert cos > 1 - 1e-6


def test_l1_step_sparse_topk():
    t = L1Ball(l1_sparsity=0.9)
    g = torch.randn(3, 1, 10, 10, generator=torch.Generator().manual_seed(0))
    alpha = torch.tensor([0.5, 1.0, 3.0])
    s = t.step(g, alpha)
    k = t.top_k(100)
    assert k == 10
    nnz = (s != 0).flatten(1).sum(1)
    assert (nnz <= k).all() and (nnz == k).all()
    torch.testing.assert_close(t.norm(s), alpha)
    # the selected coordinates are the largest |g|, with the sign of g
    for i in range(3):
        sel = s[i].flatten() != 0
        top = g[i].flatten().abs().topk(k).indices
        assert set(torch.nonzero(sel).flatten().tolist()) == set(top.tolist())
        assert (torch.sign(s[i]) == torch.sign(g[i]))[s[i] != 0].all()
    # default 0.95 → top 5%, rounding of (1 - 0.95) * 100 must give 5, not 6
    assert L1Ball().top_k(100) == 5
    assert L1Ball().top_k(3) == 1


def test_l1_step_sparse_gradient_and_zero():
    t = L1Ball(l1_sparsity=0.5)
    g = torch.zeros(2, 8)
    g[0, 3] = -2.0  # only one non-zero coordinate although k = 4
    s = t.step(g, 0.7)
    assert torch.isfinite(s).all()
    torch.testing.assert_close(s[0], torch.tensor([0, 0, 0, -0.7, 0, 0, 0, 0]))
    assert (s[1] == 0).all()


def test_l1_step_skips_blocked_box_coordinates():
    t = L1Ball(l1_sparsity=0.75)  # k = 1 of 4
    g = torch.tensor([[5.0, -4.0, 1.0, 0.5]])
    x_adv = torch.tensor([[1.0, 0.0, 0.5, 0.5]])  # coord 0 pinned at 1 (g>0), coord 1 at 0 (g<0)
    s = t.step(g, 1.0, x_adv=x_adv)
    torch.testing.assert_close(s, torch.tensor([[0.0, 0.0, 1.0, 0.0]]))
    s = t.step(g, 1.0)
    torch.testing.assert_close(s, torch.tensor([[1.0, 0.0, 0.0, 0.0]]))


@pytest.mark.parametrize("norm", NORMS)
def test_zero_gradient_step_is_zero(norm):
    s = get_threat(norm).step(torch.zeros(2, 3, 4), 0.5)
    assert torch.isfinite(s).all() and (s == 0).all()


@pytest.mark.parametrize("norm", NORMS)
def test_step_is_ascent_direction_with_length_alpha(norm):
    """⟨g, step⟩ = α‖g‖_dual for ℓ∞ and ℓ2 (steepest ascent); > 0 for the sparse ℓ1 step."""
    t = get_threat(norm)
    g = torch.randn(5, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    s = t.step(g, 0.25)
    inner = (g * s).flatten(1).sum(1)
    torch.testing.assert_close(t.norm(s), torch.full((5,), 0.25, dtype=torch.float64))
    if norm != "l1":
        torch.testing.assert_close(inner, 0.25 * t.dual_norm(g))
    assert (inner > 0).all()


def test_norms_and_dual_norms():
    d = torch.tensor([[3.0, -4.0], [0.0, 0.0]]).reshape(2, 1, 2)
    torch.testing.assert_close(LinfBall().norm(d), torch.tensor([4.0, 0.0]))
    torch.testing.assert_close(L2Ball().norm(d), torch.tensor([5.0, 0.0]))
    torch.testing.assert_close(L1Ball().norm(d), torch.tensor([7.0, 0.0]))
    torch.testing.assert_close(LinfBall().dual_norm(d), torch.tensor([7.0, 0.0]))
    torch.testing.assert_close(L2Ball().dual_norm(d), torch.tensor([5.0, 0.0]))
    torch.testing.assert_close(L1Ball().dual_norm(d), torch.tensor([4.0, 0.0]))
    # normalize is safe for zero rows
    u = L2Ball().normalize(d)
    torch.testing.assert_close(u[0].flatten(), torch.tensor([0.6, -0.8]))
    assert (u[1] == 0).all()


def test_linear_margin_dual_norm_identity():
    """Distance to the hyperplane uᵀx + c = 0 in ℓp is |uᵀx + c|/‖u‖_q, with q the dual
    exponent (the closed form the MMA paper's margin, Eq. 1, reduces to for a linear model);
    the ℓ∞/ℓ2 steps of length d land on it."""
    g = torch.Generator().manual_seed(0)
    u = torch.randn(1, 10, generator=g, dtype=torch.float64)
    x = torch.randn(1, 10, generator=g, dtype=torch.float64)
    c = -(u * x).sum() - 0.7  # so uᵀx + c = -0.7
    for norm in ["linf", "l2"]:
        t = get_threat(norm)
        dist = 0.7 / t.dual_norm(u)
        x_on = x + t.step(u, dist)
        assert float((u * x_on).sum() + c) == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", NORMS)
def test_contains_judges_ball_and_box_with_per_example_eps(norm):
    threat = get_threat(norm)
    g = torch.Generator().manual_seed(7)
    x = 0.25 + 0.5 * torch.rand(6, 2, 3, 3, generator=g)  # boxes inactive near x
    eps = torch.tensor([0.02, 0.04, 0.08, 0.12, 0.16, 0.2])
    direction = threat.normalize(torch.randn(x.shape, generator=g))
    # feasible: exactly on each example's own sphere, and well inside it
    on_sphere = x + direction * eps.view(-1, 1, 1, 1)
    assert threat.contains(x, on_sphere, eps).tolist() == [True] * 6
    assert bool(threat.contains(x, x + 0.5 * (on_sphere - x), eps).all())
    assert bool(threat.contains(x, x, eps).all()) and bool(threat.contains(x, x, 0.0).all())
    # just outside the ball: (1 + 10·rtol)·ε is rejected, (1 + rtol/10)·ε accepted
    far = x + direction * (eps * (1 + 10 * FEASIBILITY_RTOL)).view(-1, 1, 1, 1)
    near = x + direction * (eps * (1 + FEASIBILITY_RTOL / 10)).view(-1, 1, 1, 1)
    assert not bool(threat.contains(x, far, eps).any())
    assert bool(threat.contains(x, near, eps).all())
    # per-example ε: the same points judged against a radius that is too small for some
    small = eps.clone()
    small[::2] = eps[::2] / 2
    assert threat.contains(x, on_sphere, small).tolist() == [False, True] * 3
    # a float ε applies to every example
    assert threat.contains(x, on_sphere, 0.1).tolist() == [True, True, True, False, False, False]
    # just outside the box (inside the ball) and NaN are rejected
    out_box = on_sphere.clone()
    out_box[1, 0, 0, 0] = -1e-6
    out_box[4, 1, 2, 2] = 1 + 1e-6
    out_box[5, 0, 1, 1] = float("nan")
    assert threat.contains(x, out_box, eps).tolist() == [True, False, True, True, False, False]
    # a distance the caller already has is used as given (the box is still checked)
    d = threat.norm(out_box - x)
    assert threat.contains(x, out_box, eps, distance=d).tolist() == [True, False, True, True, False, False]
    assert not bool(threat.contains(x, x, eps, distance=2 * eps).any())
    with pytest.raises(ValueError, match=r"\[B\]"):
        threat.contains(x, x, torch.ones(3))


def test_contains_tolerance_is_relative():
    threat = get_threat("linf")
    x = torch.full((2, 4), 0.5)
    x_adv = x + torch.tensor([[0.1 * (1 + 5e-6)], [0.1 * (1 + 5e-5)]])
    assert threat.contains(x, x_adv, 0.1).tolist() == [True, False]
    assert threat.contains(x, x_adv, 0.1, rtol=1e-4).tolist() == [True, True]
    assert threat.contains(x, x_adv, 0.1, rtol=0.0).tolist() == [False, False]


def test_check_inputs_accepts_valid():
    x = torch.rand(4, 1, 3, 3)
    check_inputs(x, torch.tensor([0, 1, 2, 9]), 0.3, num_classes=10)
    check_inputs(x, None, torch.full((4,), 0.1))
    check_inputs(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), 0.1)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"x": torch.full((2, 3), 1.5)}, r"\[0, 1\].*1\.5.*inside the model"),
        ({"x": torch.full((2, 3), -0.2)}, r"-0\.2"),
        ({"x": torch.tensor([[0.1, float("nan")]])}, "NaN"),
        ({"x": torch.tensor([[0.1, float("inf")]])}, "NaN or infinite"),
        ({"x": torch.zeros(2, 3, dtype=torch.uint8)}, "floating-point"),
        ({"y": torch.tensor([0.0, 1.0])}, "integer"),
        ({"y": torch.tensor([0, 1, 2])}, "batch size 2"),
        ({"y": torch.zeros(2, 10, dtype=torch.long)}, "shape \\[B\\]"),
        ({"y": torch.tensor([0, 10]), "num_classes": 10}, r"\[0, 10\).*10"),
        ({"y": torch.tensor([-1, 0])}, ">= 0"),
        ({"eps": -0.1}, ">= 0"),
        ({"eps": float("nan")}, "finite"),
        ({"eps": torch.tensor([0.1, float("nan")])}, "finite"),
        ({"eps": torch.tensor([0.1, -0.1])}, ">= 0"),
        ({"eps": torch.ones(3)}, r"\[B\] = \[2\]"),
        ({"eps": torch.ones(2, 1)}, r"shape \[B\]"),
        ({"num_classes": 0}, "positive integer"),
    ],
)
def test_check_inputs_errors(kwargs, match):
    args = {"x": torch.rand(2, 3), "y": torch.tensor([0, 1]), "eps": 0.1, "num_classes": None}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        check_inputs(**args)


def test_check_inputs_type_errors():
    with pytest.raises(TypeError):
        check_inputs(np.zeros((2, 3)))
    with pytest.raises(TypeError):
        check_inputs(torch.rand(2, 3), eps="0.1")
