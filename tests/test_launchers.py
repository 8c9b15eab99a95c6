"""Launchers: jobs in this process (basic), in parallel local processes (joblib), as local
submitit jobs, and the SLURM settings; every job on its share of torch threads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest
import torch
from hydra import compose, initialize_config_module

from weaksup.config.validation import ConfigError
from weaksup.resolvers import available_cores, parallel_jobs
from weaksup.threads import job_threads
from weaksup.train import main

from conftest import optuna_study, read_csv_rows, run_multirun

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
SUBMITIT_SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
THREADS_LINE = re.compile(r"torch threads: (\d+) \(of (\d+) cores\)")


def _threads_logged(job_dir: Path) -> list[int]:
    """The torch thread counts the job logged (`weaksup.threads`) in its log file."""
    return [int(m.group(1)) for m in THREADS_LINE.finditer((job_dir / "train.log").read_text())]


def test_each_parallel_job_gets_its_share_of_the_cores() -> None:
    cores = available_cores()
    assert job_threads(None, {"_target_": JOBLIB, "n_jobs": 2}) == max(1, cores // 2)
    assert job_threads(None, {"_target_": JOBLIB, "n_jobs": -1}) == 1  # a job per core
    assert job_threads(None, {"_target_": JOBLIB, "n_jobs": 4 * cores}) == 1  # at least one
    assert job_threads(None, {"_target_": "hydra._internal.core_plugins.BasicLauncher"}) is None
    assert job_threads(None, None) is None  # outside Hydra: torch's default
    assert job_threads(3, {"_target_": JOBLIB, "n_jobs": 2}) == 3  # the setting wins
    for bad in (0, -1, "2", True, 1.5):
        with pytest.raises(ConfigError, match=r"'num_threads' must be an integer >= 1, or null"):
            job_threads(bad)
    # The Optuna sweeper asks as many trials at once as the launcher runs.
    assert parallel_jobs({"_target_": JOBLIB, "n_jobs": 3}) == 3
    assert parallel_jobs({"_target_": JOBLIB, "n_jobs": -1}) == cores
    assert parallel_jobs({"_target_": SUBMITIT_SLURM, "array_parallelism": 8}) == 8
    assert parallel_jobs({"_target_": "hydra._internal.core_plugins.BasicLauncher"}) == 1


def test_num_threads_applies_to_every_job_and_is_restored_after_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    before = torch.get_num_threads()
    wanted = 1 if before > 1 else 2
    code = run_multirun(
        monkeypatch,
        f"hydra.sweep.dir={tmp_path}",
        f"num_threads={wanted}",
        "seed=1,2",
        "trainer.max_epochs=1",
    )
    assert code == 0
    for job in ("0", "1"):
        assert _threads_logged(tmp_path / job) == [wanted]
        assert (tmp_path / job / "metrics.json").is_file()
    assert torch.get_num_threads() == before  # the next command in this process is unaffected


def test_a_bad_num_threads_stops_the_run(tmp_path: Path, run_entry_point) -> None:
    result = run_entry_point(main, "num_threads=0", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.code == 1
    assert result.err.strip().splitlines()[-1] == (
        "ConfigError: 'num_threads' must be an integer >= 1, or null for torch's default, got 0"
    )


def test_submitit_slurm_takes_partition_gpus_nodes_and_time() -> None:
    """Composed only (no SLURM here): the settings README's "On a cluster" command sets."""
    overrides = [
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.nodes=2",
        "hydra.launcher.gpus_per_node=4",
        "hydra.launcher.tasks_per_node=4",
        "hydra.launcher.timeout_min=240",
        "trainer=ddp",
        "trainer.num_nodes=2",
        "trainer.devices=4",
    ]
    with initialize_config_module(version_base="1.3", config_module="weaksup.conf"):
        cfg = compose("train", overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == SUBMITIT_SLURM
    assert (launcher.partition, launcher.nodes, launcher.gpus_per_node) == ("gpu", 2, 4)
    assert (launcher.tasks_per_node, launcher.timeout_min) == (4, 240)
    # One SLURM task per GPU: Lightning takes its ranks from SLURM (no re-launch by `ddp`).
    assert cfg.trainer.strategy == "ddp"
    assert launcher.nodes * launcher.tasks_per_node == cfg.trainer.num_nodes * cfg.trainer.devices


@pytest.mark.slow
def test_joblib_runs_an_optuna_batch_in_parallel_on_a_thread_each(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`-m hparams_search=... hydra/launcher=joblib hydra.launcher.n_jobs=2`: two trials asked
    at once, run in two worker processes, each on cores / 2 torch threads."""
    overrides = (
        "hparams_search=supervised_digits",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_trials=2",
        "trainer.max_epochs=1",
        f"paths.root_dir={tmp_path}",
    )
    sweep_dir = tmp_path / "sweep"
    assert run_multirun(monkeypatch, f"hydra.sweep.dir={sweep_dir}", *overrides) == 0
    trials = optuna_study(tmp_path, "supervised_digits").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    share = max(1, available_cores() // 2)
    for job, trial in zip(("0", "1"), trials, strict=True):
        assert _threads_logged(sweep_dir / job) == [share]
        metrics = json.loads((sweep_dir / job / "metrics.json").read_text())
        assert metrics["best_score"] == pytest.approx(trial.value)
    rows = read_csv_rows(sweep_dir / "jobs.csv")  # rebuilt by the worker processes
    assert [(row["job"], row["status"]) for row in rows] == [("0", "completed"), ("1", "completed")]


@pytest.mark.slow
def test_submitit_local_runs_the_jobs_as_separate_processes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "sweep"
    overrides = ("hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10")
    code = run_multirun(
        monkeypatch,
        f"hydra.sweep.dir={sweep_dir}",
        *overrides,
        "seed=1,2",
        "trainer.max_epochs=1",
        "num_threads=1",
    )
    assert code == 0
    for job in ("0", "1"):
        assert json.loads((sweep_dir / job / "metrics.json").read_text())["test"]["test/acc"] > 0
        assert _threads_logged(sweep_dir / job) == [1]
    (row,) = read_csv_rows(sweep_dir / "summary.csv")  # the two seeds are one configuration
    assert row["n"] == "2"
    assert list(sweep_dir.glob(".submitit/*/*_log.out"))  # submitit's own job logs
