"""W&B logging with the real wandb, offline: what a run and a multirun write into the record logs.

Reads back the `offline-run-*/run-<id>.wandb` files (see `wandb_records`): the flattened run
config, the metric history, the figures as images, checkpoints as artifacts, the run name,
group and job type, and the exit code (0 from `train`, which finishes its run; 1 from
`FinishWandbRun` for a job that failed with its run open); and the sweep's summary tables.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import wandb
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from pytorch_lightning.loggers import CSVLogger

import weaksup.resolvers  # noqa: F401  (${weaksup.*} of conf/logger/wandb.yaml)
from weaksup.hydra_callbacks import FinishWandbRun
from weaksup.plots.publish import publish_figure
from weaksup.run_logging import (
    SUMMARY_JOB_TYPE,
    QuietWandbLogger,
    flatten_config,
    log_sweep_summary,
    method_name,
)
from weaksup.train import main, train

from conftest import QUIET_OVERRIDES, ComposeFn
from wandb_records import RunLog, read_finished_run

# two_moons: 600 training samples in batches of 64.
STEPS_PER_EPOCH = 10

# Attention MIL on Gaussian bags with the bag mosaic: 64 training bags in batches of 16.
MIL_TINY = (
    "method=mil",
    "data=mil_gaussian",
    "backbone.hidden_sizes=[16]",
    "data.source.num_train_bags=64",
    "data.source.num_val_bags=40",
    "data.source.num_test_bags=40",
    "data.batch_size=16",
    "optimizer.lr=0.01",
    "monitor.metric=val/auc",
)
MIL_STEPS_PER_EPOCH = 4


def _bag_mosaic(folder: Path) -> str:
    return (
        "+callbacks.bag_mosaic={_target_:weaksup.plots.bag_mosaic.BagMosaicCallback,"
        f"dirpath:'{folder}/plots',num_bags:2}}"
    )


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
    assert run.job_type == "supervised"
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
    """Two MIL jobs: a finished run each, in the sweep's group, job type `mil`, with the
    flattened config, metrics, the bag mosaic as an image and the best checkpoint as an
    artifact; then the sweep's summary tables in a run of the same group."""
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
            *MIL_TINY,
            "logger=wandb",
            "logger.wandb.log_model=true",
            "trainer.max_epochs=1",
            _bag_mosaic(Path("${paths.output_dir}")),
            f"hydra.sweep.dir={sweep_dir}",
            f"paths.root_dir={tmp_path}",
            "hydra/job_logging=none",
            "hydra/hydra_logging=none",
            *QUIET_OVERRIDES,
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
    assert [run.job_type for run in runs] == ["mil", "mil"]
    assert [run.config["seed"] for run in runs] == [1, 2]
    assert [run.config["method/_target_"] for run in runs] == [
        "weaksup.methods.mil.MILClassifier"
    ] * 2
    assert [run.config["data/source/num_train_bags"] for run in runs] == [64, 64]
    assert [run.exit_code for run in runs] == [0, 0]
    for job_dir, run in zip(job_dirs, runs, strict=True):
        # One epoch each: job 2 did not log into job 1's run.
        assert len(run.metric_values("train/loss_step")) == MIL_STEPS_PER_EPOCH
        [val_auc] = run.metric_values("val/auc")
        [test_auc] = run.metric_values("test/auc")
        metrics = json.loads((job_dir / "metrics.json").read_text())
        assert test_auc == pytest.approx(metrics["test"]["test/auc"])
        assert 0.5 <= val_auc <= 1.0
        # The figure on disk is the image W&B holds.
        [image] = run.image_files("test/bag_mosaic")
        [run_folder] = job_dir.glob("wandb/offline-run-*")
        assert (run_folder / "files" / image).read_bytes() == (
            job_dir / "plots" / "bag_mosaic.png"
        ).read_bytes()
        # log_model=true: the monitored best checkpoint, not last.ckpt.
        [artifact] = run.artifacts
        assert (artifact.type, artifact.name) == ("model", f"model-{run.run_id}")
        assert sorted(artifact.aliases) == ["best", "latest"]
        assert artifact.files == ["model.ckpt"]
        assert artifact.metadata["original_filename"] == Path(metrics["best_checkpoint"]).name
        assert artifact.metadata["score"] == pytest.approx(metrics["best_score"])

    # What MultirunSummary calls at the end of the sweep.
    logger_config = OmegaConf.load(job_dirs[0] / ".hydra" / "config.yaml").logger
    run_id = log_sweep_summary(sweep_dir, logger_config)
    [summary_log] = sorted((sweep_dir / "wandb").glob(f"offline-run-*/run-{run_id}.wandb"))
    summary = read_finished_run(summary_log)
    assert (summary.name, summary.group, summary.job_type) == (
        "my_sweep/summary",
        "my_sweep",
        SUMMARY_JOB_TYPE,
    )
    assert summary.exit_code == 0
    table = summary.table("sweep/summary")
    jobs = summary.table("sweep/jobs")
    assert table is not None and jobs is not None
    assert (table["nrows"], jobs["nrows"]) == (1, 2)  # seeds are repetitions of one configuration
    content = json.loads((summary_log.parent / "files" / table["path"]).read_text())
    row = dict(zip(content["columns"], content["data"][0], strict=True))
    test_aucs = [run.metric_values("test/auc")[0] for run in runs]
    assert row["n"] == 2
    assert row["test/auc_mean"] == pytest.approx(sum(test_aucs) / 2)


