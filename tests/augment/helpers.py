"""Shared builders for the augmentation tests: shipped options, with or without overrides."""

from __future__ import annotations

from importlib import resources

from omegaconf import OmegaConf

from weaksup.augment import Augmentation, AugmentationPair
from weaksup.build import group_options
from weaksup.config.instantiate import build_node


def build_option(name: str, *overrides: str) -> Augmentation:
    """The shipped `augment=<name>` with dotted overrides relative to `augment` (`images.x=1`)."""
    node = group_options("augment")[name]
    if overrides:
        node = OmegaConf.merge(node, OmegaConf.from_dotlist(list(overrides)))
    return build_node(node)


def pair_of(name: str, input_shape: tuple[int, ...], *overrides: str) -> AugmentationPair:
    return build_option(name, *overrides).for_input(input_shape)


def augment_override(option: str) -> str:
    """`augment=<option>` when `train.yaml` has an `augment` slot, else `+augment=<option>`."""
    train = OmegaConf.create((resources.files("weaksup.conf") / "train.yaml").read_text())
    has_slot = any(not isinstance(entry, str) and "augment" in entry for entry in train.defaults)
    return f"augment={option}" if has_slot else f"+augment={option}"
