"""Unit tests of `weaksup.losses.minmax` against hand calculations and a NumPy transcription of the post."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from weaksup.losses.minmax import (
    DISTANCES,
    MinMaxLoss,
    as_multi_hot,
    assume_negative_bce,
    class_spread,
    full_minmax_terms,
    paired_distance,
    pairwise_distance,
    project_class_embeddings,
    sample_negative_classes,
    sampled_minmax_terms,
    soft_target_cross_entropy,
    spread_penalty,
)

A = torch.tensor([[3.0, 4.0]])
B = torch.tensor([[4.0, -3.0]])


def _kl_by_hand() -> float:
    # softmax([3, 4]) = [σ(-1), σ(1)]; softmax([4, -3]) = [σ(7), σ(-7)]
    def sigmoid(v: float) -> float:
        return 1 / (1 + math.exp(-v))

    p = [sigmoid(-1), sigmoid(1)]
    q = [sigmoid(7), sigmoid(-7)]
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


@pytest.mark.parametrize(
    ("distance", "expected"),
    [
        ("cosine", 1.0),  # cos = (12 - 12) / 25 = 0
        ("l2", 50.0),  # (3-4)^2 + (4+3)^2
        ("l1", 8.0),  # |3-4| + |4+3|
        ("kl", _kl_by_hand()),
    ],
)
def test_paired_distance_by_hand(distance: str, expected: float) -> None:
    assert paired_distance(A, B, distance).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("distance", DISTANCES)
def test_pairwise_distance_matches_paired(distance: str) -> None:
    generator = torch.Generator().manual_seed(0)
    first, second = torch.randn(4, 3, generator=generator), torch.randn(5, 3, generator=generator)
    table = pairwise_distance(first, second, distance)
    for n in range(4):
        for m in range(5):
            expected = paired_distance(first[n : n + 1], second[m : m + 1], distance)
            assert table[n, m].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)


def test_kl_is_not_symmetric_and_zero_on_equal_rows() -> None:
    assert paired_distance(A, A, "kl").item() == pytest.approx(0.0, abs=1e-7)
    assert paired_distance(A, B, "kl").item() != pytest.approx(paired_distance(B, A, "kl").item())


CLASS_TABLE = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])


@pytest.mark.parametrize(
    ("distance", "expected"),
    [
        ("cosine", 8.0),  # D01 = 1, D02 = 2, D12 = 1; ordered pairs: 2 * 4
        ("l2", 16.0),  # 2, 4, 2 -> 2 * 8
        ("l1", 12.0),  # 2, 2, 2 -> 2 * 6
    ],
)
def test_class_spread_by_hand(distance: str, expected: float) -> None:
    assert class_spread(CLASS_TABLE, distance).item() == pytest.approx(expected)


def test_full_form_by_hand() -> None:
    features = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tags = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # sample 1 carries both tags
    cosine = full_minmax_terms(features, table, tags, "cosine")
    # pull: D(f0,E0)=0, D(f1,E0)=1, D(f1,E1)=0 over N=2; push: mean of D(E0,E1)=D(E1,E0)=1
    assert cosine["pull"].item() == pytest.approx(0.5)
    assert cosine["push"].item() == pytest.approx(1.0)
    l2 = full_minmax_terms(features, table, tags, "l2")
    # pull: 0 + (1 + 4) + (0 + 1) over 2; push: ||E0 - E1||^2 = 2
    assert l2["pull"].item() == pytest.approx(3.0)
    assert l2["push"].item() == pytest.approx(2.0)
    l1 = full_minmax_terms(features, table, tags, "l1")
    assert l1["pull"].item() == pytest.approx((0 + 3 + 1) / 2)
    assert l1["push"].item() == pytest.approx(2.0)
    kl = full_minmax_terms(features, table, tags, "kl")
    expected_pull = (
        paired_distance(features[1:], table[:1], "kl")
        + paired_distance(features[1:], table[1:], "kl")
    ) / 2  # D(f0, E0) = 0: same softmax
    assert kl["pull"].item() == pytest.approx(expected_pull.item(), rel=1e-6)
    loss = MinMaxLoss(
        distance="l2", form="full", push_weight=0.5, constraint="projection", constraint_bound=10.0
    )
    assert loss(features, table, tags)["loss"].item() == pytest.approx(3.0 - 0.5 * 2.0)


def test_sampled_form_by_hand() -> None:
    features = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    tags = torch.tensor([0, 1])
    negatives = torch.tensor([2, 0])
    terms = sampled_minmax_terms(features, CLASS_TABLE, tags, negatives, "cosine")
    # pull: cos(f0, E0) = 1, cos(f1, E1) = 1/sqrt 2; push: cos(E2, E0) = -1, cos(E0, E1) = 0
    assert terms["pull"].item() == pytest.approx(((1 - 1) ** 2 + (2**-0.5 - 1) ** 2) / 2)
    assert terms["push"].item() == pytest.approx(((-1 + 1) ** 2 + (0 + 1) ** 2) / 2)
    scaled = sampled_minmax_terms(
        features,
        CLASS_TABLE,
        tags,
        negatives,
        "cosine",
        pull_target=2.0,
        push_target=-3.0,
        similarity_scale=2.0,
    )
    assert scaled["pull"].item() == pytest.approx(((2 - 2) ** 2 + (2 * 2**-0.5 - 2) ** 2) / 2)
    assert scaled["push"].item() == pytest.approx(((-2 + 3) ** 2 + (0 + 3) ** 2) / 2)
    l2 = sampled_minmax_terms(features, CLASS_TABLE, tags, negatives, "l2", 0.0, -4.0)
    # similarities -D: pull -0 and -(1 + 0) ; push -4 and -2
    assert l2["pull"].item() == pytest.approx((0 + 1) / 2)
    assert l2["push"].item() == pytest.approx((0 + 4) / 2)


def test_sampled_form_multi_hot_uses_every_tag_pair() -> None:
    features = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    tags = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])  # pairs (0,0) (0,1) (1,1)
    negatives = torch.tensor([2, 2, 0])
    terms = sampled_minmax_terms(features, CLASS_TABLE, tags, negatives, "cosine")
    pulls = [1.0, 0.0, 2**-0.5]  # cos(f0,E0), cos(f0,E1), cos(f1,E1)
    pushes = [-1.0, 0.0, 0.0]  # cos(E2,E0), cos(E2,E1), cos(E0,E1)
    assert terms["pull"].item() == pytest.approx(np.mean([(p - 1) ** 2 for p in pulls]))
    assert terms["push"].item() == pytest.approx(np.mean([(p + 1) ** 2 for p in pushes]))


def _post_numpy(x, w, b, table, y, other):
    """The post's Keras model, transcribed: Dense, Embedding, two Dot(normalize=True) outputs, MSE each."""
    feat = x @ w + b
    cls = table[y]
    oth = table[other]
    cls_feat_output = np.sum(feat * cls, axis=1) / (
        np.linalg.norm(feat, axis=1) * np.linalg.norm(cls, axis=1)
    )
    cls_oth_output = np.sum(oth * cls, axis=1) / (
        np.linalg.norm(oth, axis=1) * np.linalg.norm(cls, axis=1)
    )
    cls_feat_loss = np.mean((cls_feat_output - np.ones(len(x))) ** 2)
    cls_oth_loss = np.mean((cls_oth_output - -np.ones(len(x))) ** 2)
    return cls_feat_loss, cls_oth_loss