def test_single_mil_run_without_log_model_logs_no_artifact(
    compose_train: ComposeFn, tmp_path: Path
) -> None:
    output_dir = tmp_path / "mil_run"
    output_dir.mkdir()
    cfg = compose_train(
        *MIL_TINY,
        "logger=wandb",
        "trainer.max_epochs=1",
        _bag_mosaic(output_dir),
        output_dir=output_dir,
    )
    train(cfg)
    [log_file] = _run_logs(output_dir)
    run = read_finished_run(log_file)
    assert run.job_type == "mil"  # composed, no Hydra app: the method's module
    assert run.artifacts == []
    assert len(run.image_files("test/bag_mosaic")) == 1


def test_inversion_run_logs_its_reconstructions(compose_train: ComposeFn, tmp_path: Path) -> None:
    output_dir = tmp_path / "inversion_run"
    output_dir.mkdir()
    cfg = compose_train(
        "method=inversion",
        "data.num_labeled=6",
        "data.batch_size=6",
        "data.unlabeled_ratio=50",
        "backbone.hidden_sizes=[8,8]",
        "trainer.max_epochs=1",
        "logger=wandb",
        output_dir=output_dir,
    )
    train(cfg)
    [log_file] = _run_logs(output_dir)
    run = read_finished_run(log_file)
    assert run.job_type == "inversion"
    [image] = run.image_files("val/reconstructions")
    assert (log_file.parent / "files" / image).read_bytes() == (
        output_dir / "reconstructions.png"
    ).read_bytes()


def test_publish_figure_saves_closes_and_logs_to_every_wandb_logger(tmp_path: Path) -> None:
    wandb_logger = QuietWandbLogger(project="weaksup", save_dir=str(tmp_path), job_type="plots")
    loggers = [CSVLogger(tmp_path), wandb_logger]
    figure, axes = plt.subplots()
    axes.plot([0, 1], [1, 0])
    path = publish_figure(loggers, figure, "test/line", path=tmp_path / "figs" / "line.png")
    assert path == tmp_path / "figs" / "line.png" and path.stat().st_size > 1_000
    assert not plt.fignum_exists(figure.number)
    again = publish_figure(loggers, path, "test/line_again")  # an already saved figure
    assert again == path
    wandb_logger.experiment.finish()

    [log_file] = _run_logs(tmp_path)
    run = read_finished_run(log_file)
    assert run.job_type == "plots"
    [image] = run.image_files("test/line")
    [image_again] = run.image_files("test/line_again")
    for logged in (image, image_again):
        assert (log_file.parent / "files" / logged).read_bytes() == path.read_bytes()


def test_publish_figure_needs_a_file_or_a_place_for_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no file .*missing\.png"):
        publish_figure([], tmp_path / "missing.png", "test/missing")
    figure = plt.figure()
    with pytest.raises(ValueError, match="no run folder"):
        publish_figure([], figure, "test/nowhere")
    plt.close(figure)


def test_method_name_is_the_module_defining_the_method_outside_a_hydra_app() -> None:
    assert method_name("weaksup.methods.SupervisedClassifier") == "supervised"  # re-exported
    assert method_name("weaksup.methods.inversion.InversionClassifier") == "inversion"


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
