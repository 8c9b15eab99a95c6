"""Backbones expose every layer's input as a feature, on the autograd path to the output.

The multiscale inversion reconstructs level l as `ẑ_l = ∂⟨output, v⟩/∂z_l` from the features
of `forward_with_features`; these tests check that the features are the inputs of every
convolution, linear and pooling layer (shapes listed per network), that this gradient is the
Jacobian of the rest of the network at z_l (computed separately with `torch.func.jacrev`),
and that with BatchNorm on running statistics a network is exactly piecewise affine.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import pytest
import torch
from torch import Tensor, nn

from weaksup.nn import MLP, Backbone, ConvLarge, ConvSmall, LeNet, LinearEncoder
from weaksup.nn import running_batch_norm as running_batch_norm_context

LEVEL_LAYERS = (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AdaptiveAvgPool2d)
TINY_LARGE_WIDTHS = [4, 6, 8, 6, 5]  # Conv-Large's layout at a test-sized width


def _backbones() -> dict[str, tuple[Callable[[], Backbone], tuple[int, ...], list[tuple]]]:
    """name -> (builder, input shape, expected feature shapes without the batch dimension)."""
    return {
        "mlp": (
            lambda: MLP([1, 8, 8], num_outputs=10, hidden_sizes=[32, 16]),
            (1, 8, 8),
            [(1, 8, 8), (32,), (16,)],
        ),
        "linear_encoder": (lambda: LinearEncoder([2, 3], num_outputs=4), (2, 3), [(2, 3), (6,)]),
        "lenet": (
            lambda: LeNet([1, 28, 28], num_outputs=3),
            (1, 28, 28),
            [(1, 28, 28), (20, 24, 24), (20, 12, 12), (50, 8, 8), (50, 4, 4), (500,)],
        ),
        "conv_small": (
            lambda: ConvSmall([1, 28, 28], num_outputs=10),
            (1, 28, 28),
            [
                (1, 28, 28),  # conv 5x5 full
                (32, 32, 32),  # max-pool
                (32, 16, 16),  # conv 3x3 valid
                (64, 14, 14),  # conv 3x3 full
                (64, 16, 16),  # max-pool
                (64, 8, 8),  # conv 3x3 valid
                (128, 6, 6),  # conv 1x1
                (10, 6, 6),  # global mean pool
                (10,),  # head
            ],
        ),
        "conv_large": (
            lambda: ConvLarge([3, 32, 32], num_outputs=10, channels=TINY_LARGE_WIDTHS),
            (3, 32, 32),
            [
                (3, 32, 32),  # three 'same' 3x3 convolutions
                (4, 32, 32),
                (4, 32, 32),
                (4, 32, 32),  # max-pool
                (4, 16, 16),  # three 'same' 3x3 convolutions
                (6, 16, 16),
                (6, 16, 16),
                (6, 16, 16),  # max-pool
                (6, 8, 8),  # conv 3x3 valid
                (8, 6, 6),  # conv 1x1
                (6, 6, 6),  # conv 1x1
                (5, 6, 6),  # global mean pool
                (5,),  # head
            ],
        ),
    }


BACKBONES = _backbones()


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_features_are_the_inputs_of_each_stage_and_of_the_head(name: str) -> None:
    build, shape, _ = BACKBONES[name]
    torch.manual_seed(0)
    network = build().eval()
    inputs = torch.randn(4, *shape)
    outputs, features = network.forward_with_features(inputs)
    assert torch.equal(outputs, network(inputs))
    assert features[0] is inputs and len(features) == len(network.stages) + 1
    for stage, (before, after) in zip(network.stages, pairwise(features), strict=False):
        torch.testing.assert_close(stage(before), after, rtol=0, atol=0)
    assert torch.equal(features[-1], network.embed(inputs))
    assert torch.allclose(network.head(features[-1]), outputs)
    assert features[-1].shape == (4, network.embedding_dim)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_convolution_linear_and_pooling_layer_is_a_level(name: str) -> None:
    build, shape, expected_shapes = BACKBONES[name]
    network = build()
    _, features = network.forward_with_features(torch.randn(2, *shape))
    assert [tuple(feature.shape[1:]) for feature in features] == expected_shapes
    for index, stage in enumerate(network.stages):
        layers = [type(m).__name__ for m in stage.modules() if isinstance(m, LEVEL_LAYERS)]
        assert len(layers) == 1, f"stage {index} holds {layers}"


def _tail(network: Backbone, level: int, hidden: Tensor) -> Tensor:
    """The network from level `level` on: what the feature `features[level]` feeds."""
    for stage in network.stages[level:]:
        hidden = stage(hidden)
    return network.head(hidden)


@pytest.mark.parametrize(
    ("build", "shape"),
    [
        (lambda: MLP([5], 3, hidden_sizes=[7, 6], activation="leaky_relu"), (5,)),
        (lambda: LeNet([1, 16, 16], 3, channels=[2, 3], embedding_dim=5), (1, 16, 16)),
        (lambda: ConvSmall([1, 12, 12], 3, channels=[2, 3, 3, 4, 3]), (1, 12, 12)),
        (lambda: ConvLarge([2, 12, 12], 3, channels=[2, 3, 4, 3, 2]), (2, 12, 12)),
    ],
    ids=["mlp", "lenet", "conv_small", "conv_large"],
)
def test_one_backward_pass_gives_every_level_its_jacobian_template(build, shape) -> None:
    """`∂⟨output, v⟩/∂features[l]` of example i is `J_l(z_l[i])ᵀ v_i`, J_l the rest's Jacobian."""
    torch.manual_seed(0)
    network = build().double().eval()
    inputs = torch.randn(3, *shape, dtype=torch.float64, requires_grad=True)  # level 0 too
    outputs, features = network.forward_with_features(inputs)
    directions = torch.randn_like(outputs)
    templates = torch.autograd.grad((outputs * directions).sum(), features)
    for level, (feature, template) in enumerate(zip(features, templates, strict=True)):
        for example in range(len(inputs)):
            jacobian = torch.func.jacrev(lambda z, level=level: _tail(network, level, z[None])[0])(
                feature[example].detach()
            )
            expected = torch.tensordot(directions[example], jacobian, dims=1)
            torch.testing.assert_close(template[example], expected, rtol=1e-10, atol=1e-12)
            assert template[example].abs().sum() > 0, f"level {level} gets no gradient"


