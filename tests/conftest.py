"""Shared fixtures: compose real Hydra configs from the shipped config tree."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

# Quiet, fast, deterministic defaults for in-process runs (the real trainer, tiny budgets).
QUIET_OVERRIDES = (
    "++callbacks.progress_bar=null",
    "++callbacks.model_summary=null",
    "trainer.enable_progress_bar=false",
    "++trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
)

ComposeFn = Callable[..., DictConfig]


def compose_config(config_name: str, overrides: list[str] | tuple[str, ...]) -> DictConfig:
    with initialize_config_module(version_base="1.3", config_module="weaksup.conf"):
        return compose(config_name=config_name, overrides=list(overrides))


@pytest.fixture(autouse=True)
def _offline_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No network, no stray files: W&B offline into a temp folder, data from the repo's data/."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path_factory.mktemp("wandb")))
    monkeypatch.setenv("WEAKSUP_DATA_DIR", str(Path(__file__).resolve().parents[1] / "data"))
    os.environ.setdefault("PYTHONHASHSEED", "0")


@pytest.fixture
def compose_train(tmp_path: Path) -> ComposeFn:
    """Compose `train.yaml` with the given overrides, writing into this test's tmp folder."""

    def _compose(
        *overrides: str, output_dir: Path | None = None, config_name: str = "train"
    ) -> DictConfig:
        target = output_dir or tmp_path
        return compose_config(
            config_name, [f"paths.output_dir={target}", *QUIET_OVERRIDES, *overrides]
        )

    return _compose
