"""Value checks for the augmentation constructors: a `ConfigError` naming the full config key.

The constructors of this package are built from `conf/augment/` only, so every class knows the
key it is configured at (`augment.images.strong`, ...) and its messages name `<key>.<argument>`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from weaksup.config.validation import ConfigError


def check_number(key: str, value: object, *, minimum: float, maximum: float | None = None) -> float:
    """`value` as a finite number in `[minimum, maximum]`, else ConfigError naming `key`."""
    bounds = f">= {minimum:g}" if maximum is None else f"in [{minimum:g}, {maximum:g}]"
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        raise ConfigError(f"{key} must be a number {bounds}, got {value!r}")
    return float(value)


def check_finite(key: str, value: object) -> float:
    """`value` as a finite number, else ConfigError naming `key`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    return float(value)


def check_count(key: str, value: object, *, minimum: int) -> int:
    """`value` as an integer >= `minimum`, else ConfigError naming `key`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def check_interval(
    key: str, value: object, *, minimum: float, maximum: float
) -> tuple[float, float]:
    """`[low, high]` with `minimum <= low <= high <= maximum`, else ConfigError naming `key`."""
    if (
        isinstance(value, str)
        or not isinstance(value, Sequence)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, int | float) for v in value)
        or not all(math.isfinite(v) for v in value)
    ):
        raise ConfigError(
            f"{key} must be a pair [low, high] of numbers in [{minimum:g}, {maximum:g}], "
            f"got {value!r}"
        )
    low, high = float(value[0]), float(value[1])
    if not minimum <= low <= high <= maximum:
        raise ConfigError(
            f"{key} must be a pair [low, high] with {minimum:g} <= low <= high <= {maximum:g}, "
            f"got {list(value)!r}"
        )
    return low, high