def _tiny_conv_small_with_trained_statistics() -> ConvSmall:
    """A float64 Conv-Small whose BatchNorm statistics and affine parameters are not trivial."""
    torch.manual_seed(1)
    network = ConvSmall([1, 12, 12], num_outputs=3, channels=[3, 4, 4, 5, 3]).double()
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
    with torch.no_grad():
        for _ in range(3):  # training-mode passes move the running statistics
            network(torch.randn(16, 1, 12, 12, dtype=torch.float64) * 2 + 0.5)
    return network


def test_with_batch_norm_in_eval_mode_the_network_is_exactly_piecewise_affine() -> None:
    """logits = J(x)·x + b on x's region: the same J and b reproduce a nearby input's logits."""
    network = _tiny_conv_small_with_trained_statistics().eval()
    torch.manual_seed(2)
    example = torch.randn(1, 12, 12, dtype=torch.float64)
    nearby = example + 1e-7 * torch.randn_like(example)  # small enough to stay in the region

    def logits(x: Tensor) -> Tensor:
        return network(x[None])[0]

    jacobian = torch.func.jacrev(logits)(example)
    offset = logits(example) - torch.tensordot(jacobian, example, dims=3)
    affine = torch.tensordot(jacobian, nearby, dims=3) + offset
    torch.testing.assert_close(logits(nearby), affine, rtol=0, atol=1e-13)
    torch.testing.assert_close(torch.func.jacrev(logits)(nearby), jacobian, rtol=0, atol=1e-13)
    assert offset.abs().max() > 1e-3  # a real offset b: BatchNorm's shift is in it


def test_with_batch_statistics_the_example_jacobian_moves_with_the_example() -> None:
    """Training mode: the batch mean and deviation depend on x, so J(x) is not locally constant."""
    network = _tiny_conv_small_with_trained_statistics().train()
    torch.manual_seed(2)
    others = torch.randn(3, 1, 12, 12, dtype=torch.float64)
    example = torch.randn(1, 12, 12, dtype=torch.float64)
    nearby = example + 1e-7 * torch.randn_like(example)

    def logits_in_batch(x: Tensor) -> Tensor:
        return network(torch.cat([x[None], others]))[0]

    moved = torch.autograd.functional.jacobian(
        logits_in_batch, nearby
    ) - torch.autograd.functional.jacobian(logits_in_batch, example)
    assert moved.abs().max() > 1e-10  # eval mode: below 1e-13 (test above)
    with running_batch_norm_context(network):
        frozen = torch.autograd.functional.jacobian(
            logits_in_batch, nearby
        ) - torch.autograd.functional.jacobian(logits_in_batch, example)
    assert frozen.abs().max() < 1e-13


