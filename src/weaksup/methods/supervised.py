"""Supervised baseline: a backbone trained with any loss of the `loss` group (ce, hinge, ...)."""

from __future__ import annotations

from typing import Any, ClassVar

from omegaconf import DictConfig
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from weaksup.config.instantiate import build_node
from weaksup.data.batches import Batch
from weaksup.data.datamodules import DataMetadata
from weaksup.losses.classification import ClassificationLoss
from weaksup.methods.base import WeakSupMethod


class SupervisedClassifier(WeakSupMethod):
    """Empirical risk minimisation on fully labeled batches.

    The loss decides the output size (`loss.num_outputs`: one score for binary hinge/BCE on two
    classes) and how outputs become class scores (`loss.class_scores`), so every loss of the
    group plugs in unchanged.
    """

    consumes: ClassVar[type] = Batch
    loss_kind: ClassVar[type | None] = ClassificationLoss

    def __init__(
        self,
        backbone: nn.Module,
        loss: ClassificationLoss,
        num_classes: int,
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        scheduler_interval: str = "epoch",
        check_finite_loss: bool = True,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval, check_finite_loss)
        self.backbone = backbone
        self.loss = loss
        self.num_classes = num_classes
        metrics = MetricCollection({"acc": MulticlassAccuracy(num_classes, average="micro")})
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    @classmethod
    def from_config(cls, cfg: DictConfig, data: DataMetadata) -> SupervisedClassifier:
        loss = build_node(cfg.loss)
        backbone = cls.build_backbone(cfg, data, num_outputs=loss.num_outputs(data.num_classes))
        return build_node(
            cfg.method,
            backbone=backbone,
            loss=loss,
            num_classes=data.num_classes,
            **cls.method_arguments(cfg),
            _recursive_=False,
        )

    def forward(self, inputs: Tensor) -> Tensor:
        """Per-class scores (probabilities where the loss is probabilistic)."""
        return self.loss.class_scores(self.backbone(inputs))

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss = self.loss(self.backbone(batch.inputs), batch.targets)
        self.log_loss_terms("train", {"loss": loss}, batch_size=len(batch))
        return loss

    def _evaluate(self, batch: Batch, stage: str, metrics: MetricCollection) -> None:
        outputs = self.backbone(batch.inputs)
        loss = self.loss(outputs, batch.targets)
        self.log_evaluation(stage, loss, self.loss.class_scores(outputs), batch.targets, metrics)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metrics)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_metrics)

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self(batch.inputs)
