"""Bad input fails early with one clear message naming the key and the allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.errors import MissingConfigException
from hydra.utils import get_class

from weaksup.build import (
    check_compatibility,
    compatible_options,
    emitted_batch_kinds,
    group_options,
)
from weaksup.config.validation import ConfigError, validate_config
from weaksup.data.datamodules import ClassificationDataModule
from weaksup.eval import load_checkpoint
from weaksup.methods.base import NonFiniteLossError
from weaksup.train import train

from conftest import ComposeFn


def test_unknown_group_option_lists_the_available_ones(compose_train: ComposeFn) -> None:
    with pytest.raises(MissingConfigException, match=r"(?s)loss/hinj.*Available options.*hinge"):
        compose_train("loss=hinj")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "+data.batch_sise=3",
            r"unknown key 'data.batch_sise' for weaksup.data.ClassificationDataModule \(data\); "
            r"did you mean batch_size\? Allowed keys: source, batch_size,",
        ),
        (
            "+trainer.max_epoch=3",
            r"unknown key 'trainer.max_epoch' for pytorch_lightning.Trainer \(trainer\); "
            r"did you mean max_epochs\? Allowed keys: accelerator, ",
        ),
        (
            "+optimizer.learning_rate=0.1",
            r"unknown key 'optimizer.learning_rate' for torch.optim.Adam \(optimizer\); "
            r"allowed keys: params, lr, betas, ",
        ),
        ("data.batch_size=abc", r"'data.batch_size' = 'abc' has the wrong type .* expected int"),
        (
            "backbone.hidden_sizes=[64,wide]",
            r"'backbone.hidden_sizes' = \[64, 'wide'\] has the wrong type",
        ),
        ("loss.label_smoothing=big", r"'loss.label_smoothing' = 'big' has the wrong type"),
        (
            "trainer.precision=17",
            r"'trainer.precision' = 17 has the wrong type for pytorch_lightning.Trainer: "
            r"expected one of 64, 32, 16, 'transformer-engine', .*, 'bf16' or None$",
        ),
        (
            "trainer.max_epochs=abc",
            r"'trainer.max_epochs' = 'abc' has the wrong type .*: expected int or None$",
        ),
        ("seed=abc", r"^'seed' must be an integer from 0 to 4294967295, got 'abc'$"),
        ("seed=-1", r"^'seed' must be an integer from 0 to 4294967295, got -1$"),
        ("seed=true", r"^'seed' must be an integer from 0 to 4294967295, got True$"),
        ("optimizer.lr=-0.1", r"'optimizer.lr' must be > 0, got -0.1"),
        ("optimizer.weight_decay=-1", r"'optimizer.weight_decay' must be >= 0, got -1"),
        (
            "trainer.accumulate_grad_batches=0",
            r"'trainer.accumulate_grad_batches' must be >= 1, got 0",
        ),
    ],
)
def test_invalid_config_values_fail_at_build_time_naming_the_key(
    compose_train: ComposeFn, override: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(compose_train(override))


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        (
            "data.num_labeled=100000",
            ValueError,
            r"data.num_labeled=100000 is larger than the training set \(600 examples\)",
        ),
        ("data.batch_size=0", ValueError, r"data.batch_size must be a positive integer, got 0"),
        (
            "backbone.activation=swishy",
            ValueError,
            r"backbone.activation='swishy' is unknown; allowed: \['gelu', 'identity'",
        ),
        ("backbone=lenet", ValueError, r"backbone=lenet needs image inputs"),
        ("resume=yes", ConfigError, r"resume must be null, 'auto' or 'newest', got 'yes'"),
        ("ckpt_path=/no/such.ckpt", ConfigError, r"ckpt_path='/no/such.ckpt' is not a file"),
        ("loss.label_smoothing=1.5", ValueError, r"label_smoothing"),
    ],
)
def test_invalid_values_fail_before_training(
    compose_train: ComposeFn, tmp_path: Path, override: str, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        train(compose_train(override))
    assert not (tmp_path / "checkpoints").exists()


def test_the_largest_seed_numpy_accepts_is_valid(compose_train: ComposeFn) -> None:
    validate_config(compose_train("seed=4294967295"))


def _methods_consuming_other_batches() -> list[str]:
    return [
        name
        for name, option in group_options("method").items()
        if not any(
            issubclass(kind, get_class(option._target_).consumes)
            for kind in emitted_batch_kinds(ClassificationDataModule)
        )
    ]


def test_method_with_data_of_another_batch_kind_fails_in_one_sentence(
    compose_train: ComposeFn,
) -> None:
    methods = _methods_consuming_other_batches()
    if not methods:
        pytest.skip("no shipped method consumes anything but plain batches")
    cfg = compose_train(f"method={methods[0]}", "data=two_moons")
    with pytest.raises(
        ConfigError,
        match=r"consumes \w+ batches but data ClassificationDataModule emits "
        r"Batch batches; choose a data option that emits \w+: \w+",
    ):
        check_compatibility(cfg)


def test_loss_of_another_kind_names_the_fitting_losses(compose_train: ComposeFn) -> None:
    methods = [
        name
        for name, option in group_options("method").items()
        if (kind := get_class(option._target_).loss_kind) is not None
        and not issubclass(get_class(group_options("loss")["ce"]._target_), kind)
    ]
    if not methods:
        pytest.skip("every shipped method that uses the loss group accepts ce")
    method_cls = get_class(group_options("method")[methods[0]]._target_)
    data = compatible_options("data", method_cls.consumes, attribute="batch_kind")[0]
    cfg = compose_train(f"method={methods[0]}", f"data={data}", "loss=ce")
    with pytest.raises(
        ConfigError,
        match=rf"needs a loss of kind {method_cls.loss_kind.__name__}.*choose loss= one of",
    ):
        check_compatibility(cfg)


def test_labels_out_of_range_are_reported_with_the_range(compose_train: ComposeFn) -> None:
    cfg = compose_train(
        "data.source._target_=corrupt_sources.LabelsOutOfRange",
        "~data.source.n_samples",
        "~data.source.noise",
        "~data.source.val_fraction",
        "~data.source.test_fraction",
    )
    with pytest.raises(
        ValueError, match=r"corrupt train labels must lie in \[0, 3\), got \[0, 5\]"
    ):
        train(cfg)


def test_nan_loss_stops_training_naming_the_step_and_term(
    compose_train: ComposeFn, tmp_path: Path
) -> None:
    cfg = compose_train(
        "data.source._target_=corrupt_sources.OverflowInputs",  # NaN inputs stop at loading
        "~data.source.n_samples",
        "~data.source.noise",
        "~data.source.val_fraction",
        "~data.source.test_fraction",
        "data.batch_size=8",
        "++trainer.num_sanity_val_steps=0",
    )
    with pytest.raises(
        NonFiniteLossError, match=r"train loss term 'loss' is nan at global step \d+ \(epoch 0\)"
    ):
        train(cfg)
    assert not list(tmp_path.glob("checkpoints/*.ckpt"))  # nothing was saved from NaN weights


def test_eval_of_a_foreign_checkpoint_says_what_is_missing(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ConfigError, match="holds no weaksup run config"):
        load_checkpoint(foreign)
    with pytest.raises(ConfigError, match="is not a file"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_missing_data_files_say_how_to_get_them(compose_train: ComposeFn, tmp_path: Path) -> None:
    cfg = compose_train("data=fashion_mnist", f"data.source.root={tmp_path / 'nowhere'}")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        train(cfg)
