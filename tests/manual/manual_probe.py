"""A tiny method with two networks and two optimizers for the manual-optimisation tests.

`network` (the configured backbone) is stepped with `step_with_loss`, `auxiliary` (batch norm and a
linear classifier) with `step_with_gradients` on gradients from `torch.autograd.grad`, so both paths of
`ManualOptimizationMethod` run in every batch. Built with
`method=supervised ++method._target_=manual_probe.TwoNetworkProbe`. It records what the tests
measure: the gradient norm before clipping, the result of every step, and (optionally) its
final weights per DDP rank.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics.classification import MulticlassAccuracy

from weaksup.config.instantiate import build_node
from weaksup.data.batches import Batch
from weaksup.data.datamodules import DataMetadata
from weaksup.methods.manual import ManualOptimizationMethod

PROBE_TARGET = "manual_probe.TwoNetworkProbe"


def gradient_norm(parameters: list[Tensor]) -> float:
    grads = [param.grad for param in parameters if param.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))


def largest_gradient(parameters: list[Tensor]) -> float:
    return max(float(param.grad.abs().max()) for param in parameters if param.grad is not None)


class NormRecordingSGD(torch.optim.SGD):
    """SGD that records the gradients it applies (norm, largest entry) at every real step."""

    def __init__(self, params: Any, **arguments: Any) -> None:
        super().__init__(params, **arguments)
        self.applied: list[tuple[float, float]] = []

    def step(self, closure: Any = None) -> Any:
        # Lightning's closure runs `on_before_optimizer_step` (the clipping): record after it.
        loss = None if closure is None else closure()
        parameters = [param for group in self.param_groups for param in group["params"]]
        self.applied.append((gradient_norm(parameters), largest_gradient(parameters)))
        super().step()
        return loss


class TwoNetworkProbe(ManualOptimizationMethod):
    """Cross-entropy for two classifiers, each with its own optimizer (and scheduler)."""

    consumes: ClassVar[type] = Batch

    def __init__(
        self,
        network: nn.Module,
        auxiliary: nn.Module,
        num_classes: int,
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        scheduler_interval: str = "step",
        check_finite_loss: bool = True,
        ema_decay: float | None = None,
        nan_at_iteration: int | None = None,
        overflow_at_iteration: int | None = None,
        weights_dir: str | None = None,
        auxiliary_loss_factor: float = 1.0,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval, check_finite_loss, ema_decay)
        self.network = network
        self.auxiliary = auxiliary
        self.nan_at_iteration = nan_at_iteration
        self.overflow_at_iteration = overflow_at_iteration
        self.weights_dir = weights_dir
        self.auxiliary_loss_factor = auxiliary_loss_factor
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        #: Gradient norm and largest entry of each optimizer step before clipping.
        self.before_clipping: list[tuple[float, float]] = []
        #: (iteration, network step applied, auxiliary step applied) of every batch.
        self.step_results: list[tuple[int, bool, bool]] = []

    @classmethod
    def from_config(cls, cfg: DictConfig, data: DataMetadata) -> TwoNetworkProbe:
        network = cls.build_backbone(cfg, data, num_outputs=data.num_classes)
        features = math.prod(data.input_shape)
        # BatchNorm: running statistics differ between DDP ranks unless they are broadcast.
        auxiliary = nn.Sequential(nn.BatchNorm1d(features), nn.Linear(features, data.num_classes))
        return build_node(
            cfg.method,
            network=network,
            auxiliary=auxiliary,
            num_classes=data.num_classes,
            **cls.method_arguments(cfg),
            _recursive_=False,
        )

    def configure_optimizers(self) -> list[dict[str, Any]]:
        return [
            self.optimizer_with_scheduler(self.network.parameters()),
            self.optimizer_with_scheduler(self.auxiliary.parameters()),
        ]

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        network_optimizer, auxiliary_optimizer = self.optimizers()
        loss = F.cross_entropy(self.network(batch.inputs), batch.targets)
        auxiliary_loss = F.cross_entropy(self.auxiliary(batch.inputs.flatten(1)), batch.targets)
        auxiliary_loss = auxiliary_loss * self.auxiliary_loss_factor
        if self.iteration == self.nan_at_iteration:
            auxiliary_loss = auxiliary_loss * float("nan")
        if self.iteration == self.overflow_at_iteration:
            loss = loss * 1e5  # finite, but its fp16 gradients overflow under a 2**16 loss scale
        self.log_loss_terms(
            "train", {"loss": loss, "auxiliary_loss": auxiliary_loss}, batch_size=len(batch)
        )
        network_applied = self.step_with_loss(network_optimizer, loss)
        parameters = list(self.auxiliary.parameters())
        grads, scale = self.loss_gradients(auxiliary_loss, parameters)
        auxiliary_applied = self.step_with_gradients(
            auxiliary_optimizer, parameters, grads, scale=scale
        )
        self.step_results.append((self.iteration, network_applied, auxiliary_applied))

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        parameters = [param for group in optimizer.param_groups for param in group["params"]]
        self.before_clipping.append((gradient_norm(parameters), largest_gradient(parameters)))
        super().on_before_optimizer_step(optimizer)

    def _evaluate(self, batch: Batch, stage: str, accuracy: MulticlassAccuracy) -> None:
        logits = self.evaluation_forward(batch.inputs)
        self.log_loss_terms(
            stage, {"loss": F.cross_entropy(logits, batch.targets)}, batch_size=len(batch)
        )
        accuracy.update(logits, batch.targets)
        self.log(f"{stage}/acc", accuracy, on_epoch=True, batch_size=len(batch))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc)

    def on_train_end(self) -> None:
        if self.weights_dir is not None:
            path = Path(self.weights_dir) / f"rank{self.global_rank}.pt"
            torch.save({k: v.detach().cpu() for k, v in self.state_dict().items()}, path)


class WeightRecorder(pl.Callback):
    """The network's weights before training and at the end of every batch (before the EMA)."""

    def __init__(self) -> None:
        self.weights: list[dict[str, Tensor]] = []

    def _record(self, pl_module: pl.LightningModule) -> None:
        self.weights.append(
            {name: p.detach().clone() for name, p in pl_module.network.named_parameters()}
        )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(pl_module)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        self._record(pl_module)
