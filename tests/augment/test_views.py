"""The weak and strong views: shapes, dtypes, randomness from the global generator, geometry."""

from __future__ import annotations

import pytest
import torch

from weaksup.augment import RandAugment, RandomTranslateFlip

from .helpers import pair_of

IMAGE_SHAPE = (1, 28, 28)
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
        ],
    ),
]


def bright_pixel_batch(count: int, row: int = 14, column: int = 14) -> torch.Tensor:
    images = torch.zeros(count, *IMAGE_SHAPE)
    images[:, 0, row, column] = 1.0
    return images


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("option", "input_shape"),
    [("images", IMAGE_SHAPE), ("images_flip", (3, 12, 10)), ("jitter", (2,)), ("auto", (40,))],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_views_keep_shape_dtype_and_device(
    option: str, input_shape: tuple[int, ...], dtype: torch.dtype, device: str
) -> None:
    pair = pair_of(option, input_shape)
    torch.manual_seed(0)
    inputs = torch.rand(5, *input_shape, device=device).to(dtype)
    for view in (pair.weak(inputs), pair.strong(inputs)):
        assert view.shape == inputs.shape
        assert view.dtype == dtype
        assert view.device == inputs.device
        assert torch.isfinite(view.float()).all()


def test_views_ignore_autocast_and_keep_the_input_dtype() -> None:
    pair = pair_of("images", IMAGE_SHAPE)
    inputs = torch.rand(4, *IMAGE_SHAPE)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        strong = pair.strong(inputs)
    assert strong.dtype == torch.float32


@pytest.mark.parametrize(("option", "input_shape"), [("images", IMAGE_SHAPE), ("jitter", (2,))])
def test_views_are_reproducible_from_the_global_seed_and_differ_between_seeds(
    option: str, input_shape: tuple[int, ...]
) -> None:
    pair = pair_of(option, input_shape)
    inputs = torch.rand(16, *input_shape, generator=torch.Generator().manual_seed(5))

    def views(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(seed)
        return pair.weak(inputs), pair.strong(inputs)

    first, again, other = views(0), views(0), views(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])
    assert not torch.equal(first[1], other[1])


def test_views_draw_from_the_global_generator_a_number_of_times_independent_of_the_data() -> None:
    """What `ReseedEveryBatch` relies on: global state in, the same draws whatever the pixels."""
    pair = pair_of("images", IMAGE_SHAPE)
    states = []
    for inputs in (torch.zeros(8, *IMAGE_SHAPE), torch.rand(8, *IMAGE_SHAPE)):
        torch.default_generator.manual_seed(3)  # as ReseedEveryBatch seeds it
        before = torch.get_rng_state()
        pair.weak(inputs)
        pair.strong(inputs)
        states.append(torch.get_rng_state())
        assert not torch.equal(states[-1], before)  # it drew from the global generator
    assert torch.equal(states[0], states[1])


def test_weak_translation_moves_a_pixel_by_at_most_an_eighth_of_the_side() -> None:
    """28 px: shifts of int(0.125 · 28) = 3 px at most per axis, every shift in [-3, 3] drawn."""
    torch.manual_seed(0)
    weak = pair_of("images", IMAGE_SHAPE).weak(bright_pixel_batch(2000))
    flat = weak.view(2000, -1)
    assert torch.equal(flat.max(dim=1).values, torch.ones(2000))
    assert torch.equal((flat > 0).sum(dim=1), torch.ones(2000, dtype=torch.long))
    rows, columns = flat.argmax(dim=1) // 28 - 14, flat.argmax(dim=1) % 28 - 14
    assert set(rows.tolist()) == set(range(-3, 4))
    assert set(columns.tolist()) == set(range(-3, 4))