def _post_get_score(x_encoded, table):
    """The post's `get_score`: sigmoid(5 cos) > 0.5 for every label."""
    dot = np.array(
        [
            [5.0 * np.dot(e, x) / (np.linalg.norm(x) * np.linalg.norm(e)) for e in table]
            for x in x_encoded
        ]
    )
    return 1 / (1 + np.exp(-dot)) > 0.5


def test_sampled_form_matches_numpy_transcription_of_the_post() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 2))
    w, b = rng.normal(size=(2, 2)), rng.normal(size=2)
    table = rng.uniform(-0.05, 0.05, size=(2, 2))
    y = rng.integers(0, 2, size=16)
    other = 1 - y  # two tags: the only other class
    expected_feat, expected_oth = _post_numpy(x, w, b, table, y, other)
    features = torch.as_tensor(x @ w + b, dtype=torch.float64)
    terms = sampled_minmax_terms(
        features, torch.as_tensor(table), torch.as_tensor(y), torch.as_tensor(other), "cosine"
    )
    assert terms["pull"].item() == pytest.approx(expected_feat, rel=1e-10)
    assert terms["push"].item() == pytest.approx(expected_oth, rel=1e-10)
    # The module draws the negative itself: with two tags it can only be the other one.
    loss = MinMaxLoss(distance="cosine", form="sampled")
    total = loss(features, torch.as_tensor(table), torch.as_tensor(y))["loss"]
    assert total.item() == pytest.approx(expected_feat + expected_oth, rel=1e-10)
    # and the score rule: sigmoid(5 cos) > 0.5 of the post == cosine similarity > 0
    similarity = loss.similarities(features, torch.as_tensor(table))
    assert torch.equal(similarity > 0, torch.as_tensor(_post_get_score(x @ w + b, table)))


