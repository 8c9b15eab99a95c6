"""Where bags lie in a flat instance tensor, and the check of 0/1 bag labels (pure torch).

These belong to the data layer: `weaksup.data.bags.BagBatch` builds and validates them, and
the pooling (`weaksup.losses.pooling`) and bag losses (`weaksup.losses.bag`) consume them.
Keeping them here lets `weaksup.data` import nothing from `weaksup.losses`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class BagSegments:
    """Where each bag's instances lie in a flat instance tensor.

    Attributes:
        bag_index: `[N]` int64, the bag of every instance (non-decreasing: bags are contiguous).
        bag_sizes: `[B]` int64, instances per bag (all >= 1).
    """

    bag_index: Tensor
    bag_sizes: Tensor

    @property
    def num_bags(self) -> int:
        return int(self.bag_sizes.shape[0])

    @property
    def num_instances(self) -> int:
        return int(self.bag_index.shape[0])

    @classmethod
    def from_offsets(cls, bag_offsets: Tensor) -> BagSegments:
        """From `[B + 1]` offsets `0 = o_0 <= ... <= o_B = N`: bag b holds instances `o_b .. o_{b+1}-1`.

        The offsets are trusted here (`weaksup.data.bags.BagBatch` validates them).
        """
        bag_sizes = bag_offsets[1:] - bag_offsets[:-1]
        num_bags = bag_sizes.shape[0]
        bag_index = torch.repeat_interleave(
            torch.arange(num_bags, device=bag_offsets.device),
            bag_sizes,
            output_size=int(bag_offsets[-1]) if num_bags else 0,
        )
        return cls(bag_index=bag_index, bag_sizes=bag_sizes)

    @classmethod
    def singletons(cls, num_instances: int, device: torch.device | None = None) -> BagSegments:
        """Every instance its own bag of one (how single instances are scored)."""
        index = torch.arange(num_instances, device=device)
        return cls(bag_index=index, bag_sizes=torch.ones_like(index))


def check_bag_labels(bag_labels: Tensor, name: str = "bag_labels") -> None:
    """Raise unless `bag_labels` is a 1-D integer or bool tensor with values in {0, 1}, naming the
    first offending bag."""
    if bag_labels.is_floating_point() or bag_labels.is_complex():
        raise TypeError(f"{name} must be an integer tensor of 0/1 labels, got {bag_labels.dtype}")
    if bag_labels.dim() != 1:
        raise ValueError(f"{name} must be 1-D [num_bags], got shape {tuple(bag_labels.shape)}")
    bad = torch.nonzero((bag_labels != 0) & (bag_labels != 1)).flatten()
    if bad.numel():
        first = int(bad[0])
        raise ValueError(
            f"{name} must be 0 or 1 (multiple-instance labels); bag {first} has label "
            f"{int(bag_labels[first])} ({bad.numel()} bag(s) outside {{0, 1}})"
        )
