"""The pseudo-label losses (`weaksup.losses.pseudo_labels`): the seed's pitfalls done right."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from weaksup.losses.pseudo_labels import (
    labeled_loss_change,
    meta_pseudo_label_loss,
    pseudo_labels,
    smoothed_cross_entropy,
    subtract_moving_baseline,
    uda_consistency,
    uda_weight,
)

SATURATED = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0], [0.0, 0.0, 1e4]])


def test_every_loss_is_finite_with_saturated_logits() -> None:
    """`log(softmax)` gives 0·(−inf) = nan on ±1e4 logits (the seed's NaN): log_softmax does not."""
    strong = (SATURATED.flip(0)).clone().requires_grad_(True)
    labels = pseudo_labels(SATURATED, temperature=0.7, threshold=0.6)
    terms = [
        uda_consistency(strong, labels),
        smoothed_cross_entropy(strong, labels.hard, 0.15),
        meta_pseudo_label_loss(torch.tensor(0.3), strong, "hard"),
        meta_pseudo_label_loss(torch.tensor(0.3), strong, "soft"),
    ]
    for term in terms:
        (gradient,) = torch.autograd.grad(term, strong)
        assert torch.isfinite(term.detach()), term
        assert torch.isfinite(gradient).all()
    # The naive form of the seed's code is not finite here: the test would catch a regression.
    naive = -(F.softmax(SATURATED, 1) * torch.log(F.softmax(strong, 1))).sum(1).mean()
    assert not torch.isfinite(naive)


def test_mask_keeps_only_confident_rows_of_the_sharpened_weak_view() -> None:
    weak = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05], [0.34, 0.33, 0.33]]))
    labels = pseudo_labels(weak, temperature=1.0, threshold=0.6)
    assert labels.mask.tolist() == [0.0, 1.0, 0.0]
    assert labels.hard.tolist() == [0, 0, 0]
    sharpened = pseudo_labels(weak, temperature=0.25, threshold=0.6)
    assert sharpened.mask.tolist() == [1.0, 1.0, 0.0]  # 0.5/0.3 sharpened passes 0.6
    assert float(sharpened.mask_rate) == pytest.approx(2 / 3)
    assert not labels.soft.requires_grad


def test_masked_rows_do_not_contribute_and_agreeing_views_cost_nothing() -> None:
    weak = torch.tensor([[4.0, 0.0], [0.1, 0.0]])
    labels = pseudo_labels(weak, temperature=1.0, threshold=0.9)
    assert labels.mask.tolist() == [1.0, 0.0]
    strong = torch.tensor([[0.0, 4.0], [-50.0, 50.0]], requires_grad=True)
    loss = uda_consistency(strong, labels)
    (gradient,) = torch.autograd.grad(loss, strong)
    assert gradient[1].abs().sum() == 0  # masked row: no gradient
    p = F.softmax(weak[0], 0)
    expected = (p * (p.log() - F.log_softmax(strong[0].detach(), 0))).sum() / 2
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert float(uda_consistency(weak.clone(), labels)) == pytest.approx(0.0, abs=1e-6)


def test_uda_weight_warms_up_linearly() -> None:
    assert uda_weight(0, 8.0, 4) == pytest.approx(2.0)
    assert uda_weight(1, 8.0, 4) == pytest.approx(4.0)
    assert uda_weight(3, 8.0, 4) == pytest.approx(8.0)
    assert uda_weight(100, 8.0, 4) == pytest.approx(8.0)
    assert uda_weight(0, 8.0, 0) == 8.0


def test_reward_sign_switch() -> None:
    old, new = torch.tensor(0.9), torch.tensor(0.7)
    assert float(labeled_loss_change(old, new, "new_minus_old")) == pytest.approx(-0.2)
    assert float(labeled_loss_change(old, new, "old_minus_new")) == pytest.approx(0.2)
    with pytest.raises(ValueError, match=r"method\.reward_sign must be one of"):
        labeled_loss_change(old, new, "minus")  # type: ignore[arg-type]


def test_moving_baseline_subtracts_the_running_mean() -> None:
    average = torch.zeros(())
    first = subtract_moving_baseline(average, torch.tensor(1.0), decay=0.9)
    assert float(average) == pytest.approx(0.1)
    assert float(first) == pytest.approx(0.9)
    second = subtract_moving_baseline(average, torch.tensor(1.0), decay=0.9)
    assert float(average) == pytest.approx(0.19)
    assert float(second) == pytest.approx(0.81)


def test_meta_loss_hard_and_soft_targets() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]], requires_grad=True)
    hard = meta_pseudo_label_loss(torch.tensor(2.0), logits, "hard")
    expected = 2.0 * F.cross_entropy(logits.detach(), torch.tensor([0, 2]))
    assert float(hard.detach()) == pytest.approx(float(expected))
    soft = meta_pseudo_label_loss(torch.tensor(1.0), logits, "soft")
    probabilities = F.softmax(logits.detach(), 1)
    entropy = -(probabilities * probabilities.log()).sum(1).mean()
    assert float(soft.detach()) == pytest.approx(float(entropy), rel=1e-5)
    # A negative reward pushes away from the own answer: the sign reaches the gradient.
    (up,) = torch.autograd.grad(meta_pseudo_label_loss(torch.tensor(1.0), logits, "hard"), logits)
    (down,) = torch.autograd.grad(
        meta_pseudo_label_loss(torch.tensor(-1.0), logits, "hard"), logits
    )
    assert torch.allclose(up, -down)
    with pytest.raises(ValueError, match=r"method\.mpl_target must be one of hard, soft"):
        meta_pseudo_label_loss(torch.tensor(1.0), logits, "argmax")  # type: ignore[arg-type]


def test_label_smoothing_matches_the_formula() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.5]])
    target = torch.tensor([1])
    log_p = F.log_softmax(logits, 1)[0]
    expected = -(0.85 * log_p[1] + 0.05 * log_p.sum())
    assert float(smoothed_cross_entropy(logits, target, 0.15)) == pytest.approx(float(expected))
    assert math.isclose(
        float(smoothed_cross_entropy(logits, target, 0.0)), float(-log_p[1]), rel_tol=1e-6
    )