def test_negatives_are_never_tags_and_uniform_over_the_rest() -> None:
    tags = torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0]]).repeat(6000, 1)
    generator = torch.Generator().manual_seed(0)
    negatives = sample_negative_classes(tags, generator)
    counts = torch.bincount(negatives, minlength=5)
    assert counts[0] == 0 and counts[2] == 0
    assert torch.all((counts[[1, 3, 4]] - 2000).abs() < 150)  # 3-sigma ~ 110
    every = torch.ones(2, 5)
    assert sample_negative_classes(every).tolist() == [-1, -1]


def test_sampled_form_without_any_negative_has_zero_push() -> None:
    loss = MinMaxLoss(distance="cosine", form="sampled")
    terms = loss(
        torch.tensor([[1.0, 0.0]]),
        torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
        torch.tensor([[1.0, 1.0]]),
    )
    assert terms["push"].item() == 0.0
    assert terms["pull"].item() == pytest.approx(((1 - 1) ** 2 + (0 - 1) ** 2) / 2)


@pytest.mark.parametrize("distance", ["l2", "l1", "kl"])
def test_projection_enforces_the_bound_and_keeps_the_mean(distance: str) -> None:
    generator = torch.Generator().manual_seed(1)
    table = 3 * torch.randn(4, 5, generator=generator, dtype=torch.float64)
    bound = 0.25 * float(class_spread(table, distance))
    mean = table.mean(dim=0).clone()
    alpha = project_class_embeddings(table, distance, bound)
    assert 0 < alpha < 1
    spread = float(class_spread(table, distance))
    assert spread <= bound
    assert spread == pytest.approx(bound, rel=1e-4)  # the largest feasible scaling
    assert torch.allclose(table.mean(dim=0), mean)
    assert project_class_embeddings(table, distance, bound) == 1.0  # already feasible: untouched


def test_projection_closed_forms() -> None:
    table = CLASS_TABLE.clone()  # l2 spread 16
    alpha = project_class_embeddings(table, "l2", 4.0)
    assert alpha == pytest.approx(0.5, rel=1e-5)
    table = CLASS_TABLE.clone()  # l1 spread 12
    assert project_class_embeddings(table, "l1", 3.0) == pytest.approx(0.25, rel=1e-5)


def test_penalty_by_hand() -> None:
    assert spread_penalty(CLASS_TABLE, "l2", 10.0).item() == pytest.approx(36.0)
    assert spread_penalty(CLASS_TABLE, "l2", 20.0).item() == 0.0
    loss = MinMaxLoss(
        distance="l2", form="full", constraint="penalty", constraint_bound=10.0, penalty_weight=0.5
    )
    features = torch.tensor([[1.0, 0.0]])
    terms = loss(features, CLASS_TABLE, torch.tensor([0]))
    # pull 0; push = 16 / 6; penalty (16 - 10)^2
    assert terms["loss"].item() == pytest.approx(0 - 16 / 6 + 0.5 * 36)


