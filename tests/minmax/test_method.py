"""Min-max method and baselines end to end: real Hydra compose, real Lightning Trainer, tiny runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from weaksup.build import build_datamodule, build_method, check_compatibility
from weaksup.config.validation import ConfigError, validate_config
from weaksup.data.partial import TaggedBatch
from weaksup.losses.minmax import class_spread
from weaksup.methods.minmax import DECISION_REGIONS_FILE, MinMaxClassifier, PartialTagBaseline
from weaksup.train import train

from conftest import ComposeFn


def _blobs(compose_train: ComposeFn, *overrides: str) -> DictConfig:
    """`experiment=minmax_partial_blobs` in this test's folder, without a logger."""
    return compose_train(
        "logger=none", "experiment=minmax_partial_blobs", "data.batch_size=64", *overrides
    )


class SpreadProbe(pl.Callback):
    """Records the class spread after every training batch (after the optimizer step)."""

    def __init__(self) -> None:
        self.spreads: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.spreads.append(
            float(class_spread(pl_module.class_embeddings.weight.detach(), pl_module.loss.distance))
        )


@pytest.mark.parametrize("distance", ["l2", "kl"])
def test_projection_holds_after_every_optimizer_step(
    compose_train: ComposeFn, distance: str
) -> None:
    bound = 0.5
    cfg = _blobs(
        compose_train,
        "method.loss.form=full",
        f"method.loss.distance={distance}",
        "method.tag_rule.rule=fixed",  # the default midpoint rule measures cosines
        "method.loss.constraint=projection",
        f"method.loss.constraint_bound={bound}",
        "method.embedding_init_range=2.0",
        "trainer.max_epochs=2",
    )
    validate_config(cfg)
    datamodule = build_datamodule(cfg)
    model = build_method(cfg, datamodule.metadata)
    assert float(model.class_spread()) > bound  # the initial table breaks the bound
    probe = SpreadProbe()
    trainer = pl.Trainer(
        max_epochs=2,
        callbacks=[probe],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=datamodule)
    assert len(probe.spreads) == 2 * 10  # 600 training points / 64
    assert max(probe.spreads) <= bound
    assert probe.spreads[-1] == pytest.approx(bound, rel=1e-3)  # the push keeps the bound active


def test_minmax_partial_blobs_end_to_end(compose_train: ComposeFn, tmp_path: Path) -> None:
    cfg = _blobs(compose_train, "trainer.max_epochs=8", "seed=1")
    results = train(cfg)
    written = json.loads((tmp_path / "metrics.json").read_text())
    test = written["test"]
    assert test == pytest.approx(results["test"])
    assert test["test/common_all_tags"] >= 0.9
    assert test["test/pure_own_only"] >= 0.97
    assert (tmp_path / DECISION_REGIONS_FILE).stat().st_size > 10_000
    # the calibrated threshold is saved with the checkpoint and used again by test
    checkpoint = torch.load(results["best_checkpoint"], weights_only=True)
    assert checkpoint["state_dict"]["tag_rule.threshold"].item() == pytest.approx(
        test["test/tag_threshold"]
    )


@pytest.mark.parametrize(
    ("method", "objective"),
    [("minmax_baseline_softmax", "softmax"), ("minmax_baseline_bce", "bce")],
)
def test_baselines_run_on_the_same_tags(
    compose_train: ComposeFn, tmp_path: Path, method: str, objective: str
) -> None:
    cfg = _blobs(
        compose_train,
        f"method={method}",
        "trainer.max_epochs=8",
        "seed=1",
        "method.plot_decision_regions=false",
    )
    check_compatibility(cfg)
    results = train(cfg)
    test = results["test"]
    assert test["test/pure_own_only"] >= 0.97
    # with the fixed 0.5 threshold the common class is split between the tags, rarely given both
    assert test["test/common_all_tags"] <= 0.2
    low, high = sorted([test["test/common_score/0"], test["test/common_score/1"]])
    assert low > 0.2 and high < 0.8
    assert not (tmp_path / DECISION_REGIONS_FILE).exists()


