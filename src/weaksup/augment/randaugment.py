"""The strong image view: RandAugment (N operations of magnitude M) and Cutout, batched.

As the Meta Pseudo Labels code does it (official google-research `meta_pseudo_labels/augment.py`
`RandAugment.distort` and `data_utils.py` `cifar10_4000_uda`; kekmodel/MPL-pytorch
`augmentation.py` `RandAugmentCIFAR`, used with `n, m = 2, 10` in `data.py` `TransformMPL`):

- each image draws an application probability `p ~ U(0.2, 0.8)` once (official code;
  MPL-pytorch draws it per operation);
- then, `num_ops` times, an operation uniformly from `ops` and applies it with probability `p`,
  at magnitude `M / 10` of the operation's largest value with a random sign;
- then Cutout: one square of side `cutout_fraction · min(H, W)` at a uniformly drawn centre,
  clipped at the borders, set to `fill`. MPL-pytorch `RandAugmentCIFAR` cuts a quarter of the
  side at M = 10 (`CutoutConst(v=m, max_v=32 // 4)`: 8 of 32 px), the default here; the
  official code half of it (`augment.cutout(pad_size=image_size // 4)`: 16 of 32 px), which
  on 28x28 digits hides most of the stroke (`cutout_fraction: 0.5` gives it).

Operations (largest values at M = 10): rotate ±30°, shear_x/shear_y ±0.3, translate_x/
translate_y ±12.5% of the side (`weaksup.augment.affine`); brightness, contrast, sharpness
factors 1 ± 0.9, posterize to 4 bits, solarize above 0, autocontrast, equalize, identity
(`weaksup.augment.intensity`). Invert and Color of the sources are left out: grey data only.
Everything is batched: per layer one `grid_sample` for all affine choices and one call of each
intensity operation, on the images that chose it (CPU) or on the whole batch kept where chosen
(`torch.where`, no host sync on accelerators). The number of draws from the global generator
does not depend on the data: `B` (p), then per layer `3·B` (operation, apply, sign), then
`2·B` (Cutout centres).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from weaksup.augment import intensity
from weaksup.augment._checks import check_count, check_interval, check_number
from weaksup.augment.affine import AFFINE_OPS, affine_matrix, identity_matrix, warp
from weaksup.config.validation import ConfigError

IntensityOp = Callable[[Tensor, Tensor], Tensor]

INTENSITY_OPS: dict[str, IntensityOp] = {
    "identity": intensity.identity,
    "autocontrast": intensity.autocontrast,
    "equalize": intensity.equalize,
    "brightness": intensity.brightness,
    "contrast": intensity.contrast,
    "sharpness": intensity.sharpness,
    "posterize": intensity.posterize,
    "solarize": intensity.solarize,
}
#: Every operation `ops` may name, in the order of the shipped configs.
ALL_OPS = (*INTENSITY_OPS, *AFFINE_OPS)
#: Magnitudes run from 0 to this level (the `_MAX_LEVEL = 10` / `PARAMETER_MAX = 10` of both codes).
MAX_MAGNITUDE = 10.0


class RandAugment:
    """Strong view of images scaled to [0, 1]: `num_ops` random operations, then Cutout.

    Configured at `augment.images.strong` (conf/augment/).

    Args:
        num_ops: N, operations drawn per image (2 in both MPL codes); 0 leaves only Cutout.
        magnitude: M in [0, 10] (10 in MPL-pytorch; the official CIFAR run used 16 on the
            same scale, which extrapolates past the largest values and is not offered here).
        ops: the operations to draw from (names in `ALL_OPS`), each at most once.
        apply_probability: `[low, high]`: each image applies its operations with probability
            `p ~ U(low, high)` ([0.2, 0.8] in both codes; `[1, 1]` always applies them).
        cutout_fraction: side of the Cutout square as a fraction of the shorter side, in
            [0, 1] (0.25 in MPL-pytorch, 0.5 in the official code; 0 turns Cutout off).
        fill: value in [0, 1] for pixels moved in from outside and for the Cutout square
            (0.5: the sources' grey 128 of 255).
    """

    CONFIG_KEY = "augment.images.strong"

    def __init__(
        self,
        num_ops: int = 2,
        magnitude: float = 10.0,
        ops: Sequence[str] = ALL_OPS,
        apply_probability: Sequence[float] = (0.2, 0.8),
        cutout_fraction: float = 0.25,
        fill: float = 0.5,
    ) -> None:
        key = self.CONFIG_KEY
        self.num_ops = check_count(f"{key}.num_ops", num_ops, minimum=0)
        self.magnitude = check_number(
            f"{key}.magnitude", magnitude, minimum=0.0, maximum=MAX_MAGNITUDE
        )
        self.ops = _check_ops(f"{key}.ops", ops, required=self.num_ops > 0)
        self.apply_probability = check_interval(
            f"{key}.apply_probability", apply_probability, minimum=0.0, maximum=1.0
        )
        self.cutout_fraction = check_number(
            f"{key}.cutout_fraction", cutout_fraction, minimum=0.0, maximum=1.0
        )
        self.fill = check_number(f"{key}.fill", fill, minimum=0.0, maximum=1.0)

    def __call__(self, images: Tensor, on_subsets: bool | None = None) -> Tensor:
        """Augment `images [B, C, H, W]` in [0, 1]; the result is in [0, 1].

        `on_subsets` (default: on a CPU) computes each operation on the images that chose it
        only, which needs their indices on the host; elsewhere every operation runs on the
        whole batch and `torch.where` keeps it where chosen, without waiting for the device.
        Both give the same values.
        """
        if on_subsets is None:
            on_subsets = images.device.type == "cpu"
        if on_subsets:
            images = images.clone()  # written in place below, the caller's tensor is not
        batch = images.shape[0]
        device = images.device
        low, high = self.apply_probability
        probability = low + (high - low) * torch.rand(batch, device=device)
        level = self.magnitude / MAX_MAGNITUDE
        affine_indices = [i for i, name in enumerate(self.ops) if name in AFFINE_OPS]
        for _ in range(self.num_ops):
            choice = torch.randint(0, len(self.ops), (batch,), device=device)
            applied = torch.rand(batch, device=device) < probability
            sign = torch.where(torch.rand(batch, device=device) < 0.5, -1.0, 1.0)
            signed_level = (sign * level).to(images.dtype)
            chosen = torch.where(applied, choice, -1)
            if affine_indices:
                matrix, any_affine = self._affine_matrices(
                    images, chosen, signed_level, affine_indices
                )
                images = _where_selected(images, any_affine, self._warp, on_subsets, matrix)
            for index, name in enumerate(self.ops):
                if name in INTENSITY_OPS and name != "identity":
                    images = _where_selected(
                        images, chosen == index, INTENSITY_OPS[name], on_subsets, signed_level
                    )
        return self.cutout(images)

    def _affine_matrices(
        self, images: Tensor, chosen: Tensor, signed_level: Tensor, affine_indices: list[int]
    ) -> tuple[Tensor, Tensor]:
        """`[B, 2, 3]` pixel maps of each sample's affine choice (identity otherwise), and
        which samples chose an affine operation `[B]`."""
        batch, _, height, width = images.shape
        matrix = identity_matrix(batch, images.dtype, images.device)
        any_affine = torch.zeros_like(chosen, dtype=torch.bool)
        for index in affine_indices:
            selected = chosen == index
            own = affine_matrix(self.ops[index], signed_level, height, width)
            matrix = torch.where(selected.view(-1, 1, 1), own, matrix)
            any_affine |= selected
        return matrix, any_affine

    def _warp(self, images: Tensor, matrix: Tensor) -> Tensor:
        return warp(images, matrix, self.fill)

    def cutout_side(self, height: int, width: int) -> int:
        """Side of the Cutout square in pixels: `round(cutout_fraction · min(H, W))`."""
        return round(self.cutout_fraction * min(height, width))

    def cutout(self, images: Tensor) -> Tensor:
        """Set a square of `cutout_side` pixels at a uniform random centre (clipped) to `fill`."""
        batch, _, height, width = images.shape
        device = images.device
        centre_rows = torch.randint(0, height, (batch, 1), device=device)
        centre_columns = torch.randint(0, width, (batch, 1), device=device)
        side = self.cutout_side(height, width)
        if side == 0:
            return images
        top, left = centre_rows - side // 2, centre_columns - side // 2
        rows = torch.arange(height, device=device).view(1, -1)
        columns = torch.arange(width, device=device).view(1, -1)
        in_rows = (rows >= top) & (rows < top + side)  # [B, H]
        in_columns = (columns >= left) & (columns < left + side)  # [B, W]
        square = in_rows.view(batch, 1, height, 1) & in_columns.view(batch, 1, 1, width)
        return torch.where(square, torch.full_like(images, self.fill), images)


def _check_ops(key: str, ops: object, *, required: bool) -> tuple[str, ...]:
    if isinstance(ops, str) or not isinstance(ops, Sequence):
        raise ConfigError(f"{key} must be a list of operation names from: {', '.join(ALL_OPS)}")
    names = tuple(str(name) for name in ops)
    unknown = [name for name in names if name not in ALL_OPS]
    if unknown:
        raise ConfigError(
            f"{key} has unknown operation(s) {', '.join(unknown)}; known: {', '.join(ALL_OPS)}"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"{key} names {', '.join(repeated)} more than once")
    if required and not names:
        raise ConfigError(f"{key} is empty but num_ops > 0; list at least one operation")
    return names


def _where_selected(
    images: Tensor,
    selected: Tensor,
    operation: Callable[..., Tensor],
    on_subsets: bool,
    *per_sample: Tensor,
) -> Tensor:
    """`operation(images, *per_sample)` where `selected [B]`, `images` elsewhere.

    `on_subsets` writes into `images` in place; otherwise the result is a new tensor.
    """
    if on_subsets:
        index = selected.nonzero().squeeze(1)
        if index.numel() == 0:
            return images
        chosen = operation(images[index], *(values[index] for values in per_sample))
        return images.index_copy_(0, index, chosen)
    return torch.where(selected.view(-1, 1, 1, 1), operation(images, *per_sample), images)
