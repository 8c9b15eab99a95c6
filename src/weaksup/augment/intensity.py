"""Intensity operations of the strong augmentation, batched, on images scaled to [0, 1].

Every function maps `images [B, C, H, W]` in [0, 1] and a per-sample `level [B]` in [-1, 1]
(the RandAugment magnitude `M / 10` with a random sign) to images in [0, 1]. Unsigned ops use
`|level|`; operations without a magnitude ignore it. Each follows its PIL namesake as used by
RandAugment (Cubuk et al. 2020) in the official Meta Pseudo Labels code
(google-research `meta_pseudo_labels/augment.py`) and in kekmodel/MPL-pytorch `augmentation.py`,
written for float tensors; the magnitude ranges are in `weaksup.augment.randaugment`.
Colour operations (PIL `Color`) are left out: the images here are grey.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Grey levels of the 8-bit images the PIL operations are defined on (posterize, equalize).
GREY_LEVELS = 256
#: Largest factor change of brightness, contrast and sharpness: factor `1 ± 0.9·|level|`
#: (the official code's `0.1 + 1.8·M/10` spans the same [0.1, 1.9]; torchvision's RandAugment
#: draws the sign, as here, so both ends are reachable at any magnitude).
MAX_ENHANCE = 0.9
#: Bits posterize removes at the largest magnitude (MPL-pytorch: `8 - round(M·4/10)` bits kept).
MAX_POSTERIZE_BITS_REMOVED = 4
#: PIL's SMOOTH kernel, the blurred image Sharpness blends with: ones, 5 at the centre, sum 13.
_SMOOTH_CENTRE = 5.0
_SMOOTH_SUM = 13.0


def _per_sample(values: Tensor) -> Tensor:
    """`[B]` values shaped to broadcast over `[B, C, H, W]`."""
    return values.view(-1, 1, 1, 1)


def _blend(degenerate: Tensor, images: Tensor, factor: Tensor) -> Tensor:
    """PIL ImageEnhance: `degenerate + factor·(images − degenerate)`, clipped to [0, 1]."""
    return (degenerate + _per_sample(factor) * (images - degenerate)).clamp_(0.0, 1.0)


def enhance_factor(level: Tensor) -> Tensor:
    """The blend factor `1 + 0.9·level` of brightness, contrast and sharpness."""
    return 1.0 + MAX_ENHANCE * level


def identity(images: Tensor, level: Tensor) -> Tensor:
    return images


def brightness(images: Tensor, level: Tensor) -> Tensor:
    """PIL Brightness: blend with black (`factor·images`)."""
    return _blend(torch.zeros_like(images), images, enhance_factor(level))


def contrast(images: Tensor, level: Tensor) -> Tensor:
    """PIL Contrast: blend with the image's mean grey level (over channels and pixels)."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return _blend(mean.expand_as(images), images, enhance_factor(level))


def sharpness(images: Tensor, level: Tensor) -> Tensor:
    """PIL Sharpness: blend with the SMOOTH-filtered image; border pixels keep their value.

    SMOOTH is `[[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13` (official augment.py), summed here over
    nine shifted views (three times faster than a grouped `conv2d` on a CPU, same values).
    """
    height, width = images.shape[-2:]
    smoothed = images[:, :, 1:-1, 1:-1] * (_SMOOTH_CENTRE - 1.0)
    for row in range(3):
        for column in range(3):
            smoothed = smoothed + images[:, :, row : height - 2 + row, column : width - 2 + column]
    degenerate = images.clone()
    degenerate[:, :, 1:-1, 1:-1] = smoothed / _SMOOTH_SUM
    return _blend(degenerate, images, enhance_factor(level))


def posterize(images: Tensor, level: Tensor) -> Tensor:
    """PIL Posterize: keep `8 − round(4·|level|)` bits of each 8-bit grey level."""
    removed = torch.round(MAX_POSTERIZE_BITS_REMOVED * level.abs())
    step = _per_sample(torch.pow(2.0, removed))
    grey = torch.round(images * (GREY_LEVELS - 1))
    return torch.floor(grey / step) * step / (GREY_LEVELS - 1)


def solarize(images: Tensor, level: Tensor) -> Tensor:
    """PIL Solarize: invert the values at or above the threshold `1 − |level|`.

    torchvision's direction (no change at magnitude 0, everything inverted at 10); the official
    MPL code maps the level to the threshold the other way round (`M/10·256`).
    """
    threshold = _per_sample(1.0 - level.abs())
    return torch.where(images >= threshold, 1.0 - images, images)


def autocontrast(images: Tensor, level: Tensor) -> Tensor:
    """PIL AutoContrast: stretch each channel of each image to [0, 1] (constant ones unchanged)."""
    low = images.amin(dim=(2, 3), keepdim=True)
    high = images.amax(dim=(2, 3), keepdim=True)
    spread = high - low
    stretched = (images - low) / spread.clamp_min(torch.finfo(images.dtype).tiny)
    return torch.where(spread > 0, stretched, images)


def equalize(images: Tensor, level: Tensor) -> Tensor:
    """PIL Equalize on 256 grey levels, per channel of each image.

    PIL's rule: `step = (pixels − pixels in the brightest occupied level) // 255`, grey level
    `v` maps to `(pixels below v + step // 2) // step`; with `step = 0` (fewer than 255 pixels
    below the brightest level, e.g. 8x8 images) the channel is left unchanged. One `bincount`
    gives every histogram (integer counts: exact, and deterministic on CUDA without weights).
    """
    batch, channels, height, width = images.shape
    rows = batch * channels
    grey = torch.round(images * (GREY_LEVELS - 1)).long().view(rows, height * width)
    offsets = torch.arange(rows, device=images.device).view(-1, 1) * GREY_LEVELS
    histogram = torch.bincount((grey + offsets).view(-1), minlength=rows * GREY_LEVELS)
    histogram = histogram.view(rows, GREY_LEVELS)
    below = histogram.cumsum(dim=1) - histogram  # pixels darker than each level
    brightest = grey.amax(dim=1, keepdim=True)
    step = (height * width - histogram.gather(1, brightest)) // (GREY_LEVELS - 1)  # [rows, 1]
    lookup = ((below + step // 2) // step.clamp_min(1)).clamp_(max=GREY_LEVELS - 1)
    equalized = lookup.gather(1, grey).to(images.dtype) / (GREY_LEVELS - 1)
    equalized = torch.where(step > 0, equalized, images.view(rows, -1))
    return equalized.view_as(images)
