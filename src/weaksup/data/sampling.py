"""Samplers and the balanced labeled/unlabeled choice.

`EpochSeededRandomSampler` draws epoch `e`'s order from `(seed, e)` alone, so a run resumed
from a checkpoint sees exactly the batches the uninterrupted run would have seen
(Lightning calls `set_epoch` on samplers that have it, as it does for `DistributedSampler`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler


class EpochSeededRandomSampler(Sampler[int]):
    """A random permutation of `range(num_items)` that depends only on `(seed, epoch)`."""

    def __init__(self, num_items: int, seed: int) -> None:
        if num_items <= 0:
            raise ValueError(f"cannot sample from an empty data set (num_items={num_items})")
        self.num_items = num_items
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.num_items, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_items


def balanced_labeled_indices(
    targets: Tensor, num_labeled: int, num_classes: int, seed: int
) -> Tensor:
    """Pick `num_labeled` examples with (as nearly as possible) the same count per class.

    The standard semi-supervised protocol (e.g. FixMatch, MPL: "4000 labels" = 400 per class
    on CIFAR-10). When `num_labeled` does not divide by the class count, the first classes in
    a seeded order get one more. Raises if a class has too few examples.
    """
    if num_labeled <= 0:
        raise ValueError(f"data.num_labeled must be positive, got {num_labeled}")
    if num_labeled > len(targets):
        raise ValueError(
            f"data.num_labeled={num_labeled} is larger than the training set ({len(targets)} examples)"
        )
    rng = np.random.default_rng(seed)
    per_class = np.full(num_classes, num_labeled // num_classes)
    per_class[rng.permutation(num_classes)[: num_labeled % num_classes]] += 1
    labels = targets.cpu().numpy()
    chosen: list[np.ndarray] = []
    for label in range(num_classes):
        members = np.flatnonzero(labels == label)
        if len(members) < per_class[label]:
            raise ValueError(
                f"data.num_labeled={num_labeled} needs {per_class[label]} examples of class {label}, "
                f"the training set has {len(members)}"
            )
        chosen.append(rng.choice(members, size=per_class[label], replace=False))
    return torch.as_tensor(np.sort(np.concatenate(chosen)), dtype=torch.long)
