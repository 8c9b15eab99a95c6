"""What every method shares: optimizers from config, guarded loss logging, checkpoint metadata.

A method is a LightningModule that only wires losses, a backbone and optimizers. It declares
the batch kind it consumes (`consumes`), and builds itself from the composed config with
`from_config`, so that adding a method is one class plus one `conf/method/*.yaml`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from weaksup.data.batches import Batch
from weaksup.data.datamodules import DataMetadata

CHECKPOINT_KEY = "weaksup"


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; training stops before anything else is saved."""


def plain_config(config: Mapping[str, Any] | DictConfig | None) -> dict[str, Any] | None:
    """A resolved, plain-`dict` copy (storable in checkpoints under `torch.load(weights_only=True)`)."""
    if config is None:
        return None
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]
    return dict(config)


class WeakSupMethod(pl.LightningModule):
    """Base of all methods.

    Args:
        optimizer: config of a `torch.optim` optimizer (`_target_` + arguments but `params`).
        scheduler: optional config of a `torch.optim.lr_scheduler` (arguments but `optimizer`).
        scheduler_interval: step the scheduler every `"epoch"` or every `"step"`.
        check_finite_loss: stop with `NonFiniteLossError` when a loss term is NaN/Inf.
    """

    consumes: ClassVar[type] = Batch
    # Base class the option of the `loss` group must build (None: the method ignores that group).
    loss_kind: ClassVar[type | None] = None

    def __init__(
        self,
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        scheduler_interval: str = "epoch",
        check_finite_loss: bool = True,
    ) -> None:
        super().__init__()
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(
                f"method.scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}"
            )
        self.optimizer_config = plain_config(optimizer)
        self.scheduler_config = plain_config(scheduler)
        self.scheduler_interval = scheduler_interval
        self.check_finite_loss = check_finite_loss
        # Set by `weaksup.build`; written into every checkpoint so `weaksup-eval` needs nothing else.
        self.run_config: dict[str, Any] | None = None
        self.data_metadata: DataMetadata | None = None
        # Running (sum, count) of each training loss term over the current epoch.
        self._train_term_sums: dict[str, tuple[Tensor | float, int]] = {}

    @classmethod
    def from_config(cls, cfg: DictConfig, data: DataMetadata) -> WeakSupMethod:
        """Build the method (and the parts it needs from the other config groups)."""
        raise NotImplementedError(f"{cls.__name__} does not implement from_config")

    @staticmethod
    def method_arguments(cfg: DictConfig) -> dict[str, Any]:
        """The optimizer/scheduler arguments every method receives from the top-level groups."""
        return {
            "optimizer": plain_config(cfg.optimizer),
            "scheduler": plain_config(cfg.get("scheduler")),
        }

    def configure_optimizers(self) -> Any:
        optimizer = instantiate(self.optimizer_config, params=self.parameters())
        if self.scheduler_config is None:
            return optimizer
        scheduler = instantiate(self.scheduler_config, optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }

    def log_loss_terms(self, stage: str, terms: Mapping[str, Tensor], batch_size: int) -> None:
        """Log each named loss term; stop on a non-finite one.

        Training terms become `train/{name}_step` (on the steps the loggers write) and
        `train/{name}_epoch` (the example-weighted epoch mean); other stages log
        `{stage}/{name}` per epoch, synchronised over DDP ranks. Checked before the optimizer
        step, so no NaN weights are ever checkpointed.
        """
        for name, value in terms.items():
            if self.check_finite_loss:
                self._stop_if_not_finite(stage, name, value)
            if stage == "train":
                self._log_train_term(name, value, batch_size)
            else:
                self.log(
                    f"{stage}/{name}",
                    value,
                    batch_size=batch_size,
                    prog_bar=name == "loss",
                    on_step=False,
                    on_epoch=True,
                    sync_dist=True,
                )

    def _stop_if_not_finite(self, stage: str, name: str, value: Tensor) -> None:
        number = float(value.detach())
        if not math.isfinite(number):
            raise NonFiniteLossError(
                f"{stage} loss term '{name}' is {number} at global step {self.global_step} "
                f"(epoch {self.current_epoch}); training stopped, no checkpoint written. "
                "Try a lower optimizer.lr, trainer.gradient_clip_val, or check the inputs."
            )

    def _log_train_term(self, name: str, value: Tensor, batch_size: int) -> None:
        # `self.log(on_step=True, on_epoch=True)` costs ~1.5 ms per call on a CPU (a torchmetrics
        # update and a device move of its state every step: 5% of a LeNet step). A running sum
        # gives the epoch mean, and the step value is logged only when the loggers write it.
        total, count = self._train_term_sums.get(name, (0.0, 0))
        self._train_term_sums[name] = (total + value.detach() * batch_size, count + batch_size)
        if self.global_step % self.trainer.log_every_n_steps == 0:
            self.log(
                f"train/{name}_step",
                value,
                batch_size=batch_size,
                prog_bar=name == "loss",
                on_step=True,
                on_epoch=False,
            )

    def on_train_epoch_end(self) -> None:
        for name, (total, count) in self._train_term_sums.items():
            self.log(
                f"train/{name}_epoch", total / count, on_step=False, on_epoch=True, sync_dist=True
            )
        self._train_term_sums.clear()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "config": self.run_config,
            "data": None if self.data_metadata is None else self.data_metadata.to_dict(),
            "method": f"{type(self).__module__}.{type(self).__qualname__}",
        }
