"""The contract every registered attack keeps, checked on the shared target list.

Targets (``tests/attack_targets.py``): every attack of :data:`wideberth.attacks.ATTACKS` ×
every norm it supports, with small settings (plus a few option variants). For each target,
on the fixed-ε runner ``entry.run``:

- x_adv stays in the ε-ball ∩ [0, 1] box, for a scalar ε and per-example ε [B] (ε = 0 rows
  do not move), with x's shape, dtype and device, never requiring grad;
- batch independence: an example gets the same x_adv alone, in a larger batch and in a
  permuted batch (bitwise on a model whose rows are computed elementwise; to a tolerance on
  a BLAS model);
- per-example ε: a [B] tensor gives each row the result of that row's scalar ε;
- the model comes back as found: every submodule's mode, every parameter's
  ``requires_grad`` and ``.grad`` (also ``None``), the state dict (BatchNorm statistics);
  every forward runs in eval mode (gradient-free attacks: never with gradients enabled);
  the result is deterministic; a plain callable gives the module's result;
- inputs are never modified, and ε = 0 returns a copy of x;
- bad inputs raise ``ValueError`` with a message naming the problem.

Minimal-norm attacks also keep the contract of ``entry.minimize``: shapes and dtypes,
``distance ≥ 0``, already-misclassified examples at distance 0 with ``x_adv = x``,
found ⇒ misclassified at x_adv (LM ≥ 0), distance = ‖x_adv − x‖, not found ⇒ ``+inf`` and
``x_adv = x``, x_adv in the box, batch independence, modes and inputs as above.

Attack-specific facts (closed forms, paper identities, exact pass counts) stay in each
attack's own test file.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import wideberth.attacks as wba
from attack_targets import (
    BLAS_ATOL,
    EPS,
    MINIMAL_TARGETS,
    TARGETS,
    VARIANT_TARGETS,
    AttackTarget,
    BNNet,
    batch,
    exact_model,
    ids,
    misclassified,
    mixed_labels,
    small_cnn,
)
from wideberth.threat import get_threat


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    # tiny tensors: one thread avoids thread hand-off overhead on busy machines
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def assert_feasible(norm: str, x_adv: Tensor, x: Tensor, eps: float | Tensor) -> None:
    """x_adv in the ε-ball (relative 1e-5) ∩ [0, 1], same shape/dtype/device, ε = 0 rows at x."""
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    e = eps if isinstance(eps, Tensor) else torch.full((x.shape[0],), float(eps))
    d = get_threat(norm).norm(x_adv - x)
    assert bool((d <= e * (1 + 1e-5)).all()), f"outside the {norm} ball: {float((d - e).max())}"
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0, "outside the [0, 1] box"
    zero = e == 0
    if bool(zero.any()):
        assert torch.equal(x_adv[zero], x[zero]), "an ε = 0 row moved"


def per_example_eps(t: AttackTarget, n: int) -> Tensor:
    """Per-example ε [n] from 0 to 2ε, with rows 0 and 5 at exactly 0."""
    e = t.eps * torch.linspace(0, 2, n)
    if n > 5:
        e[5] = 0.0
    return e


# --------------------------------------------------------------------------------------
# the registry's own contract
# --------------------------------------------------------------------------------------


def test_registry_names_kinds_and_docstring_table():
    assert wba.ATTACK_NAMES == wba.attack_names()
    assert set(wba.attack_names("fixed-eps")) | set(wba.attack_names("minimal-norm")) == set(wba.ATTACKS)
    for entry in wba.ATTACKS.values():
        assert entry.norms and all(n in ("linf", "l2", "l1") for n in entry.norms)
        assert entry.summary and entry.paper and callable(entry.run) and callable(entry.function)
        assert (entry.minimize is not None) == (entry.kind == "minimal-norm")
    assert wba.attack_table() in (wba.__doc__ or ""), "the attacks table of wideberth.attacks is stale"
    assert wba.margin_methods()[0] == "auto"
    assert set(wba.attack_names("minimal-norm")) <= set(wba.margin_methods())
    with pytest.warns(DeprecationWarning, match="apgd-t"):
        assert wba.get_attack("apgd-dlr").name == "apgd-t"
    with pytest.raises(ValueError, match="unknown attack"):
        wba.get_attack("deepfool")


def test_every_attack_has_a_target():
    assert {t.name for t in TARGETS} == set(wba.ATTACKS)
    assert {(t.name, t.norm) for t in TARGETS} == {
        (e.name, n) for e in wba.ATTACKS.values() for n in e.norms
    }


# --------------------------------------------------------------------------------------
# ε-ball ∩ box, per-example ε
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", VARIANT_TARGETS, ids=ids(VARIANT_TARGETS))
def test_stays_in_ball_and_box(t: AttackTarget):
    model = small_cnn()
    x, y = batch(12)
    eps_t = per_example_eps(t, 12)
    for eps in (t.eps, eps_t):
        with torch.enable_grad():
            x_adv = t.run(model, x, y, eps)
        assert not x_adv.requires_grad
        assert_feasible(t.norm, x_adv, x, eps)


@pytest.mark.parametrize("t", TARGETS, ids=ids(TARGETS))
def test_per_example_eps_is_each_rows_scalar_eps(t: AttackTarget):
    model = exact_model(1)
    x, y = batch(4, seed=2)
    eps = t.eps * torch.tensor([0.5, 1.0, 1.5, 0.25])
    whole = t.run(model, x, y, eps)
    for i in range(4):
        one = t.run(model, x[i : i + 1], y[i : i + 1], float(eps[i]))
        assert torch.equal(one, whole[i : i + 1]), f"row {i}"
    same = t.run(model, x, y, torch.full((4,), t.eps))
    assert torch.equal(same, t.run(model, x, y, t.eps))


# --------------------------------------------------------------------------------------
# batch independence
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", VARIANT_TARGETS, ids=ids(VARIANT_TARGETS))
def test_batch_independence(t: AttackTarget):
    x, y = batch(20, seed=8)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    kw = {"seed": 4}

    # bitwise, with a model whose rows never share a BLAS call
    model = exact_model()
    alone = t.run(model, x[:5], y[:5], **kw)
    in_20 = t.run(model, x, y, **kw)
    permuted = t.run(model, x[perm], y[perm], **kw)[perm.argsort()]
    assert torch.equal(alone, in_20[:5]) and torch.equal(alone, permuted[:5])

    # nn.Linear / conv: rows differ in the last bits between batch sizes; successes agree
    model = small_cnn(8)
    alone = t.run(model, x[:5], y[:5], **kw)
    in_20 = t.run(model, x, y, **kw)[:5]
    permuted = t.run(model, x[perm], y[perm], **kw)[perm.argsort()][:5]
    atol = BLAS_ATOL.get(t.name, 1e-6)
    torch.testing.assert_close(in_20, alone, rtol=0, atol=atol)
    torch.testing.assert_close(permuted, alone, rtol=0, atol=atol)
    with torch.no_grad():
        broken = model(alone).argmax(1) != y[:5]
        assert torch.equal(model(in_20).argmax(1) != y[:5], broken)


# --------------------------------------------------------------------------------------
# the model and the inputs are left as found
# --------------------------------------------------------------------------------------


def _prepared_bn_net() -> BNNet:
    torch.manual_seed(0)
    model = BNNet()
    with torch.no_grad():  # non-trivial running statistics
        model.train()
        model(batch(32, seed=9)[0])
    model.eval()
    model.bn.train()  # submodules left in train mode: BatchNorm and Dropout
    model.drop.train()
    model.conv.weight.requires_grad_(False)  # a frozen parameter stays frozen
    for name, p in model.named_parameters():
        p.grad = None if name == "fc.bias" else torch.full_like(p, 0.5)  # None stays None
    return model


def _check_left_as_found(t: AttackTarget, call) -> None:
    model = _prepared_bn_net()
    modes = {n: m.training for n, m in model.named_modules()}
    req = {n: p.requires_grad for n, p in model.named_parameters()}
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    seen: list[tuple[bool, bool]] = []
    hook = model.bn.register_forward_hook(
        lambda m, i, o: seen.append((m.training, torch.is_grad_enabled()))
    )
    out1 = call(model)
    hook.remove()
    assert seen and not any(training for training, _ in seen), "the attack must run in eval mode"
    if t.entry.gradient_free:
        assert not any(grad for _, grad in seen), "a score-based attack asked for gradients"
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == req
    for n, p in model.named_parameters():
        if grads[n] is None:
            assert p.grad is None, f"{n}.grad was created"
        else:
            assert torch.equal(p.grad, grads[n]), f"{n}.grad was touched"
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), f"{k} changed (BatchNorm statistics updated?)"
    # attacked in eval mode: dropout off and BN on running statistics, so deterministic
    out2 = call(model)
    for a, b in zip(_tensors(out1), _tensors(out2), strict=True):
        assert torch.equal(a, b)


def _tensors(out) -> list[Tensor]:
    return [out] if isinstance(out, Tensor) else [out.x_adv, out.distance, out.found]


@pytest.mark.parametrize("t", TARGETS, ids=ids(TARGETS))
def test_model_modes_grads_and_state_restored(t: AttackTarget):
    x, y = batch(16, seed=11)
    with torch.enable_grad():
        _check_left_as_found(t, lambda m: t.run(m, x, y))


@pytest.mark.parametrize("t", TARGETS, ids=ids(TARGETS))
def test_plain_callable_model(t: AttackTarget):
    net = small_cnn(12)
    x, y = batch(8, seed=12)
    a = t.run(lambda z: net(z), x, y)
    assert torch.equal(a, t.run(net, x, y))
    assert_feasible(t.norm, a, x, t.eps)


@pytest.mark.parametrize("t", TARGETS, ids=ids(TARGETS))
def test_inputs_not_modified(t: AttackTarget):
    model = small_cnn(13)
    x, y = batch(10, seed=13)
    eps = torch.full((10,), t.eps)
    saved = [v.clone() for v in (x, y, eps)]
    t.run(model, x, y, eps)
    t.run(model, x, y)
    for a, b in zip((x, y, eps), saved, strict=True):
        assert torch.equal(a, b)
    out = t.run(model, x, y, 0.0)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


# --------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------

BAD_DATA = [
    (lambda x, y, e: (x * 2 - 0.5, y, e), r"box \[0, 1\]"),
    (lambda x, y, e: (x + 1.5, y, e), r"box \[0, 1\]"),
    (lambda x, y, e: (x.index_put((torch.tensor([0]),), torch.tensor(float("nan"))), y, e), "NaN"),
    (lambda x, y, e: (x, y.index_put((torch.tensor([1]),), torch.tensor(5)), e), r"labels must be in \[0, 5\)"),
    (lambda x, y, e: (x, y.index_put((torch.tensor([1]),), torch.tensor(-1)), e), "labels must be >= 0"),
    (lambda x, y, e: (x, y[:4], e), "4 labels but x has batch size 6"),
    (lambda x, y, e: (x, y.float(), e), "integer"),
]
BAD_EPS = [
    (lambda x, y, e: (x, y, -e), "eps must be >= 0"),
    (lambda x, y, e: (x, y, torch.tensor([e] * 5 + [-1.0])), "eps must be >= 0"),
    (lambda x, y, e: (x, y, torch.full((3,), e)), r"shape \[B\] = \[6\]"),
    (lambda x, y, e: (x, y, torch.full((6, 1), e)), r"shape \[B\]"),
]
BAD_INPUTS = BAD_DATA + BAD_EPS


@pytest.mark.parametrize("t", TARGETS, ids=ids(TARGETS))
def test_bad_inputs_raise(t: AttackTarget):
    model = small_cnn(14)
    x, y = batch(6, seed=14)
    for change, match in BAD_INPUTS:
        x2, y2, e2 = change(x, y, t.eps)
        with pytest.raises(ValueError, match=match):
            t.run(model, x2, y2, e2)


@pytest.mark.parametrize("entry", list(wba.ATTACKS.values()), ids=list(wba.ATTACKS))
def test_unsupported_norm_raises(entry):
    model = small_cnn(14)
    x, y = batch(6, seed=14)
    for norm in sorted({"linf", "l2", "l1"} - set(entry.norms)):
        with pytest.raises(ValueError, match="norm|pgd"):
            wba.run_attack(entry.name, model, x, y, norm=norm, eps=EPS[norm], steps=1)
        with pytest.raises(ValueError):
            entry.run(model, x, y, norm=norm, eps=EPS[norm], steps=1)


@pytest.mark.parametrize("t", MINIMAL_TARGETS, ids=ids(MINIMAL_TARGETS))
def test_minimize_bad_inputs_raise(t: AttackTarget):
    model = small_cnn(14)
    x, y = batch(6, seed=14)
    for change, match in BAD_DATA:  # minimize takes no ε
        x2, y2, _ = change(x, y, t.eps)
        with pytest.raises(ValueError, match=match):
            t.minimize(model, x2, y2)


# --------------------------------------------------------------------------------------
# minimal-norm attacks: the contract of minimize
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", MINIMAL_TARGETS, ids=ids(MINIMAL_TARGETS))
def test_minimize_result_contract(t: AttackTarget):
    model = exact_model(3)
    x, _ = batch(12, seed=3)
    y, wrong = mixed_labels(model, x)
    res = t.minimize(model, x, y)
    b = x.shape[0]
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    assert res.distance.shape == (b,) and res.found.shape == (b,)
    assert res.distance.dtype == x.dtype and res.found.dtype == torch.bool
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    assert bool((res.distance >= 0).all())
    # already misclassified: found at distance 0, not moved; the others: distance > 0
    assert bool(res.found[wrong].all()) and bool((res.distance[wrong] == 0).all())
    assert torch.equal(res.x_adv[wrong], x[wrong])
    assert bool((res.distance[~wrong] > 0).all())
    # found ⇒ misclassified at x_adv, at the reported distance; not found ⇒ +inf at x
    assert bool(misclassified(model, res.x_adv, y)[res.found].all()), "a found x_adv is correct"
    d = get_threat(t.norm).norm(res.x_adv - x)
    assert torch.allclose(res.distance[res.found], d[res.found], rtol=1e-6, atol=1e-7)
    assert bool(torch.isposinf(res.distance[~res.found]).all())
    assert torch.equal(res.x_adv[~res.found], x[~res.found])
    assert int(res.found[~wrong].sum()) >= 1, "the comparison is about actual adversarials"
    # a runner that thresholds the search counts exactly the examples found within ε
    for eps in () if getattr(t.entry.run, "__wrapped__", None) is not t.entry.minimize else (t.eps, 0.5 * res.distance.clamp(max=10.0)):
        x_eps = t.run(model, x, y, eps)
        within = res.found & (res.distance <= eps)
        assert torch.equal(x_eps[within], res.x_adv[within])
        assert torch.equal(x_eps[~within], x[~within])


def _assert_same_result(a, b, exact: bool) -> None:
    assert torch.equal(a.found, b.found)
    fin = torch.isfinite(a.distance)
    assert torch.equal(fin, torch.isfinite(b.distance))
    if exact:
        assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.distance, b.distance)
    else:
        assert torch.allclose(a.x_adv, b.x_adv, atol=1e-5)
        assert torch.allclose(a.distance[fin], b.distance[fin], rtol=1e-4, atol=1e-6)


def _rows(res, idx: Tensor | slice):
    return wba.MinimalNormResult(res.x_adv[idx], res.distance[idx], res.found[idx])


@pytest.mark.parametrize("t", MINIMAL_TARGETS, ids=ids(MINIMAL_TARGETS))
def test_minimize_batch_independence(t: AttackTarget):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(20, 1, 8, 8, generator=g)
    perm = torch.randperm(20, generator=g)
    for model, exact in ((exact_model(4), True), (small_cnn(5), False)):
        with torch.no_grad():
            y = model(x).argmax(1)
        y[2] = (y[2] + 1) % 5  # one already-misclassified example in the mix
        whole = t.minimize(model, x, y)
        _assert_same_result(t.minimize(model, x[:5], y[:5]), _rows(whole, slice(0, 5)), exact)
        _assert_same_result(t.minimize(model, x[perm], y[perm]), _rows(whole, perm), exact)
        assert int(whole.found.sum()) >= 10  # the comparison is about actual adversarials


@pytest.mark.parametrize("t", MINIMAL_TARGETS, ids=ids(MINIMAL_TARGETS))
def test_minimize_modes_grads_and_inputs_untouched(t: AttackTarget):
    x, y = batch(6, seed=4)
    x0, y0 = x.clone(), y.clone()
    _check_left_as_found(t, lambda m: t.minimize(m, x, y))
    assert torch.equal(x, x0) and torch.equal(y, y0)


def test_minimal_targets_cover_every_minimal_norm_attack():
    assert {t.name for t in MINIMAL_TARGETS} == set(wba.attack_names("minimal-norm"))
    assert all(math.isfinite(EPS[t.norm]) for t in MINIMAL_TARGETS)
