"""Hinge losses with hand-written gradients: binary, Weston-Watkins and Crammer-Singer.

Binary hinge (the soft-margin SVM loss, Cortes & Vapnik 1995, "Support-Vector Networks", Sec. 3,
with the slack variables written as hinge terms), for scores `p` and labels `y` in {-1, +1}:

    L = 1/N Σ_n max(0, m - y_n p_n),     dL/dp_n = -y_n / N  if y_n p_n < m  else 0.

The gradient is the one in the answer (by the asker) to the Stack Overflow question "Hinge loss
function gradient w.r.t. input prediction" (November 2018): `np.where(p * y < 1, -y / N, 0)`,
with m = 1. At the kink `y p = m` the subgradient 0 is used (strict `<`, as in that answer).

Multiclass, for scores `s` `[N, C]` and class indices `y` `[N]`:

* Weston & Watkins 1999 ("Support Vector Machines for Multi-Class Pattern Recognition", ESANN,
  one slack per rival class): L = 1/N Σ_n Σ_{j≠y_n} max(0, m - s_{n,y_n} + s_{n,j}).
  `torch.nn.MultiMarginLoss` computes the same sum divided by C, so
  `weston_watkins == C * MultiMarginLoss(margin=m)`.
* Crammer & Singer 2001 ("On the Algorithmic Implementation of Multiclass Kernel-based Vector
  Machines", JMLR 2; one slack per sample): L = 1/N Σ_n max(0, m + max_{j≠y_n} s_{n,j} - s_{n,y_n}).

Squared variants (the L2-SVM of Tang 2013, "Deep Learning using Linear Support Vector
Machines") square each hinge term and use plain autograd.

The `autograd.Function`s take already-validated tensors; call them through `binary_hinge` /
`multiclass_hinge`, which check labels and shapes and compute in float32 at least.
"""

from __future__ import annotations

import torch
from torch import Tensor

from weaksup.losses._checks import (
    at_least_float32,
    check_class_indices,
    check_margin,
    check_scores_matrix,
)

HINGE_FORMS = ("weston_watkins", "crammer_singer")


class BinaryHingeFunction(torch.autograd.Function):
    """`mean(max(0, margin - y * p))` for scores `p` `[N]` and signed targets `y` `[N]` in {-1, +1}.

    Backward (the Stack Overflow answer cited in the module docstring; Cortes & Vapnik 1995
    hinge): `dL/dp = -y/N` where `y * p < margin`, else 0, times `grad_output`. The targets get
    no gradient.
    """

    @staticmethod
    def forward(ctx, scores: Tensor, signed_targets: Tensor, margin: float) -> Tensor:
        slack = margin - signed_targets * scores
        active = slack > 0
        ctx.save_for_backward(signed_targets, active)
        return slack.clamp_min(0).mean()

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor | None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None
        signed_targets, active = ctx.saved_tensors
        num_samples = signed_targets.shape[0]
        local_grad = torch.where(active, -signed_targets / num_samples, 0.0)
        return grad_output * local_grad, None, None


class WestonWatkinsHingeFunction(torch.autograd.Function):
    """`1/N Σ_n Σ_{j≠y_n} max(0, margin - s_{n,y_n} + s_{n,j})` (Weston & Watkins 1999).

    Equals `C * torch.nn.MultiMarginLoss(margin=margin)` (torch divides the sum by C).
    Backward: each active rival pair (n, j) adds `+1/N` to `s_{n,j}` and `-1/N` to `s_{n,y_n}`.
    """

    @staticmethod
    def forward(ctx, scores: Tensor, targets: Tensor, margin: float) -> Tensor:
        target_index = targets.unsqueeze(1)
        target_scores = scores.gather(1, target_index)
        slack = margin - target_scores + scores
        # j = y_n is not a rival: its term would be the constant `margin`.
        active = (slack > 0).scatter(1, target_index, False)
        ctx.save_for_backward(targets, active)
        return torch.where(active, slack, 0.0).sum() / scores.shape[0]

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor | None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None
        targets, active = ctx.saved_tensors
        local_grad = active.to(grad_output.dtype)
        rivals_per_sample = local_grad.sum(dim=1, keepdim=True)
        local_grad = local_grad.scatter(1, targets.unsqueeze(1), -rivals_per_sample)
        return grad_output * local_grad / active.shape[0], None, None


class CrammerSingerHingeFunction(torch.autograd.Function):
    """`1/N Σ_n max(0, margin + max_{j≠y_n} s_{n,j} - s_{n,y_n})` (Crammer & Singer 2001).

    Backward: for active samples, `+1/N` at the highest-scoring rival (ties: the index `max`
    returns) and `-1/N` at the target class.
    """

    @staticmethod
    def forward(ctx, scores: Tensor, targets: Tensor, margin: float) -> Tensor:
        target_index = targets.unsqueeze(1)
        rival_scores, rival_index = scores.scatter(1, target_index, float("-inf")).max(dim=1)
        slack = margin + rival_scores - scores.gather(1, target_index).squeeze(1)
        active = slack > 0
        ctx.save_for_backward(targets, rival_index, active)
        ctx.num_classes = scores.shape[1]
        return slack.clamp_min(0).mean()

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor | None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None
        targets, rival_index, active = ctx.saved_tensors
        num_samples = active.shape[0]
        weight = active.to(grad_output.dtype).unsqueeze(1) / num_samples
        local_grad = grad_output.new_zeros(num_samples, ctx.num_classes)
        local_grad.scatter_(1, rival_index.unsqueeze(1), weight)
        local_grad.scatter_(1, targets.unsqueeze(1), -weight)
        return grad_output * local_grad, None, None


