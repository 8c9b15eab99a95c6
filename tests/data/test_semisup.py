"""Semi-supervised batches: μ, the unlabeled pool, two independent reproducible streams, resume.

Most tests use `RowIdSource`, whose every input is its own training row index, so a batch says
exactly which examples it holds. The build and resume tests go through the real config, the
real `weaksup.build` and `weaksup.train` with `ssl_probe.SemiSupervisedProbe`, a tiny method
that consumes `SemiSupervisedBatch` (no shipped method does yet).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from ssl_probe import PROBE_TARGET

from weaksup.build import build_datamodule, check_compatibility
from weaksup.config.validation import ConfigError, validate_config
from weaksup.data.batches import Batch, SemiSupervisedBatch
from weaksup.data.datamodules import ClassificationDataModule
from weaksup.data.semisup import SemiSupervisedDataset, SemiSupervisedSampler
from weaksup.data.sources.base import ArrayDataset, DatasetSplits
from weaksup.train import main as train_main
from weaksup.train import train

from conftest import ComposeFn, EntryPointResult

NUM_TRAIN = 120
PROBE = ("method=supervised", f"++method._target_={PROBE_TARGET}")
SEMI_SUPERVISED_DATA = "blobs, digits, fashion_mnist, mnist10k, mnist1d, two_moons"


class RowIdSource:
    """`NUM_TRAIN` training rows whose single input feature is the row index; 3 classes."""

    def load(self) -> DatasetSplits:
        def split(size: int) -> ArrayDataset:
            return ArrayDataset(
                torch.arange(size, dtype=torch.float32)[:, None], torch.arange(size) % 3
            )

        return DatasetSplits(split(NUM_TRAIN), split(30), split(30), num_classes=3, name="row_ids")


def _datamodule(**overrides: object) -> ClassificationDataModule:
    arguments = {"batch_size": 4, "num_labeled": 9, "unlabeled_ratio": 3, "seed": 0}
    arguments |= overrides
    datamodule = ClassificationDataModule(RowIdSource(), semi_supervised=True, **arguments)
    datamodule.setup("fit")
    return datamodule


def _epoch(datamodule: ClassificationDataModule, epoch: int = 0) -> list[SemiSupervisedBatch]:
    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(epoch)  # what Lightning does at every epoch start
    return list(loader)


def _rows(inputs: torch.Tensor) -> list[int]:
    return inputs[:, 0].long().tolist()


def _labeled_rows(batches: list[SemiSupervisedBatch]) -> list[int]:
    return [row for batch in batches for row in _rows(batch.labeled.inputs)]


def _unlabeled_rows(batches: list[SemiSupervisedBatch]) -> list[int]:
    return [row for batch in batches for row in _rows(batch.unlabeled)]


def _sampler(num_labeled: int = 10, num_unlabeled: int = 300, **overrides: object):
    arguments = {"batch_size": 4, "unlabeled_ratio": 3, "seed": 0, "drop_last": False}
    return SemiSupervisedSampler(num_labeled, num_unlabeled, **(arguments | overrides))


def _flat_orders(sampler: SemiSupervisedSampler, epoch: int = 0) -> tuple[list[int], list[int]]:
    sampler.set_epoch(epoch)
    steps = list(sampler)
    return (
        torch.cat([labeled for labeled, _ in steps]).tolist(),
        torch.cat([unlabeled for _, unlabeled in steps]).tolist(),
    )


def test_every_step_holds_batch_size_labeled_and_mu_times_as_many_unlabeled() -> None:
    datamodule = _datamodule(unlabeled_pool="unlabeled_only")  # pool: 120 - 9 = 111
    batches = _epoch(datamodule)
    assert all(isinstance(batch, SemiSupervisedBatch) for batch in batches)
    sizes = [(len(batch.labeled), batch.unlabeled.shape[0]) for batch in batches]
    assert sizes == [(4, 12)] * 9 + [(4, 3)]  # ceil(111 / 12) = 10 steps, the last one short
    assert [len(batch) for batch in batches[:2]] == [16, 16]
    for batch in batches:  # labels are the rows' own labels; inputs keep their shape
        rows = torch.tensor(_rows(batch.labeled.inputs))
        assert torch.equal(batch.labeled.targets, rows % 3)
        assert batch.unlabeled.shape[1:] == (1,) and batch.unlabeled.dtype == torch.float32
    assert set(_labeled_rows(batches)) == set(datamodule.labeled_indices.tolist())

    dropped = _epoch(_datamodule(unlabeled_pool="unlabeled_only", drop_last=True))
    assert [(len(b.labeled), b.unlabeled.shape[0]) for b in dropped] == [(4, 12)] * 9


@pytest.mark.parametrize(
    ("batch_size", "unlabeled_ratio", "pool", "steps"),
    [(4, 3, "all", 10), (4, 7, "all", 5), (5, 7, "all", 4), (4, 3, "unlabeled_only", 10)],
)
def test_an_epoch_is_one_pass_over_the_unlabeled_pool(
    batch_size: int, unlabeled_ratio: int, pool: str, steps: int
) -> None:
    datamodule = _datamodule(
        batch_size=batch_size, unlabeled_ratio=unlabeled_ratio, unlabeled_pool=pool
    )
    pool_size = NUM_TRAIN if pool == "all" else NUM_TRAIN - 9
    assert steps == math.ceil(pool_size / (batch_size * unlabeled_ratio))
    batches = _epoch(datamodule)
    assert len(batches) == len(datamodule.train_dataloader()) == steps
    unlabeled = _unlabeled_rows(batches)
    assert len(unlabeled) == pool_size and len(set(unlabeled)) == pool_size  # each input once


def test_unlabeled_only_is_disjoint_from_the_labeled_set_and_all_is_the_whole_split() -> None:
    only = _datamodule(unlabeled_pool="unlabeled_only")
    labeled = set(only.labeled_indices.tolist())
    unlabeled = set(_unlabeled_rows(_epoch(only)))
    assert len(labeled) == 9 and not labeled & unlabeled
    assert unlabeled == set(only.unlabeled_indices.tolist())
    everything = _datamodule(unlabeled_pool="all")
    unlabeled_all = set(_unlabeled_rows(_epoch(everything)))
    assert unlabeled_all == set(range(NUM_TRAIN)) and labeled <= unlabeled_all


def test_the_labeled_order_does_not_depend_on_the_pool_or_mu_or_the_batch_size() -> None:
    reference, _ = _flat_orders(_sampler(unlabeled_ratio=3))
    for overrides in (
        {"num_unlabeled": 1000},
        {"unlabeled_ratio": 5},
        {"batch_size": 6},
        {"drop_last": True},
    ):
        labeled, _ = _flat_orders(_sampler(**overrides))
        length = min(len(labeled), len(reference))
        assert length >= 30 and labeled[:length] == reference[:length], overrides
    # Through the datamodule: the pool changes, the labeled rows come in the same order.
    rows_all = _labeled_rows(_epoch(_datamodule(unlabeled_pool="all")))
    rows_only = _labeled_rows(_epoch(_datamodule(unlabeled_pool="unlabeled_only")))
    assert rows_only == rows_all[: len(rows_only)]


def test_the_unlabeled_order_does_not_depend_on_the_labeled_set_or_the_batch_shape() -> None:
    _, reference = _flat_orders(_sampler(num_labeled=10))
    for overrides in (
        {"num_labeled": 3},
        {"num_labeled": 50},
        {"batch_size": 7},
        {"unlabeled_ratio": 1},
    ):
        _, unlabeled = _flat_orders(_sampler(**overrides))
        assert unlabeled == reference, overrides
    # Through the datamodule: more labels (pool "all"), the same unlabeled rows in the same order.
    assert _unlabeled_rows(_epoch(_datamodule(num_labeled=9))) == _unlabeled_rows(
        _epoch(_datamodule(num_labeled=30))
    )


def test_both_orders_are_reproducible_from_seed_and_epoch() -> None:
    sampler = _sampler()
    epoch_0, epoch_1 = _flat_orders(sampler, 0), _flat_orders(sampler, 1)
    assert _flat_orders(sampler, 0) == epoch_0  # iterating again gives the same steps
    resumed = _sampler()  # a fresh sampler, as a resumed run builds it
    assert _flat_orders(resumed, 1) == epoch_1
    assert epoch_0[0] != epoch_1[0] and epoch_0[1] != epoch_1[1]  # both streams reshuffle
    other_seed = _flat_orders(_sampler(seed=1), 0)
    assert other_seed[0] != epoch_0[0] and other_seed[1] != epoch_0[1]
    # Lightning makes the iterator of a resumed run before it calls set_epoch: the order must
    # be drawn at the first step, not when iter() is called.
    loader = _datamodule().train_dataloader()
    early_iterator = iter(loader)
    loader.sampler.set_epoch(1)
    assert _unlabeled_rows(list(early_iterator)) == _unlabeled_rows(_epoch(_datamodule(), 1))
    # Same epoch, same seed: the same batches of rows through the whole datamodule.
    first, again = _epoch(_datamodule(), 1), _epoch(_datamodule(), 1)
    assert _labeled_rows(first) == _labeled_rows(again)
    assert _unlabeled_rows(first) == _unlabeled_rows(again)


def test_the_labeled_stream_draws_a_fresh_permutation_on_every_pass() -> None:
    labeled, _ = _flat_orders(_sampler(num_labeled=10, num_unlabeled=600), epoch=2)
    assert len(labeled) == 50 * 4  # 50 steps of 4: 20 passes over 10 labeled examples
    passes = [tuple(labeled[start : start + 10]) for start in range(0, len(labeled), 10)]
    assert all(sorted(one_pass) == list(range(10)) for one_pass in passes)
    assert len(set(passes)) == len(passes)  # no order repeated within the epoch


def test_a_labeled_set_smaller_than_the_batch_spans_passes() -> None:
    sampler = _sampler(num_labeled=3, num_unlabeled=40, batch_size=8, unlabeled_ratio=1)
    steps = list(sampler)
    assert [len(labeled) for labeled, _ in steps] == [8] * 5
    flat = torch.cat([labeled for labeled, _ in steps]).tolist()
    passes = [flat[start : start + 3] for start in range(0, 39, 3)]
    assert all(sorted(one_pass) == [0, 1, 2] for one_pass in passes)  # 13 whole passes, then 1


def test_worker_processes_serve_the_same_batches() -> None:
    in_process = _datamodule(num_workers=0)
    with_workers = _datamodule(num_workers=2)
    for epoch in (0, 1):
        expected, served = _epoch(in_process, epoch), _epoch(with_workers, epoch)
        assert len(served) == len(expected)
        for mine, theirs in zip(served, expected, strict=True):
            assert torch.equal(mine.labeled.inputs, theirs.labeled.inputs)
            assert torch.equal(mine.labeled.targets, theirs.labeled.targets)
            assert torch.equal(mine.unlabeled, theirs.unlabeled)


def test_validation_and_test_batches_stay_labeled() -> None:
    datamodule = _datamodule()
    for loader in (datamodule.val_dataloader(), datamodule.test_dataloader()):
        batches = list(loader)
        assert all(type(batch) is Batch for batch in batches)
        assert sum(len(batch) for batch in batches) == 30
    assert datamodule.metadata.num_train == 9  # the labeled examples, as for supervised runs


def test_an_integer_step_is_the_unshuffled_step_overfit_batches_replays() -> None:
    labeled = ArrayDataset(torch.arange(3.0)[:, None] + 100, torch.tensor([0, 1, 2]))
    dataset = SemiSupervisedDataset(labeled, torch.arange(10.0)[:, None], None, 4, 4)
    assert len(dataset) == 3
    step = dataset[2]
    assert _rows(step.labeled.inputs) == [102, 100, 101, 102] and _rows(step.unlabeled) == [8, 9]
    with pytest.raises(IndexError, match="step 3 is outside the 3 steps of an epoch"):
        dataset[3]


def test_a_method_consuming_semi_supervised_batches_gets_a_semi_supervised_datamodule(
    compose_train: ComposeFn,
) -> None:
    cfg = compose_train(*PROBE, "data=mnist10k", "data.num_labeled=50")
    validate_config(cfg)
    check_compatibility(cfg)
    datamodule = build_datamodule(cfg)
    assert isinstance(datamodule, ClassificationDataModule) and datamodule.semi_supervised
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    batch = next(iter(loader))
    assert len(batch.labeled) == 128 and batch.unlabeled.shape == (7 * 128, 1, 28, 28)
    assert len(loader) == math.ceil(7000 / (7 * 128))  # the 7,000 training images, without labels
    assert datamodule.metadata.num_train == 50
    supervised = build_datamodule(compose_train("data=mnist10k", "data.num_labeled=50"))
    assert not supervised.semi_supervised  # the same data config, a supervised method


def test_a_semi_supervised_method_without_num_labeled_stops_at_the_entry_point(
    tmp_path: Path, run_entry_point: Callable[..., EntryPointResult]
) -> None:
    result = run_entry_point(
        train_main, *PROBE, "data=two_moons", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert result.code == 1
    assert result.err.strip().splitlines()[-1] == (
        "ConfigError: method SemiSupervisedProbe learns from labeled + unlabeled data: set "
        "data.num_labeled=N (e.g. 50)"
    )
    assert not (tmp_path / "run").exists()  # stopped before the run folder was made


@pytest.mark.parametrize(
    ("data", "data_class", "emitted"),
    [
        ("mnist_bags", "BagDataModule", "BagBatch"),
        ("partial_blobs", "PartialTagDataModule", "TaggedBatch"),
    ],
)
def test_a_semi_supervised_method_on_bag_or_tag_data_names_the_fitting_data(
    compose_train: ComposeFn, data: str, data_class: str, emitted: str
) -> None:
    cfg = compose_train(*PROBE, f"data={data}", "data.seed=0")
    with pytest.raises(ConfigError) as stopped:
        check_compatibility(cfg)
    assert str(stopped.value) == (
        f"method SemiSupervisedProbe consumes SemiSupervisedBatch batches but data {data_class} "
        f"emits {emitted} batches; choose a data option that emits SemiSupervisedBatch: "
        f"{SEMI_SUPERVISED_DATA}"
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "data.unlabeled_pool=labeled",
            "'data.unlabeled_pool' = 'labeled' has the wrong type for "
            "weaksup.data.ClassificationDataModule: expected one of 'all', 'unlabeled_only'",
        ),
        (
            "data.unlabeled_ratio=1.5",
            "'data.unlabeled_ratio' = 1.5 has the wrong type for "
            "weaksup.data.ClassificationDataModule: expected int",
        ),
        (
            "+data.semi_supervised=true",
            "data.semi_supervised is not a config key: the method decides it (a method that "
            "consumes SemiSupervisedBatch gets semi-supervised batches); remove it",
        ),
    ],
)
def test_bad_semi_supervised_keys_stop_before_anything_loads(
    compose_train: ComposeFn, override: str, message: str
) -> None:
    cfg = compose_train(*PROBE, "data=two_moons", "data.num_labeled=6", override)
    with pytest.raises(ConfigError) as stopped:
        validate_config(cfg)
        check_compatibility(cfg)
    assert str(stopped.value) == message


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"unlabeled_ratio": 0},
            "data.unlabeled_ratio (unlabeled inputs per labeled example in a training step) must "
            "be an integer >= 1, got 0",
        ),
        (
            {"unlabeled_pool": "rest"},
            "data.unlabeled_pool must be 'all' (the whole training split without labels) or "
            "'unlabeled_only' (the examples num_labeled leaves out), got 'rest'",
        ),
        (
            {"num_labeled": None},
            "semi-supervised training learns from labeled + unlabeled data: set "
            "data.num_labeled=N (e.g. 50)",
        ),
    ],
)
def test_the_datamodule_checks_its_semi_supervised_arguments(arguments: dict, message: str) -> None:
    with pytest.raises(ValueError) as stopped:
        ClassificationDataModule(
            RowIdSource(), **({"num_labeled": 9} | arguments), semi_supervised=True
        )
    assert str(stopped.value) == message


def test_a_pool_that_cannot_fill_a_step_fails_at_setup_naming_the_keys() -> None:
    with pytest.raises(ValueError) as no_pool:
        _datamodule(num_labeled=NUM_TRAIN, unlabeled_pool="unlabeled_only")
    assert str(no_pool.value) == (
        "data.unlabeled_pool='unlabeled_only' leaves no unlabeled example: "
        "data.num_labeled=120 takes the whole training split (120 examples); use "
        "data.unlabeled_pool=all or fewer labels"
    )
    with pytest.raises(ValueError) as too_small:
        _datamodule(batch_size=16, unlabeled_ratio=8, drop_last=True)
    assert str(too_small.value) == (
        "data.drop_last=true leaves no training step: the unlabeled pool holds 120 inputs, "
        "fewer than one unlabeled batch of data.batch_size x data.unlabeled_ratio = 128; lower "
        "either, or set data.drop_last=false"
    )


def _train_probe(output_dir: Path, compose_train: ComposeFn, *overrides: str) -> dict:
    cfg = compose_train(
        *PROBE,
        "data=two_moons",
        "data.num_labeled=10",
        "data.batch_size=8",
        "data.unlabeled_ratio=3",
        "backbone.dropout=0.2",  # dropout: the RNG must match too
        *overrides,
        output_dir=output_dir,
    )
    return train(cfg)


def test_resume_auto_matches_an_uninterrupted_semi_supervised_run(
    tmp_path: Path, compose_train: ComposeFn
) -> None:
    full = _train_probe(tmp_path / "full", compose_train, "trainer.max_epochs=2")
    interrupted = tmp_path / "interrupted"
    _train_probe(interrupted, compose_train, "trainer.max_epochs=1")
    resumed = _train_probe(interrupted, compose_train, "trainer.max_epochs=2", "resume=auto")

    assert full["global_step"] == resumed["global_step"] == 2 * math.ceil(600 / 24)
    stored = OmegaConf.load(tmp_path / "full" / "config.yaml")
    assert stored.method._target_ == PROBE_TARGET and stored.data.unlabeled_ratio == 3
    full_weights = torch.load(tmp_path / "full/checkpoints/last.ckpt", weights_only=True)
    resumed_weights = torch.load(interrupted / "checkpoints/last.ckpt", weights_only=True)
    for name, tensor in full_weights["state_dict"].items():
        torch.testing.assert_close(resumed_weights["state_dict"][name], tensor, rtol=0, atol=0)
    assert resumed["test"] == full["test"]
