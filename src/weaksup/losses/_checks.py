"""Argument and tensor checks shared by the loss functions and loss modules.

Every loss validates its inputs the same way so a bad label or a network with the wrong number
of outputs fails with one message, wherever it is caught.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Half precision loses the small per-sample terms of a mean; losses are summed in float32 at least.
LOW_PRECISION_DTYPES = (torch.float16, torch.bfloat16)


def at_least_float32(tensor: Tensor) -> Tensor:
    """`tensor` cast to float32 when it is float16/bfloat16 (autograd casts the gradient back)."""
    return tensor.float() if tensor.dtype in LOW_PRECISION_DTYPES else tensor


def check_margin(margin: float, name: str = "margin") -> float:
    """`margin` as a float; a finite real number >= 0 (0 gives the perceptron criterion)."""
    if isinstance(margin, bool) or not isinstance(margin, int | float):
        raise TypeError(f"{name} must be a real number, got {type(margin).__name__} {margin!r}")
    if not math.isfinite(margin) or margin < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {margin!r}")
    return float(margin)


def check_bool(value: bool, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    return num_classes


def check_class_indices(targets: Tensor, num_classes: int) -> None:
    """Raise unless `targets` is a non-empty 1-D integer tensor of class indices in [0, C)."""
    if targets.dtype == torch.bool or targets.is_floating_point() or targets.is_complex():
        raise TypeError(f"targets must be an integer tensor of class indices, got {targets.dtype}")
    if targets.dim() != 1 or targets.numel() == 0:
        raise ValueError(
            f"targets must be a non-empty 1-D tensor [N] of class indices, got shape "
            f"{tuple(targets.shape)}"
        )
    low, high = int(targets.min()), int(targets.max())
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"targets must be class indices in [0, {num_classes}) for {num_classes} classes; "
            f"got min {low} and max {high}"
        )


def check_scores_matrix(scores: Tensor, targets: Tensor) -> None:
    """Raise unless `scores` is `[N, C]` (C >= 2) with one row per target of shape `[N]`."""
    if scores.dim() != 2 or targets.dim() != 1 or scores.shape[0] != targets.shape[0]:
        raise ValueError(
            f"expected scores [N, C] and targets [N], got scores {tuple(scores.shape)} and "
            f"targets {tuple(targets.shape)}"
        )
    if scores.shape[0] == 0:
        raise ValueError("the loss of an empty batch is undefined: scores has 0 rows")
    if scores.shape[1] < 2:
        raise ValueError(
            f"expected at least 2 class scores per row, got scores {tuple(scores.shape)}"
        )
    if not scores.is_floating_point():
        raise TypeError(f"scores must be a floating-point tensor, got {scores.dtype}")


def check_probability(value: float, key: str) -> float:
    """`value` as a float in [0, 1], else a `ValueError` naming `key`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{key} must be a number in [0, 1], got {value!r}")
    return float(value)


def check_positive(value: float, key: str) -> float:
    """`value` as a finite float > 0, else a `ValueError` naming `key`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{key} must be a finite number > 0, got {value!r}")
    return float(value)


def check_non_negative(value: float, key: str) -> float:
    """`value` as a finite float >= 0, else a `ValueError` naming `key`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{key} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_choice(value: str, key: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def check_count(value: int, key: str) -> int:
    """`value` as an integer >= 0 (a number of steps), else a `ValueError` naming `key`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer, got {value!r}")
    if value < 0:
        raise ValueError(f"{key} must be >= 0, got {value}")
    return value
