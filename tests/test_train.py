"""Train, evaluate and resume in-process with the real Trainer; assert files and numbers."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from weaksup.eval import evaluate
from weaksup.train import train

from conftest import QUIET_OVERRIDES, compose_config

RUN_OVERRIDES = (
    "method=supervised",
    "loss=hinge",
    "data=digits",
    "backbone=mlp",
    "trainer.max_epochs=3",
)


def _train_in(output_dir: Path, *overrides: str) -> dict:
    cfg = compose_config("train", [f"paths.output_dir={output_dir}", *QUIET_OVERRIDES, *overrides])
    return train(cfg)


@pytest.fixture(scope="module")
def hinge_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One 3-epoch run of the issue's example command, shared by the tests below."""
    output_dir = tmp_path_factory.mktemp("hinge_run")
    return output_dir, _train_in(output_dir, *RUN_OVERRIDES)


def test_run_writes_config_metrics_checkpoints_and_logs(hinge_run: tuple[Path, dict]) -> None:
    output_dir, results = hinge_run
    stored = json.loads((output_dir / "metrics.json").read_text())
    assert stored == json.loads(json.dumps(results))
    assert set(stored) >= {"val", "test", "best_score", "best_checkpoint", "monitor"}
    assert stored["monitor"] == "val/acc" and stored["epochs"] == 3
    assert 0.6 < stored["test"]["test/acc"] <= 1.0  # hinge MLP on digits learns in 3 epochs
    assert math.isfinite(stored["test"]["test/loss"])

    config = OmegaConf.load(output_dir / "config.yaml")
    assert config.loss._target_ == "weaksup.losses.HingeLoss" and config.trainer.max_epochs == 3
    assert "${" not in (output_dir / "config.yaml").read_text()  # resolved

    checkpoints = output_dir / "checkpoints"
    assert (checkpoints / "last.ckpt").is_file()
    assert Path(stored["best_checkpoint"]).parent == checkpoints
    csv_lines = (output_dir / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    assert {"train/loss_step", "val/acc"} <= set(csv_lines[0].split(","))
    assert len(csv_lines) > 3


def test_checkpoint_loads_with_weights_only_and_carries_the_config(
    hinge_run: tuple[Path, dict],
) -> None:
    _output_dir, results = hinge_run
    checkpoint = torch.load(results["best_checkpoint"], map_location="cpu", weights_only=True)
    stored = checkpoint["weaksup"]
    assert stored["config"]["loss"]["_target_"] == "weaksup.losses.HingeLoss"
    assert stored["data"] == {
        "name": "digits",
        "num_classes": 10,
        "input_shape": [1, 8, 8],
        "num_train": stored["data"]["num_train"],
    }
    assert stored["data"]["num_train"] > 1000


def test_eval_reproduces_the_test_metrics_from_the_checkpoint_alone(
    hinge_run: tuple[Path, dict], tmp_path: Path
) -> None:
    _, results = hinge_run
    cfg = compose_config(
        "eval",
        [
            f"ckpt_path={results['best_checkpoint']}",
            f"paths.output_dir={tmp_path}",
            "trainer.enable_progress_bar=false",
            "logger=none",
        ],
    )
    evaluated = evaluate(cfg)
    for name, value in results["test"].items():
        assert evaluated["test"][name] == pytest.approx(value, abs=1e-6)
    assert json.loads((tmp_path / "metrics.json").read_text())["test"] == evaluated["test"]


def test_resume_auto_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    overrides = ("data=digits", "loss=ce", "backbone.dropout=0.2")  # dropout: RNG must match too
    full = _train_in(tmp_path / "full", *overrides, "trainer.max_epochs=4")
    interrupted = tmp_path / "interrupted"
    _train_in(interrupted, *overrides, "trainer.max_epochs=2")
    resumed = _train_in(interrupted, *overrides, "trainer.max_epochs=4", "resume=auto")
    assert (interrupted / "csv" / "version_1" / "metrics.csv").is_file()  # first logs kept
    assert (interrupted / "csv" / "version_0" / "metrics.csv").is_file()

    assert resumed["global_step"] == full["global_step"]
    for section in ("val", "test"):
        for name, value in full[section].items():
            assert resumed[section][name] == pytest.approx(value, abs=1e-6), name
    full_weights = torch.load(tmp_path / "full/checkpoints/last.ckpt", weights_only=True)[
        "state_dict"
    ]
    resumed_weights = torch.load(interrupted / "checkpoints/last.ckpt", weights_only=True)[
        "state_dict"
    ]
    for name, tensor in full_weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, rtol=0, atol=1e-6)


