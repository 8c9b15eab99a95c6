"""What every method shares: optimizers from config, guarded loss logging, checkpoint metadata.

A method is a LightningModule that only wires losses, a backbone and optimizers. It declares
the batch kind it consumes (`consumes`), and builds itself from the composed config with
`from_config`, so that adding a method is one class plus one `conf/method/*.yaml`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torchmetrics import MetricCollection

from weaksup.config.instantiate import build_node
from weaksup.data.batches import Batch
from weaksup.data.datamodules import DataMetadata
from weaksup.methods.nonfinite import NonFiniteWatch, describe, first_non_finite_tensor

CHECKPOINT_KEY = "weaksup"


class NonFiniteLossError(FloatingPointError):
    """A loss term or a weight became NaN or infinite; training stops before anything else is saved."""


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
        self._non_finite = {stage: NonFiniteWatch() for stage in ("train", "val", "test")}
        # Optimizer settings a resumed run accepted as changed (`resume_accept`): applied to the
        # restored optimizer state, which would otherwise keep the stored values.
        self.resumed_optimizer_settings: dict[str, Any] = {}

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

    @staticmethod
    def build_backbone(cfg: DictConfig, data: DataMetadata, num_outputs: int | None) -> Any:
        """The network of `cfg.backbone` for the data's input shape with `num_outputs` outputs."""
        return build_node(cfg.backbone, input_shape=list(data.input_shape), num_outputs=num_outputs)

    def configure_optimizers(self) -> Any:
        optimizer = instantiate(self.optimizer_config, params=self.parameters())
        if self.scheduler_config is None:
            return optimizer
        scheduler = instantiate(self.scheduler_config, optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }

    def on_train_start(self) -> None:
        if not self.resumed_optimizer_settings:
            return
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                for key, value in self.resumed_optimizer_settings.items():
                    if key in group:
                        group[key] = tuple(value) if isinstance(value, list) else value
                        if key == "lr" and "initial_lr" in group:
                            group["initial_lr"] = value

    def log_loss_terms(self, stage: str, terms: Mapping[str, Tensor], batch_size: int) -> None:
        """Log each named loss term and watch it for NaN/Inf.

        Training terms become `train/{name}_step` (on the steps the loggers write) and
        `train/{name}_epoch` (the example-weighted epoch mean); other stages log
        `{stage}/{name}` per epoch, synchronised over DDP ranks. Non-finite values are recorded
        on the device (`NonFiniteWatch`) and read on logging steps, at epoch ends and before
        every checkpoint, so no checkpoint ever holds what followed a NaN.
        """
        for name, value in terms.items():
            if self.check_finite_loss:
                self._non_finite[stage].record(name, value, self.global_step)
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

    def log_evaluation(
        self,
        stage: str,
        loss: Tensor,
        scores: Tensor,
        targets: Tensor,
        metrics: MetricCollection,
    ) -> None:
        """One validation/test batch: `{stage}/loss` (watched for NaN/Inf) and the stage's
        metrics updated with `scores` (shown on the progress bar for `val`)."""
        batch_size = len(targets)
        self.log_loss_terms(stage, {"loss": loss}, batch_size=batch_size)
        metrics.update(scores, targets)
        self.log_dict(metrics, on_epoch=True, prog_bar=stage == "val", batch_size=batch_size)

    def stop_if_not_finite(self, stage: str) -> None:
        """Raise `NonFiniteLossError` when a `stage` loss term has been NaN/Inf (one device read)."""
        first = self._non_finite[stage].first()
        if first is None:
            return
        where = f"at global step {first.step} (epoch {self.current_epoch})"
        if stage == "train":
            consequence = (
                "training stopped; checkpoints written before that step are kept, none after. "
                "Try a lower optimizer.lr, trainer.gradient_clip_val, or check the inputs."
            )
        else:
            consequence = "the weights give non-finite losses on this data; check the inputs."
        raise NonFiniteLossError(
            f"{stage} loss term '{first.term}' is {describe(first.value)} {where}; {consequence}"
        )

    def _log_train_term(self, name: str, value: Tensor, batch_size: int) -> None:
        # `self.log(on_step=True, on_epoch=True)` costs ~1.5 ms per call on a CPU (a torchmetrics
        # update and a device move of its state every step: 5% of a LeNet step). A running sum
        # gives the epoch mean, and the step value is logged only when the loggers write it.
        total, count = self._train_term_sums.get(name, (0.0, 0))
        self._train_term_sums[name] = (total + value.detach() * batch_size, count + batch_size)
        if self._loggers_write_this_step():
            self.log(
                f"train/{name}_step",
                value,
                batch_size=batch_size,
                prog_bar=name == "loss",
                on_step=True,
                on_epoch=False,
            )

    def _loggers_write_this_step(self) -> bool:
        """Whether Lightning writes step metrics after this training batch.

        The same test the Trainer applies (`(batches_that_stepped + 1) % log_every_n_steps`),
        so a `train/*_step` value is always the value of the step it is written at.
        """
        trainer = self.trainer
        return bool(trainer.fast_dev_run) or trainer._logger_connector.should_update_logs

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.check_finite_loss and self._loggers_write_this_step():
            self.stop_if_not_finite("train")

    def on_train_epoch_end(self) -> None:
        if self.check_finite_loss:
            self.stop_if_not_finite("train")
        for name, (total, count) in self._train_term_sums.items():
            self.log(
                f"train/{name}_epoch", total / count, on_step=False, on_epoch=True, sync_dist=True
            )
        self._train_term_sums.clear()

    def on_validation_end(self) -> None:
        self._stop_after_evaluation("val")

    def on_test_end(self) -> None:
        self._stop_after_evaluation("test")

    def _stop_after_evaluation(self, stage: str) -> None:
        watch = self._non_finite[stage]
        try:
            if self.check_finite_loss:
                self.stop_if_not_finite(stage)
        finally:
            watch.clear()  # each evaluation pass is judged on its own

    def _check_before_saving(self, checkpoint: dict[str, Any]) -> None:
        """No checkpoint holds weights that followed a non-finite loss, or are non-finite."""
        if not self.check_finite_loss:
            return
        self.stop_if_not_finite("train")
        self.stop_if_not_finite("val")
        bad_tensor = first_non_finite_tensor(checkpoint.get("state_dict", {}))
        if bad_tensor is not None:
            raise NonFiniteLossError(
                f"weight '{bad_tensor}' holds NaN/Inf at global step {self.global_step} "
                f"(epoch {self.current_epoch}); no checkpoint written for this step. Try a lower "
                "optimizer.lr or trainer.gradient_clip_val."
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._check_before_saving(checkpoint)
        checkpoint[CHECKPOINT_KEY] = {
            "config": self.run_config,
            "data": None if self.data_metadata is None else self.data_metadata.to_dict(),
            "method": f"{type(self).__module__}.{type(self).__qualname__}",
        }
