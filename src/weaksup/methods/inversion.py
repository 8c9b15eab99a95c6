"""Semi-supervised learning by deep network inversion (Balestriero et al. 2017, 2018).

The method wires `weaksup.losses.MultiscaleInversionLoss` (cross-entropy on the labeled batch,
entropy of the predictions on the unlabeled batch, reconstruction of the input of every layer
through the network's own inverse) to a backbone that exposes every layer
(`forward_with_features`). Each step gets a `SemiSupervisedBatch`: `B` labeled examples and
`μ·B` unlabeled ones from independent streams (`data.unlabeled_ratio`, `data.num_labeled`).
Validation and test are labeled: cross-entropy and accuracy, reported by the supervised
classifier this method extends, so the two compare on the same labels.

At the end of training a figure of validation inputs beside their reconstruction at every
level is saved in the run folder (`reconstructions.png`) and logged to W&B as
`val/reconstructions`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from weaksup.config.instantiate import build_node
from weaksup.data.batches import SemiSupervisedBatch
from weaksup.data.datamodules import DataMetadata
from weaksup.losses._checks import check_count
from weaksup.losses.classification import CrossEntropyLoss
from weaksup.losses.inversion import MultiscaleInversionLoss, reconstructions, sigmoid_rampup
from weaksup.methods.supervised import SupervisedClassifier
from weaksup.plots.publish import publish_figure
from weaksup.plots.reconstructions import plot_reconstructions

RECONSTRUCTION_FIGURE = "reconstructions.png"


class InversionClassifier(SupervisedClassifier):
    """Multiscale inversion on labeled + unlabeled batches (Balestriero et al. 2018).

    A supervised classifier (cross-entropy) whose training step takes a `SemiSupervisedBatch`
    and the inversion loss; validation, test and prediction are the supervised ones.

    Args:
        backbone: a network with `forward_with_features` (every layer a level), `C` outputs.
        loss: the inversion loss (weights, single- or multiscale; `losses/inversion.py`).
        num_classes: `C`.
        plot_reconstructions: save `reconstructions.png` (inputs and their reconstruction at
            every level) at the end of training.
        num_plot_examples: validation examples in that figure.
        unlabeled_rampup_steps: ramp the entropy and reconstruction terms up over this many
            steps with the Π-model's `exp(−5(1 − t)²)` (`losses.inversion.sigmoid_rampup`); 0
            (default) weighs them fully from the first step, as the papers' loss is written.
    """

    consumes: ClassVar[type] = SemiSupervisedBatch
    loss_kind: ClassVar[type | None] = None  # the loss is part of the method, not the group

    def __init__(
        self,
        backbone: nn.Module,
        loss: MultiscaleInversionLoss,
        num_classes: int,
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        scheduler_interval: str = "epoch",
        check_finite_loss: bool = True,
        plot_reconstructions: bool = True,
        num_plot_examples: int = 6,
        unlabeled_rampup_steps: int = 0,
    ) -> None:
        if not hasattr(backbone, "forward_with_features"):
            raise ValueError(
                f"method=inversion needs a backbone that exposes its layers "
                f"(forward_with_features); {type(backbone).__name__} does not"
            )
        if num_plot_examples < 1:
            raise ValueError(f"method.num_plot_examples must be >= 1, got {num_plot_examples}")
        super().__init__(
            backbone,
            CrossEntropyLoss(),
            num_classes,
            optimizer,
            scheduler,
            scheduler_interval,
            check_finite_loss,
        )
        self.inversion_loss = loss
        self.plot_reconstructions = plot_reconstructions
        self.num_plot_examples = num_plot_examples
        self.unlabeled_rampup_steps = check_count(
            unlabeled_rampup_steps, "method.unlabeled_rampup_steps"
        )
        self.figure_path: Path | None = None

    @classmethod
    def from_config(cls, cfg: DictConfig, data: DataMetadata) -> InversionClassifier:
        backbone = cls.build_backbone(cfg, data, num_outputs=data.num_classes)
        return build_node(
            cfg.method,
            backbone=backbone,
            loss=build_node(cfg.method.loss),
            num_classes=data.num_classes,
            **cls.method_arguments(cfg),
            _recursive_=False,
        )

    def training_step(self, batch: SemiSupervisedBatch, batch_idx: int) -> Tensor:
        scale = sigmoid_rampup(self.global_step, self.unlabeled_rampup_steps)
        terms = self.inversion_loss(
            self.backbone,
            batch.labeled.inputs,
            batch.labeled.targets,
            batch.unlabeled,
            unlabeled_scale=scale,
        )
        self.log_loss_terms("train", terms, batch_size=len(batch.labeled))
        if self.unlabeled_rampup_steps:
            self.log("train/unlabeled_scale", scale, on_step=True, on_epoch=False)
        return terms["loss"]

    def backward(self, loss: Tensor, *args: Any, **kwargs: Any) -> None:
        """Backpropagate into the trainable parameters only (`inputs=`).

        The loss makes the input batch a leaf that requires grad (level 0 of the reconstruction),
        so a plain `loss.backward()` would also compute and store the gradient of the loss with
        respect to that batch, through the first layer's input gradient and the templates'
        graph: work nobody reads (measured with `benchmarks/ssl_cost.py`: about 8% of a LeNet
        step on the CPU). Lightning calls this hook with the loss already scaled under
        `16-mixed`.
        """
        kwargs.setdefault("inputs", [p for p in self.parameters() if p.requires_grad])
        super().backward(loss, *args, **kwargs)

    def on_train_end(self) -> None:
        if not self.plot_reconstructions or not self.trainer.is_global_zero:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        splits = getattr(datamodule, "splits", None)
        if splits is None or self.trainer.default_root_dir is None:
            return
        examples = splits.val if len(splits.val) else splits.test
        inputs = examples.inputs[: self.num_plot_examples].to(self.device)
        levels, reconstructed = self.level_reconstructions(inputs)
        path = Path(self.trainer.default_root_dir) / RECONSTRUCTION_FIGURE
        self.figure_path = publish_figure(
            self, plot_reconstructions(levels, reconstructed, path), "val/reconstructions"
        )

    def level_reconstructions(self, inputs: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Every level's input `z_l` and its reconstruction `ẑ_l` for `inputs`, in eval mode.

        The template weights are the model's own predictions (the unlabeled rule).
        """
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            with torch.inference_mode(False), torch.enable_grad():
                leaf = inputs.detach().clone().requires_grad_(True)
                logits, features = self.backbone.forward_with_features(leaf)
                targets = self.inversion_loss.template_targets(
                    logits, logits.new_empty(0, dtype=torch.long)
                )
                rebuilt = reconstructions(logits, features, targets, create_graph=False)
            return [level.detach() for level in features], [level.detach() for level in rebuilt]
        finally:
            self.backbone.train(was_training)
