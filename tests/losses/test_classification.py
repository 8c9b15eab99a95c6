"""Classification loss modules: output counts, class scores, values against references, checks."""

from __future__ import annotations

import math

import pytest
import torch

from weaksup.losses import (
    BCELoss,
    ClassificationLoss,
    CrossEntropyLoss,
    HingeLoss,
    MSELoss,
    SquaredHingeLoss,
    binary_hinge,
    multiclass_hinge,
)

ALL_LOSSES = {
    "ce": CrossEntropyLoss,
    "hinge_ww": lambda: HingeLoss(form="weston_watkins"),
    "hinge_cs": lambda: HingeLoss(form="crammer_singer"),
    "squared_hinge": SquaredHingeLoss,
    "bce": BCELoss,
    "mse": MSELoss,
}
# num_outputs(2) with the default arguments: the binary forms use one output unit.
OUTPUTS_FOR_TWO_CLASSES = {
    "ce": 2,
    "hinge_ww": 1,
    "hinge_cs": 1,
    "squared_hinge": 1,
    "bce": 1,
    "mse": 2,
}


def _outputs_and_targets(seed: int, num_samples: int, num_outputs: int, num_classes: int):
    generator = torch.Generator().manual_seed(seed)
    outputs = torch.randn(num_samples, num_outputs, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, num_classes, (num_samples,), generator=generator)
    return outputs, targets


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_num_outputs(name) -> None:
    loss = ALL_LOSSES[name]()
    assert isinstance(loss, ClassificationLoss)
    assert loss.num_outputs(2) == OUTPUTS_FOR_TWO_CLASSES[name]
    assert loss.num_outputs(5) == 5
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        loss.num_outputs(1)


@pytest.mark.parametrize("loss_class", [HingeLoss, SquaredHingeLoss, BCELoss])
def test_binary_forms_can_be_switched_off(loss_class) -> None:
    loss = loss_class(binary_when_two_classes=False)
    assert loss.num_outputs(2) == 2
    outputs, targets = _outputs_and_targets(seed=0, num_samples=6, num_outputs=2, num_classes=2)
    assert loss(outputs, targets).item() > 0
    assert loss.class_scores(outputs).shape == (6, 2)


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("num_classes", [2, 4])
def test_class_scores_shape_and_argmax(name, num_classes) -> None:
    loss = ALL_LOSSES[name]()
    num_outputs = loss.num_outputs(num_classes)
    outputs, _ = _outputs_and_targets(seed=1, num_samples=7, num_outputs=num_outputs, num_classes=2)
    scores = loss.class_scores(outputs)
    assert scores.shape == (7, num_classes)
    # Every loss here is monotone in its outputs: the predicted class is the largest output,
    # or, for one output, class 1 exactly where the output is positive.
    expected = (outputs[:, 0] > 0).long() if num_outputs == 1 else outputs.argmax(dim=1)
    assert torch.equal(scores.argmax(dim=1), expected)
    assert 0 < int(expected.sum()) < 7 * (num_classes - 1)  # not a constant prediction


def test_class_scores_are_probabilities_for_probabilistic_losses() -> None:
    outputs, _ = _outputs_and_targets(seed=2, num_samples=5, num_outputs=3, num_classes=3)
    softmax = CrossEntropyLoss().class_scores(outputs)
    torch.testing.assert_close(softmax, outputs.exp() / outputs.exp().sum(dim=1, keepdim=True))

    sigmoid = BCELoss().class_scores(outputs)
    torch.testing.assert_close(sigmoid, 1 / (1 + (-outputs).exp()))

    single, _ = _outputs_and_targets(seed=3, num_samples=5, num_outputs=1, num_classes=2)
    binary = BCELoss().class_scores(single)
    probability = 1 / (1 + (-single[:, 0]).exp())
    torch.testing.assert_close(binary, torch.stack([1 - probability, probability], dim=1))


