"""Each strong operation against a reference: PIL on 8-bit images, geometry on a single spot."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from weaksup.augment import ALL_OPS, RandAugment
from weaksup.augment import intensity as ops


def grey_images(count: int = 6, size: int = 28, seed: int = 0) -> np.ndarray:
    """8-bit test images: smooth blobs plus noise, so every grey level histogram is uneven."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[:size, :size]
    images = []
    for _ in range(count):
        centre = rng.uniform(size / 5, size - size / 5, 2)
        blob = np.exp(-((rows - centre[0]) ** 2 + (columns - centre[1]) ** 2) / 40)
        image = 40 + 150 * blob + rng.normal(0, 12, (size, size))
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return np.stack(images)


def as_unit_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).float().div(255).unsqueeze(1)


def as_grey_levels(images: torch.Tensor) -> np.ndarray:
    return torch.round(images.squeeze(1) * 255).to(torch.int64).numpy()


def pil_reference(images: np.ndarray, operation) -> np.ndarray:
    return np.stack([np.asarray(operation(Image.fromarray(image))) for image in images]).astype(
        np.int64
    )


def level(value: float, count: int = 6) -> torch.Tensor:
    return torch.full((count,), value)


def test_equalize_matches_pil_exactly() -> None:
    images = grey_images()
    ours = as_grey_levels(ops.equalize(as_unit_tensor(images), level(0.0)))
    assert np.array_equal(ours, pil_reference(images, ImageOps.equalize))


def test_equalize_leaves_8x8_images_as_pil_does() -> None:
    """Fewer than 255 pixels below the brightest level: PIL's step is 0, nothing changes."""
    images = grey_images(size=8)
    assert np.array_equal(pil_reference(images, ImageOps.equalize), images.astype(np.int64))
    assert torch.equal(ops.equalize(as_unit_tensor(images), level(0.0)), as_unit_tensor(images))


@pytest.mark.parametrize(("magnitude", "bits"), [(10.0, 4), (5.0, 6), (0.0, 8)])
def test_posterize_matches_pil_exactly(magnitude: float, bits: int) -> None:
    images = grey_images()
    ours = as_grey_levels(ops.posterize(as_unit_tensor(images), level(-magnitude / 10)))
    assert np.array_equal(
        ours, pil_reference(images, lambda image: ImageOps.posterize(image, bits))
    )


def test_solarize_at_magnitude_5_matches_pil_threshold_128() -> None:
    images = grey_images()
    ours = as_grey_levels(ops.solarize(as_unit_tensor(images), level(0.5)))
    assert np.array_equal(ours, pil_reference(images, lambda image: ImageOps.solarize(image, 128)))


def test_autocontrast_matches_pil_within_one_grey_level() -> None:
    images = grey_images()
    ours = as_grey_levels(ops.autocontrast(as_unit_tensor(images), level(0.0)))
    assert np.abs(ours - pil_reference(images, ImageOps.autocontrast)).max() <= 1
    assert (ours.min(axis=(1, 2)) == 0).all() and (ours.max(axis=(1, 2)) == 255).all()


@pytest.mark.parametrize(
    ("operation", "enhancer", "tolerance"),
    [
        (ops.brightness, ImageEnhance.Brightness, 1),
        (ops.sharpness, ImageEnhance.Sharpness, 1),
        # PIL blends with the mean rounded to a whole grey level, we with the exact mean.
        (ops.contrast, ImageEnhance.Contrast, 2),
    ],
)
@pytest.mark.parametrize("signed_level", [-1.0, 1.0, 0.5])
def test_enhance_operations_match_pil(
    operation, enhancer, tolerance: int, signed_level: float
) -> None:
    images = grey_images()
    factor = 1 + 0.9 * signed_level
    ours = as_grey_levels(operation(as_unit_tensor(images), level(signed_level)))
    reference = pil_reference(images, lambda image: enhancer(image).enhance(factor))
    assert np.abs(ours - reference).max() <= tolerance


def spot_centroid(images: torch.Tensor) -> torch.Tensor:
    """`[B, 2]` (row, column) centre of mass relative to the image centre."""
    weights = images[:, 0]
    size = weights.shape[-1]
    coordinates = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    total = weights.sum(dim=(1, 2))
    rows = (weights.sum(dim=2) * coordinates).sum(dim=1) / total
    columns = (weights.sum(dim=1) * coordinates).sum(dim=1) / total
    return torch.stack([rows, columns], dim=1)


def one_op(name: str, magnitude: float = 10.0) -> RandAugment:
    return RandAugment(
        num_ops=1,
        magnitude=magnitude,
        ops=[name],
        apply_probability=[1, 1],
        cutout_fraction=0,
        fill=0,
    )


