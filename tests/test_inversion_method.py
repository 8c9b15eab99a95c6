"""`method=inversion` through `weaksup-train`: labeled + unlabeled steps, logged terms, the
reconstruction figure, exact resume, and clear errors for data it cannot learn from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from weaksup.checkpoints import read_checkpoint
from weaksup.losses.inversion import MultiscaleInversionLoss, reconstructions
from weaksup.methods.inversion import InversionClassifier
from weaksup.nn import MLP
from weaksup.train import main

from conftest import QUIET_OVERRIDES, read_csv_rows

TWO_MOONS = (
    "method=inversion",
    "data=two_moons",
    "data.num_labeled=6",
    "data.batch_size=6",
    "data.unlabeled_ratio=50",  # 300 unlabeled points per step: 2 steps per epoch
    "backbone=mlp",
    "backbone.hidden_sizes=[8,8]",
)


def _args(run_dir: Path, *overrides: str) -> list[str]:
    return [f"hydra.run.dir={run_dir}", *QUIET_OVERRIDES, *TWO_MOONS, *overrides]


@pytest.fixture(scope="module")
def inversion_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("inversion")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.argv", ["weaksup-train", *_args(run_dir, "trainer.max_epochs=3")])
        main()
    return run_dir


def test_inversion_trains_logs_every_term_and_draws_its_reconstructions(
    inversion_run: Path,
) -> None:
    results = json.loads((inversion_run / "metrics.json").read_text())
    assert results["global_step"] == 3 * 2
    assert 0.0 <= results["test"]["test/acc"] <= 1.0 and results["monitor"] == "val/acc"
    header = (inversion_run / "csv/version_0/metrics.csv").read_text().splitlines()[0].split(",")
    levels = 3  # MLP [8, 8]: the input, the second layer's input and the head's input
    expected = {"train/loss_epoch", "train/ce_epoch", "train/entropy_epoch"}
    expected |= {"train/reconstruction_epoch", "val/acc", "val/loss"}
    assert expected <= set(header)
    assert sum(name.startswith("train/reconstruction_l") for name in header) >= levels * 2
    figure = inversion_run / "reconstructions.png"
    assert figure.is_file() and figure.stat().st_size > 10_000


def test_the_figure_shows_the_losses_own_reconstructions() -> None:
    """`level_reconstructions` (the figure's data) equals the loss's templates in eval mode."""
    torch.manual_seed(0)
    method = InversionClassifier(
        MLP([2], num_outputs=2, hidden_sizes=[8, 8]),
        MultiscaleInversionLoss(),
        num_classes=2,
        optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3},
    )
    inputs = torch.randn(5, 2)
    levels, rebuilt = method.level_reconstructions(inputs)
    leaf = inputs.clone().requires_grad_(True)
    logits, features = method.backbone.forward_with_features(leaf)
    expected = reconstructions(logits, features, logits.softmax(1).detach(), create_graph=False)
    assert len(rebuilt) == len(expected) == len(levels)
    for mine, reference in zip(rebuilt, expected, strict=True):
        torch.testing.assert_close(mine, reference)
    assert method.backbone.training  # the mode is restored


def test_backward_fills_the_parameters_gradients_and_not_the_input_batchs() -> None:
    """The input is a leaf requiring grad (level 0); backward leaves its gradient alone."""
    torch.manual_seed(0)
    method = InversionClassifier(
        MLP([2], num_outputs=2, hidden_sizes=[8]),
        MultiscaleInversionLoss(),
        num_classes=2,
        optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3},
    )
    inputs = torch.randn(6, 2).requires_grad_(True)
    logits, features = method.backbone.forward_with_features(inputs)
    loss = method.inversion_loss.terms(logits, torch.tensor([0, 1]), features)["loss"]
    method.backward(loss)
    assert inputs.grad is None
    for name, parameter in method.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_resume_auto_matches_an_uninterrupted_inversion_run(
    inversion_run: Path, tmp_path: Path, run_entry_point
) -> None:
    interrupted = tmp_path / "interrupted"
    first = run_entry_point(main, *_args(interrupted, "trainer.max_epochs=1"))
    assert first.code == 0, first.err
    resumed = run_entry_point(main, *_args(interrupted, "trainer.max_epochs=3", "resume=auto"))
    assert resumed.code == 0, resumed.err
    full = read_checkpoint(inversion_run / "checkpoints/last.ckpt")["state_dict"]
    again = read_checkpoint(interrupted / "checkpoints/last.ckpt")["state_dict"]
    for name, tensor in full.items():
        torch.testing.assert_close(again[name], tensor, rtol=0, atol=0)


@pytest.mark.parametrize(
    "variant",
    ["inversion_single_scale", "inversion_entropy_only", "inversion_supervised_only"],
)
def test_ablation_variants_log_only_their_terms(
    tmp_path: Path, run_entry_point, variant: str
) -> None:
    run_dir = tmp_path / variant
    result = run_entry_point(main, *_args(run_dir, f"method={variant}", "trainer.max_epochs=1"))
    assert result.code == 0, result.err
    header = set((run_dir / "csv/version_0/metrics.csv").read_text().splitlines()[0].split(","))
    has = {term: f"train/{term}_epoch" in header for term in ("entropy", "reconstruction")}
    assert (
        has
        == {
            "inversion_single_scale": {"entropy": True, "reconstruction": True},
            "inversion_entropy_only": {"entropy": True, "reconstruction": False},
            "inversion_supervised_only": {"entropy": False, "reconstruction": False},
        }[variant]
    )
    levels = {name for name in header if name.startswith("train/reconstruction_l")}
    if variant == "inversion_single_scale":
        assert {name.split("_step")[0].split("_epoch")[0] for name in levels} == {
            "train/reconstruction_l0"
        }


def test_unlabeled_rampup_logs_its_scale_and_reaches_one(tmp_path: Path, run_entry_point) -> None:
    """`method.unlabeled_rampup_steps=4`: the logged scale follows exp(−5(1 − k/4)²) per step."""
    import math

    run_dir = tmp_path / "rampup"
    result = run_entry_point(
        main,
        *_args(
            run_dir,
            "method.unlabeled_rampup_steps=4",
            "trainer.max_epochs=3",
            "trainer.log_every_n_steps=1",
        ),
    )
    assert result.code == 0, result.err
    logged = {
        int(row["step"]): float(row["train/unlabeled_scale"])
        for row in read_csv_rows(run_dir / "csv/version_0/metrics.csv")
        if row["train/unlabeled_scale"]
    }
    assert logged == pytest.approx({k: math.exp(-5 * (1 - min(k, 4) / 4) ** 2) for k in range(6)})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ("method.unlabeled_rampup_steps=-1",),
            "method.unlabeled_rampup_steps must be >= 0, got -1",
        ),
        (
            ("data.num_labeled=null",),
            "method InversionClassifier learns from labeled + unlabeled data: set "
            "data.num_labeled=N",
        ),
        (
            ("data=mil_gaussian",),
            "choose a data option that emits SemiSupervisedBatch: blobs, digits",
        ),
    ],
    ids=["negative-rampup", "no-labeled-subset", "bag-data"],
)
def test_data_the_method_cannot_learn_from_stops_at_start(
    tmp_path: Path, run_entry_point, overrides: tuple[str, ...], message: str
) -> None:
    arguments = _args(tmp_path / "bad", *overrides)
    if "data=mil_gaussian" in overrides:  # bag data has no labeled subset or unlabeled ratio
        arguments = [a for a in arguments if not a.startswith(("data.num_labeled", "data.unl"))]
    result = run_entry_point(main, *arguments)
    assert result.code != 0
    assert message in result.err
    assert not (tmp_path / "bad").exists()
