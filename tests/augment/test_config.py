"""The `augment` config group: every option composes through Hydra and builds; bad values and
shapes that do not fit stop with one sentence naming the key."""

from __future__ import annotations

from importlib import resources

import pytest
import torch
from omegaconf import OmegaConf

from weaksup.augment import Augmentation, AugmentationPair
from weaksup.build import group_options
from weaksup.config.instantiate import build_node
from weaksup.config.validation import ConfigError, validate_config

from .helpers import augment_override, build_option
from conftest import ComposeFn

OPTIONS = sorted(group_options("augment"))
# Which input shapes each option augments (the others raise in for_input).
AUGMENTS = {
    "auto": {(1, 28, 28), (2,)},
    "images": {(1, 28, 28)},
    "images_flip": {(1, 28, 28)},
    "jitter": {(2,)},
}


def test_the_shipped_options_are_the_documented_ones() -> None:
    assert sorted(AUGMENTS) == OPTIONS


@pytest.mark.parametrize("option", OPTIONS)
def test_option_composes_through_hydra_validates_builds_and_fits_its_shapes(
    option: str, compose_train: ComposeFn
) -> None:
    cfg = compose_train(augment_override(option))
    validate_config(cfg)
    augmentation = build_node(cfg.augment)
    assert isinstance(augmentation, Augmentation)
    assert augmentation.name == option
    for shape in ((1, 28, 28), (2,)):
        if shape in AUGMENTS[option]:
            pair = augmentation.for_input(shape)
            assert isinstance(pair, AugmentationPair)
            inputs = torch.rand(3, *shape)
            assert pair.strong(pair.weak(inputs)).shape == inputs.shape
        else:
            with pytest.raises(ConfigError, match=f"augment={option} augments"):
                augmentation.for_input(shape)


def test_overrides_reach_the_constructors(compose_train: ComposeFn) -> None:
    cfg = compose_train(augment_override("images"), "augment.images.strong.num_ops=3")
    assert build_node(cfg.augment).images.strong.num_ops == 3


def test_auto_is_jitter_for_vectors_and_images_without_flip_for_images() -> None:
    options = group_options("augment")
    assert options["auto"].images == options["images"].images
    assert options["auto"].vectors == options["jitter"].vectors
    assert options["images"].images.weak.flip_probability == 0.0
    assert options["images_flip"].images.weak.flip_probability == 0.5
    flip_free = OmegaConf.masked_copy(options["images_flip"].images, ["value_range", "strong"])
    assert flip_free == OmegaConf.masked_copy(options["images"].images, ["value_range", "strong"])


