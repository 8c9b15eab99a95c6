"""`Augmentation`: the config group `augment`, bound to the data's input shape by `for_input`.

A method builds `augment = build_node(cfg.augment)` once and asks `augment.for_input(
input_shape)` for the weak/strong pair of its data: the image pair for `(C, H, W)` inputs,
Gaussian jitter for `(D,)` vectors. Every option fills the slot(s) it supports and leaves the
others null, so each constructor sits at one fixed key (`augment.images.strong`, ...) and
names it in its errors. The views run on the batch's device inside the training step and
draw from that device's global torch generator only, which `weaksup.callbacks.
ReseedEveryBatch` reseeds before every batch: a resumed run draws the same views.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from weaksup.augment.images import ImageAugmentation
from weaksup.augment.jitter import GaussianJitter
from weaksup.config.validation import ConfigError

View = Callable[[Tensor], Tensor]
# Half precision is computed in float32 (grid_sample, rounding to 256 grey levels).
_LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class AugmentationPair:
    """The weak and strong view of inputs `[B, *input_shape]`: same shape, dtype and device out."""

    input_shape: tuple[int, ...]
    weak_view: View
    strong_view: View

    def weak(self, inputs: Tensor) -> Tensor:
        return self._apply(self.weak_view, inputs)

    def strong(self, inputs: Tensor) -> Tensor:
        return self._apply(self.strong_view, inputs)

    def _apply(self, view: View, inputs: Tensor) -> Tensor:
        if not inputs.is_floating_point():
            raise TypeError(f"augmentations take floating-point inputs, got {inputs.dtype}")
        if tuple(inputs.shape[1:]) != self.input_shape:
            raise ValueError(
                f"this augmentation was made for inputs [B, {', '.join(map(str, self.input_shape))}]"
                f", got {list(inputs.shape)}"
            )
        # Autocast would run affine_grid's matrix product in half precision inside 16-mixed.
        with torch.autocast(device_type=inputs.device.type, enabled=False):
            if inputs.dtype in _LOW_PRECISION:
                return view(inputs.float()).to(inputs.dtype)
            return view(inputs)


class Augmentation:
    """The weak/strong augmentations of a run, for images and/or feature vectors.

    Args:
        name: the option's name (`augment=<name>`), for messages.
        images: the pair for images `(C, H, W)`, or None when the option has none.
        vectors: the pair for feature vectors `(D,)`, or None when the option has none.
    """

    def __init__(
        self,
        name: str,
        images: ImageAugmentation | None = None,
        vectors: GaussianJitter | None = None,
    ) -> None:
        if images is not None and not isinstance(images, ImageAugmentation):
            raise ConfigError(
                f"augment.images must build a weaksup.augment.ImageAugmentation or be null, "
                f"got {images!r}"
            )
        if vectors is not None and not isinstance(vectors, GaussianJitter):
            raise ConfigError(
                f"augment.vectors must build a weaksup.augment.GaussianJitter or be null, "
                f"got {vectors!r}"
            )
        self.name = name
        self.images = images
        self.vectors = vectors

    def for_input(self, input_shape: Sequence[int]) -> AugmentationPair:
        """The pair for examples of `input_shape`, or a ConfigError saying which options fit."""
        shape = tuple(int(size) for size in input_shape)
        slots = ((self.images, ImageAugmentation), (self.vectors, GaussianJitter))
        for augmentation, kind in slots:
            if augmentation is not None and kind.fits(shape):
                return AugmentationPair(shape, augmentation.weak_view, augmentation.strong_view)
        supported = [kind.NEEDS for augmentation, kind in slots if augmentation is not None]
        needs = " or ".join(supported) or "nothing (augment.images and augment.vectors are null)"
        fitting = ", ".join(fitting_options(shape)) or "(none shipped fits this shape)"
        raise ConfigError(
            f"augment={self.name} augments {needs}, but the data's inputs have shape {shape}; "
            f"choose augment= one of: {fitting}"
        )


def fitting_options(input_shape: tuple[int, ...]) -> list[str]:
    """The shipped `augment` options that augment examples of `input_shape`."""
    from weaksup.build import group_options  # weaksup.build imports the methods, which import us

    slots = []
    if ImageAugmentation.fits(input_shape):
        slots.append("images")
    if GaussianJitter.fits(input_shape):
        slots.append("vectors")
    return [
        name
        for name, option in group_options("augment").items()
        if any(option.get(slot) is not None for slot in slots)
    ]
