"""Partial-tag data modules and the tag-set metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from weaksup.data.partial import PartialTagDataModule, TaggedBatch, partial_tags
from weaksup.data.sources import Blobs, FashionMNIST
from weaksup.metrics.multilabel import TagSetMetrics


def _blobs_module(seed: int = 0, **kwargs) -> PartialTagDataModule:
    source = Blobs(n_samples=1000, centers=3, n_features=2, seed=100)
    return PartialTagDataModule(
        source, common_class=2, shared_by=[0, 1], seed=seed, batch_size=32, **kwargs
    )


def test_partial_tags_by_hand() -> None:
    targets = torch.tensor([0, 3, 1, 3, 2])
    observed, true = partial_tags(
        targets, 4, common_class=3, shared_by=[0, 2], rng=np.random.default_rng(0)
    )
    # tags: source classes 0, 1, 2 keep indices 0, 1, 2 (3 removed)
    assert true.tolist() == [[1, 0, 0], [1, 0, 1], [0, 1, 0], [1, 0, 1], [0, 0, 1]]
    assert observed[[0, 2, 4]].tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    for row in (1, 3):  # common: exactly one of the shared tags
        assert observed[row].sum() == 1 and observed[row, 1] == 0


def test_partial_blobs_is_the_posts_toy() -> None:
    from sklearn.datasets import make_blobs

    module = _blobs_module(seed=1)
    module.setup()
    assert module.metadata.num_classes == 2 and module.metadata.input_shape == (2,)
    train, val, test = (module.splits[name] for name in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (600, 200, 200)
    inputs, _ = make_blobs(n_samples=1000, centers=3, n_features=2, random_state=100)
    all_inputs = torch.cat([train.inputs, val.inputs, test.inputs])
    assert torch.allclose(
        all_inputs.sum(dim=0), torch.as_tensor(inputs, dtype=torch.float32).sum(dim=0), atol=1e-2
    )
    for split in (train, val, test):
        common = split.source_classes == 2
        assert torch.all(split.true_tags[common] == 1)
        assert torch.all(split.tags[common].sum(dim=1) == 1)
        pure = ~common
        own = torch.nn.functional.one_hot(split.source_classes[pure], 2).float()
        assert torch.equal(split.tags[pure], own) and torch.equal(split.true_tags[pure], own)
    common_train = train.tags[train.source_classes == 2]
    assert 0.35 < float(common_train[:, 0].mean()) < 0.65  # a fair coin per common point
    assert not torch.equal(
        _blobs_module(seed=2).splits["train"].tags, train.tags
    )  # the seed draws the tags
    assert torch.equal(_blobs_module(seed=1).splits["train"].tags, train.tags)


def test_loader_serves_tagged_batches() -> None:
    module = _blobs_module()
    batch = next(iter(module.train_dataloader()))
    assert isinstance(batch, TaggedBatch) and len(batch) == 32
    assert batch.tags.shape == batch.true_tags.shape == (32, 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"common_class": 5, "shared_by": [0, 1]},
            r"data.common_class=5 is outside the class range \[0, 3\)",
        ),
        (
            {"common_class": 2, "shared_by": [0, 7]},
            r"data.shared_by=\[0, 7\]: \[7\] outside the class range",
        ),
        ({"common_class": 2, "shared_by": [0]}, "at least 2 distinct"),
        ({"common_class": 1, "shared_by": [0, 1]}, "must not contain data.common_class"),
    ],
)
def test_bad_tags_name_the_key(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PartialTagDataModule(Blobs(n_samples=100, seed=100), **kwargs).setup()


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not FASHION.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_fashion_partial_tags_shirts_as_tshirt_or_pullover() -> None:
    module = PartialTagDataModule(
        FashionMNIST(root=str(FASHION), val_size=100, seed=0, limit_train=500),
        common_class=6,
        shared_by=[0, 2],
        class_names=[str(c) for c in range(10)],
        seed=0,
    )
    module.setup()
    assert module.metadata.num_classes == 9
    assert module.tag_names == ["0", "1", "2", "3", "4", "5", "7", "8", "9"]
    test = module.splits["test"]
    shirts = test.source_classes == 6
    assert int(shirts.sum()) == 1000
    assert torch.all(test.true_tags[shirts][:, [0, 2]] == 1) and torch.all(
        test.true_tags[shirts].sum(1) == 2
    )
    observed = test.tags[shirts]
    assert torch.all(observed[:, 0] + observed[:, 2] == 1)
    boots = test.source_classes == 9
    assert torch.all(test.tags[boots][:, 8] == 1)  # class 9 is tag 8


def test_tag_set_metrics_by_hand() -> None:
    metric = TagSetMetrics(num_classes=2)
    true = torch.tensor([[1, 0], [0, 1], [1, 1], [1, 1], [1, 0]])
    predicted = torch.tensor([[1, 0], [1, 1], [1, 1], [0, 1], [1, 0]])
    scores = torch.tensor([[0.9, 0.1], [0.6, 0.7], [0.8, 0.6], [0.4, 0.9], [0.7, 0.2]])
    metric.update(predicted, true, scores)
    values = metric.compute()
    assert values["exact_match"].item() == pytest.approx(3 / 5)
    assert values["common_all_tags"].item() == pytest.approx(1 / 2)
    assert values["pure_own_only"].item() == pytest.approx(2 / 3)
    # class 0: tp 3 (rows 0, 2, 4), fp 1 (row 1), fn 1 (row 3); class 1: tp 3, fp 0, fn 0
    assert values["precision/0"].item() == pytest.approx(3 / 4)
    assert values["recall/0"].item() == pytest.approx(3 / 4)
    assert values["f1/1"].item() == pytest.approx(1.0)
    assert values["macro_f1"].item() == pytest.approx((0.75 + 1.0) / 2)
    assert values["common_score/0"].item() == pytest.approx((0.8 + 0.4) / 2)
    assert values["common_score/1"].item() == pytest.approx((0.6 + 0.9) / 2)


def test_tag_set_metrics_without_common_points_leave_their_shares_out() -> None:
    metric = TagSetMetrics(num_classes=3)
    true = torch.eye(3)[[0, 1, 2, 2]]
    scores = torch.tensor([[0.9, 0.2, 0.1], [0.6, 0.5, 0.1], [0.1, 0.1, 0.8], [0.1, 0.7, 0.3]])
    metric.update(scores > 0.5, true, scores)
    values = metric.compute()
    assert "common_all_tags" not in values and "common_score/0" not in values
    assert values["top1_accuracy"].item() == pytest.approx(2 / 4)  # rows 1 and 3 wrong
    assert values["exact_match"].item() == pytest.approx(
        2 / 4
    )  # rows 1 and 3 get the wrong single tag
