"""W&B logging with the real wandb, offline: what a run and a multirun write into the record logs.

Reads back the `offline-run-*/run-<id>.wandb` files (see `wandb_records`): the flattened run
config, the metric history, the run name and group, and the exit code (0 from `train`, which
finishes its run; 1 from `FinishWandbRun` for a job that failed with its run open).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import wandb
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

import weaksup.resolvers  # noqa: F401  (${weaksup.*} of conf/logger/wandb.yaml)
from weaksup.hydra_callbacks import FinishWandbRun
from weaksup.run_logging import flatten_config
from weaksup.train import main, train

from conftest import ComposeFn
from wandb_records import RunLog, read_finished_run

# two_moons: 600 training samples in batches of 64.
STEPS_PER_EPOCH = 10


@pytest.fixture(autouse=True)
def _wandb_offline_here(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Offline, quiet, every W&B file under this test's folder; never leave a run open."""
    for variable, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_CONSOLE": "off",
    }.items():
        monkeypatch.setenv(variable, value)
    for variable in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        folder = tmp_path / "wandb_home" / variable.lower()
        folder.mkdir(parents=True)
        monkeypatch.setenv(variable, str(folder))
    yield
    if wandb.run is not None:
        wandb.finish(exit_code=1)


def _run_logs(folder: Path) -> list[Path]:
    # `offline-run-*` only: `wandb/latest-run` links to the newest of them.
    return sorted(folder.glob("**/wandb/offline-run-*/run-*.wandb"))


def _finite_numbers(values: list) -> bool:
    return bool(values) and all(isinstance(v, int | float) and math.isfinite(v) for v in values)


def test_flatten_config_joins_nested_keys_with_slashes() -> None:
    nested = {
        "seed": 3,
        "optimizer": {"lr": 0.001, "betas": [0.9, 0.99]},
        "a": {"b": {"c": None}},
        "empty": {},
    }
    assert flatten_config(nested) == {
        "seed": 3,
        "optimizer/lr": 0.001,
        "optimizer/betas": [0.9, 0.99],
        "a/b/c": None,
        "empty": {},
    }


def test_single_run_logs_flattened_config_and_metrics(
    compose_train: ComposeFn, tmp_path: Path
) -> None:
    output_dir = tmp_path / "run_folder"
    output_dir.mkdir()
    cfg = compose_train("logger=wandb", "trainer.max_epochs=2", "seed=7", output_dir=output_dir)
    results = train(cfg)
    # Finished by `train` before the results table, so W&B's footer is not the last thing printed.
    assert wandb.run is None
    FinishWandbRun().on_job_end(cfg, JobReturn(status=JobStatus.COMPLETED))  # then a no-op

    [log_file] = _run_logs(output_dir)
    run = read_finished_run(log_file)
    assert run.name == "run_folder"
    assert run.group == ""  # a single run belongs to no sweep
    assert run.exit_code == 0
    assert run.config["optimizer/lr"] == 0.001
    assert run.config["optimizer/_target_"] == "torch.optim.Adam"
    assert run.config["trainer/max_epochs"] == 2
    assert run.config["seed"] == 7
    assert run.config["data/source/n_samples"] == 1000
    assert run.config["paths/output_dir"] == str(output_dir)

    train_losses = run.metric_values("train/loss_step")
    assert len(train_losses) == 2 * STEPS_PER_EPOCH == results["global_step"]
    assert _finite_numbers(train_losses)
    val_accuracies = run.metric_values("val/acc")
    assert len(val_accuracies) == 2 and _finite_numbers(val_accuracies)
    assert 0.5 <= max(val_accuracies) <= 1.0
    [test_accuracy] = run.metric_values("test/acc")
    assert test_accuracy == pytest.approx(results["test"]["test/acc"])


def test_multirun_jobs_get_their_own_runs_in_one_group(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Hydra leaves its config singletons set after a multirun: restore them for the tests that follow.
    monkeypatch.setattr(HydraConfig.instance(), "cfg", HydraConfig.instance().cfg)
    sweep_dir = tmp_path / "my_sweep"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "weaksup-train",
            "-m",
            "seed=1,2",
            "logger=wandb",
            "trainer.max_epochs=1",
            "test=false",
            f"hydra.sweep.dir={sweep_dir}",
            f"paths.root_dir={tmp_path}",
            "hydra/job_logging=none",
            "hydra/hydra_logging=none",
            "callbacks.progress_bar=null",
            "trainer.enable_progress_bar=false",
            "trainer.log_every_n_steps=1",
        ],
    )
    try:
        main()
    finally:
        GlobalHydra.instance().clear()
    assert wandb.run is None, "FinishWandbRun closes every job's run"

    job_dirs = sorted(path for path in sweep_dir.iterdir() if (path / ".hydra").is_dir())
    assert [path.name for path in job_dirs] == ["0", "1"]
    runs: list[RunLog] = []
    for job_dir in job_dirs:
        [log_file] = _run_logs(job_dir)
        runs.append(read_finished_run(log_file))
    assert len({run.run_id for run in runs}) == 2
    assert [run.name for run in runs] == ["my_sweep/0", "my_sweep/1"]
    assert [run.group for run in runs] == ["my_sweep", "my_sweep"]
    assert [run.config["seed"] for run in runs] == [1, 2]
    assert [run.exit_code for run in runs] == [0, 0]
    for run in runs:  # one epoch each: job 2 did not log into job 1's run
        assert len(run.metric_values("train/loss_step")) == STEPS_PER_EPOCH
        assert len(run.metric_values("val/acc")) == 1


@pytest.mark.slow
# Lightning's advice for the epoch mean of the per-rank training loss, which the methods log unsynced.
@pytest.mark.filterwarnings("ignore:It is recommended to use .*sync_dist=True")
def test_ddp_fork_run_logs_into_one_run(compose_train: ComposeFn, tmp_path: Path) -> None:
    """The run must start in the main process: started in the forked rank 0 it stays empty."""
    output_dir = tmp_path / "ddp_run"
    output_dir.mkdir()
    cfg = compose_train(
        "logger=wandb",
        "trainer=ddp_cpu",
        "trainer.strategy=ddp_fork",
        "trainer.max_epochs=1",
        "test=false",
        output_dir=output_dir,
    )
    results = train(cfg)
    FinishWandbRun().on_job_end(cfg, JobReturn(status=JobStatus.COMPLETED))

    [log_file] = _run_logs(output_dir)
    run = read_finished_run(log_file, timeout_s=10)  # the trap: a run without any record
    assert run.config["trainer/strategy"] == "ddp_fork"
    # Two ranks share the 600 training samples: 300 each, 5 batches of 64.
    assert len(run.metric_values("train/loss_step")) == results["global_step"] == 5
    [val_accuracy] = run.metric_values("val/acc")
    assert val_accuracy == pytest.approx(results["val"]["val/acc"])


def test_finish_callback_marks_a_failed_job_and_is_a_no_op_without_a_run(tmp_path: Path) -> None:
    config = OmegaConf.create({})
    FinishWandbRun().on_job_end(
        config, JobReturn(status=JobStatus.FAILED)
    )  # no run: nothing happens

    run = wandb.init(project="weaksup", dir=tmp_path, config={"optimizer/lr": 0.5})
    run.log({"train/loss": 2.5})
    FinishWandbRun().on_job_end(config, JobReturn(status=JobStatus.FAILED))
    assert wandb.run is None

    [log_file] = _run_logs(tmp_path)
    logged = read_finished_run(log_file)
    assert logged.exit_code == 1
    assert logged.config["optimizer/lr"] == 0.5
    assert logged.metric_values("train/loss") == [2.5]
