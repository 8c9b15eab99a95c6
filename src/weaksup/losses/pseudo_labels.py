"""Losses of the pseudo-label methods: UDA consistency, hard pseudo labels, the meta reward.

Pure torch, shared by Meta Pseudo Labels (Pham et al., CVPR 2021) and Self Meta Pseudo Labels
(Ng & Wang 2022, arXiv 2212.13420). The formulas follow the training loops of the reference
code, which both methods share line for line:

- kekmodel/MPL-pytorch `main.py`, `train_loop` (the PyTorch port of the official MPL code);
- max-ng/megaboost `megaboost/main.py`, `train_loop` (the SMPL author's code).

Every log-probability comes from `log_softmax`, never `log(softmax(.))`: the seed slides' code
hit NaN there, then tried `log1p` (which computes log(1+p), a different and sign-flipped loss)
and a clamp of the log (which hides the problem and biases the gradient). With `log_softmax`
a logit of ±1e4 gives finite values and gradients (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from weaksup.losses._checks import at_least_float32, check_choice

RewardSign = Literal["new_minus_old", "old_minus_new"]
MetaTarget = Literal["hard", "soft"]
REWARD_SIGNS: tuple[str, ...] = ("new_minus_old", "old_minus_new")
META_TARGETS: tuple[str, ...] = ("hard", "soft")


def smoothed_cross_entropy(logits: Tensor, targets: Tensor, smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy with label smoothing `ε`: targets `(1−ε)·onehot + ε/C`.

    The `criterion` of both reference codes (MPL-pytorch `SmoothCrossEntropy`, label smoothing
    0.15 for CIFAR-10-4K), used for the labeled loss and for the loss on pseudo labels.
    """
    return F.cross_entropy(at_least_float32(logits), targets, label_smoothing=smoothing)


@dataclass(frozen=True)
class PseudoLabels:
    """What the weak view says about the unlabeled batch.

    `soft`: `softmax(weak_logits / T)` (the UDA target), `hard`: its argmax, `mask`: 1.0 where
    `max(soft) ≥ threshold`, else 0.0. All detached: the weak view is a target, never trained.
    """

    soft: Tensor
    hard: Tensor
    mask: Tensor

    @property
    def mask_rate(self) -> Tensor:
        """Fraction of unlabeled rows above the confidence threshold."""
        return self.mask.mean()


def pseudo_labels(weak_logits: Tensor, temperature: float, threshold: float) -> PseudoLabels:
    """Sharpened soft labels, hard labels and the confidence mask of the weak view.

    As MPL-pytorch `main.py` (`soft_pseudo_label = softmax(t_logits_uw.detach() / T)`,
    `max_probs, hard_pseudo_label = max(soft_pseudo_label)`, `mask = max_probs.ge(threshold)`),
    and megaboost `main.py` identically: the mask is read on the sharpened probabilities of the
    weak view. (The seed's own code had no mask at all, then quoted a 0.95 threshold and read the
    mask on the strong view.)
    """
    soft = F.softmax(at_least_float32(weak_logits.detach()) / temperature, dim=-1)
    confidence, hard = soft.max(dim=-1)
    return PseudoLabels(soft=soft, hard=hard, mask=(confidence >= threshold).to(soft.dtype))


def uda_consistency(strong_logits: Tensor, labels: PseudoLabels) -> Tensor:
    """Masked consistency of the strong view with the sharpened weak view (UDA, Xie et al. 2020).

    `mean_i mask_i · KL(p̂_i ‖ softmax(strong_i))`, the mean over all unlabeled rows (masked rows
    count as zeros, as `torch.mean(... * mask)` in both reference codes). The reference codes
    write the cross-entropy `−Σ p̂ log q`; the KL differs from it by the entropy of the fixed
    target, so the gradient is the same and the logged value is 0 when the views agree.
    """
    log_strong = F.log_softmax(at_least_float32(strong_logits), dim=-1)
    target = labels.soft
    log_target = torch.log(target.clamp_min(torch.finfo(target.dtype).tiny))
    divergence = (target * (log_target - log_strong)).sum(dim=-1)
    return (divergence * labels.mask).mean()


def uda_weight(step: int, weight: float, warmup_steps: int) -> float:
    """`β_k = β_0·min(1, (k+1)/a)`: the UDA weight warmed up linearly over `a` steps.

    MPL-pytorch: `weight_u = args.lambda_u * min(1., (step + 1) / args.uda_steps)` (λ_u 8,
    uda_steps 5000 for CIFAR-10-4K); megaboost the same. `warmup_steps=0` gives `β_0` at once.
    """
    if warmup_steps <= 0:
        return weight
    return weight * min(1.0, (step + 1) / warmup_steps)


def labeled_loss_change(old: Tensor, new: Tensor, sign: RewardSign = "new_minus_old") -> Tensor:
    """The reward of the pseudo labels: how the step on them changed the labeled loss.

    `new_minus_old` is what every public code computes (MPL-pytorch and megaboost:
    `dot_product = s_loss_l_new - s_loss_l_old`); `old_minus_new` is what the first-order
    derivation gives (MPL-pytorch's comment "theoretically correct formula", issue #6; the seed
    slides derive `loss_old − loss_new = η ∇CE(θ')·∇CE_u(θ)`). Detached: a number, not a graph.
    """
    check_choice(sign, "method.reward_sign", REWARD_SIGNS)
    change = new.detach() - old.detach()
    return change if sign == "new_minus_old" else -change


def subtract_moving_baseline(average: Tensor, reward: Tensor, decay: float = 0.99) -> Tensor:
    """Update the reward's moving average in place and return `reward − average`.

    megaboost `main.py`: `moving_dot_product = moving_dot_product * 0.99 + dot_product * 0.01;
    dot_product = dot_product - moving_dot_product` (commented out in MPL-pytorch): a baseline
    that reduces the variance of the reward. megaboost starts the average from a uniform draw
    in ±√3; the caller's `average` starts at 0 here, so the first reward is not shifted by
    noise. `average` is a 0-d tensor the method keeps as a buffer (saved in checkpoints).
    """
    average.mul_(decay).add_(reward.detach().to(average.dtype), alpha=1 - decay)
    return reward - average


def meta_pseudo_label_loss(
    reward: Tensor, strong_logits: Tensor, target: MetaTarget = "hard"
) -> Tensor:
    """The teacher's meta loss `reward · CE(strong logits, their own pseudo label)`.

    MPL-pytorch and megaboost: `_, hard_pseudo_label = torch.max(t_logits_us.detach(), dim=-1);
    t_loss_mpl = dot_product * F.cross_entropy(t_logits_us, hard_pseudo_label)`: `hard`.
    `soft` uses the detached soft prediction `softmax(strong logits)` as the target instead
    (the gradient of `CE(q, sg(q))` is that of `−H(q)` at the current point: the reward scales a
    push towards or away from the model's own confident answer without committing to argmax).
    """
    check_choice(target, "method.mpl_target", META_TARGETS)
    logits = at_least_float32(strong_logits)
    log_probabilities = F.log_softmax(logits, dim=-1)
    if target == "hard":
        own = F.nll_loss(log_probabilities, logits.detach().argmax(dim=-1))
    else:
        own = -(log_probabilities.detach().exp() * log_probabilities).sum(dim=-1).mean()
    return reward.detach() * own