def test_hinge_class_scores_are_raw_scores() -> None:
    single = torch.tensor([[1.5], [-0.25]])
    expected = torch.tensor([[-1.5, 1.5], [0.25, -0.25]])
    torch.testing.assert_close(HingeLoss().class_scores(single), expected)
    torch.testing.assert_close(SquaredHingeLoss().class_scores(single), expected)
    outputs = torch.tensor([[0.1, -2.0, 3.0]])
    torch.testing.assert_close(HingeLoss().class_scores(outputs), outputs)
    torch.testing.assert_close(MSELoss().class_scores(outputs), outputs)


# --- values against references ------------------------------------------------------------------


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_value_and_gradient(label_smoothing) -> None:
    outputs, targets = _outputs_and_targets(seed=4, num_samples=8, num_outputs=4, num_classes=4)
    ours_outputs = outputs.clone().requires_grad_(True)
    reference_outputs = outputs.clone().requires_grad_(True)
    ours = CrossEntropyLoss(label_smoothing=label_smoothing)(ours_outputs, targets)
    # (1 - ε) NLL + ε * mean_c(-log p_c)   (Szegedy et al. 2016, Sec. 7)
    log_probs = reference_outputs - reference_outputs.exp().sum(dim=1, keepdim=True).log()
    nll = -log_probs.gather(1, targets[:, None]).squeeze(1)
    uniform = -log_probs.mean(dim=1)
    reference = ((1 - label_smoothing) * nll + label_smoothing * uniform).mean()
    ours.backward()
    reference.backward()
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(ours_outputs.grad, reference_outputs.grad)


def test_cross_entropy_is_finite_and_exact_on_large_logits() -> None:
    outputs = torch.tensor([[1e4, 0.0, -1e4], [1e4, 0.0, -1e4]], requires_grad=True)
    loss = CrossEntropyLoss()(outputs, torch.tensor([0, 1]))
    loss.backward()
    # Sample 0 is right with certainty (loss 0); sample 1 loses the full gap of 1e4.
    torch.testing.assert_close(loss, torch.tensor(5e3))
    assert torch.isfinite(outputs.grad).all()
    torch.testing.assert_close(outputs.grad, torch.tensor([[0.0, 0.0, 0.0], [0.5, -0.5, 0.0]]))


def test_bce_single_output_value_and_gradient() -> None:
    outputs, targets = _outputs_and_targets(seed=5, num_samples=8, num_outputs=1, num_classes=2)
    ours_outputs = outputs.clone().requires_grad_(True)
    reference_outputs = outputs.clone().requires_grad_(True)
    ours = BCELoss()(ours_outputs, targets)
    probability = 1 / (1 + (-reference_outputs[:, 0]).exp())
    labels = targets.double()
    reference = -(labels * probability.log() + (1 - labels) * (1 - probability).log()).mean()
    ours.backward()
    reference.backward()
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(ours_outputs.grad, reference_outputs.grad)


def test_bce_one_vs_rest_value() -> None:
    outputs, targets = _outputs_and_targets(seed=6, num_samples=6, num_outputs=3, num_classes=3)
    probability = 1 / (1 + (-outputs).exp())
    one_hot = torch.zeros_like(outputs).scatter(1, targets[:, None], 1.0)
    reference = -(one_hot * probability.log() + (1 - one_hot) * (1 - probability).log()).mean()
    torch.testing.assert_close(BCELoss()(outputs, targets), reference)


def test_bce_is_finite_and_exact_on_large_logits() -> None:
    single = torch.tensor([[1e4], [-1e4], [1e4]], requires_grad=True)
    loss = BCELoss()(single, torch.tensor([1, 0, 0]))
    loss.backward()
    # Two confident right answers cost 0; the confident wrong one costs 1e4.
    torch.testing.assert_close(loss, torch.tensor(1e4 / 3))
    torch.testing.assert_close(single.grad, torch.tensor([[0.0], [0.0], [1 / 3]]))

    multi = torch.tensor([[1e4, -1e4, -1e4], [1e4, -1e4, -1e4]])
    torch.testing.assert_close(BCELoss()(multi, torch.tensor([0, 2])), torch.tensor(2e4 / 6))