def spot_images(count: int, row: float, column: float, size: int = 29) -> torch.Tensor:
    """A Gaussian spot (sigma 1 px) at (row, column) from the centre of a size x size image."""
    coordinates = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    spot = torch.exp(
        -((coordinates.view(-1, 1) - row) ** 2 + (coordinates.view(1, -1) - column) ** 2) / 2
    )
    return spot.expand(count, 1, size, size).clone()


@pytest.mark.parametrize(
    ("name", "start", "moves"),
    [
        # output pixel -> input pixel maps: content moves by the inverse, sign drawn at random
        ("translate_x", (0.0, 0.0), {(0.0, 0.125 * 29), (0.0, -0.125 * 29)}),
        ("translate_y", (0.0, 0.0), {(0.125 * 29, 0.0), (-0.125 * 29, 0.0)}),
        ("shear_x", (8.0, 0.0), {(0.0, 0.3 * 8), (0.0, -0.3 * 8)}),
        ("shear_y", (0.0, 8.0), {(0.3 * 8, 0.0), (-0.3 * 8, 0.0)}),
        (
            "rotate",
            (0.0, 8.0),
            {
                (8 * math.sin(math.radians(a)), 8 * math.cos(math.radians(a)) - 8)
                for a in (30.0, -30.0)
            },
        ),
    ],
)
def test_affine_operations_move_a_spot_by_their_largest_value_at_magnitude_10(
    name: str, start: tuple[float, float], moves: set[tuple[float, float]]
) -> None:
    torch.manual_seed(0)
    images = spot_images(64, *start)
    moved = spot_centroid(one_op(name)(images)) - spot_centroid(images)
    expected = torch.tensor(sorted(moves))
    distances = torch.cdist(moved, expected)
    assert distances.min(dim=1).values.max() < 0.05  # every image moved by one of the two
    assert set(distances.argmin(dim=1).tolist()) == {0, 1}  # both signs drawn


def test_affine_fill_marks_the_pixels_moved_in_from_outside() -> None:
    torch.manual_seed(0)
    operation = RandAugment(
        num_ops=1, ops=["translate_x"], apply_probability=[1, 1], cutout_fraction=0, fill=0.25
    )
    result = operation(torch.ones(8, 1, 16, 16))
    # 2 px (0.125 · 16) come from outside on one side: exactly fill there, ones elsewhere
    assert torch.allclose(result.sum(dim=(1, 2, 3)), torch.full((8,), 16 * 14 + 16 * 2 * 0.25))


@pytest.mark.parametrize("name", ALL_OPS)
def test_each_operation_keeps_unit_images_finite_in_range_and_shaped(name: str) -> None:
    torch.manual_seed(0)
    images = torch.rand(32, 2, 20, 17)  # >= 255 pixels, or equalize leaves them (PIL)
    result = one_op(name)(images)
    assert result.shape == images.shape
    assert torch.isfinite(result).all()
    assert result.min() >= 0 and result.max() <= 1
    if name != "identity":
        assert not torch.equal(result, images)


def test_no_operation_is_applied_with_probability_zero_and_all_with_probability_one() -> None:
    torch.manual_seed(0)
    images = torch.rand(64, 1, 12, 12)
    never = RandAugment(num_ops=3, ops=["solarize"], apply_probability=[0, 0], cutout_fraction=0)
    assert torch.equal(never(images), images)
    always = RandAugment(num_ops=1, ops=["solarize"], apply_probability=[1, 1], cutout_fraction=0)
    assert torch.allclose(always(images), 1 - images)  # magnitude 10: threshold 0, all inverted


def test_apply_probability_between_0_2_and_0_8_applies_about_half_of_the_operations() -> None:
    torch.manual_seed(0)
    images = torch.rand(4000, 1, 6, 6)
    changed = RandAugment(num_ops=1, ops=["solarize"], cutout_fraction=0)(images) != images
    assert 0.45 < float(changed.flatten(1).any(dim=1).float().mean()) < 0.55


def test_subset_and_mask_paths_give_the_same_strong_view() -> None:
    """The CPU computes each operation on the images that chose it, accelerators on the whole
    batch with `torch.where`: same draws, same values."""
    images = torch.rand(128, 1, 20, 20, generator=torch.Generator().manual_seed(0))
    original = images.clone()
    operation = RandAugment(num_ops=3, apply_probability=[0.5, 1.0])
    torch.manual_seed(0)
    on_subsets = operation(images, on_subsets=True)
    torch.manual_seed(0)
    with_masks = operation(images, on_subsets=False)
    assert torch.equal(on_subsets, with_masks)
    assert torch.equal(images, original)  # the caller's batch is left as it was
    assert not torch.equal(on_subsets, operation.cutout(images))