def test_baseline_losses_by_hand() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax [1/4, 3/4]
    assert soft_target_cross_entropy(logits, torch.tensor([0])).item() == pytest.approx(math.log(4))
    both = soft_target_cross_entropy(logits, torch.tensor([[1.0, 1.0]]))
    assert both.item() == pytest.approx(0.5 * math.log(4) + 0.5 * math.log(4 / 3))
    bce = assume_negative_bce(torch.tensor([[0.0, 2.0]]), torch.tensor([0]))
    # -log σ(0) for the tag, -log(1 - σ(2)) for the assumed negative, mean of 2
    assert bce.item() == pytest.approx((math.log(2) + math.log(1 + math.exp(2))) / 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"distance": "euclid"},
            "method.loss.distance='euclid' is unknown; allowed: cosine, l2, l1, kl",
        ),
        (
            {"distance": "l2", "constraint": "projection", "constraint_bound": 0.0},
            "constraint_bound",
        ),
        (
            {"distance": "l2", "constraint": "projection", "constraint_bound": -1.0},
            "constraint_bound",
        ),
        ({"form": "pairs"}, "method.loss.form"),
        ({"constraint": "clip"}, "method.loss.constraint"),
        ({"distance": "cosine", "constraint": "projection"}, "cosine distance is bounded"),
        ({"distance": "l2", "form": "full"}, "push term is unbounded"),
        ({"distance": "kl", "form": "full"}, "push term is unbounded"),
    ],
)
def test_bad_configuration_names_the_key(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MinMaxLoss(**kwargs)


def test_tags_outside_the_class_range() -> None:
    with pytest.raises(ValueError, match=r"tags must be class indices in \[0, 2\)"):
        as_multi_hot(torch.tensor([0, 2]), 2)
    with pytest.raises(ValueError, match=r"multi-hot tags must be \[N, 2\]"):
        as_multi_hot(torch.zeros(3, 3), 2)
    with pytest.raises(ValueError, match="at least one tag"):
        as_multi_hot(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), 2)
    loss = MinMaxLoss()
    with pytest.raises(ValueError, match="class indices"):
        loss(torch.ones(2, 2), torch.eye(2), torch.tensor([0, 5]))


def _kl(a: list[float], b: list[float]) -> float:
    """KL(softmax(a) || softmax(b)) written out."""
    za, zb = sum(math.exp(v) for v in a), sum(math.exp(v) for v in b)
    p = [math.exp(v) / za for v in a]
    q = [math.exp(v) / zb for v in b]
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def test_sampled_form_l1_and_kl_by_hand() -> None:
    features = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    tags, negatives = torch.tensor([0, 1]), torch.tensor([2, 0])
    l1 = sampled_minmax_terms(features, CLASS_TABLE, tags, negatives, "l1", 0.0, -4.0)
    # pull: D(f0,E0) = 0, D(f1,E1) = 1; push: D(E2,E0) = 2, D(E0,E1) = 2
    assert l1["pull"].item() == pytest.approx((0 + 1) / 2)
    assert l1["push"].item() == pytest.approx(((-2 + 4) ** 2 + (-2 + 4) ** 2) / 2)
    kl = sampled_minmax_terms(features, CLASS_TABLE, tags, negatives, "kl", 0.0, -1.0)
    pulls = [_kl([1, 0], [1, 0]), _kl([1, 1], [0, 1])]
    pushes = [_kl([-1, 0], [1, 0]), _kl([1, 0], [0, 1])]
    assert kl["pull"].item() == pytest.approx(np.mean([p**2 for p in pulls]), rel=1e-5)
    assert kl["push"].item() == pytest.approx(np.mean([(-p + 1) ** 2 for p in pushes]), rel=1e-5)
