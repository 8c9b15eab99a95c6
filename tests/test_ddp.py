"""DDP on CPU: two gloo processes train, checkpoint, and test (slow: process start-up dominates)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from weaksup.train import train

from conftest import ComposeFn


@pytest.mark.slow
def test_ddp_cpu_trains_with_two_processes(compose_train: ComposeFn, tmp_path: Path) -> None:
    results = train(compose_train("trainer=ddp_cpu", "trainer.max_epochs=3"))
    assert results["epochs"] == 3
    # Each of the 2 ranks sees half of the 600 training examples: ceil(300 / 64) = 5 steps per epoch.
    assert results["global_step"] == 3 * 5
    assert results["test"]["test/acc"] > 0.7
    assert results["best_score"] is not None and 0.5 < results["best_score"] <= 1.0
    checkpoint = torch.load(results["best_checkpoint"], map_location="cpu", weights_only=True)
    assert checkpoint["weaksup"]["config"]["trainer"]["strategy"] == "ddp_spawn"
    assert json.loads((tmp_path / "metrics.json").read_text())["test"] == results["test"]
