"""Classification loss modules, swapped through the Hydra `loss=` group.

Every module maps network outputs `[N, num_outputs]` and int64 class indices `[N]` to a scalar,
and says how many output units it needs (`num_outputs`) and how to read class scores from the
outputs (`class_scores`). Binary forms (`binary_when_two_classes=True`) give a 2-class problem a
single output `s`, with class 1 predicted where `s > 0`.
"""

from __future__ import annotations

import abc
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weaksup.losses._checks import (
    at_least_float32,
    check_bool,
    check_class_indices,
    check_margin,
    check_num_classes,
)
from weaksup.losses.hinge import (
    HINGE_FORMS,
    binary_hinge,
    binary_squared_hinge,
    multiclass_hinge,
    multiclass_squared_hinge,
)


class ClassificationLoss(nn.Module, abc.ABC):
    """Base class: shape and label checks, and the 1-output binary / C-output dispatch.

    Subclasses implement `_multiclass_loss` and `_multiclass_class_scores` (outputs `[N, C]`),
    and, when they set `binary_when_two_classes`, `_binary_loss` and `_binary_class_scores`
    (scores `[N]`, targets in {0, 1}). Outputs are cast to float32 when they are float16/bfloat16.
    """

    binary_when_two_classes: bool = False

    def num_outputs(self, num_classes: int) -> int:
        """Output units the network needs: 1 for the binary forms when num_classes == 2."""
        check_num_classes(num_classes)
        return 1 if self.binary_when_two_classes and num_classes == 2 else num_classes

    @staticmethod
    def validate_targets(targets: Tensor, num_classes: int) -> None:
        """Raise unless `targets` is a non-empty `[N]` integer tensor with values in [0, C)."""
        check_class_indices(targets, num_classes)

    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Scalar loss, averaged over the batch, of outputs `[N, num_outputs]` and targets `[N]`."""
        num_classes = self._num_classes_of(outputs)
        self.validate_targets(targets, num_classes)
        if targets.shape[0] != outputs.shape[0]:
            raise ValueError(
                f"outputs and targets differ in batch size: outputs {tuple(outputs.shape)}, "
                f"targets {tuple(targets.shape)}"
            )
        outputs = at_least_float32(outputs)
        if outputs.shape[1] == 1:
            return self._binary_loss(outputs[:, 0], targets)
        return self._multiclass_loss(outputs, targets)

    def class_scores(self, outputs: Tensor) -> Tensor:
        """Per-class scores `[N, num_classes]`; their argmax is the predicted class."""
        self._num_classes_of(outputs)
        outputs = at_least_float32(outputs)
        if outputs.shape[1] == 1:
            return self._binary_class_scores(outputs[:, 0])
        return self._multiclass_class_scores(outputs)

    def _num_classes_of(self, outputs: Tensor) -> int:
        if outputs.dim() != 2:
            raise ValueError(f"outputs must be [N, num_outputs], got shape {tuple(outputs.shape)}")
        if not outputs.is_floating_point():
            raise TypeError(f"outputs must be a floating-point tensor, got {outputs.dtype}")
        width = outputs.shape[1]
        if width == 1 and self.binary_when_two_classes:
            return 2
        if width == 2 and self.binary_when_two_classes:
            raise ValueError(
                "got 2 output columns, but with binary_when_two_classes=True a 2-class problem "
                "uses 1 output (see num_outputs)"
            )
        if width < 2:
            raise ValueError(
                f"{type(self).__name__} needs one output per class (at least 2), got outputs "
                f"{tuple(outputs.shape)}"
            )
        return width

    @abc.abstractmethod
    def _multiclass_loss(self, outputs: Tensor, targets: Tensor) -> Tensor: ...

    @abc.abstractmethod
    def _multiclass_class_scores(self, outputs: Tensor) -> Tensor: ...

    def _binary_loss(self, scores: Tensor, targets: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no single-output binary form")

    def _binary_class_scores(self, scores: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no single-output binary form")


class CrossEntropyLoss(ClassificationLoss):
    """Softmax cross-entropy from logits, optionally with label smoothing.

    Uses `F.cross_entropy` (a fused log-softmax, stable for large logits). Label smoothing as in
    Szegedy et al. 2016, "Rethinking the Inception Architecture", Sec. 7: the target is
    `(1 - ε) one_hot + ε / C`. `class_scores` are softmax probabilities.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, int | float):
            raise TypeError(f"label_smoothing must be a real number, got {label_smoothing!r}")
        if not (math.isfinite(label_smoothing) and 0.0 <= label_smoothing < 1.0):
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing}"

    def _multiclass_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs, targets.long(), label_smoothing=self.label_smoothing)

    def _multiclass_class_scores(self, outputs: Tensor) -> Tensor:
        return outputs.softmax(dim=1)