def test_predict_step_gives_scores_and_tag_sets(compose_train: ComposeFn) -> None:
    cfg = _blobs(compose_train, "method=minmax_post")
    datamodule = build_datamodule(cfg)
    model = build_method(cfg, datamodule.metadata)
    assert isinstance(model, MinMaxClassifier)
    batch = next(iter(datamodule.val_dataloader()))
    assert isinstance(batch, TaggedBatch)
    output = model.predict_step(batch, 0)
    assert output["scores"].shape == output["tags"].shape == (200, 2)
    similarity = model.similarities(batch.inputs)
    # the post's rule: sigmoid(5 cos) > 0.5
    assert torch.equal(output["tags"], torch.sigmoid(5 * similarity) > 0.5)
    assert torch.allclose(output["scores"], torch.sigmoid(5 * similarity))


def test_class_count_mismatch_names_the_key(compose_train: ComposeFn) -> None:
    cfg = _blobs(compose_train, "method.num_classes=3")
    datamodule = build_datamodule(cfg)
    with pytest.raises(ConfigError, match=r"method.num_classes=3 .* has 2 tag classes"):
        build_method(cfg, datamodule.metadata)


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (
            ["method.loss.distance=manhattan"],
            ValueError,
            r"method.loss.distance='manhattan' is unknown; allowed: cosine, l2, l1, kl",
        ),
        (
            [
                "method.loss.distance=l2",
                "method.loss.constraint=projection",
                "method.loss.constraint_bound=0",
            ],
            ValueError,
            r"method.loss.constraint_bound \(K\) must be > 0",
        ),
        (
            ["data.shared_by=[0,5]"],
            ValueError,
            r"data.shared_by=\[0, 5\]: \[5\] outside the class range",
        ),
        (["method.tag_rule.rule=median"], ValueError, "method.tag_rule.rule='median' is unknown"),
        (["+method.loss.margin=1"], ConfigError, "unknown key 'method.loss.margin'"),
    ],
)
def test_bad_input_names_the_key(
    compose_train: ComposeFn, overrides: list[str], error: type, message: str
) -> None:
    cfg = _blobs(compose_train, *overrides)
    # The constructors' own errors reach the user unwrapped (weaksup.config.instantiate)
    with pytest.raises(error, match=message):
        validate_config(cfg)
        datamodule = build_datamodule(cfg)
        build_method(cfg, datamodule.metadata)


def test_minmax_needs_tagged_batches(compose_train: ComposeFn) -> None:
    cfg = compose_train("logger=none", "method=minmax", "data=blobs")
    with pytest.raises(
        ConfigError,
        match="consumes TaggedBatch batches but data ClassificationDataModule emits Batch",
    ):
        check_compatibility(cfg)


def test_baseline_is_a_partial_tag_method(compose_train: ComposeFn) -> None:
    cfg = _blobs(compose_train, "method=minmax_baseline_bce")
    datamodule = build_datamodule(cfg)
    model = build_method(cfg, datamodule.metadata)
    assert isinstance(model, PartialTagBaseline) and model.objective == "bce"
    assert model.backbone.num_outputs == 2


def test_tag_rules_by_hand() -> None:
    from weaksup.methods.minmax import TagRule

    similarities = torch.tensor([[0.9, 0.5, -0.2], [0.3, 0.25, 0.1]])
    assert TagRule("fixed", 0.2)(similarities).tolist() == [
        [True, True, False],
        [True, True, False],
    ]
    relative = TagRule("relative", 0.1)
    assert relative(similarities).tolist() == [[True, False, False], [True, True, False]]
    calibrated = TagRule("calibrated", 0.0, quantile=0.5)
    observed = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    calibrated.calibrate(similarities, observed)  # median of 0.9 and 0.25
    assert calibrated.threshold.item() == pytest.approx(0.575)
    with pytest.raises(ValueError, match="margin of rule=relative"):
        TagRule("relative", 0.0)
