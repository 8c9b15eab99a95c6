"""A tiny semi-supervised method for the data-path tests (there is no shipped one yet).

It consumes `SemiSupervisedBatch`, so `weaksup.build` puts the datamodule in semi-supervised
mode; its loss uses both streams (cross-entropy on the labeled batch plus the mean prediction
entropy of the unlabeled batch), so the weights depend on the order of each stream and a
resumed run matches an uninterrupted one only if both streams replay exactly.
Built with `++method._target_=ssl_probe.SemiSupervisedProbe` on top of `method=supervised`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from weaksup.data.batches import Batch, SemiSupervisedBatch
from weaksup.data.datamodules import DataMetadata
from weaksup.methods.base import WeakSupMethod

PROBE_TARGET = "ssl_probe.SemiSupervisedProbe"


class SemiSupervisedProbe(WeakSupMethod):
    """Cross-entropy on labeled + entropy minimisation on unlabeled inputs; records batch sizes."""

    consumes: ClassVar[type] = SemiSupervisedBatch

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        scheduler_interval: str = "epoch",
        check_finite_loss: bool = True,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval, check_finite_loss)
        self.backbone = backbone
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        #: (labeled, unlabeled) batch sizes of every training step, in order.
        self.seen_sizes: list[tuple[int, int]] = []

    @classmethod
    def from_config(cls, cfg: DictConfig, data: DataMetadata) -> SemiSupervisedProbe:
        backbone = cls.build_backbone(cfg, data, num_outputs=data.num_classes)
        return cls(
            backbone=backbone,
            num_classes=data.num_classes,
            scheduler_interval=cfg.method.scheduler_interval,
            check_finite_loss=cfg.method.check_finite_loss,
            **cls.method_arguments(cfg),
        )

    def training_step(self, batch: SemiSupervisedBatch, batch_idx: int) -> Tensor:
        self.seen_sizes.append((len(batch.labeled), int(batch.unlabeled.shape[0])))
        supervised = F.cross_entropy(self.backbone(batch.labeled.inputs), batch.labeled.targets)
        log_probs = F.log_softmax(self.backbone(batch.unlabeled), dim=1)
        entropy = -(log_probs.exp() * log_probs).sum(1).mean()
        loss = supervised + 0.1 * entropy
        self.log_loss_terms("train", {"loss": loss, "entropy": entropy}, batch_size=len(batch))
        return loss

    def _evaluate(self, batch: Batch, stage: str, accuracy: MulticlassAccuracy) -> None:
        logits = self.backbone(batch.inputs)
        self.log_loss_terms(
            stage, {"loss": F.cross_entropy(logits, batch.targets)}, batch_size=len(batch)
        )
        accuracy.update(logits, batch.targets)
        self.log(f"{stage}/acc", accuracy, on_epoch=True, batch_size=len(batch))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc)
