"""A callback recording the weights and the batch of the first training step (for hand checks)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytorch_lightning as pl
import torch


class FirstBatchRecorder(pl.Callback):
    """Keeps the method's weights before the first iteration and that iteration's batch."""

    weights: ClassVar[dict[str, torch.Tensor]] = {}
    batch: ClassVar[Any] = None

    def on_train_batch_start(
        self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == 0 and trainer.current_epoch == 0:
            type(self).weights = {
                name: value.detach().clone() for name, value in module.state_dict().items()
            }
            type(self).batch = batch
