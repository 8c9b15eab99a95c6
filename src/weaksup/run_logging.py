"""Experiment loggers (W&B, TensorBoard, CSV): the run config as hyperparameters, W&B under DDP."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only


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
    """Lightning's `WandbLogger` without the two deprecation warnings wandb 0.31 prints through it.

    Lightning 2.6 always passes `anonymous=None` to `wandb.init` ("The anonymous setting has no
    effect") and calls `wandb.require("service")` when the logger is pickled for spawned DDP
    workers ("is a no-op"). The setting is dropped when unset and the call left out; every
    argument and behaviour is otherwise `WandbLogger`'s.
    """

    @functools.wraps(WandbLogger.__init__)  # keeps WandbLogger's signature for config validation
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            del self._wandb_init["anonymous"]

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