class HingeLoss(ClassificationLoss):
    """Multiclass SVM hinge (Weston & Watkins 1999 or Crammer & Singer 2001), or the binary hinge.

    With 2 classes and `binary_when_two_classes`, the network has one output `s` and the loss is
    the binary hinge `max(0, margin - y s)` with y = ±1 (Cortes & Vapnik 1995); both forms agree on
    2 classes. Gradients are hand-written (`weaksup.losses.hinge`). `class_scores` are the raw
    scores, `[-s, s]` for the 1-output form.
    """

    def __init__(
        self,
        form: str = "weston_watkins",
        margin: float = 1.0,
        binary_when_two_classes: bool = True,
    ) -> None:
        super().__init__()
        if form not in HINGE_FORMS:
            raise ValueError(f"form must be one of {HINGE_FORMS}, got {form!r}")
        self.form = form
        self.margin = check_margin(margin)
        self.binary_when_two_classes = check_bool(
            binary_when_two_classes, "binary_when_two_classes"
        )

    def extra_repr(self) -> str:
        return (
            f"form={self.form!r}, margin={self.margin}, "
            f"binary_when_two_classes={self.binary_when_two_classes}"
        )

    def _binary_loss(self, scores: Tensor, targets: Tensor) -> Tensor:
        return binary_hinge(scores, targets, margin=self.margin)

    def _binary_class_scores(self, scores: Tensor) -> Tensor:
        return torch.stack([-scores, scores], dim=1)

    def _multiclass_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return multiclass_hinge(outputs, targets, form=self.form, margin=self.margin)

    def _multiclass_class_scores(self, outputs: Tensor) -> Tensor:
        return outputs


class SquaredHingeLoss(ClassificationLoss):
    """Squared hinge (L2-SVM, Tang 2013): squared Weston-Watkins, or squared binary hinge.

    The multiclass value equals `C * torch.nn.MultiMarginLoss(p=2, margin=margin)`.
    `class_scores` as in `HingeLoss`.
    """

    def __init__(self, margin: float = 1.0, binary_when_two_classes: bool = True) -> None:
        super().__init__()
        self.margin = check_margin(margin)
        self.binary_when_two_classes = check_bool(
            binary_when_two_classes, "binary_when_two_classes"
        )

    def extra_repr(self) -> str:
        return f"margin={self.margin}, binary_when_two_classes={self.binary_when_two_classes}"

    def _binary_loss(self, scores: Tensor, targets: Tensor) -> Tensor:
        return binary_squared_hinge(scores, targets, margin=self.margin)

    def _binary_class_scores(self, scores: Tensor) -> Tensor:
        return torch.stack([-scores, scores], dim=1)

    def _multiclass_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return multiclass_squared_hinge(outputs, targets, margin=self.margin)

    def _multiclass_class_scores(self, outputs: Tensor) -> Tensor:
        return outputs


class BCELoss(ClassificationLoss):
    """One-vs-rest binary cross-entropy from logits (`F.binary_cross_entropy_with_logits`).

    C outputs: mean over all N·C sigmoid terms against one-hot targets. With 2 classes and
    `binary_when_two_classes`: one logit per sample, target 1 for class 1. `class_scores` are the
    sigmoids, `[1 - p, p]` (computed as `[σ(-s), σ(s)]`) for the 1-output form.
    """

    def __init__(self, binary_when_two_classes: bool = True) -> None:
        super().__init__()
        self.binary_when_two_classes = check_bool(
            binary_when_two_classes, "binary_when_two_classes"
        )

    def extra_repr(self) -> str:
        return f"binary_when_two_classes={self.binary_when_two_classes}"

    def _binary_loss(self, scores: Tensor, targets: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(scores, targets.to(scores.dtype))

    def _binary_class_scores(self, scores: Tensor) -> Tensor:
        return torch.stack([torch.sigmoid(-scores), torch.sigmoid(scores)], dim=1)

    def _multiclass_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        one_hot = F.one_hot(targets.long(), outputs.shape[1]).to(outputs.dtype)
        return F.binary_cross_entropy_with_logits(outputs, one_hot)

    def _multiclass_class_scores(self, outputs: Tensor) -> Tensor:
        return torch.sigmoid(outputs)


class MSELoss(ClassificationLoss):
    """Least-squares classification: mean over all N·C entries of `(outputs - one_hot)^2`.

    As evaluated for deep networks by Hui & Belkin 2021, "Evaluation of Neural Architectures
    Trained with Square Loss vs Cross-Entropy in Classification Tasks" (ICLR). `class_scores` are
    the raw outputs.
    """

    def _multiclass_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        one_hot = F.one_hot(targets.long(), outputs.shape[1]).to(outputs.dtype)
        return F.mse_loss(outputs, one_hot)

    def _multiclass_class_scores(self, outputs: Tensor) -> Tensor:
        return outputs
