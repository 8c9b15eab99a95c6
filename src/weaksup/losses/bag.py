"""Bag-level losses: one pooled score per bag against its label Y ∈ {0, 1}, averaged over bags.

Every loss takes bag *logits* `[B]` (what `weaksup.losses.pooling` returns at instance level, or
the classifier's output on a pooled embedding) and int bag labels `[B]`. The bag probability is
`θ = σ(logit)`. The forms:

* `BagBCELoss`: Bernoulli negative log-likelihood `-[Y log θ + (1 - Y) log(1 - θ)]`
  (Ilse et al. 2018, Sec. 2.1 / their `calculate_objective`, which clamps θ to [1e-5, 1 - 1e-5];
  here computed from the logit with `binary_cross_entropy_with_logits`, no clamp needed).
* `BagSquaredLoss`: `(pool(o) - E(b))²` with `pool(o) = θ`, the first loss proposed in the
  PyTorch Forums question "Per-batch loss for semi-supervised learning", which asks for a loss
  on labels known only per bag
  (https://discuss.pytorch.org/t/per-batch-loss-for-semi-supervised-learning/71140).
* `BagLogLoss`: that question's second loss, `E(b) · log(pool(o))`, written as a loss to
  minimise, `-Y log θ = -Y logsigmoid(logit)` (stable). As in the question, negative bags add
  nothing: it only pushes positive bags up, so it needs a pooling or data where that is enough;
  compare with `BagBCELoss`, which adds the missing `-(1 - Y) log(1 - θ)` term.
* `BagHingeLoss`: the binary hinge `max(0, m - y·s)` on the bag score `s` (the logit), `y = ±1`
  (Cortes & Vapnik 1995), with the hand-written gradient of `weaksup.losses.hinge`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weaksup.data.segments import check_bag_labels
from weaksup.losses._checks import at_least_float32, check_margin
from weaksup.losses.hinge import binary_hinge


class BagLoss(nn.Module):
    """Base class of the bag losses (`MILClassifier.loss_kind`): checks, then `bag_loss`."""

    def forward(self, bag_logits: Tensor, bag_labels: Tensor) -> Tensor:
        """Mean loss over bags of logits `[B]` (or `[B, 1]`) and labels `[B]` in {0, 1}."""
        if bag_logits.dim() == 2 and bag_logits.shape[1] == 1:
            bag_logits = bag_logits[:, 0]
        if bag_logits.dim() != 1 or bag_logits.shape != bag_labels.shape:
            raise ValueError(
                f"expected bag_logits [B] and bag_labels [B], got {tuple(bag_logits.shape)} and "
                f"{tuple(bag_labels.shape)}"
            )
        if bag_logits.numel() == 0:
            raise ValueError("the loss of zero bags is undefined: bag_logits is empty")
        if not bag_logits.is_floating_point():
            raise TypeError(f"bag_logits must be floating point, got {bag_logits.dtype}")
        check_bag_labels(bag_labels)
        return self.bag_loss(at_least_float32(bag_logits), bag_labels)

    def bag_loss(self, bag_logits: Tensor, bag_labels: Tensor) -> Tensor:
        raise NotImplementedError


class BagBCELoss(BagLoss):
    """Bernoulli NLL of the bag label from the bag logit (Ilse et al. 2018), stable."""

    def bag_loss(self, bag_logits: Tensor, bag_labels: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(bag_logits, bag_labels.to(bag_logits.dtype))


class BagSquaredLoss(BagLoss):
    """The forum question's `(pool(o) - E(b))²`, `pool(o) = σ(bag logit)` the bag probability."""

    def bag_loss(self, bag_logits: Tensor, bag_labels: Tensor) -> Tensor:
        return (torch.sigmoid(bag_logits) - bag_labels.to(bag_logits.dtype)).square().mean()


class BagLogLoss(BagLoss):
    """The forum question's `E(b) · log(pool(o))` as a stable loss: `-Y · logsigmoid(logit)`."""

    def bag_loss(self, bag_logits: Tensor, bag_labels: Tensor) -> Tensor:
        return -(bag_labels.to(bag_logits.dtype) * F.logsigmoid(bag_logits)).mean()


class BagHingeLoss(BagLoss):
    """Binary hinge on the bag score with the hand-written gradient (`weaksup.losses.hinge`).

    Args:
        margin: the margin `m >= 0`.
    """

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.margin = check_margin(margin)

    def bag_loss(self, bag_logits: Tensor, bag_labels: Tensor) -> Tensor:
        return binary_hinge(bag_logits, bag_labels, margin=self.margin)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"
