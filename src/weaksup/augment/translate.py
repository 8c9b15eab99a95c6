"""The weak image view: random translation (reflection or constant padding), optionally a flip.

This is `RandomHorizontalFlip` + `RandomCrop(size, padding=int(size·0.125), padding_mode=
'reflect')` of kekmodel/MPL-pytorch `data.py` (`TransformMPL.ori`, the weak view of the
unlabeled images, in its earlier versions), done on a batch: each image is shifted by a whole
number of pixels drawn uniformly from `[-p, p]` per axis, `p = int(max_translate_fraction ·
side)` (3 px for 28x28, 1 px for 8x8), the uncovered border filled by reflection. The official
MPL code (`_flip_and_jitter`, `image_size // 8`) and later MPL-pytorch versions pad with grey
128 instead (`padding: constant`, `fill: 0.5`); reflection adds no values that the image does
not have. On images of an object on a blank background that touches the border (Fashion-MNIST:
trousers, dresses), reflection mirrors the object into the border; `padding: constant` with
`fill` the background value (0) shifts it over blank background instead (docs/augmentations.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from weaksup.augment._checks import check_finite, check_number
from weaksup.config.validation import ConfigError

PADDINGS: tuple[str, ...] = ("reflect", "constant")


class RandomTranslateFlip:
    """Weak view: flip left-right with `flip_probability`, then a random reflected translation.

    Configured at `augment.images.weak` (conf/augment/). Draws from the global torch generator
    of the images' device: `2·B` integers for the offsets, then `B` uniforms when flips are on.

    Args:
        max_translate_fraction: the largest shift as a fraction of each side, in [0, 0.5]
            (0.125 in MPL-pytorch and the official MPL code).
        flip_probability: probability of a horizontal flip, in [0, 1]; 0 for data whose
            meaning changes under a mirror (digits), 0.5 where mirrors are natural (clothes).
        padding: how the uncovered border is filled: `reflect` (MPL-pytorch's `RandomCrop`) or
            `constant` (the value `fill`, as the official MPL code with grey 0.5).
        fill: the border value of `padding: constant`, in the units of the images.
    """

    CONFIG_KEY = "augment.images.weak"

    def __init__(
        self,
        max_translate_fraction: float = 0.125,
        flip_probability: float = 0.0,
        padding: str = "reflect",
        fill: float = 0.0,
    ):
        self.max_translate_fraction = check_number(
            f"{self.CONFIG_KEY}.max_translate_fraction",
            max_translate_fraction,
            minimum=0.0,
            maximum=0.5,
        )
        self.flip_probability = check_number(
            f"{self.CONFIG_KEY}.flip_probability", flip_probability, minimum=0.0, maximum=1.0
        )
        if padding not in PADDINGS:
            raise ConfigError(
                f"{self.CONFIG_KEY}.padding must be one of {', '.join(PADDINGS)}, got {padding!r}"
            )
        self.padding = padding
        self.fill = check_finite(f"{self.CONFIG_KEY}.fill", fill)

    def max_shift(self, height: int, width: int) -> tuple[int, int]:
        """The largest shift in pixels `(rows, columns)`: `int(fraction · side)` as MPL-pytorch."""
        return int(self.max_translate_fraction * height), int(self.max_translate_fraction * width)

    def __call__(self, images: Tensor) -> Tensor:
        batch, _, height, width = images.shape
        shift_rows, shift_columns = self.max_shift(height, width)
        offset_rows = torch.randint(0, 2 * shift_rows + 1, (batch,), device=images.device)
        offset_columns = torch.randint(0, 2 * shift_columns + 1, (batch,), device=images.device)
        if self.flip_probability > 0:
            flip = torch.rand(batch, device=images.device) < self.flip_probability
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
        if shift_rows == 0 and shift_columns == 0:
            return images
        border = (shift_columns, shift_columns, shift_rows, shift_rows)
        if self.padding == "reflect":
            padded = F.pad(images, border, mode="reflect")
        else:
            padded = F.pad(images, border, mode="constant", value=self.fill)
        rows = offset_rows.view(-1, 1) + torch.arange(height, device=images.device)
        columns = offset_columns.view(-1, 1) + torch.arange(width, device=images.device)
        samples = torch.arange(batch, device=images.device).view(-1, 1, 1)
        # Advanced indices around the channel slice put the indexed axes first: [B, H, W, C].
        cropped = padded[samples, :, rows.view(batch, height, 1), columns.view(batch, 1, width)]
        return cropped.permute(0, 3, 1, 2).contiguous()
