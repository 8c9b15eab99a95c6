"""`method=mil` end to end: real Hydra compose, real Lightning Trainer, predict, mosaic, bad configs."""

from __future__ import annotations

import csv
import re

import pytest
import torch
from hydra import compose, initialize_config_module
from torchmetrics.functional.classification import binary_auroc

from weaksup.build import build_method, check_compatibility
from weaksup.config.validation import ConfigError, validate_config
from weaksup.data.bags import BagDataModule, GaussianBags
from weaksup.losses.bag import BagBCELoss, BagHingeLoss, BagLogLoss, BagSquaredLoss
from weaksup.losses.pooling import BagSegments
from weaksup.methods.mil import MILClassifier
from weaksup.predict import INSTANCE_FILE, predict
from weaksup.train import train

TINY = [
    "method=mil",
    "data=mil_gaussian",
    "loss=bag_bce",
    "backbone.hidden_sizes=[16]",
    "data.source.num_train_bags=64",
    "data.source.num_val_bags=40",
    "data.source.num_test_bags=40",
    "data.batch_size=16",
    "trainer.max_epochs=4",
    "trainer.log_every_n_steps=1",
    "optimizer.lr=0.01",
    "monitor.metric=val/auc",
    "logger=none",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
    "trainer.enable_progress_bar=false",
]