def _signed_binary_targets(targets: Tensor, dtype: torch.dtype) -> Tensor:
    """Binary labels in {0, 1} or in {-1, +1} as {-1., +1.} of `dtype` (0 maps to -1).

    Any other value, or a mix of the two conventions (both 0 and -1), raises ValueError.
    """
    values = set(torch.unique(targets).tolist())
    if values <= {0, 1}:
        return targets.to(dtype) * 2 - 1
    if values <= {-1, 1}:
        return targets.to(dtype)
    bad_values = sorted(values - {-1, 0, 1})
    problem = f"got values {bad_values}" if bad_values else "got both 0 and -1"
    raise ValueError(
        f"binary targets must all be in {{0, 1}} or all be in {{-1, +1}}; {problem} "
        f"(found {sorted(values)})"
    )


def _check_binary_inputs(scores: Tensor, targets: Tensor) -> None:
    if scores.dim() != 1 or targets.shape != scores.shape:
        raise ValueError(
            f"expected scores [N] and targets [N], got scores {tuple(scores.shape)} and "
            f"targets {tuple(targets.shape)}"
        )
    if scores.numel() == 0:
        raise ValueError("the loss of an empty batch is undefined: scores has 0 elements")
    if not scores.is_floating_point():
        raise TypeError(f"scores must be a floating-point tensor, got {scores.dtype}")


def binary_hinge(scores: Tensor, targets: Tensor, margin: float = 1.0) -> Tensor:
    """Binary hinge `mean(max(0, margin - y * scores))` with the hand-written gradient.

    Args:
        scores: real-valued scores `[N]`; class 1 (or +1) is predicted where `scores > 0`.
        targets: labels `[N]`, all in {0, 1} or all in {-1, +1} (0 is read as -1).
        margin: the margin `m >= 0`.

    Returns a float32 scalar for float16/bfloat16 scores (the scores' dtype otherwise).
    """
    margin = check_margin(margin)
    _check_binary_inputs(scores, targets)
    scores = at_least_float32(scores)
    return BinaryHingeFunction.apply(scores, _signed_binary_targets(targets, scores.dtype), margin)


def multiclass_hinge(
    scores: Tensor, targets: Tensor, form: str = "weston_watkins", margin: float = 1.0
) -> Tensor:
    """Multiclass hinge with the hand-written gradient, averaged over the batch.

    Args:
        scores: class scores `[N, C]`, `C >= 2`.
        targets: integer class indices `[N]` in [0, C).
        form: `"weston_watkins"` (sum over rivals, Weston & Watkins 1999) or `"crammer_singer"`
            (highest rival only, Crammer & Singer 2001).
        margin: the margin `m >= 0`.
    """
    if form not in HINGE_FORMS:
        raise ValueError(f"form must be one of {HINGE_FORMS}, got {form!r}")
    margin = check_margin(margin)
    check_scores_matrix(scores, targets)
    check_class_indices(targets, scores.shape[1])
    scores = at_least_float32(scores)
    function = (
        WestonWatkinsHingeFunction if form == "weston_watkins" else CrammerSingerHingeFunction
    )
    return function.apply(scores, targets.long(), margin)


def binary_squared_hinge(scores: Tensor, targets: Tensor, margin: float = 1.0) -> Tensor:
    """Squared binary hinge `mean(max(0, margin - y * scores)^2)` (L2-SVM, Tang 2013).

    Same arguments and label conventions as `binary_hinge`; plain autograd.
    """
    margin = check_margin(margin)
    _check_binary_inputs(scores, targets)
    scores = at_least_float32(scores)
    signed_targets = _signed_binary_targets(targets, scores.dtype)
    return (margin - signed_targets * scores).clamp_min(0).square().mean()


def multiclass_squared_hinge(scores: Tensor, targets: Tensor, margin: float = 1.0) -> Tensor:
    """Squared Weston-Watkins hinge `1/N Σ_n Σ_{j≠y_n} max(0, m - s_{n,y_n} + s_{n,j})^2`.

    Equals `C * torch.nn.MultiMarginLoss(p=2, margin=m)`; plain autograd.
    """
    margin = check_margin(margin)
    check_scores_matrix(scores, targets)
    check_class_indices(targets, scores.shape[1])
    scores = at_least_float32(scores)
    target_index = targets.long().unsqueeze(1)
    slack = (margin - scores.gather(1, target_index) + scores).clamp_min(0)
    rival_slack = slack.scatter(1, target_index, 0.0)
    return rival_slack.square().sum() / scores.shape[0]
