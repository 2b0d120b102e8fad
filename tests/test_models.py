"""Tests for wideberth.models: shapes, parameter counts, normalisation layers, registry."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from wideberth.models import (
    MODELS,
    ModelEntry,
    Normalize,
    PerImageStandardize,
    build_model,
    list_models,
    register_model,
    uses_batchnorm,
)

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
EXPECTED = {"lenet5-madry", "smallcnn", "wrn-28-4", "wrn-34-10", "resnet18", "mlp", "cnn-small"}
# same code paths, fewer FLOPs: for tests about behaviour rather than size
LIGHT = {
    "wrn-28-4": {"depth": 10, "widen": 2},
    "wrn-34-10": {"depth": 10, "widen": 2},
    "resnet18": {"width": 8},
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- registry and shapes


def test_registry_contents() -> None:
    assert EXPECTED <= set(list_models())
    assert list_models() == sorted(MODELS)
    for name in EXPECTED:
        entry = MODELS[name]
        assert isinstance(entry, ModelEntry)
        assert entry.description and "\n" not in entry.description


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_logit_shape(name: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(name, shape, 7)
    assert model.training  # built in train mode
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_eval_mode_is_batch_independent(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, (1, 8, 8), 10, **LIGHT.get(name, {})).eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        batch = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(4)])
    assert torch.allclose(batch, single, atol=1e-5, rtol=1e-4)


def test_mlp_on_toy2d_points() -> None:
    model = build_model("mlp", (1, 1, 2), 2, hidden=(16, 16))
    assert model(torch.rand(5, 1, 1, 2)).shape == (5, 2)
    linear = build_model("mlp", (1, 28, 28), 10, hidden=())
    assert n_params(linear) == 784 * 10 + 10  # logistic regression


# ---------------------------------------------------------------- parameter counts


def test_lenet5_madry_param_count_closed_form() -> None:
    model = build_model("lenet5-madry", (1, 28, 28), 10)
    expected = (
        (1 * 32 * 5 * 5 + 32)  # conv1
        + (32 * 64 * 5 * 5 + 64)  # conv2
        + (3136 * 1024 + 1024)  # fc1: 7*7*64 = 3136
        + (1024 * 10 + 10)  # fc2
    )
    assert n_params(model) == expected == 3_274_634
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3136, 1024), (1024, 10)]
    # 8x8 digits: two pools give 2x2
    small = build_model("lenet5-madry", (1, 8, 8), 10)
    assert [m for m in small.modules() if isinstance(m, nn.Linear)][0].in_features == 2 * 2 * 64


def _wrn_params(c: int, k: int, depth: int, widen: int) -> int:
    """Hand count of a pre-activation WRN (bias-free convs, BN = 2 params per channel)."""
    n = (depth - 4) // 6
    widths = [16, 16 * widen, 32 * widen, 64 * widen]
    total = c * 16 * 9  # stem conv
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        first = 2 * a + a * b * 9 + 2 * b + b * b * 9 + (a * b if a != b else 0)
        rest = 2 * b + b * b * 9 + 2 * b + b * b * 9
        total += first + (n - 1) * rest
    return total + 2 * widths[3] + widths[3] * k + k  # final BN + fc


def test_wrn_param_counts() -> None:
    wrn28 = build_model("wrn-28-4", (3, 32, 32), 10)
    assert n_params(wrn28) == _wrn_params(3, 10, 28, 4) == 5_849_050
    assert isinstance(wrn28[0], PerImageStandardize)
    wrn34 = build_model("wrn-34-10", (3, 32, 32), 10)
    assert n_params(wrn34) == _wrn_params(3, 10, 34, 10) == 46_160_474
    assert not any(isinstance(m, PerImageStandardize) for m in wrn34.modules())
    # TRADES' unused sub_block1 is one more 16 -> 160 group of 5 blocks
    with_sub = build_model("wrn-34-10", (3, 32, 32), 10, sub_block1=True)
    group1 = n_params(wrn34.block1)
    assert n_params(with_sub) == 46_160_474 + group1
    assert any(k.startswith("sub_block1.") for k in with_sub.state_dict())


def test_wrn_init() -> None:
    torch.manual_seed(0)
    net = build_model("wrn-28-4", (3, 32, 32), 10)[1]
    conv = net.block3[1].conv1  # 256 -> 256, 3x3: std sqrt(2 / (9 * 256))
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 256)), rel=0.02)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bool((m.weight == 1).all() and (m.bias == 0).all()) for m in bns)
    assert bool((net.fc.bias == 0).all())


def test_resnet18_and_smallcnn_counts() -> None:
    assert n_params(build_model("resnet18", (3, 32, 32), 10)) == 11_173_962
    small = build_model("smallcnn", (1, 28, 28), 10)
    assert n_params(small) == 312_202
    assert small.padding == 0  # faithful: unpadded at 28x28, flatten 64*4*4
    assert small.classifier[0].in_features == 1024
    assert build_model("smallcnn", (3, 32, 32), 10).padding == 0
    assert build_model("smallcnn", (1, 8, 8), 10).padding == 1  # documented deviation
    # TRADES init: last FC zero, so a fresh model outputs zero logits
    assert bool((small(torch.rand(3, 1, 28, 28)) == 0).all())


def test_cnn_small_structure() -> None:
    model = build_model("cnn-small", (1, 28, 28), 10)
    assert model.classifier[0].in_features == 7 * 7 * 64
    assert not uses_batchnorm(model)
    custom = build_model("cnn-small", (1, 8, 8), 10, channels=(8, 16), hidden=32)
    assert custom.classifier[0].in_features == 2 * 2 * 16
    assert custom.classifier[0].out_features == 32


def test_uses_batchnorm_and_construction_leaves_bn_untouched() -> None:
    assert {n for n in EXPECTED if uses_batchnorm(build_model(n, (1, 8, 8), 10))} == {
        "wrn-28-4",
        "wrn-34-10",
        "resnet18",
    }
    model = build_model("cnn-small", (1, 28, 28), 10, batchnorm=True)
    assert uses_batchnorm(model)
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    # the dummy forward used to size the flatten layer must not update running stats
    assert int(bn.num_batches_tracked) == 0
    assert bool((bn.running_mean == 0).all())
    assert all(m.training for m in model.modules())


# ---------------------------------------------------------------- normalisation layers


def test_per_image_standardize_moments() -> None:  # correction=0: TensorFlow's formula
    torch.manual_seed(0)
    scale = torch.tensor([1.0, 0.5, 0.1, 0.02]).view(4, 1, 1, 1)
    x = torch.rand(4, 3, 32, 32) * scale + 0.3 * (1 - scale)
    y = PerImageStandardize(correction=0)(x).flatten(1)
    assert torch.allclose(y.mean(1), torch.zeros(4), atol=1e-5)
    # population std is 1 (the unbiased std would be sqrt(N/(N-1)) > 1) ...
    assert torch.allclose(y[:3].std(1, correction=0), torch.ones(3), atol=1e-4)
    # ... unless the image's std is below the floor 1/sqrt(N): then the std is std*sqrt(N)
    std4 = x[3].std(correction=0)
    assert std4 < 1 / math.sqrt(3072)
    assert y[3].std(correction=0).item() == pytest.approx(std4.item() * math.sqrt(3072), rel=1e-4)


def test_per_image_standardize_matches_tensorflow_example() -> None:
    # tf.image.per_image_standardization docs: values 1..12 in one image
    x = torch.arange(1, 13, dtype=torch.float32).view(1, 3, 2, 2)
    y = PerImageStandardize(correction=0)(x).flatten()
    assert y[0].item() == pytest.approx(-1.593255, abs=1e-5)
    assert y[-1].item() == pytest.approx(1.593255, abs=1e-5)
    assert y[6].item() == pytest.approx(0.14484136, abs=1e-5)


def test_per_image_standardize_constant_and_low_variance() -> None:
    x = torch.full((2, 3, 8, 8), 0.7, requires_grad=True)
    y = PerImageStandardize()(x)
    assert torch.isfinite(y).all() and y.abs().max().item() < 1e-5
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # std below 1/sqrt(N): divided by the floor 1/sqrt(N), not by std
    n = 3 * 8 * 8
    z = torch.zeros(1, 3, 8, 8)
    z.view(-1)[0] = 0.01
    out = PerImageStandardize()(z).flatten()
    centered = z.flatten() - z.mean()
    assert torch.allclose(out, centered * math.sqrt(n), atol=1e-6)


def test_per_image_standardize_is_per_image() -> None:
    torch.manual_seed(0)
    x = torch.rand(5, 3, 8, 8)
    layer = PerImageStandardize()
    batch = layer(x)
    single = torch.cat([layer(x[i : i + 1]) for i in range(5)])
    assert torch.allclose(batch, single, atol=1e-6)


def test_wrn28_invariant_to_brightness_and_contrast() -> None:
    # per-image standardisation as first layer: model(a*x + b) == model(x) for a > 0
    torch.manual_seed(0)
    model = build_model("wrn-28-4", (3, 8, 8), 10, depth=10, widen=1).eval()
    x = torch.rand(3, 3, 8, 8) * 0.5
    with torch.no_grad():
        assert torch.allclose(model(x), model(0.6 * x + 0.2), atol=1e-4)
    plain = build_model("wrn-28-4", (3, 8, 8), 10, depth=10, widen=1, standardize=False).eval()
    with torch.no_grad():
        assert not torch.allclose(plain(x), plain(0.6 * x + 0.2), atol=1e-4)


def test_normalize() -> None:
    layer = Normalize(mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))
    x = torch.rand(2, 3, 4, 4)
    y = layer(x)
    assert torch.allclose(y[:, 0], (x[:, 0] - 0.5) / 0.5)
    assert torch.allclose(y[:, 1], (x[:, 1] - 0.25) / 0.25)
    assert torch.allclose(y[:, 2], x[:, 2] / 2.0)
    assert set(layer.state_dict()) == {"mean", "std"}
    assert list(layer.parameters()) == []
    with pytest.raises(ValueError):
        Normalize((0.5, 0.5), (1.0,))
    with pytest.raises(ValueError):
        Normalize((0.5,), (0.0,))


# ---------------------------------------------------------------- errors


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ValueError) as info:
        build_model("lenet6", (1, 28, 28), 10)
    for name in EXPECTED:
        assert name in str(info.value)


def test_bad_kwarg_lists_valid_options() -> None:
    with pytest.raises(ValueError) as info:
        build_model("cnn-small", (1, 28, 28), 10, width=3)
    msg = str(info.value)
    assert "width" in msg and "channels" in msg and "hidden" in msg and "batchnorm" in msg
    with pytest.raises(ValueError, match="depth"):
        build_model("wrn-28-4", (3, 32, 32), 10, layers=3)


def test_bad_shapes_raise_value_error() -> None:
    with pytest.raises(ValueError):
        build_model("mlp", (28, 28), 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        build_model("mlp", (1, 28, 28), 0)
    with pytest.raises(ValueError):
        build_model("lenet5-madry", (1, 1, 2), 2)  # pooling collapses the map
    with pytest.raises(ValueError):
        build_model("wrn-28-4", (3, 32, 32), 10, depth=27)


def test_register_model() -> None:
    @register_model("_test-linear", "a linear model for this test")
    def _builder(
        input_shape: tuple[int, int, int], num_classes: int, bias: bool = True
    ) -> nn.Module:
        return nn.Sequential(
            nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes, bias=bias)
        )

    try:
        assert "_test-linear" in list_models()
        assert MODELS["_test-linear"].options == {"bias": True}
        model = build_model("_test-linear", (1, 2, 2), 3, bias=False)
        assert n_params(model) == 12
        with pytest.raises(ValueError):
            register_model("_test-linear", "duplicate")(_builder)
    finally:
        MODELS.pop("_test-linear", None)


# ---------------------------------------------------------------- determinism and gradients


@pytest.mark.parametrize("name", sorted(EXPECTED - {"wrn-34-10"}))
def test_deterministic_given_seed(name: str) -> None:
    x = torch.rand(2, 1, 8, 8)
    models = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        models.append(build_model(name, (1, 8, 8), 10).eval())
    a, b, c = (m.state_dict() for m in models)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    with torch.no_grad():
        assert torch.equal(models[0](x), models[1](x))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_gradients_reach_input(name: str) -> None:
    torch.manual_seed(0)
    shape = (3, 8, 8)
    model = build_model(name, shape, 10, **LIGHT.get(name, {})).eval()
    if name == "smallcnn":  # move off TRADES' zero-initialised last layer
        nn.init.normal_(model.classifier[-1].weight)
    x = torch.rand(2, *shape, requires_grad=True)
    # a linear function of the logits: its input gradient cannot vanish by saturation
    (model(x) * torch.randn(2, 10)).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    assert (x.grad.flatten(1).abs().sum(1) > 0).all()  # every example gets a gradient
