"""Hinge losses: values and hand-written gradients against hand calculations and slow references."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from weaksup.losses import (
    BinaryHingeFunction,
    CrammerSingerHingeFunction,
    WestonWatkinsHingeFunction,
    binary_hinge,
    binary_squared_hinge,
    multiclass_hinge,
    multiclass_squared_hinge,
)

KINK_CLEARANCE = 1e-3


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _binary_inputs(seed: int, num_samples: int = 12, margin: float = 1.0):
    generator = _generator(seed)
    scores = torch.randn(num_samples, generator=generator, dtype=torch.float64) * 2
    signed_targets = torch.randint(0, 2, (num_samples,), generator=generator).double() * 2 - 1
    assert (margin - signed_targets * scores).abs().min() > KINK_CLEARANCE
    return scores, signed_targets


def _multiclass_inputs(seed: int, num_samples: int = 8, num_classes: int = 4):
    generator = _generator(seed)
    scores = torch.randn(num_samples, num_classes, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, num_classes, (num_samples,), generator=generator)
    return scores, targets


def _assert_away_from_multiclass_kinks(scores, targets, margin: float) -> None:
    """No hinge term at its kink and no tie between the two highest rivals."""
    target_scores = scores.gather(1, targets[:, None])
    is_rival = torch.ones_like(scores, dtype=torch.bool).scatter(1, targets[:, None], False)
    slack = (margin - target_scores + scores)[is_rival]
    assert slack.abs().min() > KINK_CLEARANCE
    rival_scores = scores.masked_fill(~is_rival, float("-inf")).sort(dim=1, descending=True).values
    assert (rival_scores[:, 0] - rival_scores[:, 1]).min() > KINK_CLEARANCE


def _weston_watkins_reference(scores, targets, margin):
    """Plain-torch Weston-Watkins, differentiated by autograd."""
    slack = (margin - scores.gather(1, targets[:, None]) + scores).clamp_min(0)
    is_rival = torch.ones_like(scores, dtype=torch.bool).scatter(1, targets[:, None], False)
    return (slack * is_rival).sum() / scores.shape[0]


def _crammer_singer_loop(scores, targets, margin):
    """Slow per-sample Crammer-Singer, differentiated by autograd."""
    per_sample = []
    for row, target in zip(scores, targets.tolist(), strict=True):
        rivals = torch.stack([row[j] for j in range(row.shape[0]) if j != target])
        per_sample.append(torch.clamp(margin + rivals.max() - row[target], min=0))
    return torch.stack(per_sample).mean()


# --- binary hinge -------------------------------------------------------------------------------


def test_binary_hinge_matches_hand_calculation() -> None:
    scores = torch.tensor([2.0, 0.5, -0.3, -1.5, 0.0], requires_grad=True)
    targets = torch.tensor([1, 1, 1, -1, -1])
    # y*p = [2, 0.5, -0.3, 1.5, 0] -> hinge terms [0, 0.5, 1.3, 0, 1], mean 2.8 / 5.
    loss = binary_hinge(scores, targets)
    loss.backward()
    torch.testing.assert_close(loss, torch.tensor(0.56))
    torch.testing.assert_close(scores.grad, torch.tensor([0.0, -0.2, -0.2, 0.0, 0.2]))


def test_binary_hinge_margin_is_configurable() -> None:
    scores = torch.tensor([2.0, 0.5, -1.5], requires_grad=True)
    targets = torch.tensor([1, -1, -1])
    # margin 3: y*p = [2, -0.5, 1.5] -> hinge terms [1, 3.5, 1.5], mean 6 / 3; all active.
    loss = binary_hinge(scores, targets, margin=3.0)
    loss.backward()
    torch.testing.assert_close(loss, torch.tensor(2.0))
    torch.testing.assert_close(scores.grad, torch.tensor([-1.0, 1.0, 1.0]) / 3)


def test_binary_hinge_gradient_is_zero_at_the_kink() -> None:
    # The seed's subgradient uses a strict `<`: y*p == margin is inactive.
    scores = torch.tensor([1.0, -2.0], requires_grad=True)
    binary_hinge(scores, torch.tensor([1, 1]), margin=1.0).backward()
    torch.testing.assert_close(scores.grad, torch.tensor([0.0, -0.5]))


def test_binary_hinge_matches_numpy_transcription_of_seed_answer() -> None:
    scores, signed_targets = _binary_inputs(seed=0, num_samples=50)
    pred, true = scores.numpy(), signed_targets.numpy()
    expected_loss = np.sum(np.maximum(0, 1 - pred * true) / pred.size)
    expected_grad = np.where(pred * true < 1, -true / pred.size, 0)
    assert 0 < np.count_nonzero(expected_grad) < pred.size  # both branches exercised

    scores.requires_grad_(True)
    loss = binary_hinge(scores, signed_targets.long())
    loss.backward()
    np.testing.assert_allclose(loss.item(), expected_loss, rtol=1e-12)
    np.testing.assert_allclose(scores.grad.numpy(), expected_grad, rtol=1e-12, atol=0)


def test_binary_hinge_zero_one_and_signed_labels_agree() -> None:
    scores, signed_targets = _binary_inputs(seed=1)
    zero_one_targets = ((signed_targets + 1) / 2).long()
    results = []
    for targets in (signed_targets.long(), zero_one_targets, zero_one_targets.bool()):
        leaf = scores.clone().requires_grad_(True)
        loss = binary_hinge(leaf, targets)
        loss.backward()
        results.append((loss.detach(), leaf.grad))
    for loss, grad in results[1:]:
        torch.testing.assert_close(loss, results[0][0], rtol=0, atol=0)
        torch.testing.assert_close(grad, results[0][1], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("labels", "reported"),
    [([0, 2, 1], r"got values \[2\]"), ([-1, 0, 1], "got both 0 and -1"), ([0.5, 1.0], r"0\.5")],
)
def test_binary_hinge_rejects_bad_labels(labels, reported) -> None:
    scores = torch.zeros(len(labels))
    with pytest.raises(ValueError, match=reported) as error:
        binary_hinge(scores, torch.tensor(labels))
    assert "{0, 1}" in str(error.value) and "{-1, +1}" in str(error.value)


@pytest.mark.parametrize(
    ("scores_shape", "targets_shape"), [((4, 1), (4,)), ((4,), (5,)), ((4,), (4, 1))]
)
def test_binary_hinge_rejects_wrong_shapes(scores_shape, targets_shape) -> None:
    expected = f"scores {scores_shape} and targets {targets_shape}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        binary_hinge(torch.zeros(scores_shape), torch.ones(targets_shape, dtype=torch.long))


@pytest.mark.parametrize("margin", [-0.5, float("nan")])
def test_hinge_rejects_bad_margin(margin) -> None:
    with pytest.raises(ValueError, match="margin"):
        binary_hinge(torch.zeros(2), torch.tensor([0, 1]), margin=margin)
    with pytest.raises(ValueError, match="margin"):
        multiclass_hinge(torch.zeros(2, 3), torch.tensor([0, 1]), margin=margin)


def test_binary_function_gives_no_gradient_to_targets() -> None:
    scores, signed_targets = _binary_inputs(seed=2)
    scores.requires_grad_(True)
    signed_targets.requires_grad_(True)
    BinaryHingeFunction.apply(scores, signed_targets, 1.0).backward()
    assert signed_targets.grad is None
    assert scores.grad is not None and scores.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_scores_are_computed_in_float32(dtype) -> None:
    scores, signed_targets = _binary_inputs(seed=3)
    low = scores.to(dtype).requires_grad_(True)
    loss = binary_hinge(low, signed_targets.long())
    loss.backward()
    assert loss.dtype == torch.float32
    assert low.grad.dtype == dtype
    reference = scores.to(dtype).double().requires_grad_(True)
    reference_loss = binary_hinge(reference, signed_targets.long())
    reference_loss.backward()
    torch.testing.assert_close(loss.double(), reference_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(low.grad, reference.grad.to(dtype))

    multi_scores, targets = _multiclass_inputs(seed=3)
    multi_low = multi_scores.to(dtype).requires_grad_(True)
    multi_loss = multiclass_hinge(multi_low, targets)
    multi_loss.backward()
    assert multi_loss.dtype == torch.float32 and multi_low.grad.dtype == dtype


# --- gradcheck of the hand-written backward passes ----------------------------------------------


@pytest.mark.parametrize("margin", [1.0, 0.5])
def test_binary_function_gradcheck(margin) -> None:
    scores, signed_targets = _binary_inputs(seed=4, margin=margin)
    scores.requires_grad_(True)
    assert torch.autograd.gradcheck(BinaryHingeFunction.apply, (scores, signed_targets, margin))


@pytest.mark.parametrize(
    "function", [WestonWatkinsHingeFunction, CrammerSingerHingeFunction], ids=["ww", "cs"]
)
@pytest.mark.parametrize("margin", [1.0, 0.3])
def test_multiclass_function_gradcheck(function, margin) -> None:
    scores, targets = _multiclass_inputs(seed=5)
    _assert_away_from_multiclass_kinks(scores, targets, margin)
    scores.requires_grad_(True)
    assert torch.autograd.gradcheck(function.apply, (scores, targets, margin))


# --- multiclass values and gradients against references -----------------------------------------


@pytest.mark.parametrize("margin", [1.0, 0.5, 2.0])
def test_weston_watkins_is_num_classes_times_multi_margin_loss(margin) -> None:
    scores, targets = _multiclass_inputs(seed=6, num_samples=10, num_classes=5)
    _assert_away_from_multiclass_kinks(scores, targets, margin)
    ours_scores = scores.clone().requires_grad_(True)
    torch_scores = scores.clone().requires_grad_(True)
    ours = multiclass_hinge(ours_scores, targets, form="weston_watkins", margin=margin)
    theirs = 5 * torch.nn.MultiMarginLoss(margin=margin)(torch_scores, targets)
    ours.backward()
    theirs.backward()
    assert ours.item() > 0
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ours_scores.grad, torch_scores.grad)


def test_weston_watkins_hand_calculation() -> None:
    scores = torch.tensor([[2.0, 1.5, -1.0], [0.0, 0.2, 0.1]], requires_grad=True)
    targets = torch.tensor([0, 2])
    # row 0 (y=0): rivals 1 - 2 + 1.5 = 0.5, 1 - 2 - 1 = -2 -> 0.5
    # row 1 (y=2): rivals 1 - 0.1 + 0 = 0.9, 1 - 0.1 + 0.2 = 1.1 -> 2.0; mean 2.5 / 2
    loss = multiclass_hinge(scores, targets)
    loss.backward()
    torch.testing.assert_close(loss, torch.tensor(1.25))
    expected_grad = torch.tensor([[-1.0, 1.0, 0.0], [1.0, 1.0, -2.0]]) / 2
    torch.testing.assert_close(scores.grad, expected_grad)


def test_crammer_singer_hand_calculation() -> None:
    scores = torch.tensor([[2.0, 1.5, -1.0], [0.0, 0.2, 0.1], [3.0, 0.0, 0.0]], requires_grad=True)
    targets = torch.tensor([0, 2, 0])
    # row 0: 1 + 1.5 - 2 = 0.5 (rival 1); row 1: 1 + 0.2 - 0.1 = 1.1 (rival 1); row 2: inactive.
    loss = multiclass_hinge(scores, targets, form="crammer_singer")
    loss.backward()
    torch.testing.assert_close(loss, torch.tensor(1.6 / 3))
    expected_grad = torch.tensor([[-1.0, 1.0, 0.0], [0.0, 1.0, -1.0], [0.0, 0.0, 0.0]]) / 3
    torch.testing.assert_close(scores.grad, expected_grad)


@pytest.mark.parametrize("margin", [1.0, 0.25])
def test_crammer_singer_matches_per_sample_loop(margin) -> None:
    scores, targets = _multiclass_inputs(seed=7, num_samples=9, num_classes=4)
    _assert_away_from_multiclass_kinks(scores, targets, margin)
    ours_scores = scores.clone().requires_grad_(True)
    loop_scores = scores.clone().requires_grad_(True)
    ours = multiclass_hinge(ours_scores, targets, form="crammer_singer", margin=margin)
    reference = _crammer_singer_loop(loop_scores, targets, margin)
    # A non-unit upstream gradient checks that backward scales by grad_output.
    (2.5 * ours).backward()
    (2.5 * reference).backward()
    assert ours.item() > 0
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(ours_scores.grad, loop_scores.grad)


@pytest.mark.parametrize("margin", [1.0, 0.25])
def test_weston_watkins_function_gradient_matches_plain_torch_autograd(margin) -> None:
    scores, targets = _multiclass_inputs(seed=8)
    _assert_away_from_multiclass_kinks(scores, targets, margin)
    ours_scores = scores.clone().requires_grad_(True)
    reference_scores = scores.clone().requires_grad_(True)
    ours = WestonWatkinsHingeFunction.apply(ours_scores, targets, margin)
    reference = _weston_watkins_reference(reference_scores, targets, margin)
    (-3.0 * ours).backward()
    (-3.0 * reference).backward()
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(ours_scores.grad, reference_scores.grad)


def test_binary_function_gradient_matches_plain_torch_autograd() -> None:
    scores, signed_targets = _binary_inputs(seed=9)
    ours_scores = scores.clone().requires_grad_(True)
    reference_scores = scores.clone().requires_grad_(True)
    ours = BinaryHingeFunction.apply(ours_scores, signed_targets, 1.0)
    reference = (1 - signed_targets * reference_scores).clamp_min(0).mean()
    (0.5 * ours).backward()
    (0.5 * reference).backward()
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(ours_scores.grad, reference_scores.grad)


@pytest.mark.parametrize("form", ["weston_watkins", "crammer_singer"])
def test_two_class_multiclass_hinge_equals_binary_hinge_on_score_difference(form) -> None:
    scores, signed_targets = _binary_inputs(seed=10)
    two_column = torch.stack([torch.zeros_like(scores), scores], dim=1)
    class_targets = ((signed_targets + 1) / 2).long()
    torch.testing.assert_close(
        multiclass_hinge(two_column, class_targets, form=form),
        binary_hinge(scores, signed_targets.long()),
    )


def test_multiclass_hinge_rejects_out_of_range_targets() -> None:
    with pytest.raises(
        ValueError, match=r"targets must be class indices in \[0, 3\).*got min 0 and max 3"
    ):
        multiclass_hinge(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"in \[0, 3\).*got min -1 and max 1"):
        multiclass_hinge(torch.zeros(2, 3), torch.tensor([-1, 1]), form="crammer_singer")


def test_multiclass_hinge_rejects_bad_shapes_dtypes_and_form() -> None:
    with pytest.raises(ValueError, match=r"scores \(6,\) and targets \(6,\)"):
        multiclass_hinge(torch.zeros(6), torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"scores \(3, 4\) and targets \(2,\)"):
        multiclass_hinge(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        multiclass_hinge(torch.zeros(2, 4), torch.zeros(2))
    with pytest.raises(ValueError, match="form must be one of"):
        multiclass_hinge(torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), form="ovr")


# --- squared variants ---------------------------------------------------------------------------


@pytest.mark.parametrize("margin", [1.0, 0.5])
def test_multiclass_squared_hinge_is_num_classes_times_multi_margin_loss_p2(margin) -> None:
    scores, targets = _multiclass_inputs(seed=11, num_samples=10, num_classes=5)
    ours_scores = scores.clone().requires_grad_(True)
    torch_scores = scores.clone().requires_grad_(True)
    ours = multiclass_squared_hinge(ours_scores, targets, margin=margin)
    theirs = 5 * torch.nn.MultiMarginLoss(p=2, margin=margin)(torch_scores, targets)
    ours.backward()
    theirs.backward()
    assert ours.item() > 0
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ours_scores.grad, torch_scores.grad)


def test_binary_squared_hinge_hand_calculation() -> None:
    scores = torch.tensor([2.0, 0.5, -0.3, 0.0], requires_grad=True)
    # y*p = [2, 0.5, -0.3, 0] -> terms [0, 0.25, 1.69, 1], mean 2.94 / 4
    loss = binary_squared_hinge(scores, torch.tensor([1, 1, 1, 0]))
    loss.backward()
    torch.testing.assert_close(loss, torch.tensor(0.735))
    # d/dp = -2 y max(0, 1 - y p) / N
    torch.testing.assert_close(scores.grad, torch.tensor([0.0, -0.25, -0.65, 0.5]))
