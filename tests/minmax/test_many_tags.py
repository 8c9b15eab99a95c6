"""Min-max with three or more tags per sample: the simplex push target and the midpoint tag rule.

docs/minmax.md, "Three or more tags": with C ≥ 3 classes the post's push target cos = −1 is out of
reach, the push drives the table to a centred simplex where the cosines of any point to the C
classes sum to 0, and the fixed rule cos > 0 cannot give a point all C tags.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from weaksup.build import build_datamodule, build_method
from weaksup.config.validation import validate_config
from weaksup.losses.minmax import (
    MinMaxLoss,
    resolve_push_target,
    sampled_minmax_terms,
    simplex_cosine,
)
from weaksup.methods.minmax import TagRule, midpoint_threshold
from weaksup.plots.embeddings import plot_embeddings

from conftest import ComposeFn


def regular_simplex(num_classes: int, dim: int | None = None) -> torch.Tensor:
    """C unit vectors with pairwise cosine −1/(C−1): the centred one-hot basis, normalised."""
    vertices = torch.eye(num_classes) - 1.0 / num_classes
    vertices = F.normalize(vertices, dim=1)
    if dim is not None and dim > num_classes:
        vertices = torch.cat([vertices, torch.zeros(num_classes, dim - num_classes)], dim=1)
    return vertices


@pytest.mark.parametrize(
    ("num_classes", "expected"), [(2, -1.0), (3, -0.5), (5, -0.25), (9, -0.125)]
)
def test_simplex_cosine_is_the_lowest_mean_pairwise_cosine(
    num_classes: int, expected: float
) -> None:
    assert simplex_cosine(num_classes) == pytest.approx(expected)
    vertices = regular_simplex(num_classes)
    cosines = vertices @ vertices.T
    off_diagonal = ~torch.eye(num_classes, dtype=torch.bool)
    assert cosines[off_diagonal].tolist() == pytest.approx([expected] * off_diagonal.sum().item())
    # no table does better: mean pairwise cosine = (‖Σ Ê‖² − C) / (C(C−1)) ≥ −1/(C−1)
    random = F.normalize(
        torch.randn(200, num_classes, 6, generator=torch.Generator().manual_seed(0)), dim=2
    )
    means = ((random @ random.transpose(1, 2)).sum(dim=(1, 2)) - num_classes) / (
        num_classes * (num_classes - 1)
    )
    assert float(means.min()) >= expected - 1e-6


def test_at_the_centred_simplex_no_point_is_positive_for_every_class() -> None:
    """The cause: Σ_c cos(f, E_c) = f̂·Σ Ê_c = 0 for every f, so cos > 0 cannot tag all C."""
    table = regular_simplex(3, dim=8)
    features = torch.randn(1000, 8, generator=torch.Generator().manual_seed(1))
    cosines = F.normalize(features, dim=1) @ table.T
    assert cosines.sum(dim=1).abs().max() < 1e-5
    assert not bool((cosines > 0).all(dim=1).any())


def test_the_posts_target_resists_common_points_lifting_the_table_and_simplex_does_not() -> None:
    """Lift a 3-class simplex towards a common direction (what the common points' pull does).

    Both targets leave the exact simplex a stationary point, but with −1 the push resists the
    lift with `2(cos + 1) ≈ 1` per pair, with the simplex target only with `2(cos + 1/2)`.
    """
    simplex = regular_simplex(3, dim=4)
    common_direction = torch.tensor([0.0, 0.0, 0.0, 1.0])
    tags = torch.eye(3)
    negatives = torch.tensor([1, 2, 0])
    resistance = {}
    for target in (-1.0, simplex_cosine(3)):
        for lift in (0.0, 0.3):
            amount = torch.tensor(lift, requires_grad=True)
            table = F.normalize(simplex + amount * common_direction, dim=1)
            terms = sampled_minmax_terms(table, table, tags, negatives, push_target=target)
            terms["push"].backward()
            resistance[target, lift] = float(amount.grad)
    assert resistance[-1.0, 0.0] == pytest.approx(0.0, abs=1e-6)
    assert resistance[-0.5, 0.0] == pytest.approx(0.0, abs=1e-6)
    assert resistance[-1.0, 0.3] > 4 * resistance[-0.5, 0.3] > 0


def test_simplex_target_is_the_posts_loss_for_two_classes() -> None:
    features = torch.randn(16, 3, generator=torch.Generator().manual_seed(2))
    table = torch.randn(2, 3, generator=torch.Generator().manual_seed(3))
    tags = F.one_hot(torch.arange(16) % 2, 2).float()
    tags[:4] = 1.0  # some samples with both tags (no negative exists for them)
    losses = [
        MinMaxLoss(push_target=target)(
            features, table, tags, generator=torch.Generator().manual_seed(4)
        )["loss"]
        for target in (-1.0, "simplex")
    ]
    assert losses[0].item() == losses[1].item()
    assert resolve_push_target("simplex", 2) == -1.0
    assert resolve_push_target("simplex", 4) == pytest.approx(-1 / 3)
    assert resolve_push_target(-0.7, 4) == -0.7


def test_midpoint_rule_by_hand() -> None:
    floor = simplex_cosine(3)  # −0.5
    similarities = torch.tensor(
        [
            [0.95, -0.45, -0.50],  # pure point of class 0
            [0.35, 0.30, 0.32],  # common point shared by all three
            [0.80, 0.05, 0.10],  # pure point of class 0 at a border, drawn towards common
            [-0.60, -0.70, -0.55],  # nothing above the floor: no tag at all
        ]
    )
    thresholds = midpoint_threshold(similarities, 0.5)
    assert thresholds.squeeze(1).tolist() == pytest.approx(
        [floor + 0.5 * (0.95 - floor), floor + 0.5 * (0.35 - floor), 0.15, -0.525]
    )
    rule = TagRule("midpoint", 0.5)
    assert rule(similarities).tolist() == [
        [True, False, False],
        [True, True, True],
        [True, False, False],
        [False, False, False],
    ]
    # the fixed sign rule gives the border point all three tags, the midpoint rule only its own
    assert TagRule("fixed", 0.0)(similarities)[2].tolist() == [True, True, True]
    # with two classes the floor is −1: a pure point at cos −0.8 from the other class stays pure
    two = torch.tensor([[0.99, -0.8], [0.31, 0.31]])
    assert TagRule("midpoint", 0.5)(two).tolist() == [[True, False], [True, True]]
    with pytest.raises(ValueError, match=r"fraction of rule=midpoint .* must be in \(0, 1\)"):
        TagRule("midpoint", 1.0)


def test_embeddings_plot_is_written(tmp_path: Path) -> None:
    table = regular_simplex(3, dim=5)
    features = torch.cat([table + 0.05 * torch.randn(3, 5), table.mean(0, keepdim=True) + 0.2])
    similarities = F.normalize(features, dim=1) @ table.T
    true_tags = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])
    path = plot_embeddings(
        features,
        table,
        similarities,
        midpoint_threshold(similarities),
        true_tags,
        tmp_path / "embeddings.png",
        tag_names=["a", "b", "c"],
    )
    assert path.stat().st_size > 10_000
    with pytest.raises(ValueError, match=r"must be \[N, C\] = \[4, 3\]"):
        plot_embeddings(features, table, similarities[:, :2], similarities, true_tags, path)


@pytest.mark.parametrize(
    ("data", "num_tags", "common_tags"),
    [
        ("partial_blobs_3tags", 3, [1.0, 1.0, 1.0]),
        ("partial_blobs_4tags", 5, [1.0, 1.0, 1.0, 1.0, 0.0]),
    ],
)
def test_blob_configs_with_more_shared_tags(
    compose_train: ComposeFn, data: str, num_tags: int, common_tags: list[float]
) -> None:
    cfg = compose_train("experiment=minmax_partial_blobs", f"data={data}")
    validate_config(cfg)
    datamodule = build_datamodule(cfg)
    model = build_method(cfg, datamodule.metadata)
    assert model.num_classes == num_tags and model.loss.push_target == "simplex"
    test = datamodule.splits["test"]
    common = test.true_tags.sum(dim=1) > 1
    assert bool(common.any())
    assert test.true_tags[common].unique(dim=0).tolist() == [common_tags]
    assert test.tags.sum(dim=1).eq(1).all()  # one observed tag per point, also for common ones


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["method.loss.distance=l2", "method.tag_rule.rule=fixed"],
            r"push_target='simplex' is a cosine .* needs distance='cosine', got distance='l2'",
        ),
        (["method.loss.push_target=tetrahedron"], r"push_target='tetrahedron' is unknown"),
        (
            ["method.loss.distance=l2", "method.loss.push_target=-1"],
            r"rule='midpoint' .* needs method.loss.distance='cosine', got 'l2'",
        ),
        (
            ["method=minmax_baseline_softmax", "method.tag_rule.rule=midpoint"],
            r"rule='midpoint' is for the cosines of min-max",
        ),
        (
            # the post's 2-D linear encoder cannot hold 5 classes as a simplex (needs 4 dimensions)
            [
                "experiment=minmax_partial_blobs_post",
                "data=partial_blobs_4tags",
                "method.loss.push_target=simplex",
            ],
            r"push_target='simplex' needs the class embeddings of the 5 classes in at least 4 "
            r"dimensions .* has 2",
        ),
    ],
)
def test_impossible_settings_name_the_key(
    compose_train: ComposeFn, overrides: list[str], message: str
) -> None:
    experiment = (
        [] if overrides[0].startswith("experiment=") else ["experiment=minmax_partial_blobs"]
    )
    cfg = compose_train(*experiment, *overrides)
    with pytest.raises(ValueError, match=message):
        validate_config(cfg)
        datamodule = build_datamodule(cfg)
        build_method(cfg, datamodule.metadata)


def test_simplex_in_exactly_c_minus_one_dimensions_builds(compose_train: ComposeFn) -> None:
    cfg = compose_train(
        "experiment=minmax_partial_blobs_post",
        "data=partial_blobs_3tags",
        "method.loss.push_target=simplex",
    )
    datamodule = build_datamodule(cfg)
    model = build_method(cfg, datamodule.metadata)
    assert model.class_embeddings.weight.shape == (3, 2)
    assert math.isclose(resolve_push_target(model.loss.push_target, 3), -0.5)


def test_midpoint_rule_is_not_a_config_error_for_minmax(compose_train: ComposeFn) -> None:
    cfg = compose_train("experiment=minmax_partial_blobs", "data=partial_blobs_3tags")
    datamodule = build_datamodule(cfg)
    model = build_method(cfg, datamodule.metadata)
    assert model.tag_rule.rule == "midpoint"
