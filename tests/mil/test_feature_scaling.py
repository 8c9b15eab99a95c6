"""Feature scaling that does not explode (issue 17, item 2): a column constant (or nearly so) in the
training folds only must not send the test fold to |z| = 1e9; training still works."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from weaksup.data.bags import MilCsvBags
from weaksup.data.feature_scaling import DEFAULT_CLIP, FeatureScaler
from weaksup.train import main

from conftest import QUIET_OVERRIDES

NUM_BAGS, PER_BAG, FOLDS, TEST_FOLD = 12, 3, 3, 0


def test_scaler_is_the_z_score_inside_the_box_zero_on_constant_columns() -> None:
    rng = np.random.default_rng(0)
    train = np.column_stack([rng.normal(5, 2, 50), np.full(50, 7.0), np.r_[np.zeros(49), 1e-3]])
    scaler = FeatureScaler.fit(train)
    assert scaler.constant.tolist() == [False, True, False]
    test = np.array([[5.0, 7.0, 0.0], [9.0, 900.0, 1.0], [-1e6, -3.0, -1.0]])
    z = scaler.transform(test)
    plain = (test[:, 0] - train[:, 0].mean()) / train[:, 0].std(ddof=1)
    assert z[:2, 0] == pytest.approx(plain[:2], rel=1e-6)  # |z| < 10: the usual z-score
    assert z[2, 0] == -DEFAULT_CLIP and z[:, 1].tolist() == [0.0, 0.0, 0.0]
    # near-constant: plain z-scores of the test rows would be about +-7,000
    assert z[1, 2] == DEFAULT_CLIP and z[2, 2] == -DEFAULT_CLIP
    unclipped = FeatureScaler.fit(train, clip=None).transform(test)
    assert abs(unclipped[1, 2]) > 5e3 and unclipped[:, 1].tolist() == [0.0, 0.0, 0.0]


def lines_with_columns(test_rows: set[int] | None = None) -> list[str]:
    """A MIL CSV (mil layout): features `[signal, row, constant, near]`. `constant` is 7 and
    `near` 0 (1e-3 on one row outside `test_rows`) on every line except `test_rows` (1-based
    rows), where they are 507 and 500: constant in the training folds only."""
    rng = np.random.default_rng(1)
    lines = []
    for bag in range(1, NUM_BAGS + 1):
        label = bag % 2
        for position in range(PER_BAG):
            row = len(lines) + 1
            signal = rng.normal() + 3.0 * (label and position == 0)
            constant, near = 7.0, 0.0
            if test_rows is not None and row in test_rows:
                constant, near = 507.0, 500.0
            lines.append(f"{label},{bag},{signal:.4f},{row},{constant},{near}")
    first_training = min(set(range(1, len(lines) + 1)) - (test_rows or set()))
    cells = lines[first_training - 1].split(",")
    cells[-1] = "0.001"
    lines[first_training - 1] = ",".join(cells)
    return lines


def source(csv: Path, **options: object) -> MilCsvBags:
    return MilCsvBags(path=str(csv), num_folds=FOLDS, fold=TEST_FOLD, val_fraction=0.0, **options)


@pytest.fixture
def shifted_csv(tmp_path: Path) -> Path:
    """The CSV whose `constant` and `near` columns move in the test fold only."""
    plain = tmp_path / "plain.csv"
    plain.write_text("\n".join(lines_with_columns()) + "\n")
    unscaled = source(plain, standardize=False).load()
    test_rows = {int(row) for row in unscaled.test.instances[:, 1].tolist()}
    assert len(test_rows) == NUM_BAGS // FOLDS * PER_BAG
    csv = tmp_path / "shifted.csv"
    csv.write_text("\n".join(lines_with_columns(test_rows)) + "\n")
    return csv


def test_a_column_constant_in_training_only_keeps_test_z_bounded(shifted_csv: Path) -> None:
    splits = source(shifted_csv).load()
    train, test = splits.train.instances, splits.test.instances
    assert train[:, 2].abs().max() == 0 and test[:, 2].abs().max() == 0  # constant -> 0
    assert test.abs().max() <= DEFAULT_CLIP and test[:, 3].min() == DEFAULT_CLIP
    assert abs(train[:, 0].mean()) < 1e-5  # the signal column: a plain z-score
    # what the former scaling (std floored at 1e-6) gives on the same fold
    raw = source(shifted_csv, standardize=False).load()
    mean, std = raw.train.instances.mean(0), raw.train.instances.std(0).clamp_min(1e-6)
    assert ((raw.test.instances - mean) / std).abs().max() > 1e8


def test_training_on_it_works_and_the_test_loss_stays_small(
    shifted_csv: Path, tmp_path: Path, run_entry_point
) -> None:
    """Two epochs through `weaksup-train`: clipped, the test loss is that of a barely trained
    model; without the clip the near-constant column (|z| about 3e6) blows it up."""
    losses = {}
    for clip in ("10.0", "null"):
        run = tmp_path / f"run-{clip}"
        result = run_entry_point(
            main,
            "experiment=mil_csv",
            f"data.source.path={shifted_csv}",
            f"data.source.num_folds={FOLDS}",
            f"data.source.fold={TEST_FOLD}",
            f"data.source.clip={clip}",
            "trainer.max_epochs=2",
            "callbacks.bag_mosaic=null",
            "logger=csv",
            f"hydra.run.dir={run}",
            *QUIET_OVERRIDES,
        )
        assert result.code == 0, result.text
        losses[clip] = json.loads((run / "metrics.json").read_text())["test"]["test/loss"]
    assert np.isfinite(losses["10.0"]) and losses["10.0"] < 2.0, losses
    assert losses["null"] > 100, losses