def test_running_batch_norm_freezes_statistics_and_restores_every_mode() -> None:
    torch.manual_seed(0)
    network = ConvLarge([1, 12, 12], num_outputs=3, channels=[2, 3, 4, 3, 2], dropout=0.5)
    network.train()
    norms = [m for m in network.modules() if isinstance(m, nn.BatchNorm2d)]
    dropouts = [m for m in network.modules() if isinstance(m, nn.Dropout)]
    assert len(norms) == 9 and len(dropouts) == 2
    statistics = [norm.running_mean.clone() for norm in norms]
    images = torch.randn(4, 1, 12, 12)
    with running_batch_norm_context(network):
        assert not any(norm.training for norm in norms)
        assert all(dropout.training for dropout in dropouts)  # dropout keeps its mode
        network(images)
    for norm, before in zip(norms, statistics, strict=True):
        assert torch.equal(norm.running_mean, before)
    assert all(module.training for module in network.modules())
    network(images)
    assert not torch.equal(norms[0].running_mean, statistics[0])  # outside: statistics move


def _two_stage_lenet(in_channels: int, num_outputs: int) -> Backbone:
    """LeNet as it was before every layer became a stage (the layout old checkpoints hold)."""
    convolutions = nn.Sequential(
        nn.Conv2d(in_channels, 20, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(20, 50, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    dense = nn.Sequential(nn.Linear(800, 500), nn.ReLU())
    return Backbone([convolutions, dense], embedding_dim=500, num_outputs=num_outputs)


@pytest.mark.parametrize("channels_last", [True, False])
def test_a_two_stage_lenet_state_dict_loads_into_the_per_layer_lenet(channels_last: bool) -> None:
    torch.manual_seed(0)
    old = _two_stage_lenet(1, num_outputs=3)
    assert {"stages.0.0.weight", "stages.0.3.weight", "stages.1.0.weight"} <= set(old.state_dict())
    # Nested as in a method's checkpoint (`backbone.` prefix), strict loading.
    new = nn.ModuleDict({"backbone": LeNet([1, 28, 28], 3, channels_last=channels_last)})
    new.load_state_dict(nn.ModuleDict({"backbone": old}).state_dict())
    images = torch.randn(5, 1, 28, 28)
    torch.testing.assert_close(new["backbone"](images), old(images), rtol=1e-6, atol=1e-6)
    assert new["backbone"].stages[2][0].weight.data_ptr() != old.stages[0][3].weight.data_ptr()
    torch.testing.assert_close(new["backbone"].stages[2][0].weight, old.stages[0][3].weight)
    torch.testing.assert_close(new["backbone"].stages[4][1].weight, old.stages[1][0].weight)


def test_lenet_draws_the_initial_weights_of_the_two_stage_layout() -> None:
    """Same seed, same weights, same function: seeded runs and reproductions do not change."""
    torch.manual_seed(3)
    old = _two_stage_lenet(1, num_outputs=2)
    torch.manual_seed(3)
    new = LeNet([1, 28, 28], num_outputs=2, channels_last=False)
    for a, b in zip(old.parameters(), new.parameters(), strict=True):
        assert torch.equal(a, b)
    images = torch.randn(4, 1, 28, 28)
    assert torch.equal(new(images), old(images))


def test_a_current_lenet_state_dict_round_trips_and_wrong_keys_still_fail() -> None:
    torch.manual_seed(0)
    source, target = LeNet([1, 28, 28], 3), LeNet([1, 28, 28], 3)
    target.load_state_dict(source.state_dict())
    images = torch.randn(2, 1, 28, 28)
    assert torch.equal(target(images), source(images))
    with pytest.raises(RuntimeError, match=r'Unexpected key\(s\) in state_dict: "stages.9.weight"'):
        target.load_state_dict({**source.state_dict(), "stages.9.weight": torch.zeros(1)})


@pytest.mark.parametrize("in_channels", [1, 3])
def test_lenet_channels_last_is_the_same_function_with_nhwc_weights(in_channels: int) -> None:
    torch.manual_seed(0)
    nhwc = LeNet([in_channels, 28, 28], num_outputs=2, channels_last=True)
    torch.manual_seed(0)
    nchw = LeNet([in_channels, 28, 28], num_outputs=2, channels_last=False)
    second_convolution = nhwc.stages[2][0]  # [50, 20, 5, 5]: the formats differ (not so for c=1)
    assert second_convolution.weight.is_contiguous(memory_format=torch.channels_last)
    assert not nchw.stages[2][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert nhwc.state_dict().keys() == nchw.state_dict().keys()  # checkpoints load either way
    for (name, a), b in zip(nhwc.named_parameters(), nchw.parameters(), strict=True):
        assert torch.equal(a, b), name
    images = torch.randn(6, in_channels, 28, 28)
    outputs_nhwc, outputs_nchw = nhwc(images), nchw(images)
    torch.testing.assert_close(outputs_nhwc, outputs_nchw, rtol=1e-5, atol=1e-5)
    outputs_nhwc.square().sum().backward()
    outputs_nchw.square().sum().backward()
    for (name, a), b in zip(nhwc.named_parameters(), nchw.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_lenet_matches_ilse_layout_and_embedding_only_mode() -> None:
    network = LeNet([1, 28, 28], num_outputs=None)
    assert network.head is None and network(torch.zeros(2, 1, 28, 28)).shape == (2, 500)
    first_dense = network.stages[4][1]
    assert (first_dense.in_features, first_dense.out_features) == (800, 500)  # 50 x 4 x 4 -> 500


def test_conv_nets_follow_the_papers_layouts_without_batch_norm_too() -> None:
    small = ConvSmall([1, 28, 28], num_outputs=10)
    convolutions = [m for m in small.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.padding[0]) for c in convolutions] == [
        (32, 5, 4),
        (64, 3, 0),
        (64, 3, 2),
        (128, 3, 0),
        (10, 1, 0),
    ]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in small.modules()) == 5
    assert all(c.bias is None for c in convolutions)  # BatchNorm's β is the bias
    plain = ConvLarge([3, 32, 32], num_outputs=10, batch_norm=False, channels=TINY_LARGE_WIDTHS)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert all(m.bias is not None for m in plain.modules() if isinstance(m, nn.Conv2d))
    slopes = {m.negative_slope for m in plain.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.1}
    assert [m.p for m in plain.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]


def test_linear_encoder_is_one_affine_layer_of_the_input_width() -> None:
    encoder = LinearEncoder([2, 3])
    assert encoder.embedding_dim == 6 and encoder.head is None
    layer = encoder.stages[0][1]
    inputs = torch.randn(4, 2, 3)
    torch.testing.assert_close(encoder(inputs), inputs.flatten(1) @ layer.weight.T + layer.bias)


def test_backbone_arguments_are_validated_with_the_key() -> None:
    with pytest.raises(
        ValueError, match=r"backbone.hidden_sizes must be positive widths, got \[0\]"
    ):
        MLP([2], num_outputs=2, hidden_sizes=[0])
    with pytest.raises(ValueError, match=r"backbone.dropout must be in \[0, 1\), got 1.0"):
        MLP([2], num_outputs=2, dropout=1.0)
    with pytest.raises(ValueError, match="at least 16x16, the data gives 8x8"):
        LeNet([1, 8, 8], num_outputs=2)
    with pytest.raises(ValueError, match=r"backbone.embedding_dim must be positive, got 0"):
        LinearEncoder([4], embedding_dim=0)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: ConvSmall([40], num_outputs=2),
            r"backbone=conv_small needs image inputs \[channels, height, width\], "
            r"the data gives \(40,\)",
        ),
        (
            lambda: ConvSmall([1, 7, 28], num_outputs=2),
            "backbone=conv_small needs images of at least 8x8, the data gives 7x28; "
            "use backbone=mlp for small images",
        ),
        (
            lambda: ConvLarge([1, 8, 8], num_outputs=2),
            "backbone=conv_large needs images of at least 12x12, the data gives 8x8",
        ),
        (
            lambda: ConvLarge([3, 32], num_outputs=2),
            r"backbone=conv_large needs image inputs .* the data gives \(3, 32\)",
        ),
        (
            lambda: LeNet([784], num_outputs=2),
            r"backbone=lenet needs image inputs \[channels, height, width\], "
            r"the data gives \(784,\)",
        ),
        (
            lambda: ConvSmall([1, 28, 28], channels=[32, 64]),
            r"backbone.channels of backbone=conv_small must list five positive widths, "
            r"got \[32, 64\]",
        ),
        (
            lambda: ConvLarge([1, 28, 28], channels=[8, 8, 8, 0, 8]),
            r"backbone=conv_large must list five positive widths, got \[8, 8, 8, 0, 8\]",
        ),
        (
            lambda: ConvLarge([1, 28, 28], dropout=1.5),
            r"backbone.dropout must be in \[0, 1\), got 1.5",
        ),
        (
            lambda: ConvLarge([1, 28, 28], negative_slope=-0.1),
            "backbone.negative_slope must be >= 0, got -0.1",
        ),
    ],
    ids=[
        "1d-conv-small",
        "7-rows",
        "8x8-conv-large",
        "2d-conv-large",
        "1d-lenet",
        "two-widths",
        "zero-width",
        "dropout",
        "slope",
    ],
)
def test_conv_nets_reject_inputs_they_cannot_take(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_the_smallest_accepted_images_run() -> None:
    assert ConvSmall([1, 8, 8], num_outputs=2).eval()(torch.zeros(1, 1, 8, 8)).shape == (1, 2)
    large = ConvLarge([1, 12, 12], num_outputs=2, channels=TINY_LARGE_WIDTHS).eval()
    assert large(torch.zeros(1, 1, 12, 12)).shape == (1, 2)
