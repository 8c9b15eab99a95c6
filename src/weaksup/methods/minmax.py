"""Min-max classifier (learned class embeddings) and its baselines on partially tagged data.

`MinMaxClassifier`: an encoder backbone f and a class-embedding table E trained with
`weaksup.losses.minmax.MinMaxLoss` (Pawan, "Min-Max Loss, Revisiting Classification Losses").
`PartialTagBaseline`: the same backbone with a linear head trained with softmax cross-entropy
or "assume negative" sigmoid BCE on the same tags (the baselines of the partial-tag post).

Both predict *tag sets*: class c is a tag of x when its similarity `s_c(x)` exceeds a threshold τ
(`TagRule`). For min-max, `s_c` is `cos(f(x), E_c)` (or `−D(f(x), E_c)`) and the reported score
is `sigmoid(score_scale · (s_c − τ))`, so that with cosine, τ = 0 and scale 5 it is the post's
`sigmoid(5·cos) > 0.5`. For the baselines `s_c` is the class probability (softmax or sigmoid) and
is reported as the score. τ is fixed (`rule="fixed"`) or calibrated on the validation split from
the *observed* tags only (`rule="calibrated"`: the `quantile` of the similarities of validation
samples to their observed tags, so about 1 − quantile of observed tags are kept), relative to
the sample's best similarity (`rule="relative"`), or half way between the simplex cosine
`−1/(C−1)` and the sample's best cosine (`rule="midpoint"`, the default of `method=minmax` since
issue 17: the fixed `cos > 0` leaves pure points too little room once C ≥ 3; docs/minmax.md,
"Three or more tags"); the true tag sets are never used for training or calibration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from weaksup.config.instantiate import build_node
from weaksup.config.validation import ConfigError
from weaksup.data.datamodules import DataMetadata
from weaksup.data.partial import TaggedBatch
from weaksup.losses.minmax import (
    MinMaxLoss,
    as_multi_hot,
    assume_negative_bce,
    class_spread,
    simplex_cosine,
    soft_target_cross_entropy,
)
from weaksup.methods.base import WeakSupMethod
from weaksup.metrics.multilabel import TagSetMetrics
from weaksup.nn.backbones import Backbone
from weaksup.plots.publish import publish_figure

TAG_RULES = ("fixed", "calibrated", "relative", "midpoint")
BASELINE_OBJECTIVES = ("softmax", "bce")
DECISION_REGIONS_FILE = "decision_regions.png"
#: Test examples drawn in `embeddings.png` (the first ones of the split).
EMBEDDING_PLOT_POINTS = 2000


def midpoint_threshold(similarities: Tensor, fraction: float = 0.5) -> Tensor:
    """τ per sample `[N, 1]` of the midpoint rule on cosines `[N, C]` to C class embeddings.

    `τ = floor + fraction · (max_c s_c − floor)` with `floor = −1/(C−1)`
    (`weaksup.losses.minmax.simplex_cosine`), the cosine a point lying on its class embedding has
    to every other class when the table is the regular simplex the push aims at
    (`push_target="simplex"`). A pure point then has its best cosine near 1 and the others near
    the floor, a point shared by k classes has k similar cosines well above the floor (the
    cosine to each of k simplex vertices of their mean direction is `sqrt((1 − (k−1)/(C−1))/k)`
    for k < C). Half way between the floor and the best cosine sits between both cases for any
    C, where the fixed rule `cos > 0` leaves a pure point only `asin(1/(C−1))` of angle (90° for
    C = 2, 30° for 3, 14.5° for 5) before a second tag. It assumes the table is near the simplex
    (measured: not yet after a short Fashion-MNIST run, docs/minmax.md).
    """
    floor = simplex_cosine(similarities.shape[1])
    best = similarities.max(dim=1, keepdim=True).values
    return floor + fraction * (best - floor)


class TagRule(nn.Module):
    """Which classes become tags: `similarity > threshold`, the threshold fixed or calibrated.

    Args:
        rule: `"fixed"` (use `threshold`), `"calibrated"` (set the threshold after every
            validation epoch to the `quantile` of the similarities of validation samples to
            their observed tags) or `"relative"` (tag every class within `threshold` of the
            sample's best similarity: `s_c > max_c' s_c' − threshold`; the best class is always
            a tag) or `"midpoint"` (cosine similarities of C classes: tag every class above the
            point a fraction `threshold` of the way from the simplex floor `−1/(C−1)` to the
            sample's best similarity, `s_c > floor + threshold · (max_c' s_c' − floor)`; see
            `midpoint_threshold`).
        threshold: the fixed threshold, the starting value of the calibrated one, the
            margin (> 0) of the relative rule, or the fraction in (0, 1) of the midpoint rule
            (0.5: half way).
        quantile: level of the calibration quantile, in (0, 1).

    The threshold in use is a buffer, so it is saved in checkpoints and used again by `test`.
    """

    def __init__(self, rule: str = "fixed", threshold: float = 0.0, quantile: float = 0.05) -> None:
        super().__init__()
        if rule not in TAG_RULES:
            raise ValueError(
                f"method.tag_rule.rule={rule!r} is unknown; allowed: {', '.join(TAG_RULES)}"
            )
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"method.tag_rule.quantile must be in (0, 1), got {quantile!r}")
        if rule == "relative" and not threshold > 0:
            raise ValueError(
                f"method.tag_rule.threshold is the margin of rule=relative: must be > 0, got {threshold!r}"
            )
        if rule == "midpoint" and not 0.0 < threshold < 1.0:
            raise ValueError(
                "method.tag_rule.threshold is the fraction of rule=midpoint (0.5: half way from "
                f"the simplex floor to the best similarity): must be in (0, 1), got {threshold!r}"
            )
        self.rule = rule
        self.quantile = float(quantile)
        self.register_buffer("threshold", torch.tensor(float(threshold)))

    def extra_repr(self) -> str:
        return (
            f"rule={self.rule!r}, quantile={self.quantile}, threshold={float(self.threshold):.4f}"
        )

    @torch.no_grad()
    def calibrate(self, similarities: Tensor, observed_tags: Tensor) -> None:
        """Set the threshold from the similarities `[N, C]` at the observed tags `[N, C]`."""
        if self.rule != "calibrated":
            return
        positives = similarities[observed_tags.bool()].float()
        if positives.numel() == 0:
            return
        self.threshold.fill_(float(torch.quantile(positives, self.quantile)))

    def effective_threshold(self, similarities: Tensor) -> Tensor:
        """τ per sample `[N, 1]` (`relative`: the sample's best similarity minus the margin)."""
        if self.rule == "relative":
            return similarities.max(dim=1, keepdim=True).values - self.threshold
        if self.rule == "midpoint":
            return midpoint_threshold(similarities, float(self.threshold))
        return self.threshold.expand(similarities.shape[0], 1)

    def __call__(self, similarities: Tensor) -> Tensor:
        return similarities > self.effective_threshold(similarities)


class PartialTagMethod(WeakSupMethod):
    """What min-max and its baselines share: tag prediction, calibration, metrics, the picture.

    Subclasses implement `loss_terms(batch)`, `similarities(inputs)` and `scores(similarities)`.
    Validation logs `val/loss` (from observed tags) and the tag-set metrics against the true tag
    sets (`weaksup.metrics.multilabel.TagSetMetrics`: `val/exact_match`, `val/common_all_tags`,
    `val/pure_own_only`, `val/common_score/<c>`, per-class precision/recall/F1); test the same.
    """

    consumes: ClassVar[type] = TaggedBatch
    loss_kind: ClassVar[type | None] = None

    def __init__(
        self,
        num_classes: int | None,
        tag_rule: TagRule,
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        scheduler_interval: str = "epoch",
        check_finite_loss: bool = True,
        plot_decision_regions: bool = True,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval, check_finite_loss)
        if num_classes is None or num_classes < 2:
            raise ValueError(
                f"method.num_classes must be >= 2 (from_config takes it from the data), got {num_classes}"
            )
        self.num_classes = num_classes
        self.tag_rule = tag_rule
        self.plot_decision_regions = plot_decision_regions
        self.val_metrics = TagSetMetrics(num_classes)
        self.test_metrics = TagSetMetrics(num_classes)
        self._eval_outputs: list[tuple[Tensor, Tensor, Tensor]] = []

    # -- building -------------------------------------------------------------------------
    @staticmethod
    def backbone_outputs(num_classes: int) -> int | None:
        """Head size the backbone is built with (None: embedding only)."""
        return num_classes

    @classmethod
    def from_config(cls, cfg: DictConfig, data: DataMetadata) -> PartialTagMethod:
        requested = cfg.method.get("num_classes")
        if requested is not None and requested != data.num_classes:
            raise ConfigError(
                f"method.num_classes={requested} (rows of the class table) but data "
                f"{data.name} has {data.num_classes} tag classes; set method.num_classes=null "
                "to take the count from the data"
            )
        backbone = cls.build_backbone(cfg, data, num_outputs=cls.backbone_outputs(data.num_classes))
        parts = {
            key: build_node(cfg.method[key]) for key in ("loss", "tag_rule") if key in cfg.method
        }
        return build_node(
            cfg.method,
            backbone=backbone,
            num_classes=data.num_classes,
            **parts,
            **cls.method_arguments(cfg),
            _recursive_=False,
        )

    # -- what subclasses define ----------------------------------------------------------
    def loss_terms(
        self, batch: TaggedBatch, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        raise NotImplementedError

    def similarities(self, inputs: Tensor) -> Tensor:
        """`[N, C]` similarity of each input to each class (what the tag rule thresholds)."""
        raise NotImplementedError

    def scores(self, similarities: Tensor) -> Tensor:
        """`[N, C]` per-class scores in [0, 1] for reports."""
        raise NotImplementedError

    # -- prediction ------------------------------------------------------------------------
    def predict_tags(self, inputs: Tensor) -> Tensor:
        """Predicted tag sets `[N, C]` (bool)."""
        return self.tag_rule(self.similarities(inputs))

    def forward(self, inputs: Tensor) -> Tensor:
        """Per-class scores `[N, C]`."""
        return self.scores(self.similarities(inputs))

    def predict_step(self, batch: TaggedBatch | Tensor, batch_idx: int) -> dict[str, Tensor]:
        inputs = batch.inputs if isinstance(batch, TaggedBatch) else batch
        similarities = self.similarities(inputs)
        return {"scores": self.scores(similarities), "tags": self.tag_rule(similarities)}

    # -- loops -----------------------------------------------------------------------------
    def training_step(self, batch: TaggedBatch, batch_idx: int) -> Tensor:
        terms = self.loss_terms(batch)
        self.log_loss_terms("train", terms, batch_size=len(batch))
        return terms["loss"]

    def on_validation_epoch_start(self) -> None:
        self._eval_outputs = []
        # Fixed negatives for the sampled form: val/loss then changes only with the model.
        self._eval_generator = torch.Generator(device=self.device).manual_seed(0)

    on_test_epoch_start = on_validation_epoch_start

    def _evaluation_step(self, batch: TaggedBatch, stage: str) -> None:
        terms = self.loss_terms(batch, generator=self._eval_generator)
        self.log_loss_terms(stage, terms, batch_size=len(batch))
        self._eval_outputs.append((self.similarities(batch.inputs), batch.tags, batch.true_tags))

    def validation_step(self, batch: TaggedBatch, batch_idx: int) -> None:
        self._evaluation_step(batch, "val")

    def test_step(self, batch: TaggedBatch, batch_idx: int) -> None:
        self._evaluation_step(batch, "test")

    def _log_tag_metrics(self, stage: str, metrics: TagSetMetrics, calibrate: bool) -> None:
        if not self._eval_outputs:
            return
        similarities, tags, true_tags = (
            torch.cat(parts) for parts in zip(*self._eval_outputs, strict=True)
        )
        self._eval_outputs = []
        if calibrate:
            self.tag_rule.calibrate(similarities, tags)
        metrics.reset()
        metrics.update(self.tag_rule(similarities), true_tags, self.scores(similarities))
        values = {f"{stage}/{name}": value for name, value in metrics.compute().items()}
        values[f"{stage}/tag_threshold"] = self.tag_rule.threshold.detach().clone()
        self.log_dict(values, prog_bar=False, sync_dist=True)
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_tag_metrics("val", self.val_metrics, calibrate=not self.trainer.sanity_checking)

    def on_test_epoch_end(self) -> None:
        self._log_tag_metrics("test", self.test_metrics, calibrate=False)

    def on_test_end(self) -> None:
        """Save the decision-region panels of the test split when the inputs are 2-D points."""
        super().on_test_end()
        datamodule = getattr(self.trainer, "datamodule", None)
        splits = getattr(datamodule, "splits", None)
        if not (
            self.plot_decision_regions and self.trainer.is_global_zero and isinstance(splits, dict)
        ):
            return
        test = splits.get("test")
        if test is None or test.inputs.dim() != 2 or test.inputs.shape[1] != 2:
            return
        from weaksup.plots.decision_regions import plot_decision_regions

        was_training = self.training
        self.eval()
        saved = plot_decision_regions(
            lambda points: self.predict_tags(points.to(self.device)),
            test.inputs,
            test.true_tags,
            Path(self.trainer.default_root_dir) / DECISION_REGIONS_FILE,
            tag_names=getattr(datamodule, "tag_names", None),
            title=f"{type(self).__name__} ({self.describe()}): test split",
        )
        self.train(was_training)
        publish_figure(self, saved, "test/decision_regions")

    def describe(self) -> str:
        return ""


class MinMaxClassifier(PartialTagMethod):
    """Encoder + class-embedding table trained with the min-max loss (pull to tags, push classes apart).

    Args:
        backbone: the feature encoder f (built embedding-only, `num_outputs=None`).
        loss: a `MinMaxLoss` (distance, form, targets, constraint).
        num_classes: rows of the class-embedding table (given by the data; a config value that
            differs from the data's tag count is an error).
        tag_rule: a `TagRule` on the similarities `cos(f(x), E_c)` (cosine) or `−D(f(x), E_c)`.
        score_scale: reported score `sigmoid(score_scale · (s_c − τ))` (post: 5).
        embedding_init_range: the table starts uniform in ±range (Keras `Embedding`'s default 0.05).
        plot_decision_regions: save `decision_regions.png` after testing 2-D data.
        plot_embeddings: save `embeddings.png` (`weaksup.plots.embeddings`: unit features and
            class embeddings, margins of the tag rule) after testing, on at most
            `EMBEDDING_PLOT_POINTS` test examples; cosine distance only.

    With `loss.constraint="projection"` the table is projected after every optimizer step
    (`optimizer_step`) and once before training, so `Σ_{i≠j} D(E_i, E_j) ≤ K` holds whenever a
    batch is seen.
    """

    def __init__(
        self,
        backbone: Backbone,
        loss: MinMaxLoss,
        num_classes: int | None,
        tag_rule: TagRule,
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        scheduler_interval: str = "epoch",
        check_finite_loss: bool = True,
        score_scale: float = 5.0,
        embedding_init_range: float = 0.05,
        plot_decision_regions: bool = True,
        plot_embeddings: bool = True,
    ) -> None:
        super().__init__(
            num_classes,
            tag_rule,
            optimizer,
            scheduler,
            scheduler_interval,
            check_finite_loss,
            plot_decision_regions,
        )
        if getattr(backbone, "num_outputs", None) is not None:
            raise ValueError("MinMaxClassifier needs an embedding-only backbone (num_outputs=None)")
        if not score_scale > 0:
            raise ValueError(f"method.score_scale must be > 0, got {score_scale!r}")
        if not embedding_init_range > 0:
            raise ValueError(
                f"method.embedding_init_range must be > 0, got {embedding_init_range!r}"
            )
        if tag_rule.rule == "midpoint" and loss.distance != "cosine":
            raise ConfigError(
                "method.tag_rule.rule='midpoint' measures from the simplex cosine −1/(C−1) and "
                f"needs method.loss.distance='cosine', got {loss.distance!r}; use fixed, "
                "calibrated or relative"
            )
        if (
            loss.form == "sampled"
            and loss.push_target == "simplex"
            and num_classes is not None
            and backbone.embedding_dim < num_classes - 1
        ):
            raise ConfigError(
                f"method.loss.push_target='simplex' needs the class embeddings of the "
                f"{num_classes} classes in at least {num_classes - 1} dimensions (a regular "
                f"simplex of C points spans C − 1), but the backbone's embedding has "
                f"{backbone.embedding_dim}; widen it (e.g. backbone.embedding_dim or the last "
                "of backbone.hidden_sizes) or give a number as push_target"
            )
        self.backbone = backbone
        self.loss = loss
        self.score_scale = float(score_scale)
        self.plot_embeddings = plot_embeddings
        self.class_embeddings = nn.Embedding(num_classes, backbone.embedding_dim)
        nn.init.uniform_(self.class_embeddings.weight, -embedding_init_range, embedding_init_range)

    @staticmethod
    def backbone_outputs(num_classes: int) -> int | None:
        return None

    def describe(self) -> str:
        push = self.loss.push_target
        push = push if isinstance(push, str) else f"{push:g}"
        return (
            f"{self.loss.distance}, {self.loss.form}, push→{push}, "
            f"{self.tag_rule.rule} τ={float(self.tag_rule.threshold):.3g}"
        )

    def loss_terms(
        self, batch: TaggedBatch, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        features = self.backbone(batch.inputs)
        return self.loss(features, self.class_embeddings.weight, batch.tags, generator=generator)

    def similarities(self, inputs: Tensor) -> Tensor:
        return self.loss.similarities(self.backbone(inputs), self.class_embeddings.weight)

    def scores(self, similarities: Tensor) -> Tensor:
        threshold = self.tag_rule.effective_threshold(similarities)
        return torch.sigmoid(self.score_scale * (similarities - threshold))

    def class_spread(self) -> Tensor:
        """`Σ_{i≠j} D(E_i, E_j)`, the constrained quantity."""
        return class_spread(self.class_embeddings.weight.detach(), self.loss.distance)

    def on_train_start(self) -> None:
        self.loss.project(self.class_embeddings.weight.data)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.loss.project(self.class_embeddings.weight.data)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.log("train/class_spread", self.class_spread(), on_epoch=True, on_step=False)

    def on_test_end(self) -> None:
        """Also save `embeddings.png` of (the first examples of) the test split."""
        super().on_test_end()
        datamodule = getattr(self.trainer, "datamodule", None)
        splits = getattr(datamodule, "splits", None)
        if not (
            self.plot_embeddings
            and self.loss.distance == "cosine"
            and self.trainer.is_global_zero
            and isinstance(splits, dict)
            and splits.get("test") is not None
        ):
            return
        from weaksup.plots.embeddings import EMBEDDINGS_FILE, plot_embeddings

        test = splits["test"]
        inputs = test.inputs[:EMBEDDING_PLOT_POINTS].to(self.device)
        was_training = self.training
        self.eval()
        with torch.no_grad():
            features = self.backbone(inputs)
            similarities = self.loss.similarities(features, self.class_embeddings.weight)
            thresholds = self.tag_rule.effective_threshold(similarities)
        saved = plot_embeddings(
            features,
            self.class_embeddings.weight,
            similarities,
            thresholds,
            test.true_tags[:EMBEDDING_PLOT_POINTS],
            Path(self.trainer.default_root_dir) / EMBEDDINGS_FILE,
            tag_names=getattr(datamodule, "tag_names", None),
            title=f"{type(self).__name__} ({self.describe()}): test split",
        )
        self.train(was_training)
        publish_figure(self, saved, "test/embeddings")


class PartialTagBaseline(PartialTagMethod):
    """Backbone + linear head on the partial tags: softmax cross-entropy or "assume negative" BCE.

    Args:
        backbone: built with one output per class.
        objective: `"softmax"` (cross-entropy against the tag; uniform over several tags) or
            `"bce"` (sigmoid BCE, untagged classes as negatives).
        tag_rule: a `TagRule` on the class probabilities (post: fixed at 0.5).
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int | None,
        tag_rule: TagRule,
        optimizer: dict[str, Any],
        objective: str = "softmax",
        scheduler: dict[str, Any] | None = None,
        scheduler_interval: str = "epoch",
        check_finite_loss: bool = True,
        plot_decision_regions: bool = True,
    ) -> None:
        super().__init__(
            num_classes,
            tag_rule,
            optimizer,
            scheduler,
            scheduler_interval,
            check_finite_loss,
            plot_decision_regions,
        )
        if objective not in BASELINE_OBJECTIVES:
            raise ValueError(
                f"method.objective={objective!r} is unknown; allowed: {', '.join(BASELINE_OBJECTIVES)}"
            )
        if tag_rule.rule == "midpoint":
            raise ConfigError(
                "method.tag_rule.rule='midpoint' is for the cosines of min-max; the baselines "
                "threshold probabilities: use fixed, calibrated or relative"
            )
        self.backbone = backbone
        self.objective = objective

    def describe(self) -> str:
        return f"{self.objective}, {self.tag_rule.rule} τ={float(self.tag_rule.threshold):.3g}"

    def loss_terms(
        self, batch: TaggedBatch, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        logits = self.backbone(batch.inputs)
        tags = as_multi_hot(batch.tags, self.num_classes)
        if self.objective == "softmax":
            return {"loss": soft_target_cross_entropy(logits, tags)}
        return {"loss": assume_negative_bce(logits, tags)}

    def similarities(self, inputs: Tensor) -> Tensor:
        logits = self.backbone(inputs)
        return logits.softmax(dim=1) if self.objective == "softmax" else logits.sigmoid()

    def scores(self, similarities: Tensor) -> Tensor:
        return similarities
