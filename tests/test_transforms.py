"""Tests for wideberth.transforms: the data transformations of the min-max attack over
transformations (Wang et al. §2c; spec §2c, §6.5, §8 item 15)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from wideberth.transforms import (
    TRANSFORMS,
    Brightness,
    CenterCrop,
    Compose,
    Gamma,
    HFlip,
    Identity,
    RandomApply,
    RandomCenterCrop,
    RandomChoice,
    RandomRotate,
    Rotate,
    Transform,
    VFlip,
    paper_transforms,
    parse_transform,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ramp(h: int, w: int, axis: int) -> torch.Tensor:
    """[1, 1, h, w] image whose value is the row index (axis=0) or column index (axis=1)."""
    r = torch.arange(h, dtype=torch.float64).view(h, 1).expand(h, w)
    c = torch.arange(w, dtype=torch.float64).view(1, w).expand(h, w)
    return (r if axis == 0 else c).clone().view(1, 1, h, w)


# Deterministic transforms whose outputs stay in [0, 1] for inputs in [0, 1].
BOUNDED = [
    Identity(),
    HFlip(),
    VFlip(),
    Brightness(0.1, clip=True),
    Brightness(-0.3, clip=True),
    Gamma(1.3),
    Gamma(0.5),
    CenterCrop(0.8),
    CenterCrop(0.5, align="slice"),
    Rotate(-30.0),
    Rotate(45.0, padding="border"),
    Rotate(17.0, mode="nearest"),
]
DETERMINISTIC = [*BOUNDED, Brightness(0.1), Compose((HFlip(), Gamma(1.3), Rotate(10.0)))]


def _random_set() -> list[Transform]:
    g = _gen(1)
    return [
        RandomApply(HFlip(), 0.5, generator=g),
        RandomCenterCrop(0.6, 1.0, generator=g),
        RandomRotate(10.0, generator=g),
        RandomChoice((HFlip(), VFlip(), Gamma(1.3)), generator=g),
        RandomChoice((HFlip(), Rotate(5.0)), per_example=True, generator=g),
    ]


# ---------------------------------------------------------------- definitions


def test_flips_on_a_2x3_image() -> None:
    x = torch.tensor([[0.0, 0.1, 0.2], [0.3, 0.4, 0.5]]).view(1, 1, 2, 3)
    assert torch.equal(
        HFlip()(x), torch.tensor([[0.2, 0.1, 0.0], [0.5, 0.4, 0.3]]).view(1, 1, 2, 3)
    )
    assert torch.equal(
        VFlip()(x), torch.tensor([[0.3, 0.4, 0.5], [0.0, 0.1, 0.2]]).view(1, 1, 2, 3)
    )


@pytest.mark.parametrize("t", [HFlip(), VFlip()])
def test_flips_are_involutions(t: Transform) -> None:
    x = torch.rand(3, 2, 5, 4, generator=_gen())
    assert torch.equal(t(t(x)), x)
    assert not torch.equal(t(x), x)


def test_identity_returns_input() -> None:
    x = torch.rand(2, 3, 4, 4, generator=_gen())
    assert torch.equal(Identity()(x), x)


def test_brightness_is_additive_and_unclipped_by_default() -> None:
    x = torch.tensor([0.0, 0.25, 0.95, 1.0], dtype=torch.float64).view(1, 1, 2, 2)
    torch.testing.assert_close(Brightness(0.1)(x), x + 0.1, rtol=0, atol=0)
    assert float(Brightness(0.1)(x).max()) == pytest.approx(1.1)  # TF adjust_brightness: no clip
    torch.testing.assert_close(
        Brightness(0.1, clip=True)(x),
        torch.tensor([0.1, 0.35, 1.0, 1.0], dtype=torch.float64).view(1, 1, 2, 2),
    )
    torch.testing.assert_close(
        Brightness(-0.3, clip=True)(x),
        torch.tensor([0.0, 0.0, 0.65, 0.7], dtype=torch.float64).view(1, 1, 2, 2),
    )


def test_gamma_values() -> None:
    x = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64).view(1, 1, 2, 2)
    want = torch.tensor([0.0, 0.25**1.3, 0.5**1.3, 1.0], dtype=torch.float64).view(1, 1, 2, 2)
    torch.testing.assert_close(Gamma(1.3)(x), want)
    torch.testing.assert_close(Gamma(1.0)(x), x)
    assert float(Gamma(2.0)(x)[0, 0, 0, 1]) == pytest.approx(0.0625)


@pytest.mark.parametrize("gamma", [0.5, 1.3])
def test_gamma_gradient_is_finite_at_zero(gamma: float) -> None:
    x = torch.zeros(1, 1, 2, 2, requires_grad=True)
    Gamma(gamma)(x).sum().backward()
    assert x.grad is not None and torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("align", ["tf", "slice"])
def test_crop_of_constant_image_is_constant(align: str) -> None:
    x = torch.full((2, 3, 32, 32), 0.37)
    torch.testing.assert_close(CenterCrop(0.8, align=align)(x), x)


def test_slice_crop_picks_centre_block_upsampled() -> None:
    x = torch.rand(2, 3, 4, 4, generator=_gen())
    out = CenterCrop(0.5, align="slice")(x)
    want = F.interpolate(x[..., 1:3, 1:3], size=(4, 4), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, want)
    # by hand, half-pixel centres: source rows -0.25, 0.25, 0.75, 1.25 of the block, clamped
    ramp = CenterCrop(0.5, align="slice")(_ramp(4, 4, axis=0))
    torch.testing.assert_close(ramp[0, 0, :, 0], torch.tensor([1.0, 1.25, 1.75, 2.0]).double())


def test_slice_crop_size_for_cifar() -> None:
    # tf.image.central_crop(0.8) on 32 x 32: start int(3.2) = 3, size 26
    x = torch.rand(1, 1, 32, 32, generator=_gen())
    want = F.interpolate(x[..., 3:29, 3:29], size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(CenterCrop(0.8, align="slice")(x), want)


@pytest.mark.parametrize(("h", "scale"), [(4, 0.5), (32, 0.8), (7, 1.0)])
def test_tf_crop_sample_positions(h: int, scale: float) -> None:
    # TF crop_and_resize of box [y1, y2] = [(1-s)/2, (1+s)/2]: output row i samples input row
    # y1*(H-1) + i*(y2-y1)*(H-1)/(H-1); bilinear on a ramp returns the sample position itself.
    y1 = (1 - scale) / 2
    pos = torch.tensor([y1 * (h - 1) + i * scale for i in range(h)], dtype=torch.float64)
    rows = CenterCrop(scale)(_ramp(h, h, axis=0))
    cols = CenterCrop(scale)(_ramp(h, h, axis=1))
    torch.testing.assert_close(rows[0, 0, :, 2], pos)
    torch.testing.assert_close(cols[0, 0, 1, :], pos)


def test_paper_crop_box_is_0_1_to_0_9() -> None:
    # box [0.1, 0.9] on 32 rows: first sample 3.1, last 27.9
    rows = CenterCrop(0.8)(_ramp(32, 32, axis=0))[0, 0, :, 0]
    assert float(rows[0]) == pytest.approx(3.1)
    assert float(rows[-1]) == pytest.approx(27.9)


@pytest.mark.parametrize("deg", [0.0, 360.0, -720.0])
def test_rotate_full_turns_are_identity(deg: float) -> None:
    x = torch.rand(2, 3, 5, 7, generator=_gen())
    torch.testing.assert_close(Rotate(deg)(x), x)


@pytest.mark.parametrize(("deg", "k"), [(90.0, 1), (-90.0, -1), (180.0, 2), (270.0, 3), (450.0, 1)])
def test_rotate_quarter_turns_equal_rot90(deg: float, k: int) -> None:
    # square image: every sample lands exactly on a pixel centre, so padding never contributes
    x = torch.rand(2, 3, 6, 6, generator=_gen(), dtype=torch.float64)
    torch.testing.assert_close(Rotate(deg)(x), torch.rot90(x, k, dims=(-2, -1)), rtol=0, atol=1e-12)


def test_rotate_positive_is_counter_clockwise() -> None:
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 0, 2] = 1.0  # top-right corner
    out = Rotate(90.0)(x)
    assert float(out[0, 0, 0, 0]) == pytest.approx(1.0)  # counter-clockwise: moves to top-left
    assert float(Rotate(-90.0)(x)[0, 0, 2, 2]) == pytest.approx(1.0)  # clockwise: bottom-right


def test_rotate_180_non_square_is_rigid() -> None:
    x = torch.rand(2, 1, 3, 5, generator=_gen(), dtype=torch.float64)
    torch.testing.assert_close(Rotate(180.0)(x), torch.flip(x, dims=(-2, -1)), rtol=0, atol=1e-12)


def test_rotate_padding() -> None:
    ones = torch.ones(1, 1, 9, 9)
    zeros_pad = Rotate(45.0)(ones)
    assert float(zeros_pad[0, 0, 0, 0]) == 0.0  # corner comes from outside the image
    assert float(zeros_pad[0, 0, 4, 4]) == pytest.approx(1.0)
    torch.testing.assert_close(Rotate(45.0, padding="border")(ones), ones)


def test_rotate_small_angle_keeps_centre_pixel() -> None:
    x = torch.rand(1, 2, 9, 9, generator=_gen())
    torch.testing.assert_close(Rotate(-30.0)(x)[..., 4, 4], x[..., 4, 4])


# ---------------------------------------------------------------- generic properties


@pytest.mark.parametrize("t", DETERMINISTIC + _random_set(), ids=str)
def test_shape_and_dtype_preserved(t: Transform) -> None:
    for dtype in (torch.float32, torch.float64):
        x = torch.rand(3, 3, 8, 6, generator=_gen(), dtype=dtype)
        out = t(x)
        assert out.shape == x.shape and out.dtype == dtype


@pytest.mark.parametrize("t", BOUNDED + _random_set(), ids=str)
def test_outputs_in_unit_interval(t: Transform) -> None:
    x = torch.rand(4, 3, 8, 8, generator=_gen())
    x[:, :, 0, :] = 1.0
    x[:, :, -1, :] = 0.0
    out = t(x)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@pytest.mark.parametrize("t", DETERMINISTIC, ids=str)
def test_batch_independence(t: Transform) -> None:
    x = torch.rand(4, 2, 6, 5, generator=_gen())
    out = t(x)
    for i in range(4):
        torch.testing.assert_close(out[i : i + 1], t(x[i : i + 1]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("t", DETERMINISTIC, ids=str)
def test_gradcheck(t: Transform) -> None:
    x = (0.1 + 0.8 * torch.rand(1, 2, 4, 5, generator=_gen(), dtype=torch.float64)).requires_grad_()
    if isinstance(t, Brightness) and t.clip:
        x = (x * 0.5).detach().requires_grad_()  # stay off the clamp's kinks
    assert torch.autograd.gradcheck(t, (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandomApply(Rotate(20.0), 0.5, generator=_gen(3)),
        lambda: RandomCenterCrop(0.6, 1.0, generator=_gen(3)),
        lambda: RandomRotate(10.0, generator=_gen(3)),
    ],
)
def test_gradcheck_random_with_fixed_draw(make) -> None:
    x = (0.1 + 0.8 * torch.rand(3, 1, 4, 4, generator=_gen(), dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: make()(v), (x,), eps=1e-6, atol=1e-6)


def test_input_validation() -> None:
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        HFlip()(torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="floating-point"):
        Rotate(10.0)(torch.zeros(1, 1, 4, 4, dtype=torch.long))
    with pytest.raises(TypeError):
        Gamma()([[0.5]])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Gamma(0.0), "gamma must be > 0"),
        (lambda: CenterCrop(0.0), r"crop scale must be in \(0, 1\]"),
        (lambda: CenterCrop(0.8, align="centre"), "align"),
        (lambda: Rotate(float("nan")), "finite"),
        (lambda: Rotate(10.0, padding="reflect"), "padding"),
        (lambda: RandomApply(HFlip(), 1.5), r"p must be in \[0, 1\]"),
        (lambda: RandomCenterCrop(0.9, 0.6), "min_scale <= max_scale"),
        (lambda: RandomRotate(-1.0), ">= 0"),
        (lambda: RandomChoice((HFlip(),)), "at least two"),
        (lambda: Compose(()), "at least one"),
    ],
)
def test_constructor_validation(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


# ---------------------------------------------------------------- composition, randomness


def test_compose_applies_left_to_right_and_flattens() -> None:
    x = torch.rand(2, 1, 3, 3, generator=_gen(), dtype=torch.float64)
    torch.testing.assert_close(Compose((Brightness(0.1), Gamma(2.0)))(x), (x + 0.1) ** 2)
    torch.testing.assert_close(Compose((Gamma(2.0), Brightness(0.1)))(x), x**2 + 0.1)
    nested = Compose((Compose((HFlip(), VFlip())), Gamma(1.3)))
    assert nested == Compose((HFlip(), VFlip(), Gamma(1.3)))
    assert nested.name == "hflip+vflip+gamma:1.3"


def test_random_apply_extremes_and_rate() -> None:
    x = torch.rand(1000, 1, 2, 2, generator=_gen())
    assert torch.equal(RandomApply(HFlip(), 0.0, generator=_gen())(x), x)
    assert torch.equal(RandomApply(HFlip(), 1.0, generator=_gen())(x), HFlip()(x))
    out = RandomApply(HFlip(), 0.8, generator=_gen())(x)
    flipped = (out == HFlip()(x)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert bool((flipped | kept).all())
    assert 0.75 < float(flipped.float().mean()) < 0.85


def test_random_draws_are_reproducible_and_fresh_per_call() -> None:
    x = torch.rand(8, 1, 6, 6, generator=_gen())
    a = RandomRotate(10.0, generator=_gen(5))
    b = RandomRotate(10.0, generator=_gen(5))
    first = a(x)
    torch.testing.assert_close(first, b(x))
    assert not torch.allclose(first, a(x))  # a new draw on the next call


def test_per_example_vs_shared_draws() -> None:
    x = torch.rand(1, 1, 8, 8, generator=_gen()).expand(6, 1, 8, 8)
    for t in (RandomRotate(10.0, generator=_gen()), RandomCenterCrop(generator=_gen())):
        out = t(x)
        assert not torch.allclose(out[0], out[1])
    for t in (
        RandomRotate(10.0, per_example=False, generator=_gen()),
        RandomCenterCrop(per_example=False, generator=_gen()),
        RandomApply(HFlip(), 0.5, per_example=False, generator=_gen()),
    ):
        out = t(x)
        assert all(torch.equal(out[0], out[i]) for i in range(6))


def test_random_transforms_with_degenerate_ranges() -> None:
    x = torch.rand(3, 2, 8, 8, generator=_gen())
    torch.testing.assert_close(RandomCenterCrop(0.8, 0.8)(x), CenterCrop(0.8)(x))
    torch.testing.assert_close(RandomRotate(0.0)(x), x)


def test_random_choice() -> None:
    x = torch.rand(1, 1, 4, 4, generator=_gen()).expand(64, 1, 4, 4)
    choices = (HFlip(), VFlip(), Gamma(2.0))
    outs = [t(x) for t in choices]
    t = RandomChoice(choices, generator=_gen())
    seen = set()
    for _ in range(30):
        out = t(x)
        hits = [i for i, o in enumerate(outs) if torch.equal(out, o)]
        assert len(hits) == 1
        seen.add(hits[0])
    assert seen == {0, 1, 2}
    out = RandomChoice(choices, per_example=True, generator=_gen())(x)
    rows = [next(i for i, o in enumerate(outs) if torch.equal(out[r], o[r])) for r in range(64)]
    assert set(rows) == {0, 1, 2}


# ---------------------------------------------------------------- names, parsing, equality


ROUND_TRIP = [
    Identity(),
    HFlip(),
    VFlip(),
    Brightness(0.1),
    Brightness(-0.25, clip=True),
    Gamma(1.3),
    CenterCrop(0.8),
    CenterCrop(0.5, align="slice"),
    Rotate(15.0),
    Rotate(-30.0, padding="border", mode="nearest"),
    Rotate(0.1 + 0.2),  # a float whose shortest repr is long
    RandomApply(HFlip(), 0.8),
    RandomApply(Compose((HFlip(), Gamma(1.3))), 0.5),
    RandomCenterCrop(0.6, 1.0),
    RandomRotate(10.0),
    Compose((HFlip(), Brightness(0.1), Rotate(-30.0))),
    RandomChoice((HFlip(), VFlip())),
    Compose((RandomChoice((HFlip(), VFlip())), Gamma(1.3))),
    RandomChoice((Compose((HFlip(), Gamma(1.3))), RandomApply(VFlip(), 0.3))),
]


@pytest.mark.parametrize("t", ROUND_TRIP, ids=str)
def test_parse_round_trips_names(t: Transform) -> None:
    assert parse_transform(t.name) == t
    assert parse_transform(t.name).name == t.name


def test_parse_examples_and_aliases() -> None:
    assert parse_transform("rotate:15") == Rotate(15.0)
    assert parse_transform(" rot : -30 ") == Rotate(-30.0)
    assert parse_transform("bri") == Brightness(0.1)
    assert parse_transform("gam") == Gamma(1.3)
    assert parse_transform("ori") == Identity()
    assert parse_transform("flh@0.8") == RandomApply(HFlip(), 0.8)
    assert parse_transform("crop:0.8,align=slice") == CenterCrop(0.8, align="slice")
    assert parse_transform("brightness:0.1,clip=true") == Brightness(0.1, clip=True)
    assert parse_transform("random_crop:0.6,1") == RandomCenterCrop(0.6, 1.0)
    assert parse_transform("hflip@0.5", per_example=False) == RandomApply(
        HFlip(), 0.5, per_example=False
    )
    t = Rotate(3.0)
    assert parse_transform(t) is t
    assert {"identity", "hflip", "vflip", "brightness", "gamma", "crop", "rotate"} <= set(
        TRANSFORMS
    )


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", "empty"),
        ("rotaet:15", "unknown transform 'rotaet'.*known names: .*rotate"),
        ("rotate", "wrong arguments for 'rotate'.*degrees"),
        ("rotate:fast", "not a number"),
        ("hflip:1", "wrong arguments for 'hflip'"),
        ("gamma:-1", "gamma must be > 0"),
        ("crop:1.5", r"crop scale must be in \(0, 1\]"),
        ("hflip@", "expected a number"),
        ("hflip@2", r"p must be in \[0, 1\]"),
        ("(hflip|vflip", r"expected '\)'"),
        ("hflip)", r"unexpected '\)'"),
        ("hflip$", "unexpected character"),
        ("rotate:10,speed=2", "unexpected keyword argument 'speed'"),
        ("brightness:0.1,clip=maybe", "clip must be a bool"),
    ],
)
def test_parse_rejects_bad_specs(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        parse_transform(spec)
    assert repr(spec) in str(info.value)


def test_equality_hash_repr() -> None:
    assert Rotate(30) == Rotate(30.0) and hash(Rotate(30)) == hash(Rotate(30.0))
    assert Rotate(30.0) != Rotate(31.0)
    assert Rotate(30.0) != Rotate(30.0, padding="border")
    assert HFlip() != VFlip()
    assert repr(Rotate(30)) == "Rotate(degrees=30.0, padding='zeros', mode='bilinear')"
    assert RandomRotate(5.0, generator=_gen(1)) == RandomRotate(5.0, generator=_gen(2))
    assert len({Gamma(1.3), Gamma(1.3), Brightness(0.1)}) == 2


# ---------------------------------------------------------------- the paper's sets


def test_paper_transforms_table3() -> None:
    ts = paper_transforms()
    assert [t.label for t in ts] == ["ori", "flh", "flv", "bri", "gam", "crop"]
    assert ts == [Identity(), HFlip(), VFlip(), Brightness(0.1), Gamma(1.3), CenterCrop(0.8)]
    assert not any(t.random for t in ts)


def test_paper_transforms_table_a6_adds_clockwise_30() -> None:
    ts = paper_transforms("tableA6")
    assert [t.label for t in ts] == ["ori", "flh", "flv", "bri", "gam", "crop", "rot"]
    assert ts[-1] == Rotate(-30.0)
    assert paper_transforms("rotation") == ts
    # clockwise: a pixel right of centre moves down
    x = torch.zeros(1, 1, 33, 33)
    x[0, 0, 16, 26] = 1.0
    out = ts[-1](x)[0, 0]
    r, c = divmod(int(out.argmax()), 33)
    assert r > 16 and abs(r - 16 - 10 * math.sin(math.radians(30))) <= 1
    assert abs(c - 16 - 10 * math.cos(math.radians(30))) <= 1


def test_paper_transforms_table_a5_stochastic() -> None:
    ts = paper_transforms("stochastic", generator=_gen())
    assert [t.label for t in ts] == ["ori", "flh", "flv", "bri", "crop"]
    assert [t.name for t in ts] == [
        "identity",
        "hflip@0.8",
        "vflip@0.8",
        "brightness:0.1@0.8",
        "random_crop:0.6,1",
    ]
    assert [t.random for t in ts] == [False, True, True, True, True]
    with pytest.raises(ValueError, match="unknown paper transformation setting"):
        paper_transforms("table9")


def test_gradient_flows_through_every_paper_domain() -> None:
    x = torch.rand(2, 3, 32, 32, generator=_gen(), requires_grad=True)
    for t in paper_transforms("tableA6") + paper_transforms("tableA5", generator=_gen()):
        (g,) = torch.autograd.grad(t(x).square().sum(), x)
        assert torch.isfinite(g).all() and float(g.abs().sum()) > 0
