"""Self Meta Pseudo Labels (Ng & Wang 2022, arXiv 2212.13420): one model, two updates per step.

Meta Pseudo Labels (Pham et al. 2021) trains a teacher from how its pseudo labels change a
student's labeled loss. SMPL keeps one model in both roles, as the first author's code does
(max-ng/megaboost `megaboost/main.py`, `train_loop`), per iteration:

1. One forward on labeled + strong unlabeled inputs at the weights `θ` (the weak view, a target
   only, without a graph) gives
   - the UDA loss `L_uda = CE_ε(labeled) + β_k·mask·KL(softmax(weak/T) ‖ softmax(strong))`,
     `β_k = λ_u·min(1, (k+1)/a)` (UDA, Xie et al. 2020; MPL's teacher loss);
   - the pseudo-label loss `L_pl = CE_ε(strong, argmax weak)` (MPL's student loss);
   - `L_own = CE(strong, argmax strong)` (what the meta loss scales);
   - `loss_old = CE(labeled)` (no smoothing, detached).
2. First update, a plain SGD step that is kept: `θ' = θ − η·∇L_pl(θ)` (megaboost:
   `p.data -= clone_lr * clone_grad[name]`, η the learning rate of the schedule), made by a
   plain SGD optimizer so that DDP, AMP and the NaN check treat it as any step (two
   optimizer steps per iteration: `global_step` counts both, `iterations` one).
3. `loss_new = CE(labeled at θ')` without a graph; the reward `change = loss_new − loss_old`
   (`reward_sign`), minus a moving baseline (`baseline=ema`, megaboost's `moving_dot_product`).
4. Second update: the momentum optimizer applies `∇L_uda(θ) + change·∇L_own(θ)` to `θ'`
   (megaboost: `t_loss = t_loss_uda + t_loss_mpl; t_loss.backward(); second_optimizer.step()`).

Unlike the author's code, every gradient at `θ` comes from the one forward of step 1, taken
with `torch.autograd.grad` before the first update: no in-place `.data` change of weights that
a retained graph still uses (the author's backward then mixes `θ` and `θ'`), no second graph and
no copy of the model. The memory is one model, one graph, and three gradient-sized buffers.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from weaksup.config.instantiate import build_node
from weaksup.data.batches import SemiSupervisedBatch
from weaksup.data.datamodules import DataMetadata
from weaksup.losses.pseudo_labels import (
    labeled_loss_change,
    meta_pseudo_label_loss,
    smoothed_cross_entropy,
)
from weaksup.methods.pseudo_labeling import PseudoLabelMethod


class SelfMetaPseudoLabels(PseudoLabelMethod):
    """SMPL on `SemiSupervisedBatch`es (see the module docstring for the iteration).

    Args (besides those of `PseudoLabelMethod`):
        backbone: the one network, `C` outputs.
        first_step_lr: `η` of the first (pseudo-label) update; `null` takes the optimizer's
            current learning rate, schedule included (megaboost uses its first optimizer's lr).
        meta: add the meta loss; `false` leaves UDA + the kept pseudo-label step.
        pseudo_label_step: make the first update; with `meta: false` and `uda_weight: 0` as
            well, the method is the supervised-only baseline on the same stream and schedule.
    """

    def __init__(
        self,
        backbone: nn.Module,
        *args: Any,
        first_step_lr: float | None = None,
        meta: bool = True,
        pseudo_label_step: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.network = backbone
        if first_step_lr is not None and (
            isinstance(first_step_lr, bool)
            or not isinstance(first_step_lr, int | float)
            or first_step_lr <= 0
        ):
            raise ValueError(f"method.first_step_lr must be null or > 0, got {first_step_lr!r}")
        self.first_step_lr = first_step_lr
        self.meta = bool(meta)
        self.pseudo_label_step = bool(pseudo_label_step)
        if self.meta and not self.pseudo_label_step:
            raise ValueError(
                "method.meta=true needs method.pseudo_label_step=true (the reward is the change "
                "that step makes); set both, or meta=false"
            )

    @classmethod
    def from_config(cls, cfg: DictConfig, data: DataMetadata) -> SelfMetaPseudoLabels:
        backbone = cls.build_backbone(cfg, data, num_outputs=data.num_classes)
        return build_node(
            cfg.method,
            backbone=backbone,
            augment=build_node(cfg.augment),
            input_shape=tuple(data.input_shape),
            num_classes=data.num_classes,
            **cls.method_arguments(cfg),
            _recursive_=False,
        )

    def configure_optimizers(self) -> Any:
        """The momentum optimizer of the second update (with the `scheduler`), then the plain SGD
        step `θ − η·g` of the first: an optimizer too, so that it is averaged over DDP ranks,
        checked for NaN and skipped by AMP like every step (megaboost: `first_optimizer`, whose
        update it writes by hand as `p.data -= lr * grad`). Its `η` is set before each step."""
        plain_step = torch.optim.SGD(self.network.parameters(), lr=1.0, momentum=0.0)
        return [self.optimizer_with_scheduler(self.network.parameters()), {"optimizer": plain_step}]

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        """Clip the second update only: megaboost clips `second_optimizer` alone."""
        if optimizer is not self.optimizers()[1].optimizer:
            super().on_before_optimizer_step(optimizer)

    def training_step(self, batch: SemiSupervisedBatch, batch_idx: int) -> Tensor:
        optimizer = self.optimizers()[0]
        inputs, targets = self.labeled_view(batch.labeled.inputs), batch.labeled.targets
        num_labeled = len(targets)
        if not self.pseudo_label_step and self.uda_weight == 0:
            return self._labeled_step(optimizer, inputs, targets)
        weak, strong = self.weak_and_strong(batch.unlabeled)
        labels = self.pseudo_labels_of(self.network, weak)

        logits = self.network(torch.cat([inputs, strong]))
        labeled_logits, strong_logits = logits[:num_labeled], logits[num_labeled:]
        loss_uda, terms = self.uda_loss(labeled_logits, targets, strong_logits, labels)
        params = [p for p in self.network.parameters() if p.requires_grad]
        loss_old = F.cross_entropy(labeled_logits.detach().float(), targets)
        terms = {"loss": loss_uda, **terms, "labeled_ce_old": loss_old}

        if not self.pseudo_label_step:
            self.log_loss_terms("train", terms, batch_size=num_labeled)
            self.step_with_loss(optimizer, loss_uda)
            return loss_uda.detach()

        loss_pl = smoothed_cross_entropy(strong_logits, labels.hard, self.label_smoothing)
        terms["pseudo_label"] = loss_pl
        self.log_loss_terms("train", terms, batch_size=num_labeled)
        # Under 16-mixed each carries the loss scale of this moment (`loss_gradients`).
        pl_grads, scale = self.loss_gradients(loss_pl, params, retain_graph=True)
        if self.meta:
            uda_grads, _ = self.loss_gradients(loss_uda, params, retain_graph=True)
            own = meta_pseudo_label_loss(logits.new_ones(()), strong_logits, self.mpl_target)
            own_grads, _ = self.loss_gradients(own, params)
        else:
            uda_grads, _ = self.loss_gradients(loss_uda, params)
        del logits, labeled_logits, strong_logits, loss_pl  # the graph goes here

        first_optimizer = self.optimizers()[1]
        for group in first_optimizer.optimizer.param_groups:
            group["lr"] = self.first_step_lr or optimizer.optimizer.param_groups[0]["lr"]
        self.step_with_gradients(first_optimizer, params, pl_grads, scale=scale)
        if not self.meta:
            self.step_with_gradients(optimizer, params, uda_grads, scale=scale)
            return loss_uda.detach()

        with torch.no_grad():
            loss_new = F.cross_entropy(self.network(inputs).float(), targets)
        reward = self.baseline_adjusted(labeled_loss_change(loss_old, loss_new, self.reward_sign))
        grads = [
            combine(uda, own_grad, reward)
            for uda, own_grad in zip(uda_grads, own_grads, strict=True)
        ]
        self.log_loss_terms(
            "train", {"labeled_ce_new": loss_new, "reward": reward}, batch_size=num_labeled
        )
        self.step_with_gradients(optimizer, params, grads, scale=scale)
        return loss_uda.detach()

    def _labeled_step(self, optimizer: Any, inputs: Tensor, targets: Tensor) -> Tensor:
        """The supervised-only baseline: `CE_ε(labeled)` on the labeled stream, nothing else."""
        loss = smoothed_cross_entropy(self.network(inputs), targets, self.label_smoothing)
        self.log_loss_terms("train", {"loss": loss, "labeled": loss}, batch_size=len(targets))
        self.step_with_loss(optimizer, loss)
        return loss.detach()


def combine(uda: Tensor | None, own: Tensor | None, reward: Tensor) -> Tensor | None:
    """`∇L_uda + reward·∇L_own` for one parameter (None where neither reaches it)."""
    if uda is None and own is None:
        return None
    if own is None:
        return uda
    scaled = own * reward.to(own.dtype)
    return scaled if uda is None else uda + scaled
