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
The port's optional fine-tuning of the student on the labels after training is not done here.
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
from weaksup.losses._checks import check_count
from weaksup.losses.pseudo_labels import (
    labeled_loss_change,
    meta_pseudo_label_loss,
    smoothed_cross_entropy,
)
from weaksup.methods.pseudo_labeling import PseudoLabelMethod


class MetaPseudoLabels(PseudoLabelMethod):
    """MPL with a teacher and a student of the same architecture (the `backbone` group).

    Two optimizers of the `optimizer` group (teacher first, then student), each with its own
    scheduler of the `scheduler` group, stepped once per iteration.
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        *args: Any,
        student_wait_steps: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.teacher = teacher
        self.student = student
        self.student_wait_steps = check_count(student_wait_steps, "method.student_wait_steps")

    @classmethod
    def from_config(cls, cfg: DictConfig, data: DataMetadata) -> MetaPseudoLabels:
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

    def configure_optimizers(self) -> Any:
        """Teacher's then student's optimizer (the same `optimizer` config, as the port's
        `--teacher_lr`/`--student_lr` default to the same value), each with its scheduler,
        stepped by the base once per iteration in which its optimizer stepped."""
        return [
            self.optimizer_with_scheduler(self.teacher.parameters()),
            self.optimizer_with_scheduler(self.student.parameters()),
        ]

    def training_step(self, batch: SemiSupervisedBatch, batch_idx: int) -> Tensor:
        teacher_optimizer, student_optimizer = self.optimizers()
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
