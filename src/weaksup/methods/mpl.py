"""Meta Pseudo Labels (Pham et al., CVPR 2021): a teacher taught by its student's progress.

As the PyTorch port of the official code does it (kekmodel/MPL-pytorch `main.py`,
`train_loop`), per iteration:

1. Teacher on labeled + strong unlabeled (weak view without a graph: a target only):
   `L_uda = CE_ε(labeled) + β_k·mask·KL(softmax(weak/T) ‖ softmax(strong))`; hard pseudo labels
   `argmax softmax(weak/T)`.
2. Student on labeled + strong unlabeled: `loss_old = CE(student labeled)` (detached) and the
   student step on `CE_ε(student strong, teacher's hard pseudo labels)`.
3. `loss_new = CE(student labeled)` at the updated student (no graph); reward
   `change = loss_new − loss_old` (`reward_sign`; minus a moving baseline with `baseline=ema`,
   which the port has commented out and the official code uses).
4. Teacher step on `L_uda + change·CE(teacher strong, its own argmax)` (`mpl_target`).

`student_wait_steps` (MPL-pytorch `--student-wait-steps`, 3000 in its CIFAR-10-4K command; 0 by
default here) lets the teacher learn alone first: the student's schedule holds its learning
rate at 0 for that many iterations, so the student does not move and the reward is 0.

The student is what is evaluated (its EMA when `ema_decay` is set, the port's `avg_student`).
Both networks, both optimizers and both schedulers are in every checkpoint, so a resume
restores them exactly (the port restores neither the student's optimizer nor its scheduler).

Fine-tuning the student on the labels (`finetune_epochs > 0`; off by default). After its
`train_loop` the port loads the best checkpoint's EMA student (`avg_state_dict`) into the
student and trains it on the labeled set alone (`finetune`): cross-entropy with the training's
label smoothing, SGD with Nesterov momentum (`--finetune-lr 3e-5`, `--finetune-momentum 0.9`,
`--finetune-weight-decay 0`, constant rate), then evaluates the fine-tuned student itself. Here
the last `finetune_epochs` epochs of `trainer.max_epochs` are that phase: at its first step the
student gets the EMA weights of that moment (the final ones, not a checkpoint chosen on test
accuracy as in the port), then each iteration takes one step of a third optimizer on the
labeled batch of the stream (its weak view with `augment_labeled`, as the port's
`transform_finetune` flips and crops; `data.batch_size` images, where the port uses 512) and
the teacher rests. From then on validation, test, prediction and `weaksup-eval` use the
fine-tuned student's own weights (a `finetuned` flag in the checkpoint says so). A fine-tuning
epoch has the length of every epoch (one pass over the unlabeled pool, or
`limit_train_batches`), where the port's is one pass over the labeled set.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from weaksup.config.instantiate import build_node
from weaksup.config.validation import ConfigError
from weaksup.data.batches import SemiSupervisedBatch
from weaksup.data.datamodules import DataMetadata
from weaksup.losses._checks import check_count, check_non_negative, check_positive
from weaksup.losses.pseudo_labels import (
    labeled_loss_change,
    meta_pseudo_label_loss,
    smoothed_cross_entropy,
)
from weaksup.methods.pseudo_labeling import PseudoLabelMethod


class MetaPseudoLabels(PseudoLabelMethod):
    """MPL with a teacher and a student of the same architecture (the `backbone` group).

    Two optimizers of the `optimizer` group (teacher first, then student), each with its own
    scheduler of the `scheduler` group, stepped once per iteration; with `finetune_epochs > 0`
    a third, the fine-tuning SGD over the student (see the module docstring).

    Args:
        student_wait_steps: iterations in which the student does not move (see above).
        finetune_epochs: the last epochs of the run that fine-tune the student on the labels
            (MPL-pytorch `--finetune-epochs`, 625 there); 0: no fine-tuning.
        finetune_lr, finetune_momentum, finetune_weight_decay: that phase's SGD (Nesterov),
            the port's defaults 3e-5, 0.9 and 0.
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        *args: Any,
        student_wait_steps: int = 0,
        finetune_epochs: int = 0,
        finetune_lr: float = 3e-5,
        finetune_momentum: float = 0.9,
        finetune_weight_decay: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.teacher = teacher
        self.student = student
        self.student_wait_steps = check_count(student_wait_steps, "method.student_wait_steps")
        self.finetune_epochs = check_count(finetune_epochs, "method.finetune_epochs")
        self.finetune_lr = check_positive(finetune_lr, "method.finetune_lr")
        if (
            isinstance(finetune_momentum, bool)
            or not isinstance(finetune_momentum, int | float)
            or not 0 <= finetune_momentum < 1
        ):
            raise ValueError(
                f"method.finetune_momentum must be a number in [0, 1), got {finetune_momentum!r}"
            )
        self.finetune_momentum = float(finetune_momentum)
        self.finetune_weight_decay = check_non_negative(
            finetune_weight_decay, "method.finetune_weight_decay"
        )
        # Set at the first fine-tuning step: a buffer, so a resumed run does not copy the EMA
        # into the student again and `weaksup-eval` scores the fine-tuned student.
        self.register_buffer("finetuned", torch.zeros((), dtype=torch.bool))

    @classmethod
    def from_config(cls, cfg: DictConfig, data: DataMetadata) -> MetaPseudoLabels:
        finetune_epochs = cfg.method.get("finetune_epochs", 0)
        trainer = cfg.get("trainer")  # absent when `weaksup-eval` rebuilds the model
        max_epochs = None if trainer is None else trainer.get("max_epochs")
        fine_tunes = (
            trainer is not None and isinstance(finetune_epochs, int) and finetune_epochs > 0
        )
        if fine_tunes and (not isinstance(max_epochs, int) or max_epochs <= finetune_epochs):
            raise ConfigError(
                f"method.finetune_epochs={finetune_epochs} fine-tunes the student in the "
                f"last epochs of trainer.max_epochs={max_epochs}: set trainer.max_epochs "
                "to more epochs than that (the rest are Meta Pseudo Labels training), or "
                "method.finetune_epochs=0"
            )
        teacher = cls.build_backbone(cfg, data, num_outputs=data.num_classes)
        student = cls.build_backbone(cfg, data, num_outputs=data.num_classes)
        return build_node(
            cfg.method,
            teacher=teacher,
            student=student,
            augment=build_node(cfg.augment),
            input_shape=tuple(data.input_shape),
            num_classes=data.num_classes,
            **cls.method_arguments(cfg),
            _recursive_=False,
        )

    def ema_network(self) -> nn.Module:
        return self.student

    def evaluation_forward(self, inputs: Tensor) -> Tensor:
        """The EMA student (live without `ema_decay`); once fine-tuned, the student itself."""
        if self.finetuned:
            return self.student(inputs)
        return super().evaluation_forward(inputs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        if "finetuned" not in state_dict:  # a checkpoint from before fine-tuning existed
            state_dict = {**state_dict, "finetuned": torch.zeros((), dtype=torch.bool)}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def configure_optimizers(self) -> Any:
        """Teacher's then student's optimizer (the same `optimizer` config, as the port's
        `--teacher_lr`/`--student_lr` default to the same value), each with its scheduler,
        stepped by the base once per iteration in which its optimizer stepped; then, with
        `finetune_epochs`, the fine-tuning SGD over the student (constant rate, as the port's)."""
        optimizers = [
            self.optimizer_with_scheduler(self.teacher.parameters()),
            self.optimizer_with_scheduler(self.student.parameters()),
        ]
        if self.finetune_epochs:
            finetuning = torch.optim.SGD(
                self.student.parameters(),
                lr=self.finetune_lr,
                momentum=self.finetune_momentum,
                weight_decay=self.finetune_weight_decay,
                nesterov=self.finetune_momentum > 0,
            )
            optimizers.append({"optimizer": finetuning})
        return optimizers

    def in_finetuning_phase(self) -> bool:
        """Whether this epoch is one of the last `finetune_epochs` of `trainer.max_epochs`."""
        if not self.finetune_epochs:
            return False
        return self.current_epoch >= self.trainer.max_epochs - self.finetune_epochs

    def finetuning_step(self, batch: SemiSupervisedBatch) -> Tensor:
        """One step of the port's `finetune`: the student alone, on the labeled batch."""
        optimizer = self.optimizers()[2]
        if not self.finetuned:
            average = self._weight_average()
            if average is not None:
                average.copy_to(self.student)
            self.finetuned.fill_(True)
        inputs, targets = self.labeled_view(batch.labeled.inputs), batch.labeled.targets
        loss = smoothed_cross_entropy(self.student(inputs), targets, self.label_smoothing)
        self.log_loss_terms("train", {"loss": loss, "finetune": loss}, batch_size=len(targets))
        self.step_with_loss(optimizer, loss)
        return loss.detach()

    def training_step(self, batch: SemiSupervisedBatch, batch_idx: int) -> Tensor:
        if self.in_finetuning_phase():
            return self.finetuning_step(batch)
        teacher_optimizer, student_optimizer = self.optimizers()[:2]
        inputs, targets = self.labeled_view(batch.labeled.inputs), batch.labeled.targets
        num_labeled = len(targets)
        weak, strong = self.weak_and_strong(batch.unlabeled)
        labels = self.pseudo_labels_of(self.teacher, weak)
        both = torch.cat([inputs, strong])

        teacher_logits = self.teacher(both)
        teacher_labeled, teacher_strong = teacher_logits[:num_labeled], teacher_logits[num_labeled:]
        loss_uda, terms = self.uda_loss(teacher_labeled, targets, teacher_strong, labels)
        if self.iteration < self.student_wait_steps:
            # MPL-pytorch `--student-wait-steps`: the student's learning rate is 0 (its cosine
            # schedule waits), so it does not move, the reward is 0 and the teacher learns UDA.
            self.log_loss_terms("train", {"loss": loss_uda, **terms}, batch_size=num_labeled)
            self.step_with_loss(teacher_optimizer, loss_uda)
            return loss_uda.detach()

        student_logits = self.student(both)
        student_labeled, student_strong = student_logits[:num_labeled], student_logits[num_labeled:]
        loss_old = F.cross_entropy(student_labeled.detach().float(), targets)
        student_loss = smoothed_cross_entropy(student_strong, labels.hard, self.label_smoothing)
        self.log_loss_terms(
            "train",
            {"loss": loss_uda, **terms, "student": student_loss, "labeled_ce_old": loss_old},
            batch_size=num_labeled,
        )
        self.step_with_loss(student_optimizer, student_loss)
        del student_logits, student_labeled, student_strong, student_loss

        with torch.no_grad():
            loss_new = F.cross_entropy(self.student(inputs).float(), targets)
        reward = self.baseline_adjusted(labeled_loss_change(loss_old, loss_new, self.reward_sign))
        teacher_loss = loss_uda + meta_pseudo_label_loss(reward, teacher_strong, self.mpl_target)
        self.log_loss_terms(
            "train",
            {"labeled_ce_new": loss_new, "reward": reward, "teacher": teacher_loss},
            batch_size=num_labeled,
        )
        self.step_with_loss(teacher_optimizer, teacher_loss)
        return loss_uda.detach()
