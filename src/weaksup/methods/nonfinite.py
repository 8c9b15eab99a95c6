"""Watching loss terms for NaN/Inf on the device, read back only when it matters.

Reading a loss value on the host (`float(loss)`) after every step makes the host wait for
the device on every step. `NonFiniteWatch` instead records, with a few device operations,
the first step at which each named term went non-finite and its value there; the host reads
all of it in one transfer at most once per logging interval, at epoch ends and before a
checkpoint is written (`WeakSupMethod` decides when).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class NonFiniteValue:
    """The first non-finite value of a loss term: which term, at which step, and the value."""

    term: str
    step: int
    value: float


class NonFiniteWatch:
    """The first non-finite value of each named term, kept on the terms' device."""

    def __init__(self) -> None:
        self._first: dict[str, tuple[Tensor, Tensor]] = {}

    def record(self, term: str, value: Tensor, step: int) -> None:
        """Remember `value` at `step` if it is the first non-finite value of `term` (no sync)."""
        value = value.detach().float().reshape(())
        if term not in self._first:
            self._first[term] = (
                torch.full((), -1, dtype=torch.long, device=value.device),
                torch.zeros((), device=value.device),
            )
        first_step, first_value = self._first[term]
        is_first = ~torch.isfinite(value) & (first_step < 0)
        self._first[term] = (
            torch.where(is_first, step, first_step),
            torch.where(is_first, value, first_value),
        )

    def first(self) -> NonFiniteValue | None:
        """The earliest recorded non-finite value over all terms, or None (one device read)."""
        if not self._first:
            return None
        steps = torch.stack([step for step, _ in self._first.values()]).tolist()
        if max(steps) < 0:
            return None
        values = torch.stack([value for _, value in self._first.values()]).tolist()
        found = [
            NonFiniteValue(term, step, value)
            for term, step, value in zip(self._first, steps, values, strict=True)
            if step >= 0
        ]
        return min(found, key=lambda item: item.step) if found else None

    def clear(self) -> None:
        self._first.clear()


def first_non_finite_tensor(tensors: dict[str, Tensor]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or Inf (one device read)."""
    names = [name for name, tensor in tensors.items() if torch.is_floating_point(tensor)]
    if not names:
        return None
    finite = torch.stack([torch.isfinite(tensors[name]).all() for name in names]).tolist()
    return next((name for name, ok in zip(names, finite, strict=True) if not ok), None)


def describe(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