@pytest.mark.filterwarnings(
    "ignore:The dirpath has changed:UserWarning"
)  # a new run folder, on purpose
def test_explicit_ckpt_path_resumes_from_that_file(tmp_path: Path) -> None:
    first = tmp_path / "first"
    _train_in(first, "trainer.max_epochs=1")
    copied = tmp_path / "saved.ckpt"
    shutil.copy(first / "checkpoints" / "last.ckpt", copied)
    resumed = _train_in(tmp_path / "second", "trainer.max_epochs=2", f"ckpt_path={copied}")
    assert resumed["epochs"] == 2
    assert resumed["global_step"] == 2 * 10  # two moons: 600 training examples / 64 -> 10 steps


@pytest.mark.parametrize(
    "overrides",
    [
        ("trainer.precision=bf16-mixed",),
        ("trainer.gradient_clip_val=0.5", "trainer.gradient_clip_algorithm=value"),
        ("trainer.accumulate_grad_batches=2",),
        ("debug=fdr",),
        ("debug=limit",),
        ("debug=profiler",),
        ("scheduler=cosine", "optimizer=sgd"),
        ("logger=tensorboard",),
    ],
    ids=lambda o: ",".join(o),
)
def test_trainer_options_train(tmp_path: Path, overrides: tuple[str, ...]) -> None:
    results = _train_in(tmp_path, "trainer.max_epochs=2", *overrides)
    assert 0.0 <= results["test"]["test/acc"] <= 1.0
    if "trainer.accumulate_grad_batches=2" in overrides:
        assert results["global_step"] == 2 * 5  # 10 batches per epoch, one step per two
    if "logger=tensorboard" in overrides:
        assert list((tmp_path / "tensorboard" / "version_0").glob("events.out.tfevents.*"))


def test_overfit_debug_drives_training_loss_down(tmp_path: Path) -> None:
    results = _train_in(tmp_path, "debug=overfit", "optimizer.lr=0.01", "data=digits")
    metrics = (tmp_path / "csv" / "version_0" / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    column = header.index("train/loss_epoch")
    losses = [float(row.split(",")[column]) for row in metrics[1:] if row.split(",")[column]]
    assert losses[-1] < 0.05 < losses[0]
    assert results["epochs"] == 50


def test_console_script_and_module_entry_point(tmp_path: Path) -> None:
    """`weaksup-train` and `python -m weaksup.train` compose from the installed config package."""
    arguments = [
        "trainer.max_epochs=1",
        f"hydra.run.dir={tmp_path}/run",
        "callbacks.progress_bar=null",
    ]
    script = Path(sys.executable).parent / "weaksup-train"
    completed = subprocess.run(
        [str(script), *arguments], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "test/acc" in completed.stdout and f"output folder: {tmp_path}/run" in completed.stdout
    assert (tmp_path / "run" / ".hydra" / "config.yaml").is_file()
    assert (tmp_path / "run" / "metrics.json").is_file()
    module_run = subprocess.run(
        [sys.executable, "-m", "weaksup.train", "--cfg", "job", "loss=hinge"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert module_run.returncode == 0 and "weaksup.losses.HingeLoss" in module_run.stdout
