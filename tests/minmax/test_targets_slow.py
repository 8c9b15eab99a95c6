"""The issue's targets on the partial blobs, 3 seeds (slow: `pytest -m slow tests/minmax`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from weaksup.train import train

QUIET = [
    "logger=none",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
    "trainer.enable_progress_bar=false",
]


def _run(tmp_path: Path, *overrides: str) -> dict[str, float]:
    with initialize_config_module("weaksup.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={tmp_path}", *QUIET, *overrides])
    return train(cfg)["test"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_recommended_minmax_gives_common_points_both_tags(tmp_path: Path, seed: int) -> None:
    test = _run(tmp_path, "experiment=minmax_partial_blobs", "method=minmax", f"seed={seed}")
    assert test["test/common_all_tags"] >= 0.95
    assert test["test/pure_own_only"] >= 0.98


@pytest.mark.slow
@pytest.mark.parametrize("method", ["minmax_baseline_softmax", "minmax_baseline_bce"])
def test_baselines_do_not(tmp_path: Path, method: str) -> None:
    test = _run(tmp_path, "experiment=minmax_partial_blobs", f"method={method}", "seed=1")
    assert test["test/common_all_tags"] <= 0.2
    assert test["test/pure_own_only"] >= 0.98


@pytest.mark.slow
def test_the_posts_set_up_at_ten_epochs(tmp_path: Path) -> None:
    test = _run(tmp_path, "experiment=minmax_partial_blobs_post", "seed=1")
    assert test["test/common_all_tags"] >= 0.95
    assert test["test/pure_own_only"] >= 0.95