def test_hinge_module_binary_form_matches_binary_hinge() -> None:
    outputs, targets = _outputs_and_targets(seed=7, num_samples=9, num_outputs=1, num_classes=2)
    for margin in (1.0, 0.5):
        expected = binary_hinge(outputs[:, 0], targets * 2 - 1, margin=margin)
        assert expected.item() > 0
        torch.testing.assert_close(HingeLoss(margin=margin)(outputs, targets), expected)


@pytest.mark.parametrize("margin", [1.0, 2.0])
def test_hinge_module_weston_watkins_is_num_classes_times_multi_margin_loss(margin) -> None:
    outputs, targets = _outputs_and_targets(seed=8, num_samples=9, num_outputs=4, num_classes=4)
    expected = 4 * torch.nn.MultiMarginLoss(margin=margin)(outputs, targets)
    torch.testing.assert_close(HingeLoss(margin=margin)(outputs, targets), expected)
    two_columns = outputs[:, :2]
    two_targets = targets % 2
    unbinarised = HingeLoss(margin=margin, binary_when_two_classes=False)
    torch.testing.assert_close(
        unbinarised(two_columns, two_targets),
        2 * torch.nn.MultiMarginLoss(margin=margin)(two_columns, two_targets),
    )


def test_hinge_module_crammer_singer_matches_functional_and_hand_value() -> None:
    outputs = torch.tensor([[2.0, 1.5, -1.0], [0.0, 0.2, 0.1]])
    targets = torch.tensor([0, 2])
    loss = HingeLoss(form="crammer_singer", margin=1.0)(outputs, targets)
    # row 0: 1 + 1.5 - 2 = 0.5; row 1: 1 + 0.2 - 0.1 = 1.1
    torch.testing.assert_close(loss, torch.tensor(0.8))
    torch.testing.assert_close(loss, multiclass_hinge(outputs, targets, form="crammer_singer"))


def test_squared_hinge_module_matches_multi_margin_loss_p2_and_binary_hand_value() -> None:
    outputs, targets = _outputs_and_targets(seed=9, num_samples=9, num_outputs=5, num_classes=5)
    expected = 5 * torch.nn.MultiMarginLoss(p=2, margin=0.5)(outputs, targets)
    torch.testing.assert_close(SquaredHingeLoss(margin=0.5)(outputs, targets), expected)
    single = torch.tensor([[0.5], [0.5], [-3.0]])
    # y*s = [0.5, -0.5, 3] -> squared terms [0.25, 2.25, 0], mean 2.5 / 3
    value = SquaredHingeLoss()(single, torch.tensor([1, 0, 0]))
    torch.testing.assert_close(value, torch.tensor(2.5 / 3))


def test_mse_is_least_squares_against_one_hot() -> None:
    outputs = torch.tensor([[0.5, 0.0, 1.0], [2.0, -1.0, 0.0]], requires_grad=True)
    loss = MSELoss()(outputs, torch.tensor([2, 0]))
    loss.backward()
    # residuals [[0.5, 0, 0], [1, -1, 0]] -> (0.25 + 1 + 1) / 6
    torch.testing.assert_close(loss, torch.tensor(2.25 / 6))
    torch.testing.assert_close(outputs.grad, torch.tensor([[0.5, 0, 0], [1, -1, 0]]) * 2 / 6)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_half_precision_outputs_give_float32_loss_and_half_gradients(name) -> None:
    loss = ALL_LOSSES[name]()
    outputs, targets = _outputs_and_targets(seed=10, num_samples=6, num_outputs=3, num_classes=3)
    half = outputs.to(torch.bfloat16).requires_grad_(True)
    value = loss(half, targets)
    value.backward()
    assert value.dtype == torch.float32
    assert half.grad.dtype == torch.bfloat16
    reference = loss(half.detach().double(), targets)
    torch.testing.assert_close(value.double(), reference, rtol=1e-6, atol=1e-6)


