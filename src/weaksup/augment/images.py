"""The weak/strong pair for images `[C, H, W]`: weak translation, strong RandAugment + Cutout."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from weaksup.augment.randaugment import RandAugment
from weaksup.augment.translate import RandomTranslateFlip
from weaksup.config.validation import ConfigError

#: The smallest height and width accepted (Sharpness smooths with a 3x3 kernel).
MIN_IMAGE_SIDE = 3


class ImageAugmentation:
    """Weak view `weak(x)`; strong view `strong(weak(x))`, computed on values scaled to [0, 1].

    As MPL-pytorch `TransformMPL` and the official `cifar10_4000_uda` build the strong view: a
    flip/translation of its own (drawn independently of the weak view's), then RandAugment
    and Cutout. The intensity operations are
    defined on [0, 1] (PIL's 0..255): with `value_range: [low, high]` the images are mapped
    from that range (values outside it are clipped into it) and back; every image source of
    weaksup gives pixels in [0, 1] (`pixel / 255`, digits `level / 16`), so the shipped
    configs use `[0, 1]`. `value_range: null` uses each image's own minimum and maximum instead,
    for data normalised in another way (a constant image is left unscaled).

    Configured at `augment.images` (conf/augment/).
    """

    CONFIG_KEY = "augment.images"
    #: What `for_input` requires, in words.
    NEEDS = f"images of shape (C, H, W) with H, W >= {MIN_IMAGE_SIDE}"

    def __init__(
        self,
        weak: RandomTranslateFlip,
        strong: RandAugment,
        value_range: Sequence[float] | None = (0.0, 1.0),
    ) -> None:
        if not isinstance(weak, RandomTranslateFlip):
            raise ConfigError(
                f"{self.CONFIG_KEY}.weak must build a weaksup.augment.RandomTranslateFlip, "
                f"got {weak!r}"
            )
        if not isinstance(strong, RandAugment):
            raise ConfigError(
                f"{self.CONFIG_KEY}.strong must build a weaksup.augment.RandAugment, got {strong!r}"
            )
        self.weak = weak
        self.strong = strong
        self.value_range = (
            None
            if value_range is None
            else _check_range(f"{self.CONFIG_KEY}.value_range", value_range)
        )

    @staticmethod
    def fits(input_shape: tuple[int, ...]) -> bool:
        """Whether one example of this shape is an image `[C, H, W]` with H, W >= 3."""
        return len(input_shape) == 3 and min(input_shape[1:]) >= MIN_IMAGE_SIDE

    def weak_view(self, images: Tensor) -> Tensor:
        return self.weak(images)

    def strong_view(self, images: Tensor) -> Tensor:
        low, high = self._bounds(images)
        spread = high - low
        unit = ((images - low) / spread).clamp_(0.0, 1.0)
        return self.strong(self.weak(unit)) * spread + low

    def _bounds(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """`low`, `high` broadcasting over `[B, C, H, W]` (per image without a value_range)."""
        if self.value_range is not None:
            low, high = self.value_range
            return images.new_tensor(low), images.new_tensor(high)
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        high = images.amax(dim=(1, 2, 3), keepdim=True)
        return low, torch.where(high > low, high, low + 1)


def _check_range(key: str, value: object) -> tuple[float, float]:
    """`[low, high]`, finite, `low < high`, else ConfigError naming `key`."""
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, int | float) for v in value)
        or not all(math.isfinite(v) for v in value)
        or not value[0] < value[1]
    ):
        raise ConfigError(
            f"{key} must be a pair [low, high] of finite numbers with low < high, or null "
            f"(each image's own minimum and maximum), got {value!r}"
        )
    return float(value[0]), float(value[1])
