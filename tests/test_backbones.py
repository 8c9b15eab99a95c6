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


def test_backbone_arguments_are_validated_with_the_key() -> None:
    with pytest.raises(
        ValueError, match=r"backbone.hidden_sizes must be positive widths, got \[0\]"
    ):
        MLP([2], num_outputs=2, hidden_sizes=[0])
    with pytest.raises(ValueError, match=r"backbone.dropout must be in \[0, 1\), got 1.0"):
        MLP([2], num_outputs=2, dropout=1.0)
    with pytest.raises(ValueError, match="at least 16x16, the data gives 8x8"):
        LeNet([1, 8, 8], num_outputs=2)
