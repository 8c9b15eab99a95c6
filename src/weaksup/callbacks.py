"""Lightning callbacks of the project."""

from __future__ import annotations

import random

import numpy as np
import pytorch_lightning as pl
import torch


class ReseedEveryEpoch(pl.Callback):
    """Seed torch/NumPy/random from `(seed, epoch, rank)` at the start of every training epoch.

    Lightning checkpoints do not hold RNG states, so without this a resumed run draws other
    dropout masks and augmentations than the uninterrupted one. With it (and the
    epoch-seeded samplers of the datamodules), resuming reproduces the same run.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch_seed = (self.seed * 1_000_003 + trainer.current_epoch * 1_009 + trainer.global_rank) % 2**32
        random.seed(epoch_seed)
        np.random.seed(epoch_seed)
        torch.manual_seed(epoch_seed)
