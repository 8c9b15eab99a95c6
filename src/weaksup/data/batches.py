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
    """One step of a semi-supervised method: a labeled batch and raw unlabeled inputs.

    `labeled` holds `B` examples with their labels; `unlabeled [μB, *input_shape]` holds inputs
    whose labels are hidden, drawn from an independent stream (`weaksup.data.semisup`). Both
    are raw, unaugmented tensors: a method that needs augmented views makes them on the device
    inside its training step.
    """

    labeled: Batch
    unlabeled: Tensor

    def __len__(self) -> int:
        return len(self.labeled) + int(self.unlabeled.shape[0])


def describe_batch_kind(kind: type) -> str:
    """Human name of a batch class for error messages."""
    return kind.__name__