@pytest.mark.parametrize(
    ("option", "shape", "message"),
    [
        (
            "images",
            (2,),
            "augment=images augments images of shape (C, H, W) with H, W >= 3, but the data's "
            "inputs have shape (2,); choose augment= one of: auto, jitter",
        ),
        (
            "images_flip",
            (40,),
            "augment=images_flip augments images of shape (C, H, W) with H, W >= 3, but the "
            "data's inputs have shape (40,); choose augment= one of: auto, jitter",
        ),
        (
            "jitter",
            (1, 28, 28),
            "augment=jitter augments feature vectors of shape (D,), but the data's inputs have "
            "shape (1, 28, 28); choose augment= one of: auto, images, images_flip",
        ),
        (
            "auto",
            (28, 28),
            "augment=auto augments images of shape (C, H, W) with H, W >= 3 or feature vectors "
            "of shape (D,), but the data's inputs have shape (28, 28); choose augment= one of: "
            "(none shipped fits this shape)",
        ),
        (
            "images",
            (1, 2, 28),
            "augment=images augments images of shape (C, H, W) with H, W >= 3, but the data's "
            "inputs have shape (1, 2, 28); choose augment= one of: (none shipped fits this shape)",
        ),
    ],
)
def test_for_input_refuses_shapes_the_option_does_not_augment(
    option: str, shape: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        build_option(option).for_input(shape)
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("option", "override", "message"),
    [
        (
            "images",
            "strong.num_ops=-1",
            "augment.images.strong.num_ops must be an integer >= 0, got -1",
        ),
        (
            "images",
            "strong.num_ops=1.5",
            "augment.images.strong.num_ops must be an integer >= 0, got 1.5",
        ),
        (
            "images",
            "strong.magnitude=11",
            "augment.images.strong.magnitude must be a number in [0, 10], got 11",
        ),
        (
            "images",
            "strong.magnitude=-1",
            "augment.images.strong.magnitude must be a number in [0, 10], got -1",
        ),
        (
            "images",
            "strong.ops=[rotate,blur]",
            "augment.images.strong.ops has unknown operation(s) blur; known: ",
        ),
        (
            "images",
            "strong.ops=[rotate,rotate]",
            "augment.images.strong.ops names rotate more than once",
        ),
        ("images", "strong.ops=[]", "augment.images.strong.ops is empty but num_ops > 0"),
        (
            "images",
            "strong.apply_probability=[0.9,0.1]",
            "augment.images.strong.apply_probability must be a pair [low, high] with 0 <= low <= high <= 1",
        ),
        (
            "images",
            "strong.apply_probability=0.5",
            "augment.images.strong.apply_probability must be a pair [low, high] of numbers in [0, 1]",
        ),
        (
            "images",
            "strong.cutout_fraction=1.5",
            "augment.images.strong.cutout_fraction must be a number in [0, 1], got 1.5",
        ),
        (
            "images",
            "strong.fill=-0.1",
            "augment.images.strong.fill must be a number in [0, 1], got -0.1",
        ),
        (
            "images_flip",
            "weak.flip_probability=2",
            "augment.images.weak.flip_probability must be a number in [0, 1], got 2",
        ),
        (
            "images",
            "weak.max_translate_fraction=0.6",
            "augment.images.weak.max_translate_fraction must be a number in [0, 0.5], got 0.6",
        ),
        (
            "images",
            "weak.padding=zeros",
            "augment.images.weak.padding must be one of reflect, constant, got 'zeros'",
        ),
        (
            "images_flip",
            "weak.fill=.nan",
            "augment.images.weak.fill must be a finite number, got nan",
        ),
        (
            "images",
            "value_range=[1,0]",
            "augment.images.value_range must be a pair [low, high] of finite numbers with low < high",
        ),
        ("jitter", "weak_sigma=-0.1", "augment.vectors.weak_sigma must be a number >= 0, got -0.1"),
        (
            "jitter",
            "strong_sigma=0.01",
            "augment.vectors.strong_sigma must be >= augment.vectors.weak_sigma (the strong view "
            "perturbs more), got 0.01 < 0.02",
        ),
    ],
)
def test_bad_values_stop_at_build_with_the_key_named(
    option: str, override: str, message: str
) -> None:
    slot = "vectors" if option == "jitter" else "images"
    with pytest.raises(ConfigError) as error:
        build_option(option, f"{slot}.{override}")
    assert str(error.value).startswith(message)


def test_a_bad_value_given_on_the_command_line_names_its_key(compose_train: ComposeFn) -> None:
    cfg = compose_train(augment_override("images"), "augment.images.strong.magnitude=12")
    validate_config(cfg)  # types are right; the range is the constructor's to check
    with pytest.raises(
        ConfigError,
        match=r"^augment.images.strong.magnitude must be a number in \[0, 10\], got 12$",
    ):
        build_node(cfg.augment)


def _methods_with_augment() -> list[str]:
    """Method options that pull the `augment` group in through their defaults list."""
    folder = resources.files("weaksup.conf") / "method"
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
        and any(
            "/augment" in str(default)
            for default in OmegaConf.create(entry.read_text()).get("defaults", [])
        )
    )


@pytest.mark.parametrize("method", _methods_with_augment() or ["(none yet)"])
def test_a_method_that_pulls_augment_in_defaults_to_auto_and_takes_an_override(
    method: str, compose_train: ComposeFn
) -> None:
    if method == "(none yet)":
        pytest.skip("no method option pulls the augment group in yet")
    assert compose_train(f"method={method}").augment.name == "auto"
    assert compose_train(f"method={method}", "augment=images_flip").augment.name == "images_flip"
