"""Inversion loss: autograd templates against explicit Jacobians, term values, switches, checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from weaksup.losses import (
    MultiscaleInversionLoss,
    default_entropy_weight,
    default_reconstruction_weights,
    entropy_from_logits,
    reconstructions,
)
from weaksup.losses.inversion import sigmoid_rampup
from weaksup.nn import MLP, Backbone
from weaksup.nn.backbones import ConvolutionStage

NUM_CLASSES = 3


def _mlp(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP(input_shape=(5,), num_outputs=NUM_CLASSES, hidden_sizes=(7, 6)).double()


def _conv_net(seed: int = 0) -> Backbone:
    """Conv (channels-last) -> max-pool -> conv + BatchNorm + ReLU: 4 levels on 1x10x10 images."""
    torch.manual_seed(seed)
    stages = [
        ConvolutionStage(nn.Conv2d(1, 3, kernel_size=3), nn.ReLU(), channels_last=True),
        nn.Sequential(nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(3, 4, kernel_size=3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten()),
    ]
    return Backbone(stages, embedding_dim=16, num_outputs=NUM_CLASSES).double()


def _logits_from_level(backbone: Backbone, level: int, hidden: torch.Tensor) -> torch.Tensor:
    """Run the network from the input of `level` (stages, then the head) on a batch."""
    for stage in backbone.stages[level:]:
        hidden = stage(hidden)
    return backbone.head(hidden)


def _probabilities(num_rows: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_rows, NUM_CLASSES, generator=generator, dtype=torch.float64).softmax(1)


def _assert_templates_match_jacobians(backbone: Backbone, inputs: torch.Tensor) -> None:
    logits, features = backbone.forward_with_features(inputs.requires_grad_())
    targets = _probabilities(inputs.shape[0], seed=3)
    templates = reconstructions(logits, features, targets)
    assert len(templates) == len(features) == len(backbone.stages) + 1
    for level, (feature, template) in enumerate(zip(features, templates, strict=True)):
        assert template.shape == feature.shape
        for row in range(inputs.shape[0]):

            def logits_of_one(hidden: torch.Tensor, level: int = level) -> torch.Tensor:
                return _logits_from_level(backbone, level, hidden.unsqueeze(0)).squeeze(0)

            jacobian = torch.func.jacrev(logits_of_one)(feature[row].detach())
            assert jacobian.shape == (NUM_CLASSES, *feature.shape[1:])
            expected = torch.tensordot(targets[row], jacobian, dims=1)  # J_l(x)ᵀ ŷ
            assert expected.abs().max() > 1e-3  # a live region, not a dead one
            torch.testing.assert_close(template[row], expected, rtol=1e-10, atol=1e-12)


def test_templates_equal_explicit_jacobians_for_a_relu_mlp() -> None:
    inputs = torch.randn(4, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    _assert_templates_match_jacobians(_mlp(), inputs)


def test_templates_equal_explicit_jacobians_for_a_conv_net_with_pooling_and_batchnorm() -> None:
    backbone = _conv_net()
    with torch.no_grad():  # non-trivial running statistics, then eval: BatchNorm is per-example
        backbone.stages[2][1].running_mean.uniform_(-0.5, 0.5)
        backbone.stages[2][1].running_var.uniform_(0.5, 2.0)
    backbone.eval()
    generator = torch.Generator().manual_seed(2)
    inputs = torch.randn(3, 1, 10, 10, generator=generator, dtype=torch.float64)
    _assert_templates_match_jacobians(backbone, inputs)


def test_templates_keep_their_graph_only_when_asked() -> None:
    backbone = _mlp()
    inputs = torch.randn(2, 5, dtype=torch.float64).requires_grad_()
    logits, features = backbone.forward_with_features(inputs)
    targets = _probabilities(2, seed=0)
    trained = reconstructions(logits, features, targets)
    assert all(template.requires_grad for template in trained)
    logits, features = backbone.forward_with_features(inputs)
    pictures = reconstructions(logits, features, targets, create_graph=False)
    assert not any(template.requires_grad for template in pictures)
    for kept, plain in zip(trained, pictures, strict=True):
        torch.testing.assert_close(kept.detach(), plain)


def test_reconstructions_name_what_is_wrong() -> None:
    backbone = _mlp()
    inputs = torch.randn(2, 5, dtype=torch.float64)
    logits, features = backbone.forward_with_features(inputs)
    targets = _probabilities(2, seed=0)
    with pytest.raises(ValueError, match=r"features\[0\] does not require grad"):
        reconstructions(logits, features, targets)
    inputs.requires_grad_()
    logits, features = backbone.forward_with_features(inputs)
    unrelated = torch.randn(2, 7, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ValueError, match=r"features\[1\] is not on the autograd path"):
        reconstructions(logits, [features[0], unrelated], targets)
    with pytest.raises(ValueError, match="target_probabilities of the same shape"):
        reconstructions(logits, features, targets[:, :2])
    with torch.no_grad(), pytest.raises(RuntimeError, match="need autograd"):
        reconstructions(logits, features, targets)


def _batch(seed: int, example_shape: tuple[int, ...], labeled: int = 3, unlabeled: int = 6):
    generator = torch.Generator().manual_seed(seed)
    labeled_inputs = torch.randn(labeled, *example_shape, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, NUM_CLASSES, (labeled,), generator=generator)
    unlabeled_inputs = torch.randn(
        unlabeled, *example_shape, generator=generator, dtype=torch.float64
    )
    return labeled_inputs, targets, unlabeled_inputs


@pytest.mark.parametrize(
    ("make_backbone", "example_shape"), [(_mlp, (5,)), (_conv_net, (1, 10, 10))]
)
def test_every_term_is_finite_and_every_parameter_gets_a_gradient(
    make_backbone, example_shape
) -> None:
    backbone = make_backbone()  # training mode: the conv net's BatchNorm uses batch statistics
    terms = MultiscaleInversionLoss()(backbone, *_batch(0, example_shape))
    num_levels = len(backbone.stages) + 1
    level_keys = {f"reconstruction_l{level}" for level in range(num_levels)}
    assert set(terms) == {"loss", "ce", "entropy", "reconstruction"} | level_keys
    for name, value in terms.items():
        assert value.dim() == 0 and torch.isfinite(value), name
        assert value > 0, name
    terms["loss"].backward()
    for name, parameter in backbone.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().max() > 0, name


def test_the_reconstruction_term_alone_trains_the_first_layer_through_the_templates() -> None:
    # Single scale: the target z_0 = x holds no parameter, so a gradient on the first layer can
    # only come through the template x̂ = A[x]ᵀ ŷ, i.e. through create_graph=True.
    backbone = _mlp()
    loss = MultiscaleInversionLoss(ce_weight=0.0, entropy_weight=0.0, scales="input")
    terms = loss(backbone, *_batch(1, (5,)))
    assert set(terms) == {"loss", "reconstruction", "reconstruction_l0"}
    terms["loss"].backward()
    first_layer = backbone.stages[0][1]
    assert isinstance(first_layer, nn.Linear)
    assert first_layer.weight.grad is not None
    assert torch.isfinite(first_layer.weight.grad).all()
    assert first_layer.weight.grad.abs().max() > 1e-6
    assert backbone.head.weight.grad.abs().max() > 1e-6


def test_entropy_of_saturated_logits_is_finite_with_finite_gradients() -> None:
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], requires_grad=True)
    entropy = entropy_from_logits(logits)
    torch.testing.assert_close(entropy.detach(), torch.tensor([0.0, math.log(2.0)]))
    entropy.sum().backward()
    assert torch.isfinite(logits.grad).all()
    # The naive form takes log(0) and gives nan: what log_softmax avoids.
    probabilities = logits.detach().softmax(1)
    assert torch.isnan(-(probabilities * probabilities.log()).sum(1)).any()


def test_saturated_logits_give_a_finite_loss_through_the_module() -> None:
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 1e4, -1e4]])
    logits.requires_grad_()
    terms = MultiscaleInversionLoss(reconstruction_weights=0).terms(logits, torch.tensor([0]))
    assert all(torch.isfinite(value) for value in terms.values())
    terms["loss"].backward()
    assert torch.isfinite(logits.grad).all()


def test_default_weights_are_one_over_log_c_and_one_over_l_times_d() -> None:
    assert default_entropy_weight(NUM_CLASSES) == pytest.approx(1 / math.log(3))
    assert default_reconstruction_weights([5, 7, 6]) == pytest.approx([1 / 15, 1 / 21, 1 / 18])
    loss = MultiscaleInversionLoss()
    assert loss.level_weights([5, 7, 6]) == pytest.approx([1 / 15, 1 / 21, 1 / 18])
    terms = loss(_mlp(), *_batch(2, (5,)))
    expected_reconstruction = (
        terms["reconstruction_l0"] / 15
        + terms["reconstruction_l1"] / 21
        + terms["reconstruction_l2"] / 18
    )
    torch.testing.assert_close(terms["reconstruction"], expected_reconstruction)
    torch.testing.assert_close(
        terms["loss"], terms["ce"] + terms["entropy"] / math.log(3) + expected_reconstruction
    )


def test_explicit_weights_replace_the_defaults() -> None:
    loss = MultiscaleInversionLoss(ce_weight=2.0, entropy_weight=0.5, reconstruction_weights=0.1)
    terms = loss(_mlp(), *_batch(2, (5,)))
    levels = sum(terms[f"reconstruction_l{level}"] for level in range(3))
    torch.testing.assert_close(terms["reconstruction"], 0.1 * levels)
    torch.testing.assert_close(
        terms["loss"], 2.0 * terms["ce"] + 0.5 * terms["entropy"] + 0.1 * levels
    )


def test_reconstruction_scale_multiplies_the_default_and_the_given_weights() -> None:
    sizes = [5, 8, 8]  # the levels of _mlp(): its input and two hidden layers
    defaults = default_reconstruction_weights(sizes)
    scaled = MultiscaleInversionLoss(reconstruction_scale=100.0).level_weights(sizes)
    assert scaled == pytest.approx([100.0 * weight for weight in defaults])
    given = MultiscaleInversionLoss(reconstruction_weights=[1, 2, 3], reconstruction_scale=0.5)
    assert given.level_weights(sizes) == [0.5, 1.0, 1.5]
    batch = _batch(2, (5,))
    plain = MultiscaleInversionLoss()(_mlp(), *batch)
    strong = MultiscaleInversionLoss(reconstruction_scale=100.0)(_mlp(), *batch)
    torch.testing.assert_close(strong["reconstruction"], 100.0 * plain["reconstruction"])
    off = MultiscaleInversionLoss(reconstruction_scale=0)
    assert not off.uses_reconstruction and "reconstruction" not in off(_mlp(), *batch)
    with pytest.raises(ValueError, match="reconstruction_scale must be finite and >= 0"):
        MultiscaleInversionLoss(reconstruction_scale=-1)


def test_single_scale_reconstructs_the_input_only() -> None:
    batch = _batch(3, (5,))
    multiscale = MultiscaleInversionLoss()(_mlp(), *batch)
    single = MultiscaleInversionLoss(scales="input")(_mlp(), *batch)
    assert set(single) == {"loss", "ce", "entropy", "reconstruction", "reconstruction_l0"}
    assert {"reconstruction_l1", "reconstruction_l2"} <= set(multiscale)
    # Same network and batch: the input level's error is the same, its weight 1/(1·5), not 1/(3·5).
    torch.testing.assert_close(single["reconstruction_l0"], multiscale["reconstruction_l0"])
    torch.testing.assert_close(single["reconstruction"], single["reconstruction_l0"] / 5)
    torch.testing.assert_close(single["ce"], multiscale["ce"])


class _CountingMLP(MLP):
    """The project MLP, recording which forward was called and on how many rows."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__(input_shape=(5,), num_outputs=NUM_CLASSES, hidden_sizes=(7, 6))
        self.double()
        self.calls: list[tuple[str, int]] = []

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self.calls.append(("forward", inputs.shape[0]))
        return super().forward(inputs)

    def forward_with_features(self, inputs: torch.Tensor):
        self.calls.append(("forward_with_features", inputs.shape[0]))
        return super().forward_with_features(inputs)


