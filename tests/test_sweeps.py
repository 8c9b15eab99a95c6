"""Sweepers get a number from every job, or the sweep stops at start saying why."""

from __future__ import annotations

import json
from pathlib import Path

from weaksup.train import main

from conftest import QUIET_OVERRIDES

OPTUNA = (
    "hydra/sweeper=optuna",
    "hydra.sweeper.n_trials=2",
    "hydra.sweeper.direction=maximize",
    "hydra.sweeper.sampler.seed=0",
    "optimizer.lr=interval(0.001,0.01)",
)


def test_optuna_gets_a_score_under_fast_dev_run(tmp_path: Path, run_entry_point) -> None:
    """`debug=fdr` saves no checkpoint: the last val/acc is the objective, not None."""
    sweep_dir = tmp_path / "sweep"
    result = run_entry_point(
        main, "-m", *OPTUNA, "debug=fdr", f"hydra.sweep.dir={sweep_dir}", *QUIET_OVERRIDES
    )
    assert result.code == 0, result.err
    optimization = (sweep_dir / "optimization_results.yaml").read_text()
    assert "best_value:" in optimization
    for job in ("0", "1"):
        metrics = json.loads((sweep_dir / job / "metrics.json").read_text())
        assert metrics["best_score"] is None and 0.0 <= metrics["last_score"] <= 1.0


def test_optuna_without_validation_stops_at_start(tmp_path: Path, run_entry_point) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run_entry_point(
        main,
        "-m",
        *OPTUNA,
        "trainer.max_epochs=1",
        "+trainer.limit_val_batches=0",
        f"hydra.sweep.dir={sweep_dir}",
        *QUIET_OVERRIDES,
    )
    assert result.code != 0
    assert (
        "the sweeper OptunaSweeper optimises val/acc, but trainer.limit_val_batches=0 runs no "
        "validation, so no score would come back"
    ) in result.err
    assert not list(sweep_dir.glob("*/metrics.json"))
