"""Vectorised bag poolings against slow per-bag reference loops (values and gradients)."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from weaksup.losses.pooling import (
    AttentionPooling,
    BagSegments,
    LSEPooling,
    MaxPooling,
    MeanPooling,
    NoisyOrPooling,
    segment_softmax,
)

# Bags of size 1 and very uneven sizes.
BAG_SIZES = [1, 7, 1, 30, 2, 1, 5]


def _segments(sizes=BAG_SIZES) -> BagSegments:
    sizes = torch.tensor(sizes)
    return BagSegments.from_offsets(torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)]))


def _values(width: int, seed: int = 0, scale: float = 2.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(sum(BAG_SIZES), width, generator=generator, dtype=torch.float64) * scale
    return values.requires_grad_(True)


def _bags(values: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.split(values, BAG_SIZES))


# Obviously-correct per-bag formulas, one Python loop over bags.
def _reference_instance(name: str, bag: torch.Tensor, r: float = 5.0) -> torch.Tensor:
    if name == "max":
        return bag.max(dim=0).values
    if name == "mean":  # mean probability, as a logit
        theta = torch.sigmoid(bag).mean(dim=0)
        return torch.log(theta) - torch.log1p(-theta)
    if name == "lse":
        return torch.log(torch.exp(r * bag).mean(dim=0)) / r
    if name == "noisy_or":
        complement = torch.prod(torch.sigmoid(-bag), dim=0)  # 1 - theta, without cancellation
        return torch.log1p(-complement) - torch.log(complement)
    raise ValueError(name)


def _reference_embedding(name: str, bag: torch.Tensor, r: float = 5.0) -> torch.Tensor:
    if name == "max":
        return bag.max(dim=0).values
    if name == "mean":
        return bag.mean(dim=0)
    if name == "lse":
        return torch.log(torch.exp(r * bag).mean(dim=0)) / r
    raise ValueError(name)


POOLINGS = {
    "max": MaxPooling,
    "mean": MeanPooling,
    "lse": lambda level: LSEPooling(5.0, level),
    "noisy_or": NoisyOrPooling,
}


@pytest.mark.parametrize("name", ["max", "mean", "lse", "noisy_or"])
def test_instance_level_pooling_matches_per_bag_loop(name):
    values = _values(1)
    pooled = POOLINGS[name]("instance")(values, _segments()).pooled
    reference = torch.stack([_reference_instance(name, bag) for bag in _bags(values)])
    torch.testing.assert_close(pooled, reference)
    weights = torch.linspace(-1, 1, len(BAG_SIZES), dtype=torch.float64).unsqueeze(1)
    (grad,) = torch.autograd.grad((pooled * weights).sum(), values)
    (reference_grad,) = torch.autograd.grad((reference * weights).sum(), values)
    torch.testing.assert_close(grad, reference_grad)


@pytest.mark.parametrize("name", ["max", "mean", "lse"])
def test_embedding_level_pooling_matches_per_bag_loop(name):
    values = _values(6, seed=1)
    pooled = POOLINGS[name]("embedding")(values, _segments()).pooled
    reference = torch.stack([_reference_embedding(name, bag) for bag in _bags(values)])
    torch.testing.assert_close(pooled, reference)
    (grad,) = torch.autograd.grad(pooled.square().sum(), values)
    (reference_grad,) = torch.autograd.grad(reference.square().sum(), values)
    torch.testing.assert_close(grad, reference_grad)


@pytest.mark.parametrize("gated", [False, True])
def test_attention_pooling_matches_ilse_equations_per_bag(gated):
    torch.manual_seed(0)
    pooling = AttentionPooling(embedding_dim=6, attention_dim=4, gated=gated).double()
    values = _values(6, seed=2)
    output = pooling(values, _segments())
    pooled_reference, weight_reference = [], []
    for bag in _bags(values):
        hidden = torch.tanh(bag @ pooling.attention_V.weight.T + pooling.attention_V.bias)
        if gated:  # Ilse eq. 9
            hidden = hidden * torch.sigmoid(
                bag @ pooling.attention_U.weight.T + pooling.attention_U.bias
            )
        scores = hidden @ pooling.attention_w.weight.T + pooling.attention_w.bias  # eq. 8
        weights = torch.softmax(scores[:, 0], dim=0)
        weight_reference.append(weights)
        pooled_reference.append((weights[:, None] * bag).sum(0))
    torch.testing.assert_close(output.weights, torch.cat(weight_reference))
    torch.testing.assert_close(output.pooled, torch.stack(pooled_reference))
    (grad,) = torch.autograd.grad(output.pooled.sum(), values)
    (reference_grad,) = torch.autograd.grad(torch.stack(pooled_reference).sum(), values)
    torch.testing.assert_close(grad, reference_grad)


def test_noisy_or_hand_calculation():
    # Two bags: probabilities (0.5, 0.5) -> 1 - 0.25 = 0.75; (0.2,) -> 0.2.
    logits = torch.tensor([[0.0], [0.0], [math.log(0.2 / 0.8)]])
    pooled = NoisyOrPooling()(logits, _segments([2, 1])).pooled
    torch.testing.assert_close(torch.sigmoid(pooled).flatten(), torch.tensor([0.75, 0.2]))


def test_mean_and_lse_hand_calculation():
    logits = torch.tensor([[0.0], [math.log(3.0)]])  # probabilities 0.5, 0.75 -> mean 0.625
    segments = _segments([2])
    torch.testing.assert_close(
        torch.sigmoid(MeanPooling()(logits, segments).pooled), torch.tensor([[0.625]])
    )
    values = torch.tensor([[1.0], [3.0]])  # (1/2) log((e^2 + e^6) / 2)
    expected = 0.5 * math.log((math.exp(2) + math.exp(6)) / 2)
    torch.testing.assert_close(
        LSEPooling(r=2.0)(values, segments).pooled, torch.tensor([[expected]])
    )


@pytest.mark.parametrize(
    "pooling",
    [
        MaxPooling(),
        MeanPooling(),
        LSEPooling(),
        NoisyOrPooling(),
        MaxPooling("embedding"),
        MeanPooling("embedding"),
        LSEPooling(3.0, "embedding"),
    ],
    ids=repr,
)
def test_bag_of_one_pools_to_the_instance_itself(pooling):
    values = torch.randn(9, 1 if pooling.level == "instance" else 4, dtype=torch.float64) * 3
    pooled = pooling(values, BagSegments.singletons(9)).pooled
    torch.testing.assert_close(pooled, values)


def test_attention_bag_of_one_has_weight_one():
    pooling = AttentionPooling(embedding_dim=4, gated=True)
    values = torch.randn(5, 4)
    output = pooling(values, BagSegments.singletons(5))
    torch.testing.assert_close(output.weights, torch.ones(5))
    torch.testing.assert_close(output.pooled, values)


def test_pooling_is_permutation_invariant_within_bags():
    values = _values(1).detach()
    segments = _segments()
    offsets = torch.tensor([0, *torch.tensor(BAG_SIZES).cumsum(0).tolist()])
    permutation = torch.cat(
        [
            start + torch.randperm(stop - start, generator=torch.Generator().manual_seed(3))
            for start, stop in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)
        ]
    )
    for pooling in (MaxPooling(), MeanPooling(), LSEPooling(), NoisyOrPooling()):
        torch.testing.assert_close(
            pooling(values[permutation], segments).pooled, pooling(values, segments).pooled
        )


def test_segment_softmax_is_stable_for_huge_logits():
    logits = torch.tensor([1e4, 1e4 - 1.0, -1e4, 5e3, 5e3], requires_grad=True)
    weights = segment_softmax(logits, _segments([3, 2]))
    expected = torch.cat(
        [torch.softmax(torch.tensor([0.0, -1.0, -2e4]), 0), torch.tensor([0.5, 0.5])]
    )
    torch.testing.assert_close(weights, expected)
    weights[0].backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("pooling", [MeanPooling(), LSEPooling(), NoisyOrPooling()], ids=repr)
def test_instance_poolings_stay_finite_for_extreme_logits(pooling):
    logits = torch.tensor([[200.0], [-200.0], [-300.0], [-500.0], [80.0]], requires_grad=True)
    pooled = pooling(logits, _segments([2, 2, 1])).pooled
    assert torch.isfinite(pooled).all(), pooled
    pooled.sum().backward()
    assert torch.isfinite(logits.grad).all(), logits.grad
    # The all-negative bag stays a confident negative (noisy-OR caps it near log(1e-30) = -69),
    # the bag with a +200 instance is not negative (mean: probabilities 1 and 0 average to 0.5).
    assert pooled[1, 0] < -60 and pooled[0, 0] >= 0


def test_noisy_or_near_zero_log_complement_has_finite_gradient():
    logits = torch.tensor([[-120.0], [-150.0]], requires_grad=True)  # log(1 - theta) rounds to -0
    pooled = NoisyOrPooling()(logits, _segments([2])).pooled
    pooled.sum().backward()
    assert torch.isfinite(pooled).all() and torch.isfinite(logits.grad).all()


def test_pooling_rejects_impossible_levels_and_bad_shapes():
    with pytest.raises(
        ValueError, match=re.escape("pooling.level='embedding' is not possible for NoisyOrPooling")
    ):
        NoisyOrPooling(level="embedding")
    with pytest.raises(ValueError, match=re.escape("pooling.level='sideways'")):
        MaxPooling(level="sideways")
    with pytest.raises(ValueError, match=re.escape("pooling.r must be a finite number > 0")):
        LSEPooling(r=0.0)
    with pytest.raises(ValueError, match=r"expects instance values \[N, D\] with N = 3"):
        MaxPooling()(torch.zeros(4, 1), _segments([1, 2]))


def test_vectorised_pooling_runs_without_python_loop_over_bags():
    """10,000 bags pool in one call; the result matches the loop on a sample of them."""
    generator = torch.Generator().manual_seed(4)
    sizes = torch.randint(1, 20, (10_000,), generator=generator)
    segments = BagSegments.from_offsets(
        torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)])
    )
    logits = torch.randn(int(sizes.sum()), 1, generator=generator)
    pooled = LSEPooling()(logits, segments).pooled
    bags = torch.split(logits, sizes.tolist())
    for index in (0, 17, 9_999):
        torch.testing.assert_close(
            pooled[index], _reference_instance("lse", bags[index].double()).float()
        )
    assert F.mse_loss(pooled, pooled).item() == 0.0