def test_zero_weights_skip_their_terms_and_the_work_behind_them() -> None:
    labeled, targets, unlabeled = _batch(4, (5,), labeled=3, unlabeled=6)

    entropy_only = _CountingMLP()
    terms = MultiscaleInversionLoss(reconstruction_weights=0)(
        entropy_only, labeled, targets, unlabeled
    )
    assert set(terms) == {"loss", "ce", "entropy"}
    assert entropy_only.calls == [("forward", 9)]  # no features, no gradient call
    assert not labeled.requires_grad and not unlabeled.requires_grad

    supervised_only = _CountingMLP()
    loss = MultiscaleInversionLoss(entropy_weight=0, reconstruction_weights=0)
    assert not loss.uses_unlabeled
    terms = loss(supervised_only, labeled, targets, unlabeled)
    assert set(terms) == {"loss", "ce"}
    assert supervised_only.calls == [("forward", 3)]  # the unlabeled batch is not forwarded
    torch.testing.assert_close(terms["loss"], terms["ce"])
    assert set(loss(supervised_only, labeled, targets)) == {"loss", "ce"}

    one_level = _CountingMLP()
    terms = MultiscaleInversionLoss(reconstruction_weights=[0, 0.25, 0])(
        one_level, labeled, targets, unlabeled
    )
    assert {key for key in terms if key.startswith("reconstruction_")} == {"reconstruction_l1"}
    torch.testing.assert_close(terms["reconstruction"], 0.25 * terms["reconstruction_l1"])
    assert one_level.calls == [("forward_with_features", 9)]


