"""Backbones expose per-layer features and embeddings consistent with their output."""

from __future__ import annotations

import pytest
import torch

from weaksup.nn import MLP, LeNet


@pytest.mark.parametrize(
    ("network", "inputs"),
    [
        (MLP([1, 8, 8], num_outputs=10, hidden_sizes=[32, 16]), torch.randn(4, 1, 8, 8)),
        (LeNet([1, 28, 28], num_outputs=3), torch.randn(4, 1, 28, 28)),
    ],
    ids=["mlp", "lenet"],
)
def test_features_are_the_inputs_of_each_stage_and_of_the_head(network, inputs) -> None:
    torch.manual_seed(0)
    outputs, features = network.forward_with_features(inputs)
    assert torch.equal(outputs, network(inputs))
    assert features[0] is inputs and len(features) == len(network.stages) + 1
    assert torch.equal(features[-1], network.embed(inputs))
    assert torch.allclose(network.head(features[-1]), outputs)
    assert features[-1].shape == (4, network.embedding_dim)


def test_lenet_matches_ilse_layout_and_embedding_only_mode() -> None:
    network = LeNet([1, 28, 28], num_outputs=None)
    assert network.head is None and network(torch.zeros(2, 1, 28, 28)).shape == (2, 500)
    first_dense = network.stages[1][0]
    assert (first_dense.in_features, first_dense.out_features) == (800, 500)  # 50 x 4 x 4 -> 500


@pytest.mark.parametrize("in_channels", [1, 3])
def test_lenet_channels_last_is_the_same_function_with_nhwc_weights(in_channels: int) -> None:
    torch.manual_seed(0)
    nhwc = LeNet([in_channels, 28, 28], num_outputs=2, channels_last=True)
    torch.manual_seed(0)
    nchw = LeNet([in_channels, 28, 28], num_outputs=2, channels_last=False)
    second_convolution = 3  # [50, 20, 5, 5]: the two formats differ (not so for 1 input channel)
    assert nhwc.stages[0][second_convolution].weight.is_contiguous(
        memory_format=torch.channels_last
    )
    assert not nchw.stages[0][second_convolution].weight.is_contiguous(
        memory_format=torch.channels_last
    )
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


def test_backbone_arguments_are_validated_with_the_key() -> None:
    with pytest.raises(
        ValueError, match=r"backbone.hidden_sizes must be positive widths, got \[0\]"
    ):
        MLP([2], num_outputs=2, hidden_sizes=[0])
    with pytest.raises(ValueError, match=r"backbone.dropout must be in \[0, 1\), got 1.0"):
        MLP([2], num_outputs=2, dropout=1.0)
    with pytest.raises(ValueError, match="at least 16x16, the data gives 8x8"):
        LeNet([1, 8, 8], num_outputs=2)
