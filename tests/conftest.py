"""Shared fixtures: compose real Hydra configs from the shipped config tree."""

from __future__ import annotations

import csv
import os
import sys
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


class EntryPointResult:
    """What a console entry point did: its exit code (0 when it returned), output and return value."""

    def __init__(self, code: int, out: str, err: str, value: object = None) -> None:
        self.code, self.out, self.err, self.value = code, out, err, value

    @property
    def text(self) -> str:
        return self.out + self.err


@pytest.fixture
def run_entry_point(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., EntryPointResult]:
    """Run `main` of `weaksup.train|eval|predict` in-process with the given command line.

    An exception that escapes `main` (the entry point re-raising) counts as exit code 1,
    with its message appended to the captured stderr.
    """

    def _run(main: Callable[[], object], *arguments: str) -> EntryPointResult:
        monkeypatch.setattr(sys, "argv", ["weaksup", *arguments])
        code, value, escaped = 0, None, ""
        try:
            value = main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except Exception as error:  # reported as a console script would report it
            code, escaped = 1, f"{type(error).__name__}: {error}\n"
        captured = capsys.readouterr()
        return EntryPointResult(code, captured.out, captured.err + escaped, value)

    return _run


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV the framework wrote (summary.csv, jobs.csv, report.csv)."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def run_multirun(monkeypatch: pytest.MonkeyPatch, *overrides: str) -> int:
    """`weaksup-train -m <overrides>` in-process, quietly; its exit code.

    Hydra's config singleton is restored afterwards, so the next test sees no multirun state.
    """
    from hydra.core.hydra_config import HydraConfig

    from weaksup.train import main

    monkeypatch.setattr(HydraConfig.instance(), "cfg", HydraConfig.instance().cfg)
    monkeypatch.setattr(sys, "argv", ["weaksup-train", "-m", *overrides, *QUIET_OVERRIDES])
    try:
        main()
    except SystemExit as stopped:
        return stopped.code if isinstance(stopped.code, int) else 1
    return 0


def optuna_study(root: Path, name: str):  # -> optuna.Study (optuna is the `sweep` extra)
    """The Optuna study `name` that `hparams_search=` keeps under `<root>/outputs/multiruns`."""
    import optuna

    storage = f"sqlite:///{root / 'outputs' / 'multiruns' / name / 'optuna.db'}"
    return optuna.load_study(study_name=name, storage=storage)
