"""Data sources with deliberately broken data, for the bad-input tests (importable by `_target_`)."""

from __future__ import annotations

import torch

from weaksup.data.sources.base import ArrayDataset, DatasetSplits


def _splits(inputs: torch.Tensor, targets: torch.Tensor, num_classes: int) -> DatasetSplits:
    data = ArrayDataset(inputs, targets)
    return DatasetSplits(train=data, val=data, test=data, num_classes=num_classes, name="corrupt")


class NaNInputs:
    """Two-class vectors of which one is NaN: the first training loss is NaN."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def load(self) -> DatasetSplits:
        inputs = torch.randn(32, 2, generator=torch.Generator().manual_seed(self.seed))
        inputs[3, 0] = float("nan")
        return _splits(inputs, torch.arange(32) % 2, num_classes=2)


class LabelsOutOfRange:
    """Declares 3 classes but has label 5."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def load(self) -> DatasetSplits:
        targets = torch.arange(30) % 3
        targets[7] = 5
        return _splits(torch.randn(30, 2), targets, num_classes=3)