def test_hand_computed_loss() -> None:
    # x -> h = relu(W1 x) -> logits = W2 h, no biases; one labeled row, one unlabeled row.
    backbone = MLP(input_shape=(2,), num_outputs=2, hidden_sizes=(2,)).double()
    with torch.no_grad():
        backbone.stages[0][1].weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 1.0]]))
        backbone.stages[0][1].bias.zero_()
        backbone.head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        backbone.head.bias.zero_()
    labeled = torch.tensor([[1.0, 2.0]], dtype=torch.float64)  # h = (3, 2), logits (3, 4), label 1
    unlabeled = torch.tensor([[2.0, -1.0]], dtype=torch.float64)  # h = (1, 0), logits (1, 0)
    terms = MultiscaleInversionLoss()(backbone, labeled, torch.tensor([1]), unlabeled)

    e = math.e
    p = e / (1 + e)  # softmax (p, 1 - p) of the unlabeled logits (1, 0): its ŷ
    ce = math.log(e**3 + e**4) - 4
    entropy = math.log(1 + e) - p
    # Level 1 (h): template W2ᵀ ŷ = (ŷ0, 2 ŷ1); labeled ŷ = (0, 1), unlabeled ŷ = (p, 1 - p).
    level_1 = ((3 - 0) ** 2 + (2 - 2) ** 2 + (1 - p) ** 2 + (0 - 2 * (1 - p)) ** 2) / 2
    # Level 0 (x): template W1ᵀ (relu mask ⊙ W2ᵀ ŷ); W1ᵀ (a, b) = (a, a + b).
    # labeled: mask (1, 1), W1ᵀ (0, 2) = (0, 2); unlabeled: mask (1, 0), W1ᵀ (p, 0) = (p, p).
    level_0 = ((1 - 0) ** 2 + (2 - 2) ** 2 + (2 - p) ** 2 + (-1 - p) ** 2) / 2
    # Defaults: β_E = 1/log 2; L = 2 levels of D = 2 values, so β_R = 1/4 for both.
    expected = {
        "ce": ce,
        "entropy": entropy,
        "reconstruction_l0": level_0,
        "reconstruction_l1": level_1,
        "reconstruction": (level_0 + level_1) / 4,
        "loss": ce + entropy / math.log(2) + (level_0 + level_1) / 4,
    }
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert terms[name].item() == pytest.approx(value, rel=1e-12), name
    assert terms["loss"].item() == pytest.approx(3.0242562, rel=1e-7)


