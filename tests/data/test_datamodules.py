"""ClassificationDataModule, its sampler and the balanced labeled/unlabeled choice."""

from __future__ import annotations

import pytest
import torch

from weaksup.data.batches import Batch
from weaksup.data.datamodules import ClassificationDataModule
from weaksup.data.sampling import EpochSeededRandomSampler, balanced_labeled_indices
from weaksup.data.sources import Digits, TwoMoons


def test_epoch_seeded_sampler_depends_on_seed_and_epoch_only() -> None:
    sampler = EpochSeededRandomSampler(50, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(50)) and first != list(range(50))
    assert list(sampler) == first  # iterating again without set_epoch: same order
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first
    fresh = EpochSeededRandomSampler(50, seed=3)
    fresh.set_epoch(1)
    assert list(fresh) == second  # what a resumed run sees at epoch 1
    assert list(EpochSeededRandomSampler(50, seed=4)) != first


def test_balanced_labeled_indices_per_class_counts_and_seeding() -> None:
    targets = torch.arange(300) % 3
    chosen = balanced_labeled_indices(targets, num_labeled=10, num_classes=3, seed=0)
    counts = torch.bincount(targets[chosen], minlength=3).tolist()
    assert sorted(counts) == [3, 3, 4] and len(set(chosen.tolist())) == 10
    assert torch.equal(chosen, balanced_labeled_indices(targets, 10, 3, seed=0))
    assert not torch.equal(chosen, balanced_labeled_indices(targets, 10, 3, seed=1))
    with pytest.raises(ValueError, match=r"data\.num_labeled=400 is larger than the training set"):
        balanced_labeled_indices(targets, 400, 3, seed=0)
    with pytest.raises(ValueError, match="needs 2 examples of class 2, the training set has 1"):
        balanced_labeled_indices(torch.tensor([0, 0, 0, 1, 1, 1, 2]), 6, 3, seed=0)


def test_datamodule_batches_metadata_and_labeled_split() -> None:
    datamodule = ClassificationDataModule(
        TwoMoons(n_samples=200, seed=0), batch_size=16, num_labeled=20, seed=0
    )
    datamodule.setup("fit")
    metadata = datamodule.metadata
    assert (metadata.name, metadata.num_classes, metadata.input_shape, metadata.num_train) == (
        "two_moons",
        2,
        (2,),
        20,
    )
    assert len(datamodule.labeled_indices) + len(datamodule.unlabeled_indices) == len(
        datamodule.splits.train
    )
    assert not set(datamodule.labeled_indices.tolist()) & set(datamodule.unlabeled_indices.tolist())
    batches = list(datamodule.train_dataloader())
    assert all(isinstance(batch, Batch) for batch in batches)
    assert [len(batch) for batch in batches] == [16, 4]
    assert torch.bincount(torch.cat([b.targets for b in batches])).tolist() == [10, 10]
    val_batch = next(iter(datamodule.val_dataloader()))
    assert val_batch.inputs.dtype == torch.float32 and val_batch.targets.dtype == torch.long


def test_image_datamodule_gathers_whole_batches_by_index() -> None:
    datamodule = ClassificationDataModule(Digits(seed=0), batch_size=32)
    batch = next(iter(datamodule.train_dataloader()))
    assert batch.inputs.shape == (32, 1, 8, 8)
    train = datamodule.splits.train
    first_indices = list(iter(datamodule.train_dataloader().sampler))[:32]
    assert torch.equal(batch.inputs, train.inputs[first_indices])
