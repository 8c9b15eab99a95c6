"""Lightning callbacks of the project."""

from __future__ import annotations

import difflib
import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from weaksup.config.validation import ConfigError


class ReseedEveryBatch(pl.Callback):
    """Seed torch/NumPy/random from `(seed, epoch, batch, rank)` before every training batch.

    Lightning checkpoints hold no RNG states, and loaders, sanity checks and loggers draw from
    the global generators at moments that differ between a fresh and a resumed run. Reseeding
    per batch makes every dropout mask and augmentation a function of the position in
    training alone, so a resumed run reproduces the uninterrupted one (with the datamodules'
    epoch-seeded samplers).
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        position = (trainer.current_epoch * 1_000_003 + batch_idx) * 1_009 + trainer.global_rank
        batch_seed = (self.seed * 2_654_435_761 + position) % 2**32
        random.seed(batch_seed)
        np.random.seed(batch_seed)
        # Not torch.manual_seed: with CUDA/XPU/MTIA uninitialised it queues a lazy seed call
        # per device type, formatting a stack trace each time (~2 ms per batch on a CPU).
        torch.default_generator.manual_seed(batch_seed)
        if torch.cuda.is_initialized():
            torch.cuda.manual_seed_all(batch_seed)


class LastCheckpoint(ModelCheckpoint):
    """Write `<dirpath>/last.ckpt` at the end of every training epoch, whatever the scores do.

    Lightning's `ModelCheckpoint(save_last=True)` rewrites `last.ckpt` only when it also saves
    a top-k checkpoint, so with a monitored score that stops improving `last.ckpt` stays at the
    best epoch and `resume=auto` replays epochs. This is the unmonitored form of the same
    callback, saving after the module's and the monitored checkpoint's epoch-end hooks (the
    Trainer runs checkpoint callbacks last, in their configured order). Like every checkpoint
    callback it saves nothing under `fast_dev_run` or during the sanity check.
    """

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=None,
            save_top_k=1,
            save_last=False,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        )


class CheckMonitoredMetric(pl.Callback):
    """Stop before the first training step when `monitor.metric` is not a metric the run logs.

    Lightning's `ModelCheckpoint` finds a misspelled monitor only at the first validation end,
    a whole epoch later. The validation sanity check before training logs every validation
    metric of the method; the monitored name must be among them (or a training epoch metric).
    Without a sanity check (`num_sanity_val_steps=0`) the first validation end checks it.
    """

    def __init__(self, metric: str | None) -> None:
        self.metric = metric
        self._checked = False

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._check(trainer)

    def _check(self, trainer: pl.Trainer) -> None:
        if self._checked or not self.metric:
            return
        self._checked = True
        logged = sorted(name for name in trainer.callback_metrics if name.startswith("val/"))
        if self.metric in logged or self.metric.startswith("train/"):
            return
        close = difflib.get_close_matches(self.metric, logged, n=3)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise ConfigError(
            f"monitor.metric={self.metric!r} is not logged by this method; {hint}"
            f"its validation metrics: {', '.join(logged) or '(none)'}"
        )