def test_unlabeled_scale_multiplies_the_entropy_and_reconstruction_terms_only() -> None:
    backbone = _mlp()
    labeled, targets, unlabeled = _batch(3, (5,))
    loss = MultiscaleInversionLoss()
    full = loss(backbone.double(), labeled, targets, unlabeled)
    scaled = loss(backbone, labeled, targets, unlabeled, unlabeled_scale=0.25)
    for name in full:  # the logged terms are the unscaled ones
        if name != "loss":
            torch.testing.assert_close(scaled[name], full[name])
    unsupervised = full["entropy"] / math.log(NUM_CLASSES) + full["reconstruction"]
    torch.testing.assert_close(scaled["loss"], full["ce"] + 0.25 * unsupervised)
    zero = loss(backbone, labeled, targets, unlabeled, unlabeled_scale=0.0)
    torch.testing.assert_close(zero["loss"], full["ce"])
    with pytest.raises(ValueError, match="unlabeled_scale must be a finite number >= 0, got -1"):
        loss(backbone, labeled, targets, unlabeled, unlabeled_scale=-1)


def test_sigmoid_rampup_is_the_pi_models_gaussian_curve() -> None:
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(100, 100) == sigmoid_rampup(10**6, 100) == 1.0
    assert sigmoid_rampup(0, 0) == 1.0  # no ramp-up
    values = [sigmoid_rampup(step, 40) for step in range(41)]
    assert values == sorted(values)
    with pytest.raises(ValueError, match="ramp-up length must be >= 0 steps, got -3"):
        sigmoid_rampup(1, -3)


