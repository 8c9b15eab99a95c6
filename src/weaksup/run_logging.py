"""Experiment loggers (W&B, TensorBoard, CSV): the run config as hyperparameters, W&B under DDP."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import Logger, WandbLogger


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings to one level with `/`-joined keys: `{"optimizer": {"lr": 1e-3}}` -> `{"optimizer/lr": 1e-3}`.

    Lists and empty mappings stay values. `/` is the separator TensorBoard's hparams use too.
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, name))
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
