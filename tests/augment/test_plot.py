"""The picture of a batch and its views is written, and drawing it leaves the RNG untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from matplotlib.image import imread

from weaksup.plots.augmentations import save_augmentation_grid

from .helpers import pair_of

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("option", "input_shape"),
    [("images", (1, 28, 28)), ("images_flip", (1, 8, 8)), ("jitter", (2,)), ("auto", (40,))],
)
def test_save_augmentation_grid_writes_the_picture_and_keeps_the_global_rng(
    option: str, input_shape: tuple[int, ...], tmp_path: Path
) -> None:
    inputs = torch.rand(12, *input_shape, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(7)
    state = torch.get_rng_state()
    path = save_augmentation_grid(
        inputs, pair_of(option, input_shape), tmp_path / "views.png", max_examples=4
    )
    assert path == tmp_path / "views.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width, _ = imread(path).shape
    assert height > 100 and width > 100
    assert torch.equal(torch.get_rng_state(), state)
    assert [p.name for p in tmp_path.iterdir()] == ["views.png"]  # no temporary file left


def test_the_picture_is_the_same_every_time(tmp_path: Path) -> None:
    inputs = torch.rand(4, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    pair = pair_of("images", (1, 12, 12))
    first = save_augmentation_grid(inputs, pair, tmp_path / "a.png", seed=3)
    second = save_augmentation_grid(inputs, pair, tmp_path / "b.png", seed=3)
    other = save_augmentation_grid(inputs, pair, tmp_path / "c.png", seed=4)
    assert (imread(first) == imread(second)).all()
    assert not (imread(first) == imread(other)).all()


def test_two_moons_sized_point_clouds_are_drawn_whole_by_default(tmp_path: Path) -> None:
    points = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    path = save_augmentation_grid(points, pair_of("jitter", (2,)), tmp_path / "points.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_an_empty_batch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"need a non-empty batch \[B, \.\.\.\], got shape \[0, 2\]"
    ):
        save_augmentation_grid(torch.zeros(0, 2), pair_of("jitter", (2,)), tmp_path / "x.png")