def test_argmax_templates_use_the_predicted_class() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0], [3.0, 1.0, 0.0], [0.0, 1.0, 0.5]])
    targets = torch.tensor([0])
    argmax = MultiscaleInversionLoss(unlabeled_template="argmax").template_targets(logits, targets)
    expected = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    torch.testing.assert_close(argmax, expected)
    soft = MultiscaleInversionLoss().template_targets(logits, targets)
    torch.testing.assert_close(soft[0], expected[0])  # labeled rows: their label, never the guess
    torch.testing.assert_close(soft[1:], logits[1:].softmax(1))


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"scales": "all"}, ValueError, "scales must be one of"),
        ({"unlabeled_template": "soft"}, ValueError, "unlabeled_template must be one of"),
        ({"ce_weight": -1.0}, ValueError, "ce_weight must be finite and >= 0"),
        ({"entropy_weight": math.nan}, ValueError, "entropy_weight must be finite"),
        ({"reconstruction_weights": [1.0, -2.0]}, ValueError, r"reconstruction_weights\[1\]"),
        ({"reconstruction_weights": "auto"}, TypeError, "reconstruction_weights must be null"),
        ({"ce_weight": True}, TypeError, "ce_weight must be a real number"),
        (
            {"ce_weight": 0, "entropy_weight": 0, "reconstruction_weights": 0},
            ValueError,
            "every term is switched off",
        ),
    ],
)
def test_bad_arguments_are_named(arguments, error, message) -> None:
    with pytest.raises(error, match=message):
        MultiscaleInversionLoss(**arguments)


def test_bad_calls_are_named() -> None:
    labeled, targets, unlabeled = _batch(5, (5,))
    with pytest.raises(ValueError, match="lists 2 weights but the backbone exposes 3 levels"):
        MultiscaleInversionLoss(reconstruction_weights=[1.0, 1.0])(
            _mlp(), labeled, targets, unlabeled
        )
    with pytest.raises(ValueError, match="unlabeled_inputs is required"):
        MultiscaleInversionLoss()(_mlp(), labeled, targets)
    with pytest.raises(ValueError, match="labeled and unlabeled examples differ in shape"):
        MultiscaleInversionLoss()(_mlp(), labeled, targets, unlabeled[:, :4])
    with pytest.raises(ValueError, match=r"targets must be class indices in \[0, 3\)"):
        MultiscaleInversionLoss()(_mlp(), labeled, targets + 3, unlabeled)
    with pytest.raises(ValueError, match="the entropy term needs unlabeled rows"):
        MultiscaleInversionLoss(reconstruction_weights=0).terms(
            torch.zeros(3, NUM_CLASSES), targets
        )
    with pytest.raises(ValueError, match="the reconstruction term needs the features"):
        MultiscaleInversionLoss().terms(torch.zeros(5, NUM_CLASSES), targets)
