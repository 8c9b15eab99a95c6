"""Partially tagged data: one class's examples carry one of several tags at random.

The set-up of Pawan's "Partial Tagged Data Classification" post, continued by "Min-Max Loss":
a *common* class is removed as a tag; each of its examples is tagged at random with one of the
classes that share it (`shared_by`). Training (and the observed tags of val/test) see only those
random tags; evaluation knows the truth: a common example belongs to every class of `shared_by`,
every other example to its own class only.

- `partial_blobs`: `make_blobs(n_samples=1000, centers=3, n_features=2, random_state=100)`, class 2
  shared by 0 and 1 (the post's toy).
- `fashion_partial`: Fashion-MNIST, Shirt (6) shared by T-shirt/top (0) and Pullover (2); 9 tags.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from weaksup.data.datamodules import DataMetadata, DataSource, PrebatchedDataModule
from weaksup.data.sources.base import DatasetSplits, load_source


@dataclass
class TaggedBatch:
    """Examples with observed tags and (for evaluation only) their true tag sets.

    `inputs [N, *input_shape]`; `tags [N, C]` float multi-hot, what training sees; `true_tags
    [N, C]` float multi-hot, every class the example belongs to (never used by a loss).
    """

    inputs: Tensor
    tags: Tensor
    true_tags: Tensor

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


@dataclass(frozen=True)
class TaggedSplit:
    inputs: Tensor
    tags: Tensor
    true_tags: Tensor
    #: Class of the source data set (before the common class was removed), for plots and reports.
    source_classes: Tensor

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


class TaggedBatchDataset(Dataset):
    """Serves whole `TaggedBatch`es; the DataLoader passes all indices of a batch at once."""

    def __init__(self, split: TaggedSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> TaggedBatch:
        return self.__getitems__([index])  # a batch of one

    def __getitems__(self, indices: list[int]) -> TaggedBatch:
        index = torch.as_tensor(indices, dtype=torch.long)
        return TaggedBatch(
            self.split.inputs[index], self.split.tags[index], self.split.true_tags[index]
        )


def partial_tags(
    source_targets: Tensor,
    num_source_classes: int,
    common_class: int | None,
    shared_by: Sequence[int],
    rng: np.random.Generator,
) -> tuple[Tensor, Tensor]:
    """Observed and true multi-hot tags `[N, C-1]` over the classes other than `common_class`.

    Classes keep their order, renumbered past the removed common class. An example of the
    common class gets one class of `shared_by` drawn uniformly as its observed tag, and all of
    `shared_by` as its true tags; any other example its own class as both.
    """
    tag_of = {c: i for i, c in enumerate(c for c in range(num_source_classes) if c != common_class)}
    num_tags = len(tag_of)
    targets = source_targets.cpu().numpy()
    observed = np.zeros((len(targets), num_tags), dtype=np.float32)
    true = np.zeros((len(targets), num_tags), dtype=np.float32)
    is_common = targets == common_class
    own = np.array([tag_of.get(int(c), 0) for c in targets], dtype=np.int64)
    pure_rows = np.flatnonzero(~is_common)
    observed[pure_rows, own[pure_rows]] = 1
    true[pure_rows, own[pure_rows]] = 1
    common_rows = np.flatnonzero(is_common)
    if len(common_rows) == 0:
        return torch.from_numpy(observed), torch.from_numpy(true)
    shared_tags = np.array([tag_of[c] for c in shared_by], dtype=np.int64)
    observed[common_rows, rng.choice(shared_tags, size=len(common_rows))] = 1
    true[np.ix_(common_rows, shared_tags)] = 1
    return torch.from_numpy(observed), torch.from_numpy(true)


class PartialTagDataModule(PrebatchedDataModule):
    """Train/val/test loaders of `TaggedBatch`es built from a labeled source.

    Args:
        source: a data source (`load() -> DatasetSplits`) with integer classes.
        common_class: the source class whose examples are tagged at random (removed as a tag);
            null: no common class, every example tagged with its own class (full labels).
        shared_by: the source classes a common example belongs to (at least 2; empty when
            `common_class` is null).
        class_names: optional names of the source classes (reports and plots).
        batch_size: training batch size.
        eval_batch_size: batch size of validation and test loaders.
        seed: seeds the random tags (each split its own draw) and the shuffling.
        num_workers: DataLoader worker processes.
        drop_last: drop the last incomplete training batch.
    """

    batch_kind: ClassVar[type] = TaggedBatch

    def __init__(
        self,
        source: DataSource,
        common_class: int | None,
        shared_by: list[int],
        class_names: list[str] | None = None,
        batch_size: int = 64,
        eval_batch_size: int = 512,
        seed: int = 0,
        num_workers: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, seed, num_workers, drop_last)
        shared_by = [int(c) for c in shared_by]
        if common_class is None:
            if shared_by:
                raise ValueError(f"data.shared_by={shared_by} needs a data.common_class (got null)")
        elif len(shared_by) < 2 or len(set(shared_by)) != len(shared_by):
            raise ValueError(
                f"data.shared_by must list at least 2 distinct classes, got {shared_by}"
            )
        if common_class is not None and common_class in shared_by:
            raise ValueError(
                f"data.shared_by={shared_by} must not contain data.common_class={common_class}"
            )
        self.source = source
        self.common_class = None if common_class is None else int(common_class)
        self.shared_by = shared_by
        self.class_names = None if class_names is None else list(class_names)

    @cached_property
    def source_splits(self) -> DatasetSplits:
        splits = load_source(self.source)
        num = splits.num_classes
        if self.common_class is not None and not 0 <= self.common_class < num:
            raise ValueError(
                f"data.common_class={self.common_class} is outside the class range [0, {num}) of "
                f"{splits.name}"
            )
        outside = [c for c in self.shared_by if not 0 <= c < num]
        if outside:
            raise ValueError(
                f"data.shared_by={self.shared_by}: {outside} outside the class range [0, {num}) "
                f"of {splits.name}"
            )
        if self.common_class is not None and num < 3:
            raise ValueError(f"{splits.name} has {num} classes; partial tags need at least 3")
        if self.class_names is not None and len(self.class_names) != num:
            raise ValueError(
                f"data.class_names lists {len(self.class_names)} names, {splits.name} has {num} classes"
            )
        return splits

    @cached_property
    def splits(self) -> dict[str, TaggedSplit]:
        """The tagged train/val/test splits (each split's random tags drawn from its own stream)."""
        source = self.source_splits
        streams = np.random.SeedSequence([self.seed, 7_919]).spawn(3)
        tagged = {}
        for stream, name in zip(streams, ("train", "val", "test"), strict=True):
            data = getattr(source, name)
            observed, true = partial_tags(
                data.targets,
                source.num_classes,
                self.common_class,
                self.shared_by,
                np.random.default_rng(stream),
            )
            tagged[name] = TaggedSplit(data.inputs, observed, true, data.targets)
        return tagged

    @property
    def num_classes(self) -> int:
        """Number of tags (the source's classes but the common one)."""
        return self.source_splits.num_classes - (self.common_class is not None)

    @property
    def tag_names(self) -> list[str]:
        names = self.class_names or [str(c) for c in range(self.source_splits.num_classes)]
        return [name for c, name in enumerate(names) if c != self.common_class]

    @property
    def metadata(self) -> DataMetadata:
        return DataMetadata(
            name=self.source_splits.name + ("" if self.common_class is None else "_partial"),
            num_classes=self.num_classes,
            input_shape=self.source_splits.input_shape,
            num_train=len(self.splits["train"]),
        )

    def setup(self, stage: str | None = None) -> None:
        _ = self.splits

    def split_dataset(self, split: str) -> Dataset:
        return TaggedBatchDataset(self.splits[split])
