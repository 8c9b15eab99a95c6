"""LightningDataModules over in-memory data sources.

`ClassificationDataModule` wraps any source (`weaksup.data.sources`) and emits `Batch`es, or,
for a method that consumes `SemiSupervisedBatch` (`weaksup.build` decides), semi-supervised
training steps (`weaksup.data.semisup`). Batches are gathered with one tensor index per batch
(`__getitems__`), not one `__getitem__` per example, so loading costs next to nothing beside
the model.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, ClassVar, Literal

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from weaksup.data.batches import Batch, SemiSupervisedBatch
from weaksup.data.sampling import EpochSeededRandomSampler, balanced_labeled_indices
from weaksup.data.semisup import SemiSupervisedDataset, SemiSupervisedSampler
from weaksup.data.sources.base import ArrayDataset, DatasetSplits, DataSource, load_source


@dataclass(frozen=True)
class DataMetadata:
    """What a model is built from; stored in every checkpoint."""

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    num_train: int

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "input_shape": list(self.input_shape)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DataMetadata:
        return cls(**{**values, "input_shape": tuple(values["input_shape"])})


class TensorBatchDataset(Dataset):
    """Serves whole `Batch`es from tensors; the DataLoader passes all indices of a batch at once."""

    def __init__(self, data: ArrayDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Batch:
        return Batch(self.data.inputs[index], self.data.targets[index])

    def __getitems__(self, indices: list[int]) -> Batch:
        index = torch.as_tensor(indices, dtype=torch.long)
        return Batch(self.data.inputs[index], self.data.targets[index])


def keep_prebatched(batch: Any) -> Any:
    """Collate function for datasets that already return whole batches."""
    return batch


def prebatched_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader over a dataset with `__getitems__` (one gather per batch).

    Training loaders shuffle with `EpochSeededRandomSampler` (the order of epoch e depends on
    (seed, e) only, so resumed runs see the same batches); `drop_last` applies to them only.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSeededRandomSampler(len(dataset), seed) if shuffle else None,
        collate_fn=keep_prebatched,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        drop_last=drop_last and shuffle,
    )


def step_loader(dataset: Dataset, sampler: Sampler, *, num_workers: int = 0) -> DataLoader:
    """A DataLoader whose sampler yields whole steps and whose dataset gathers each one.

    Automatic batching is off (`batch_size=None`): one sampler item is one batch. Lightning
    calls `sampler.set_epoch` at every epoch start (and, under DDP, deals the steps to the
    ranks with its `DistributedSamplerWrapper`).
    """
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=sampler,
        collate_fn=keep_prebatched,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


class PrebatchedDataModule(pl.LightningDataModule):
    """Loader settings and the train/val/test loaders shared by every datamodule here.

    A subclass says which dataset serves each split (`split_dataset`); the datasets return
    whole batches (`__getitems__`), gathered by `prebatched_loader`.

    Args:
        batch_size: training batch size.
        eval_batch_size: batch size of validation and test loaders.
        seed: seeds the shuffling (order of epoch e depends on (seed, e) only).
        num_workers: DataLoader worker processes (0: load in the main process).
        drop_last: drop the last incomplete training batch.
    """

    #: The batch kind the training loader emits by default.
    batch_kind: ClassVar[type]
    #: Every batch kind the training loader can emit (`weaksup.build.check_batch_kinds`).
    batch_kinds: ClassVar[tuple[type, ...]] = ()

    def __init__(
        self, batch_size: int, eval_batch_size: int, seed: int, num_workers: int, drop_last: bool
    ) -> None:
        super().__init__()
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if not _is_integer(value) or value <= 0:
                raise ValueError(f"data.{key} must be a positive integer, got {value!r}")
        if not _is_integer(num_workers) or num_workers < 0:
            raise ValueError(f"data.num_workers must be an integer >= 0, got {num_workers!r}")
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.seed = seed
        self.num_workers = int(num_workers)
        self.drop_last = drop_last

    def split_dataset(self, split: str) -> Dataset:
        """The dataset of `split` ("train", "val" or "test") whose batches the loader serves."""
        raise NotImplementedError(f"{type(self).__name__} does not implement split_dataset")

    def _loader(self, split: str) -> DataLoader:
        training = split == "train"
        return prebatched_loader(
            self.split_dataset(split),
            self.batch_size if training else self.eval_batch_size,
            shuffle=training,
            seed=self.seed,
            num_workers=self.num_workers,
            drop_last=self.drop_last,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


def _is_integer(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


UnlabeledPool = Literal["all", "unlabeled_only"]
UNLABELED_POOLS: tuple[str, ...] = ("all", "unlabeled_only")


class ClassificationDataModule(PrebatchedDataModule):
    """Labeled train/val/test loaders over one data source, or semi-supervised training steps.

    With `semi_supervised=True` each training step is a `SemiSupervisedBatch`: `batch_size`
    labeled examples from the `num_labeled` chosen ones and `unlabeled_ratio * batch_size`
    unlabeled inputs from the pool, two independent streams (`weaksup.data.semisup`); an epoch
    is one pass over the pool. Validation and test batches stay labeled `Batch`es.
    `weaksup.build.build_datamodule` sets `semi_supervised` from the method's `consumes`; it
    is not a config key.

    Args:
        source: a data source (`load() -> DatasetSplits`).
        batch_size: training batch size (labeled examples per step).
        eval_batch_size: batch size of validation and test loaders.
        num_labeled: if set, train on a balanced, seeded choice of this many labeled examples
            (the rest of the training split is `unlabeled_indices`). Semi-supervised mode needs it.
        seed: seeds the labeled choice and the shuffling (order of epoch e depends on (seed, e) only).
        num_workers: DataLoader worker processes (0: load in the main process).
        drop_last: drop the last incomplete training batch (the last unlabeled batch in
            semi-supervised mode).
        unlabeled_ratio: semi-supervised mode: unlabeled inputs per labeled example in a step
            (μ; FixMatch, Sohn et al. 2020, and Meta Pseudo Labels, Pham et al. 2021, use 7).
        unlabeled_pool: semi-supervised mode: `"all"`, the whole training split without its
            labels (FixMatch's and MPL's protocol), or `"unlabeled_only"`, the examples
            `num_labeled` leaves out.
        semi_supervised: emit `SemiSupervisedBatch`es for training (set by `weaksup.build`).
    """

    batch_kind: ClassVar[type] = Batch
    batch_kinds: ClassVar[tuple[type, ...]] = (Batch, SemiSupervisedBatch)

    def __init__(
        self,
        source: DataSource,
        batch_size: int = 64,
        eval_batch_size: int = 512,
        num_labeled: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        drop_last: bool = False,
        unlabeled_ratio: int = 7,
        unlabeled_pool: UnlabeledPool = "all",
        semi_supervised: bool = False,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, seed, num_workers, drop_last)
        if not _is_integer(unlabeled_ratio) or unlabeled_ratio < 1:
            raise ValueError(
                "data.unlabeled_ratio (unlabeled inputs per labeled example in a training step) "
                f"must be an integer >= 1, got {unlabeled_ratio!r}"
            )
        if unlabeled_pool not in UNLABELED_POOLS:
            raise ValueError(
                f"data.unlabeled_pool must be 'all' (the whole training split without labels) or "
                f"'unlabeled_only' (the examples num_labeled leaves out), got {unlabeled_pool!r}"
            )
        if semi_supervised and num_labeled is None:
            raise ValueError(
                "semi-supervised training learns from labeled + unlabeled data: set "
                "data.num_labeled=N (e.g. 50)"
            )
        self.source = source
        self.num_labeled = num_labeled
        self.unlabeled_ratio = int(unlabeled_ratio)
        self.unlabeled_pool = unlabeled_pool
        self.semi_supervised = bool(semi_supervised)

    @cached_property
    def splits(self) -> DatasetSplits:
        splits = load_source(self.source)
        if splits.num_classes < 2:
            raise ValueError(
                f"data source {splits.name!r} has {splits.num_classes} class(es); need >= 2"
            )
        for split_name in ("train", "val", "test"):
            targets = getattr(splits, split_name).targets
            if len(targets) and (targets.min() < 0 or targets.max() >= splits.num_classes):
                raise ValueError(
                    f"{splits.name} {split_name} labels must lie in [0, {splits.num_classes}), "
                    f"got [{int(targets.min())}, {int(targets.max())}]"
                )
        return splits

    @cached_property
    def labeled_indices(self) -> torch.Tensor:
        """Indices (into the training split) of the examples whose labels are used."""
        train = self.splits.train
        if self.num_labeled is None:
            return torch.arange(len(train))
        return balanced_labeled_indices(
            train.targets, self.num_labeled, self.splits.num_classes, self.seed
        )

    @cached_property
    def unlabeled_indices(self) -> torch.Tensor:
        """Training examples whose labels are hidden (empty when `num_labeled` is None)."""
        mask = torch.ones(len(self.splits.train), dtype=torch.bool)
        mask[self.labeled_indices] = False
        return torch.nonzero(mask).flatten()

    @property
    def unlabeled_pool_rows(self) -> torch.Tensor | None:
        """Rows of the training split the unlabeled stream draws from (None: every row)."""
        if self.unlabeled_pool == "all":
            return None
        if len(self.unlabeled_indices) == 0:
            raise ValueError(
                f"data.unlabeled_pool='unlabeled_only' leaves no unlabeled example: "
                f"data.num_labeled={self.num_labeled} takes the whole training split "
                f"({len(self.splits.train)} examples); use data.unlabeled_pool=all or fewer labels"
            )
        return self.unlabeled_indices

    @property
    def metadata(self) -> DataMetadata:
        return DataMetadata(
            name=self.splits.name,
            num_classes=self.splits.num_classes,
            input_shape=self.splits.input_shape,
            num_train=len(self.labeled_indices),
        )

    def setup(self, stage: str | None = None) -> None:
        _ = self.labeled_indices  # load and validate once, before the loops start
        if self.semi_supervised:
            self.semi_supervised_sampler()  # a pool too small for one step fails here

    def split_dataset(self, split: str) -> Dataset:
        if split == "train":
            return TensorBatchDataset(self.splits.train.subset(self.labeled_indices))
        return TensorBatchDataset(getattr(self.splits, split))

    def semi_supervised_sampler(self) -> SemiSupervisedSampler:
        """The sampler of the training steps in semi-supervised mode (set_epoch by Lightning)."""
        rows = self.unlabeled_pool_rows
        return SemiSupervisedSampler(
            num_labeled=len(self.labeled_indices),
            num_unlabeled=len(self.splits.train) if rows is None else len(rows),
            batch_size=self.batch_size,
            unlabeled_ratio=self.unlabeled_ratio,
            seed=self.seed,
            drop_last=self.drop_last,
        )

    def semi_supervised_dataset(self) -> SemiSupervisedDataset:
        train = self.splits.train
        return SemiSupervisedDataset(
            labeled=train.subset(self.labeled_indices),
            unlabeled_inputs=train.inputs,
            unlabeled_rows=self.unlabeled_pool_rows,
            batch_size=self.batch_size,
            unlabeled_batch_size=self.batch_size * self.unlabeled_ratio,
        )

    def train_dataloader(self) -> DataLoader:
        if not self.semi_supervised:
            return super().train_dataloader()
        return step_loader(
            self.semi_supervised_dataset(),
            self.semi_supervised_sampler(),
            num_workers=self.num_workers,
        )