# --- checks -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("bad_targets", [[0, 3, 1], [-1, 0, 2]])
def test_out_of_range_targets_raise(name, bad_targets) -> None:
    loss = ALL_LOSSES[name]()
    low, high = min(bad_targets), max(bad_targets)
    with pytest.raises(
        ValueError, match=rf"class indices in \[0, 3\).*got min {low} and max {high}"
    ):
        loss(torch.zeros(3, 3), torch.tensor(bad_targets))


@pytest.mark.parametrize("name", ["hinge_ww", "squared_hinge", "bce"])
def test_binary_forms_reject_labels_above_one(name) -> None:
    with pytest.raises(ValueError, match=r"\[0, 2\).*max 2"):
        ALL_LOSSES[name]()(torch.zeros(3, 1), torch.tensor([0, 1, 2]))


def test_validate_targets_rejects_float_and_matrix_targets() -> None:
    with pytest.raises(TypeError, match="integer"):
        ClassificationLoss.validate_targets(torch.tensor([0.0, 1.0]), 2)
    with pytest.raises(ValueError, match=r"1-D.*\(2, 1\)"):
        ClassificationLoss.validate_targets(torch.tensor([[0], [1]]), 2)
    ClassificationLoss.validate_targets(torch.tensor([0, 1, 2], dtype=torch.int32), 3)


def test_mismatched_outputs_raise() -> None:
    with pytest.raises(ValueError, match=r"batch size.*\(4, 3\).*\(3,\)"):
        CrossEntropyLoss()(torch.zeros(4, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"needs one output per class.*\(4, 1\)"):
        CrossEntropyLoss()(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="binary_when_two_classes=True"):
        HingeLoss()(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[N, num_outputs\].*\(4,\)"):
        MSELoss().class_scores(torch.zeros(4))


@pytest.mark.parametrize(
    ("build", "error", "argument"),
    [
        (lambda: CrossEntropyLoss(label_smoothing=1.0), ValueError, "label_smoothing"),
        (lambda: CrossEntropyLoss(label_smoothing=-0.1), ValueError, "label_smoothing"),
        (lambda: CrossEntropyLoss(label_smoothing=math.nan), ValueError, "label_smoothing"),
        (lambda: HingeLoss(form="one_vs_rest"), ValueError, "form"),
        (lambda: HingeLoss(margin=-1.0), ValueError, "margin"),
        (lambda: SquaredHingeLoss(margin=math.inf), ValueError, "margin"),
        (lambda: HingeLoss(margin="1"), TypeError, "margin"),
        (lambda: BCELoss(binary_when_two_classes="yes"), TypeError, "binary_when_two_classes"),
    ],
)
def test_constructors_validate_arguments(build, error, argument) -> None:
    with pytest.raises(error, match=argument):
        build()


def test_constructor_accepts_integer_config_values() -> None:
    # YAML `margin: 2` arrives as an int.
    assert HingeLoss(margin=2).margin == 2.0
    assert "margin=2.0" in repr(HingeLoss(margin=2))


@pytest.mark.parametrize(
    ("loss", "num_outputs", "function_name"),
    [
        (HingeLoss(), 1, "BinaryHingeFunction"),
        (HingeLoss(form="weston_watkins"), 3, "WestonWatkinsHingeFunction"),
        (HingeLoss(form="crammer_singer"), 3, "CrammerSingerHingeFunction"),
    ],
)
def test_hinge_module_uses_hand_written_backward(loss, num_outputs, function_name) -> None:
    outputs, _ = _outputs_and_targets(
        seed=11, num_samples=4, num_outputs=num_outputs, num_classes=2
    )
    outputs.requires_grad_(True)
    value = loss(outputs, torch.tensor([0, 1, 1, 0]))
    assert type(value.grad_fn).__name__ == f"{function_name}Backward"