def test_weak_translation_of_an_8x8_image_is_one_pixel() -> None:
    torch.manual_seed(0)
    images = torch.zeros(500, 1, 8, 8)
    images[:, 0, 4, 4] = 1.0
    flat = pair_of("images", (1, 8, 8)).weak(images).view(500, -1)
    assert set((flat.argmax(dim=1) // 8 - 4).tolist()) == {-1, 0, 1}
    assert RandomTranslateFlip().max_shift(8, 8) == (1, 1)


def test_weak_translation_pads_by_reflection() -> None:
    """A constant image stays constant (zero padding would darken the borders) and a shifted
    border row is the mirror image of the rows next to it."""
    torch.manual_seed(0)
    pair = pair_of("images", IMAGE_SHAPE)
    constant = torch.full((64, *IMAGE_SHAPE), 0.7)
    assert torch.equal(pair.weak(constant), constant)
    ramp = torch.arange(28.0).view(1, 1, 28, 1).expand(64, 1, 28, 28) / 27
    shifted = pair.weak(ramp)
    for image in shifted:
        column = image[0, :, 0] * 27  # rows of the ramp after the shift: a reflected range
        start = int(column[3])
        expected = torch.tensor([abs(start - 3 + i) for i in range(28)], dtype=torch.float32)
        assert torch.allclose(column, expected.clamp(max=27) - (expected - 27).clamp(min=0))


def test_weak_translation_with_constant_padding_fills_the_border_with_the_fill_value() -> None:
    """`padding: constant` shifts the image over `fill` (the blank background of Fashion-MNIST)
    instead of mirroring it: the pixels brought in are `fill`, the rest keep their values."""
    torch.manual_seed(0)
    weak = RandomTranslateFlip(padding="constant", fill=0.25)
    shifted = weak(torch.ones(200, *IMAGE_SHAPE))
    assert set(shifted.unique().tolist()) == {0.25, 1.0}
    covered = (shifted == 1.0).flatten(1).sum(1)
    # A shift of (r, c) pixels keeps (28 - |r|)·(28 - |c|) of them, |r|, |c| <= 3.
    assert covered.min() >= 25 * 25 and covered.max() == 28 * 28
    assert torch.equal(
        RandomTranslateFlip(padding="reflect")(torch.ones(8, *IMAGE_SHAPE)),
        torch.ones(8, *IMAGE_SHAPE),
    )


def test_images_never_flip_and_images_flip_flips_half_of_them() -> None:
    """A pixel 10 px left of the centre stays left under a 3 px shift; a flip puts it right."""
    torch.manual_seed(0)
    images = bright_pixel_batch(1000, column=4)

    def flipped_fraction(option: str) -> float:
        flat = pair_of(option, IMAGE_SHAPE).weak(images).view(1000, -1)
        return float(((flat.argmax(dim=1) % 28) > 14).float().mean())

    assert flipped_fraction("images") == 0.0
    assert 0.45 < flipped_fraction("images_flip") < 0.55


@pytest.mark.parametrize("value_range", [(0.0, 1.0), (-1.0, 1.0), None])
def test_strong_view_stays_finite_and_in_the_data_range(
    value_range: tuple[float, float] | None,
) -> None:
    torch.manual_seed(0)
    override = "null" if value_range is None else f"[{value_range[0]},{value_range[1]}]"
    pair = pair_of("images", IMAGE_SHAPE, f"images.value_range={override}")
    low, high = value_range or (-3.0, 5.0)
    images = low + (high - low) * torch.rand(256, *IMAGE_SHAPE)
    strong = pair.strong(images)
    assert torch.isfinite(strong).all()
    assert strong.min() >= low - 1e-5
    assert strong.max() <= high + 1e-5
    assert (strong - images).abs().amax(dim=(1, 2, 3)).gt(0).all()  # each image changed


def test_cutout_sets_a_clipped_square_to_the_fill_value() -> None:
    """Side round(0.25 · 28) = 7 px, centre anywhere in the image: a rectangle of 4..7 px."""
    torch.manual_seed(0)
    cutout = RandAugment(num_ops=0, cutout_fraction=0.25, fill=0.5)
    assert cutout.cutout_side(28, 28) == 7
    result = cutout(torch.ones(300, *IMAGE_SHAPE))
    filled = result[:, 0] == 0.5
    assert torch.equal(result[~filled.unsqueeze(1)], torch.ones(int((~filled).sum())))
    heights = filled.any(dim=2).sum(dim=1)
    widths = filled.any(dim=1).sum(dim=1)
    assert torch.equal(filled.sum(dim=(1, 2)), heights * widths)  # a full rectangle
    assert heights.min() >= 4 and widths.min() >= 4
    assert heights.max() == 7 and widths.max() == 7
    assert ((heights == 7) & (widths == 7)).float().mean() > 0.5


def test_jitter_adds_gaussian_noise_of_the_configured_sigmas() -> None:
    torch.manual_seed(0)
    pair = pair_of("jitter", (2,))
    points = torch.randn(50_000, 2)
    for view, sigma in ((pair.weak, 0.02), (pair.strong, 0.1)):
        noise = view(points) - points
        assert noise.mean(dim=0).abs().max() < 0.01 * sigma * 10
        assert torch.allclose(noise.std(dim=0), torch.full((2,), sigma), rtol=0.02)
        assert abs(float(torch.corrcoef(noise.T)[0, 1])) < 0.02


def test_views_refuse_inputs_of_another_shape_or_an_integer_dtype() -> None:
    pair = pair_of("images", IMAGE_SHAPE)
    with pytest.raises(ValueError, match=r"made for inputs \[B, 1, 28, 28\], got \[4, 1, 8, 8\]"):
        pair.weak(torch.rand(4, 1, 8, 8))
    with pytest.raises(TypeError, match=r"floating-point inputs, got torch\.uint8"):
        pair.strong(torch.zeros(4, *IMAGE_SHAPE, dtype=torch.uint8))
