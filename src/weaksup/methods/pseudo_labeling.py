"""What Meta Pseudo Labels and Self Meta Pseudo Labels share: views, pseudo labels, evaluation.

Both methods (Pham et al. 2021; Ng & Wang 2022) train on a `SemiSupervisedBatch` with two
augmented views of the unlabeled inputs, made on the device inside the training step (the
`augment` group; the per-batch reseed makes them replay exactly on resume): the weak view gives
sharpened, confidence-masked pseudo labels; the strong view is what the model learns from.
Both optimise by hand (two updates per iteration), evaluate an EMA of the weights when
`ema_decay` is set, and report `val/acc`, `test/acc` and the labeled cross-entropy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from weaksup.data.batches import Batch, SemiSupervisedBatch
from weaksup.losses._checks import (
    check_choice,
    check_count,
    check_positive,
    check_probability,
)
from weaksup.losses.pseudo_labels import (
    META_TARGETS,
    REWARD_SIGNS,
    PseudoLabels,
    pseudo_labels,
    smoothed_cross_entropy,
    subtract_moving_baseline,
    uda_consistency,
    uda_weight,
)
from weaksup.methods.manual import ManualOptimizationMethod
from weaksup.plots.augmentations import save_augmentation_grid
from weaksup.plots.decision_snapshots import BoundarySnapshot, Grid, plot_boundary_snapshots
from weaksup.plots.publish import publish_figure

AUGMENTATION_FIGURE = "augmentations.png"
BOUNDARY_FIGURE = "decision_boundary.png"
BASELINES: tuple[str, ...] = ("none", "ema")


class PseudoLabelMethod(ManualOptimizationMethod):
    """Base of the pseudo-label methods (UDA consistency + a meta reward on pseudo labels).

    Args:
        augment: a built `augment` option (`weaksup.augment`); `for_input` picks the weak and
            strong views that fit the data's input shape, or says which options do.
        input_shape: shape of one input.
        num_classes: `C`.
        threshold: confidence on the sharpened weak view above which a row enters the UDA loss
            (MPL 0.6 on CIFAR-10-4K; kekmodel's argparse default 0.95 is not the paper's).
        temperature: `T` of `softmax(weak/T)` (MPL 0.7; the SMPL author's code defaults to 1.25).
        uda_weight: `λ_u`, the weight of the consistency term after warm-up (MPL 8).
        uda_warmup_steps: iterations of the linear warm-up of `λ_u` (MPL 5000).
        label_smoothing: `ε` of the cross-entropy on labels and on pseudo labels (MPL 0.15).
        reward_sign: `new_minus_old` (every public code) or `old_minus_new` (the first-order
            derivation), see `weaksup.losses.pseudo_labels.labeled_loss_change`.
        baseline: `none` or `ema` (a moving average of the reward is subtracted, megaboost).
        baseline_decay: decay of that moving average (megaboost 0.99).
        mpl_target: target of the meta loss on the strong view: `hard` (own argmax, both
            codes) or `soft` (own detached probabilities).
        augment_labeled: train on the weak view of the labeled batch, as MPL-pytorch's
            `transform_labeled` (flip + reflect-padded crop) and UDA's labeled pipeline do;
            `false` feeds the labeled images as they are.
        plot_augmentations: save `augmentations.png` (original / weak / strong) at train start.
        plot_boundary: on 2-D inputs, save `decision_boundary.png` at train end: the predicted
            classes after the first epoch, a quarter, half and all of training.
    """

    consumes: ClassVar[type] = SemiSupervisedBatch
    loss_kind: ClassVar[type | None] = None

    def __init__(
        self,
        augment: Any,
        input_shape: tuple[int, ...],
        num_classes: int,
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        scheduler_interval: str = "step",
        check_finite_loss: bool = True,
        ema_decay: float | None = 0.995,
        threshold: float = 0.6,
        temperature: float = 0.7,
        uda_weight: float = 8.0,
        uda_warmup_steps: int = 5000,
        label_smoothing: float = 0.15,
        reward_sign: str = "new_minus_old",
        baseline: str = "ema",
        baseline_decay: float = 0.99,
        mpl_target: str = "hard",
        augment_labeled: bool = True,
        plot_augmentations: bool = True,
        plot_boundary: bool = True,
    ) -> None:
        super().__init__(
            optimizer,
            scheduler,
            scheduler_interval=scheduler_interval,
            check_finite_loss=check_finite_loss,
            ema_decay=ema_decay,
        )
        self.threshold = check_probability(threshold, "method.threshold")
        self.temperature = check_positive(temperature, "method.temperature")
        if (
            isinstance(uda_weight, bool)
            or not isinstance(uda_weight, int | float)
            or uda_weight < 0
        ):
            raise ValueError(f"method.uda_weight must be a number >= 0, got {uda_weight!r}")
        self.uda_weight = float(uda_weight)
        self.uda_warmup_steps = check_count(uda_warmup_steps, "method.uda_warmup_steps")
        if not isinstance(label_smoothing, int | float) or not 0 <= label_smoothing < 1:
            raise ValueError(f"method.label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        self.reward_sign = check_choice(reward_sign, "method.reward_sign", REWARD_SIGNS)
        self.baseline = check_choice(baseline, "method.baseline", BASELINES)
        self.baseline_decay = check_probability(baseline_decay, "method.baseline_decay")
        self.mpl_target = check_choice(mpl_target, "method.mpl_target", META_TARGETS)
        self.views = augment.for_input(tuple(input_shape))
        if not isinstance(augment_labeled, bool):
            raise ValueError(
                f"method.augment_labeled must be true or false, got {augment_labeled!r}"
            )
        self.augment_labeled = augment_labeled
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.plot_augmentations = plot_augmentations
        self.plot_boundary = plot_boundary and self.input_shape == (2,)
        self._boundary_grid: Grid | None = None
        self._boundary_snapshots: list[BoundarySnapshot] = []
        # The reward's moving average: a buffer, so checkpoints and resumes carry it.
        self.register_buffer("reward_average", torch.zeros(()))
        metrics = MetricCollection({"acc": MulticlassAccuracy(num_classes, average="micro")})
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    # --- shared pieces of the training step -------------------------------------------------

    def labeled_view(self, inputs: Tensor) -> Tensor:
        """The labeled batch as the step sees it: its weak view with `augment_labeled`.

        Drawn before the unlabeled views, from the same global stream, so a resumed run
        replays it."""
        return self.views.weak(inputs) if self.augment_labeled else inputs

    def weak_and_strong(self, unlabeled: Tensor) -> tuple[Tensor, Tensor]:
        """The two augmented views of the unlabeled batch (global RNG, on its device)."""
        return self.views.weak(unlabeled), self.views.strong(unlabeled)

    def pseudo_labels_of(self, network: nn.Module, weak: Tensor) -> PseudoLabels:
        """Pseudo labels from `network` on the weak view, without a graph.

        The weak view only ever serves as a target (detached in both reference codes), so its
        forward pass keeps no activations for backward; the reference codes concatenate it with
        the other views for one batch-norm statistic, which changes nothing for networks
        without batch norm and is documented in docs/smpl.md for those with it.
        """
        with torch.no_grad():
            weak_logits = network(weak)
        return pseudo_labels(weak_logits, self.temperature, self.threshold)

    def uda_loss(
        self, labeled_logits: Tensor, targets: Tensor, strong_logits: Tensor, labels: PseudoLabels
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """`CE_ε(labeled) + β_k·consistency(strong, weak)`, and its terms for logging."""
        labeled = smoothed_cross_entropy(labeled_logits, targets, self.label_smoothing)
        consistency = uda_consistency(strong_logits, labels)
        weight = uda_weight(self.iteration, self.uda_weight, self.uda_warmup_steps)
        return labeled + weight * consistency, {
            "labeled": labeled,
            "consistency": consistency,
            "mask_rate": labels.mask_rate,
        }

    def baseline_adjusted(self, reward: Tensor) -> Tensor:
        """`reward − moving average` with `baseline=ema`, the raw reward with `none`."""
        if self.baseline == "none":
            return reward
        return subtract_moving_baseline(self.reward_average, reward, self.baseline_decay)

    # --- evaluation ---------------------------------------------------------------------------

    def forward(self, inputs: Tensor) -> Tensor:
        """Class probabilities of the evaluated weights (the EMA when `ema_decay` is set)."""
        return F.softmax(self.evaluation_forward(inputs), dim=-1)

    def _evaluate(self, batch: Batch, stage: str, metrics: MetricCollection) -> None:
        logits = self.evaluation_forward(batch.inputs)
        loss = F.cross_entropy(logits.float(), batch.targets)
        self.log_evaluation(stage, loss, logits, batch.targets, metrics)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metrics)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_metrics)

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self(batch.inputs)

    # --- picture --------------------------------------------------------------------------------

    def on_train_start(self) -> None:
        super().on_train_start()
        if not self.plot_augmentations or not self.trainer.is_global_zero:
            return
        _, splits = self._training_splits()
        root = self.trainer.default_root_dir
        if splits is None or root is None:
            return
        examples = splits.train.inputs[: 8 if len(self.input_shape) > 1 else 256]
        # The picture draws from its own seeded stream: the training views are not shifted.
        path = Path(root) / AUGMENTATION_FIGURE
        saved = save_augmentation_grid(examples.to(self.device), self.views, path)
        publish_figure(self, saved, "train/augmentations")

    # --- two-moons picture -------------------------------------------------------------------

    def _training_splits(self) -> Any:
        datamodule = getattr(self.trainer, "datamodule", None)
        return datamodule, getattr(datamodule, "splits", None)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if not self.plot_boundary or not self.trainer.is_global_zero:
            return
        last = max(int(self.trainer.max_epochs or 1), 1)
        epoch = self.current_epoch + 1
        if epoch not in {1, max(last // 4, 1), max(last // 2, 1), last}:
            return
        _, splits = self._training_splits()
        if splits is None:
            return
        if self._boundary_grid is None:
            self._boundary_grid = Grid.around(splits.train.inputs.float())
        snapshot = self._boundary_grid.snapshot(f"epoch {epoch}", self._predict_on_device)
        self._boundary_snapshots.append(snapshot)

    def _predict_on_device(self, points: Tensor) -> Tensor:
        was_training = self.training
        self.eval()
        try:
            return self.evaluation_forward(points.to(self.device))
        finally:
            self.train(was_training)

    def on_train_end(self) -> None:
        super().on_train_end()
        if not self._boundary_snapshots or self.trainer.default_root_dir is None:
            return
        datamodule, splits = self._training_splits()
        labeled = splits.train.subset(datamodule.labeled_indices)
        saved = plot_boundary_snapshots(
            self._boundary_grid,
            self._boundary_snapshots,
            splits.train.inputs,
            labeled.inputs,
            labeled.targets,
            Path(self.trainer.default_root_dir) / BOUNDARY_FIGURE,
        )
        publish_figure(self, saved, "train/decision_boundary")
