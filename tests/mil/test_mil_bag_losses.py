"""Bag losses against hand calculations; label checks."""

from __future__ import annotations

import math

import pytest
import torch

from weaksup.losses.bag import BagBCELoss, BagHingeLoss, BagLogLoss, BagSquaredLoss

LOGITS = torch.tensor([0.0, math.log(3.0), -2.0, 1.5], dtype=torch.float64)
LABELS = torch.tensor([1, 0, 0, 1])


def test_bce_hand_calculation():
    # theta = 0.5, 0.75, sigmoid(-2), sigmoid(1.5)
    expected = (
        -(
            math.log(0.5)
            + math.log(0.25)
            + math.log(1 - 1 / (1 + math.exp(2)))
            + math.log(1 / (1 + math.exp(-1.5)))
        )
        / 4
    )
    torch.testing.assert_close(
        BagBCELoss()(LOGITS, LABELS), torch.tensor(expected, dtype=torch.float64)
    )


def test_bce_is_stable_where_ilse_clamps():
    # Their code clamps theta to [1e-5, 1 - 1e-5] (loss <= 11.5); from logits the loss is exact.
    loss = BagBCELoss()(torch.tensor([100.0, -100.0]), torch.tensor([0, 1]))
    torch.testing.assert_close(loss, torch.tensor(100.0))
    logits = torch.tensor([100.0], requires_grad=True)
    BagBCELoss()(logits, torch.tensor([0])).backward()
    torch.testing.assert_close(logits.grad, torch.tensor([1.0]))


def test_seed_squared_form_hand_calculation():
    expected = (
        (0.5 - 1) ** 2
        + 0.75**2
        + (1 / (1 + math.exp(2))) ** 2
        + (1 / (1 + math.exp(-1.5)) - 1) ** 2
    ) / 4
    torch.testing.assert_close(
        BagSquaredLoss()(LOGITS, LABELS), torch.tensor(expected, dtype=torch.float64)
    )


def test_seed_log_form_counts_positive_bags_only_and_is_stable():
    expected = -(math.log(0.5) + math.log(1 / (1 + math.exp(-1.5)))) / 4
    torch.testing.assert_close(
        BagLogLoss()(LOGITS, LABELS), torch.tensor(expected, dtype=torch.float64)
    )
    # Negative bags add nothing (as in the seed's E(b) * log(max o)).
    assert BagLogLoss()(torch.tensor([50.0, -50.0]), torch.tensor([0, 0])).item() == 0.0
    # log(sigmoid(-200)) = -200, not -inf.
    torch.testing.assert_close(
        BagLogLoss()(torch.tensor([-200.0]), torch.tensor([1])), torch.tensor(200.0)
    )


def test_bag_hinge_hand_calculation_and_hand_written_gradient():
    # y = +1, -1, -1, +1; slack = max(0, 1 - y s) = 1, 1 + log 3, 0 (-2: 1 - 2 < 0), 0
    logits = LOGITS.clone().requires_grad_(True)
    loss = BagHingeLoss(margin=1.0)(logits, LABELS)
    torch.testing.assert_close(loss, torch.tensor((1 + 1 + math.log(3.0)) / 4, dtype=torch.float64))
    loss.backward()
    torch.testing.assert_close(
        logits.grad, torch.tensor([-0.25, 0.25, 0.0, 0.0], dtype=torch.float64)
    )
    assert logits.grad_fn is None and loss.grad_fn.name() == "BinaryHingeFunctionBackward"


@pytest.mark.parametrize(
    "loss", [BagBCELoss(), BagSquaredLoss(), BagLogLoss(), BagHingeLoss()], ids=repr
)
def test_losses_accept_bx1_logits_and_reject_bad_labels(loss):
    torch.testing.assert_close(loss(LOGITS[:, None], LABELS), loss(LOGITS, LABELS))
    with pytest.raises(ValueError, match=r"bag_labels must be 0 or 1 .*bag 2 has label 2"):
        loss(LOGITS, torch.tensor([1, 0, 2, -1]))
    with pytest.raises(TypeError, match="integer tensor of 0/1 labels"):
        loss(LOGITS, LABELS.float())
    with pytest.raises(ValueError, match=r"expected bag_logits \[B\] and bag_labels \[B\]"):
        loss(LOGITS, LABELS[:3])
    with pytest.raises(ValueError, match="zero bags"):
        loss(LOGITS[:0], LABELS[:0])


def test_hinge_margin_is_checked():
    with pytest.raises(ValueError, match="margin must be finite and >= 0"):
        BagHingeLoss(margin=-1.0)