def _compose(overrides: list[str], config: str = "train"):
    with initialize_config_module("weaksup.conf", version_base="1.3"):
        return compose(config, overrides=overrides)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One attention-MIL run on Gaussian bags, shared by the tests below."""
    output_dir = tmp_path_factory.mktemp("mil_run")
    mosaic = (
        "{_target_:weaksup.plots.bag_mosaic.BagMosaicCallback,dirpath:"
        + str(output_dir / "plots")
        + ",num_bags:2}"
    )
    cfg = _compose([*TINY, f"paths.output_dir={output_dir}", f"+callbacks.bag_mosaic={mosaic}"])
    return output_dir, train(cfg)


def test_attention_mil_learns_gaussian_bags(trained_run):
    output_dir, results = trained_run
    assert results["test"]["test/auc"] > 0.9, results
    assert results["test"]["test/instance_auc"] > 0.9, results
    assert 0.0 <= results["test"]["test/acc"] <= 1.0
    assert results["global_step"] == 4 * 4  # 64 bags / 16 per step, 4 epochs
    assert (output_dir / "plots" / "bag_mosaic.png").stat().st_size > 10_000


def test_predict_scores_bags_and_single_instances(trained_run, tmp_path):
    _, results = trained_run
    cfg = _compose(
        [
            f"ckpt_path={results['best_checkpoint']}",
            f"paths.output_dir={tmp_path}",
            "trainer.enable_progress_bar=false",
            "batch_size=7",
        ],
        config="predict",
    )
    predictions = predict(cfg)
    offsets = predictions["bag_offsets"]
    assert len(offsets) == 41 and int(offsets[-1]) == len(predictions["instance_scores"])
    # attention weights sum to one in every bag
    segments = BagSegments.from_offsets(offsets)
    sums = torch.zeros(40).index_add(0, segments.bag_index, predictions["attention"])
    torch.testing.assert_close(sums, torch.ones(40))
    assert binary_auroc(
        predictions["bag_scores"], predictions["bag_labels"]
    ).item() == pytest.approx(results["test"]["test/auc"], abs=1e-6)
    with (tmp_path / INSTANCE_FILE).open() as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == int(offsets[-1]) and set(rows[0]) == {
        "bag",
        "instance",
        "instance_score",
        "attention",
        "instance_label",
    }

    # The same instances sent one by one (bags of one) get exactly their instance scores back.
    test_instances = BagDataModule(GaussianBags(64, 40, 40, seed=0)).splits.test.instances
    torch.save({"instances": test_instances}, tmp_path / "instances.pt")
    single_dir = tmp_path / "single"
    single = predict(
        _compose(
            [
                f"ckpt_path={results['best_checkpoint']}",
                f"paths.output_dir={single_dir}",
                f"input_path={tmp_path / 'instances.pt'}",
                "trainer.enable_progress_bar=false",
            ],
            config="predict",
        )
    )
    torch.testing.assert_close(single["bag_scores"], predictions["instance_scores"])
    torch.testing.assert_close(single["attention"], torch.ones(len(test_instances)))


@pytest.mark.parametrize(
    ("pooling", "loss"),
    [
        ("max", BagBCELoss()),
        ("mean", BagSquaredLoss()),
        ("lse", BagHingeLoss()),
        ("noisy_or", BagBCELoss()),
        ("attention", BagSquaredLoss()),
        ("gated_attention", BagHingeLoss()),
        ("max", BagLogLoss()),
    ],
)
def test_every_pooling_and_loss_learns(pooling, loss):
    """A few hundred vectorised steps on Gaussian bags: bag AUC well above chance."""
    torch.manual_seed(0)
    cfg = _compose([*TINY, f"pooling={pooling}", "paths.output_dir=unused"])
    splits = GaussianBags(
        num_train_bags=64, num_val_bags=8, num_test_bags=80, num_features=8, seed=1
    ).load()
    model = build_method(cfg, BagDataModule(GaussianBags(2, 2, 2)).metadata)
    model.loss = loss
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for step in range(60):
        batch = splits.train.select(torch.arange(16) + 16 * (step % 4))
        value = model.loss(model(batch).bag_logits, batch.bag_labels)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    with torch.no_grad():
        auc = binary_auroc(model(splits.test).bag_logits.sigmoid(), splits.test.bag_labels).item()
    threshold = (
        0.6 if isinstance(loss, BagLogLoss) else 0.85
    )  # the seed's log form ignores negative bags
    assert auc > threshold, (pooling, loss, auc)


def test_mil_needs_a_bag_loss_and_bag_data():
    cfg = _compose([*TINY[:2], "loss=ce", "paths.output_dir=unused"])
    message = re.escape("choose loss= one of: bag_bce, bag_hinge, bag_log, bag_squared")
    with pytest.raises(ConfigError, match=message):
        check_compatibility(cfg)
    cfg = _compose(["method=mil", "data=two_moons", "loss=bag_bce", "paths.output_dir=unused"])
    with pytest.raises(
        ConfigError, match="consumes BagBatch batches but data ClassificationDataModule emits Batch"
    ):
        check_compatibility(cfg)
    cfg = _compose(["method=supervised", "data=mil_gaussian", "paths.output_dir=unused"])
    with pytest.raises(ConfigError, match="emits BagBatch"):
        check_compatibility(cfg)


def test_pooling_configs_are_validated():
    cfg = _compose([*TINY, "pooling=lse", "pooling.r=fast", "paths.output_dir=unused"])
    with pytest.raises(ConfigError, match=re.escape("'pooling.r' = 'fast' has the wrong type")):
        validate_config(cfg)
    cfg = _compose([*TINY, "pooling=attention", "+pooling.heads=2", "paths.output_dir=unused"])
    with pytest.raises(ConfigError, match=re.escape("unknown key 'pooling.heads'")):
        validate_config(cfg)
    for pooling in ("max", "mean", "lse", "noisy_or", "attention", "gated_attention"):
        cfg = _compose([*TINY, f"pooling={pooling}", "paths.output_dir=unused"])
        validate_config(cfg)
        check_compatibility(cfg)
        assert isinstance(
            build_method(cfg, BagDataModule(GaussianBags(2, 2, 2)).metadata), MILClassifier
        )


@pytest.mark.parametrize("experiment", ["mil_mnist_bags", "mil_musk1", "mil_musk2"])
@pytest.mark.parametrize("pooling", ["attention", "gated_attention", "max"])
def test_experiments_compose_and_validate(experiment, pooling):
    cfg = _compose([f"experiment={experiment}", f"pooling={pooling}", "paths.output_dir=unused"])
    validate_config(cfg)
    check_compatibility(cfg)
    assert cfg.monitor.mode in ("max", "min") and cfg.loss._target_.endswith("BagBCELoss")
    assert cfg.optimizer.lr == pytest.approx(5e-4)


def test_fashion_mnist_bags_config_validates():
    cfg = _compose(
        ["experiment=mil_mnist_bags", "data=fashion_mnist_bags", "paths.output_dir=unused"]
    )
    validate_config(cfg)
    check_compatibility(cfg)
    assert cfg.data.source.images._target_ == "weaksup.data.sources.FashionMNIST"
