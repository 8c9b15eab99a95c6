"""Multiple-instance learning from bag labels, with instance-level inference.

The problem, as asked in the PyTorch Forums question "Per-batch loss for semi-supervised
learning" (https://discuss.pytorch.org/t/per-batch-loss-for-semi-supervised-learning/71140):
labels are known only per bag ("at least one high output" in a positive bag, none in a negative
one), yet at inference single instances must get their own output. Anchor: Ilse, Tomczak &
Welling 2018, "Attention-based Deep Multiple Instance Learning" (ICML, arXiv 1802.04712):
instance network -> permutation-invariant pooling (`pooling=` group) -> bag classifier, trained
with a bag loss (`loss=bag_*`).

A single instance is scored as a bag of one: every pooling of `weaksup.losses.pooling` maps a
bag of one to that instance's own value, so the score of an instance is the bag classifier on
its embedding (embedding-level pooling) or its own logit (instance-level pooling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from hydra.utils import get_class
from omegaconf import DictConfig
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC

from weaksup.config.instantiate import build_node
from weaksup.config.validation import ConfigError
from weaksup.data.bags import BagBatch
from weaksup.data.datamodules import DataMetadata
from weaksup.data.segments import BagSegments
from weaksup.losses.bag import BagLoss
from weaksup.losses.pooling import BagPooling
from weaksup.methods.base import WeakSupMethod


@dataclass
class MILOutput:
    """Bag logits `[B]` and, for attention poolings, the instance weights `[N]` (sum 1 per bag)."""

    bag_logits: Tensor
    attention: Tensor | None = None


class MILClassifier(WeakSupMethod):
    """Backbone (instance embeddings) -> pooling -> one-logit linear classifier.

    Embedding-level pooling: `logit(bag) = wᵀ pool(h_1..h_K) + b` (Ilse's attention / MI-Net).
    Instance-level pooling: `logit(bag) = pool(wᵀ h_1 + b, ...)` (mi-Net).

    Args:
        backbone: an embedding network (`num_outputs=None`) with `embedding_dim`.
        pooling: a `BagPooling` of the `pooling` group.
        loss: a `BagLoss` of the `loss` group.
        optimizer, scheduler, scheduler_interval, check_finite_loss: see `WeakSupMethod`.
    """

    consumes: ClassVar[type] = BagBatch
    loss_kind: ClassVar[type | None] = BagLoss

    def __init__(
        self,
        backbone: nn.Module,
        pooling: BagPooling,
        loss: BagLoss,
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        scheduler_interval: str = "epoch",
        check_finite_loss: bool = True,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval, check_finite_loss)
        self.backbone = backbone
        self.pooling = pooling
        self.loss = loss
        self.classifier = nn.Linear(backbone.embedding_dim, 1)
        bag_metrics = MetricCollection({"auc": BinaryAUROC(), "acc": BinaryAccuracy()})
        self.val_metrics = bag_metrics.clone(prefix="val/")
        self.test_metrics = bag_metrics.clone(prefix="test/")
        self.val_instance_auc = BinaryAUROC()
        self.test_instance_auc = BinaryAUROC()

    @classmethod
    def from_config(cls, cfg: DictConfig, data: DataMetadata) -> MILClassifier:
        if cfg.get("pooling") is None:
            raise ConfigError(
                "method=mil needs a pooling: add pooling=<max|mean|lse|noisy_or|attention|"
                "gated_attention> (+pooling=... when the defaults list has no pooling entry)"
            )
        backbone = cls.build_backbone(cfg, data, num_outputs=None)
        pooling_cls = get_class(cfg.pooling._target_)
        extra = {"embedding_dim": backbone.embedding_dim} if pooling_cls.needs_embedding_dim else {}
        pooling = build_node(cfg.pooling, **extra)
        return build_node(
            cfg.method,
            backbone=backbone,
            pooling=pooling,
            loss=build_node(cfg.loss),
            **cls.method_arguments(cfg),
            _recursive_=False,
        )

    def embed(self, instances: Tensor) -> Tensor:
        """Instance embeddings `[N, D]`, all bags in one forward pass."""
        return self.backbone(instances)

    def pool(self, embeddings: Tensor, segments: BagSegments) -> MILOutput:
        """Bag logits of the bags `segments` cuts `embeddings` into."""
        if self.pooling.level == "instance":
            pooled = self.pooling(self.classifier(embeddings), segments)
            return MILOutput(pooled.pooled[:, 0], pooled.weights)
        pooled = self.pooling(embeddings, segments)
        return MILOutput(self.classifier(pooled.pooled)[:, 0], pooled.weights)

    def forward(self, batch: BagBatch) -> MILOutput:
        return self.pool(self.embed(batch.instances), batch.segments())

    def instance_logits(self, embeddings: Tensor) -> Tensor:
        """Each instance scored alone, as a bag of one, `[N]`."""
        return self.pool(
            embeddings, BagSegments.singletons(embeddings.shape[0], embeddings.device)
        ).bag_logits

    def training_step(self, batch: BagBatch, batch_idx: int) -> Tensor:
        loss = self.loss(self(batch).bag_logits, batch.bag_labels)
        self.log_loss_terms("train", {"loss": loss}, batch_size=len(batch))
        return loss

    def _evaluate(
        self, batch: BagBatch, stage: str, metrics: MetricCollection, instance_auc: BinaryAUROC
    ) -> None:
        embeddings = self.embed(batch.instances)
        bag_logits = self.pool(embeddings, batch.segments()).bag_logits
        loss = self.loss(bag_logits, batch.bag_labels)
        self.log_evaluation(stage, loss, bag_logits.sigmoid(), batch.bag_labels, metrics)
        if batch.instance_labels is not None:
            instance_auc.update(self.instance_logits(embeddings).sigmoid(), batch.instance_labels)
            self.log(f"{stage}/instance_auc", instance_auc, on_epoch=True, batch_size=len(batch))

    def validation_step(self, batch: BagBatch, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metrics, self.val_instance_auc)

    def test_step(self, batch: BagBatch, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_metrics, self.test_instance_auc)

    def predict_step(self, batch: BagBatch, batch_idx: int = 0) -> dict[str, Tensor | None]:
        """Scores of the whole bags and of every instance alone (a bag of one).

        Returns probabilities `bag_scores [B]`, `instance_scores [N]`, the attention weights
        `[N]` (None for poolings without), and the batch's offsets and labels.
        """
        embeddings = self.embed(batch.instances)
        output = self.pool(embeddings, batch.segments())
        return {
            "bag_scores": output.bag_logits.sigmoid(),
            "instance_scores": self.instance_logits(embeddings).sigmoid(),
            "attention": output.attention,
            "bag_offsets": batch.bag_offsets,
            "bag_labels": batch.bag_labels,
            "instance_labels": batch.instance_labels,
        }
