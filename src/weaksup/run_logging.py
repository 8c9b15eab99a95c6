"""Experiment loggers (W&B, TensorBoard, CSV): the run config as hyperparameters, W&B under DDP,
the W&B job type of a run, and a sweep's summary table as a W&B run of the sweep's group."""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from weaksup.callbacks import LastCheckpoint
from weaksup.results import JOBS_CSV, SUMMARY_CSV

#: `job_type` of the run that holds a sweep's summary tables (`log_sweep_summary`).
SUMMARY_JOB_TYPE = "sweep-summary"


def flatten_config(
    config: Mapping[str, Any], prefix: str = "", separator: str = "/"
) -> dict[str, Any]:
    """Nested mappings to one level with joined keys: `{"optimizer": {"lr": 1e-3}}` -> `{"optimizer/lr": 1e-3}`.

    Lists and empty mappings stay values. `/` (the default) is the separator TensorBoard's
    hparams use too; `.` gives the dotted keys of command-line overrides.
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{separator}{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, name, separator))
        else:
            flat[name] = value
    return flat


class LogRunConfig(pl.Callback):
    """At fit start, log the resolved run config, flattened, as hyperparameters of every logger.

    Lightning logs hyperparameters only for modules that call `save_hyperparameters`; weaksup
    methods carry the config as `run_config` (set by `weaksup.build.build_method`) instead.
    """

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        run_config = getattr(pl_module, "run_config", None)
        if not run_config:
            return
        hyperparameters = flatten_config(run_config)
        for logger in trainer.loggers:
            logger.log_hyperparams(hyperparameters)


def start_wandb_runs(loggers: Iterable[Logger]) -> None:
    """Start the run of every `WandbLogger` in this (the main) process, before `fit` launches workers.

    Under `ddp_fork` a run first started inside the rank-0 worker stays empty; started here,
    the workers log into it. Harmless for single-process runs (the run starts a little earlier).
    """
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            _ = logger.experiment


@rank_zero_only
def finish_wandb_runs(loggers: Iterable[Logger]) -> None:
    """Finish, with exit code 0, the W&B run of every `WandbLogger` that started one.

    Called once the run is tested and before the results are printed: W&B prints its summary
    footer when a run finishes, and finished at process exit it would come after the output
    folder, which must stay the last line. A run left open by a failure is finished (exit code
    1) by `weaksup.hydra_callbacks.FinishWandbRun`.
    """
    for logger in loggers:
        # `_experiment`, not `experiment`: the property would start a run just to finish it.
        run = getattr(logger, "_experiment", None) if isinstance(logger, WandbLogger) else None
        if run is not None:
            run.finish(exit_code=0)


class QuietWandbLogger(WandbLogger):
    """Lightning's `WandbLogger` without the two deprecation warnings wandb 0.31 prints through it,
    and with the run's method as its W&B `job_type`.

    Lightning 2.6 always passes `anonymous=None` to `wandb.init` ("The anonymous setting has no
    effect") and calls `wandb.require("service")` when the logger is pickled for spawned DDP
    workers ("is a no-op"). The setting is dropped when unset and the call left out; every
    argument and behaviour is otherwise `WandbLogger`'s, but for `log_model`, which leaves
    out `last.ckpt` (`after_save_checkpoint`).

    Args (besides `WandbLogger`'s):
        method: the run's method class (`${method._target_}` in `conf/logger/wandb.yaml`); sets
            `job_type` to `method_name(method)` unless `job_type` is given.
    """

    @functools.wraps(WandbLogger.__init__)  # keeps WandbLogger's signature for config validation
    def __init__(self, *args: Any, method: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            del self._wandb_init["anonymous"]
        if self._wandb_init.get("job_type") is None and method is not None:
            self._wandb_init["job_type"] = method_name(method)

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        """`log_model` logs the checkpoints of the monitored `model_checkpoint`, not the resume
        file `last.ckpt` of `LastCheckpoint` (Lightning would alias that one `best` too)."""
        if not isinstance(checkpoint_callback, LastCheckpoint):
            super().after_save_checkpoint(checkpoint_callback)

    def __getstate__(self) -> dict[str, Any]:
        """`WandbLogger.__getstate__` (Lightning 2.6) less its `wandb.require("service")`."""
        _ = self.experiment  # started here; spawned workers attach to this run
        state = self.__dict__.copy()
        if self._experiment is not None:
            state["_id"] = getattr(self._experiment, "id", None)
            state["_attach_id"] = getattr(self._experiment, "_attach_id", None)
            state["_name"] = self._experiment.name
        state["_experiment"] = None  # cannot be pickled
        return state


def method_name(method_target: str) -> str:
    """A run's method for W&B's `job_type`: the `method` option of the Hydra app when there is
    one (`mil`, `minmax_post`), else the module that defines the method class
    (`weaksup.methods.MILClassifier`, defined in `weaksup.methods.mil` -> `mil`), for configs
    composed with `hydra.compose`."""
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get("method")
        if choice:
            return str(choice)
    return get_class(str(method_target)).__module__.rpartition(".")[2]


def wandb_logger_settings(logger_config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """`project` and `entity` of the first W&B logger of a `logger` config group, or None.

    An entry is a W&B logger when its `_target_` is a `WandbLogger` (or a subclass). Only these
    two keys are read: the others interpolate run-folder paths, which a sweep does not have.
    """
    for entry in (logger_config or {}).values():
        target = entry.get("_target_") if isinstance(entry, Mapping) else None
        if target and issubclass(get_class(str(target)), WandbLogger):
            return {key: entry.get(key) for key in ("project", "entity") if entry.get(key)}
    return None


def log_sweep_summary(sweep_dir: str | Path, logger_config: Mapping[str, Any] | None) -> str | None:
    """Log a finished sweep's `summary.csv` and `jobs.csv` to W&B as tables; returns the run id.

    The tables go into a run of their own in the sweep's group (the group of its jobs' runs,
    `conf/logger/wandb.yaml`), named `<sweep folder>/summary`, with job type `sweep-summary`:
    keys `sweep/summary` (mean, std and n per configuration) and `sweep/jobs` (one row per job,
    with its status and error). The run's files go under `<sweep folder>/wandb/`.

    A no-op (None) when `logger_config` (the run config's `logger` group) has no W&B logger
    or the sweep folder has no `summary.csv` yet. For the end of a multirun:
    `log_sweep_summary(config.hydra.sweep.dir, config.get("logger"))`.
    """
    settings = wandb_logger_settings(logger_config)
    sweep_dir = Path(sweep_dir)
    if settings is None or not (sweep_dir / SUMMARY_CSV).is_file():
        return None
    import wandb

    run = wandb.init(
        **settings,
        name=f"{sweep_dir.name}/summary",
        group=sweep_dir.name,
        job_type=SUMMARY_JOB_TYPE,
        dir=str(sweep_dir),
        config={"sweep_dir": str(sweep_dir)},
    )
    try:
        tables = {
            f"sweep/{key}": wandb.Table(columns=columns, data=rows, allow_mixed_types=True)
            for key, (columns, rows) in (
                ("summary", _read_csv_table(sweep_dir / SUMMARY_CSV)),
                ("jobs", _read_csv_table(sweep_dir / JOBS_CSV)),
            )
            if columns
        }
        run.log(tables)
    except BaseException:
        run.finish(exit_code=1)
        raise
    run.finish(exit_code=0)
    return run.id


def _read_csv_table(path: Path) -> tuple[list[str], list[list[Any]]]:
    """The header and rows of a summary CSV; numbers as floats, empty and non-finite cells as None."""
    if not path.is_file():
        return [], []
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        return header, [[_cell(value) for value in row] for row in reader]


def _cell(value: str) -> Any:
    if value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    return number if math.isfinite(number) else None
