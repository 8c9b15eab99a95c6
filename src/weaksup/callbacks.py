"""Lightning callbacks of the project."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch


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
