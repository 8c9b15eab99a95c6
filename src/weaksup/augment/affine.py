"""Affine operations of the strong augmentation: per-sample matrices, one `grid_sample` per layer.

Each operation gives, per sample, the map from output to input pixel (centred pixel coordinates,
as PIL's `Image.transform(AFFINE)` data does); `warp` turns a batch of them into
`affine_grid` matrices and resamples all images at once. Rotation and shear act about the image
centre (torchvision's convention; PIL's shear acts about the top-left corner). Pixels that come
from outside the image get the value `fill` (the official MPL code fills them with grey 128,
`augment.py` `unwrap`), blended at the border the way bilinear sampling blends the inside.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

#: Largest rotation in degrees, at magnitude 10 (official MPL `_rotate_level_to_arg`: 30·M/10).
MAX_ROTATE_DEGREES = 30.0
#: Largest shear coefficient (official MPL `_shear_level_to_arg`: 0.3·M/10).
MAX_SHEAR = 0.3
#: Largest translation as a fraction of the side (official MPL for CIFAR:
#: `translate_const=image_size//8` pixels at M = 10; MPL-pytorch `RandAugmentCIFAR`: 32 // 8).
MAX_TRANSLATE_FRACTION = 0.125

AFFINE_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


def identity_matrix(batch: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """`[B, 2, 3]` identity maps."""
    matrix = torch.zeros(batch, 2, 3, dtype=dtype, device=device)
    matrix[:, 0, 0] = 1.0
    matrix[:, 1, 1] = 1.0
    return matrix


def affine_matrix(name: str, level: Tensor, height: int, width: int) -> Tensor:
    """`[B, 2, 3]` maps output -> input pixel of operation `name` at signed `level [B]` in [-1, 1]."""
    matrix = identity_matrix(level.shape[0], level.dtype, level.device)
    if name == "rotate":
        angle = level * math.radians(MAX_ROTATE_DEGREES)
        cos, sin = torch.cos(angle), torch.sin(angle)
        matrix[:, 0, 0], matrix[:, 0, 1] = cos, -sin
        matrix[:, 1, 0], matrix[:, 1, 1] = sin, cos
    elif name == "shear_x":
        matrix[:, 0, 1] = level * MAX_SHEAR
    elif name == "shear_y":
        matrix[:, 1, 0] = level * MAX_SHEAR
    elif name == "translate_x":
        matrix[:, 0, 2] = -level * MAX_TRANSLATE_FRACTION * width
    elif name == "translate_y":
        matrix[:, 1, 2] = -level * MAX_TRANSLATE_FRACTION * height
    else:
        raise ValueError(f"unknown affine operation {name!r}; known: {', '.join(AFFINE_OPS)}")
    return matrix


def to_normalized(matrix: Tensor, height: int, width: int) -> Tensor:
    """Pixel maps `[B, 2, 3]` as `affine_grid` matrices (`align_corners=False` coordinates).

    With `align_corners=False` a normalised coordinate `u` in [-1, 1] is the centred pixel
    coordinate `u·W/2`, so `theta = S⁻¹ A S` with `S = diag(W/2, H/2)`.
    """
    half = torch.tensor([width / 2.0, height / 2.0], dtype=matrix.dtype, device=matrix.device)
    theta = matrix.clone()
    theta[:, :, :2] = matrix[:, :, :2] * half.view(1, 1, 2) / half.view(1, 2, 1)
    theta[:, :, 2] = matrix[:, :, 2] / half.view(1, 2)
    return theta


def warp(images: Tensor, matrix: Tensor, fill: float) -> Tensor:
    """Resample `images [B, C, H, W]` through the pixel maps `matrix [B, 2, 3]` (bilinear).

    Bilinear weights are convex, so values stay inside the input's range (bicubic would not).
    """
    batch, channels, height, width = images.shape
    theta = to_normalized(matrix, height, width)
    grid = F.affine_grid(theta, [batch, channels + 1, height, width], align_corners=False)
    coverage = torch.ones(batch, 1, height, width, dtype=images.dtype, device=images.device)
    sampled = F.grid_sample(
        torch.cat([images, coverage], dim=1),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    inside = sampled[:, channels:]
    return sampled[:, :channels] + (1.0 - inside) * fill
