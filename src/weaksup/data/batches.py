"""Typed batches: what a datamodule emits and what a method consumes.

A datamodule declares `batch_kind` (one of these classes); a method declares `consumes`.
`weaksup.build` checks the two agree before anything is trained.
Batches are dataclasses, so Lightning moves them between devices field by field.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Batch:
    """Fully labeled examples: `inputs [N, *input_shape]`, `targets [N]` (int64 class indices)."""

    inputs: Tensor
    targets: Tensor

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


@dataclass
class SemiSupervisedBatch:
    """A labeled batch plus a batch of unlabeled inputs drawn from an independent stream.

    `unlabeled_strong` holds a second (strongly augmented) view for consistency methods
    (UDA, Meta Pseudo Labels); it is `None` when the datamodule makes no second view.
    """

    labeled: Batch
    unlabeled_weak: Tensor
    unlabeled_strong: Tensor | None = None

    def __len__(self) -> int:
        return len(self.labeled) + int(self.unlabeled_weak.shape[0])


def describe_batch_kind(kind: type) -> str:
    """Human name of a batch class for error messages."""
    return kind.__name__
