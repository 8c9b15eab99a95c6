"""Manual optimisation that keeps the promises Lightning's automatic optimisation makes.

A method that steps its optimizers itself (two updates per iteration, a teacher and a student,
gradients taken with `torch.autograd.grad` at other weights) sets `automatic_optimization =
False` and calls `optimizer.step()` in its `training_step` (Lightning docs, "Manual
Optimization": https://lightning.ai/docs/pytorch/stable/model/manual_optimization.html). Lightning
then leaves out what it does for automatic methods, and this base puts it back:

- **Gradient clipping.** Lightning refuses `Trainer(gradient_clip_val=...)` for manual methods
  (`trainer/configuration_validator.py`, `__verify_manual_optimization_support`) and its docs
  say to call `self.clip_gradients(...)` yourself. `weaksup.build.build_trainer` takes
  `trainer.gradient_clip_val`/`gradient_clip_algorithm` off the Trainer and hands them to the
  method, which clips in `on_before_optimizer_step`: Lightning's precision plugin calls that
  hook after `scaler.unscale_` under `16-mixed` (`plugins/precision/amp.py`,
  `MixedPrecision.optimizer_step` -> `_after_closure`), so the clipped gradients are the true ones.
- **Schedulers.** Lightning steps no scheduler of a manual method (`_update_learning_rates`
  returns early). Here each scheduler is stepped once per iteration (training batch) when its
  optimizer applied a step in that batch (interval `step`), or once per epoch (interval
  `epoch`). A step that AMP skipped does not count: `GradScaler.step` skips the update when
  the unscaled gradients hold Inf/NaN and `GradScaler.update` then lowers the scale (by
  `backoff_factor`), while an applied step keeps or grows it, so a lower scale after
  `optimizer.step()` means "skipped". (Counting `state["step"]` would not work for SGD, which
  keeps none.) That costs two host reads of the scale per step under `16-mixed` only, plus
  one per `loss_gradients` / `step_with_gradients` call.
- **Finite losses.** `WeakSupMethod.stop_if_not_finite("train")` runs before every optimizer
  step, so no step follows a NaN/Inf loss term (one host read per step).
- **Iterations.** Lightning's `global_step` counts every `optimizer.step()` (two optimizers:
  two per batch); `iteration` counts batches, as Lightning's log x-axis does
  (`fit_loop.epoch_loop._batches_that_stepped`).
- **EMA of the weights** (`ema_decay`), kept as buffers of the method (`ParameterAverage`), so
  they are in every checkpoint and `weaksup-eval` needs nothing else; `evaluation_forward` uses
  them for validation, test and prediction.
- **DDP.** Gradients of every step are averaged over the ranks by the method (one all-reduce
  of the optimizer's gradients, flattened), with DDP's own reducer switched off around
  `manual_backward`. DDP's reducer expects every parameter to get a gradient in each backward
  (unless `find_unused_parameters=True`), which two optimizers over two modules break, and it
  never sees gradients from `torch.autograd.grad` at all. Every rank must produce gradients
  for the same parameters (as DDP without `find_unused_parameters` requires too). Rank 0's
  buffers (BatchNorm statistics) are broadcast once per iteration, as DDP broadcasts them
  before each forward.

Between the last optimizer step of a batch and the checkpoints written at its end, the
scheduler steps and the EMA update run in a callback (`configure_callbacks`): Lightning runs
checkpoint callbacks after all others, so a checkpoint written at a batch end holds them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from pytorch_lightning.core.optimizer import LightningOptimizer
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from weaksup.config.validation import ConfigError
from weaksup.methods.base import WeakSupMethod
from weaksup.methods.ema import ParameterAverage

GRADIENT_CLIP_ALGORITHMS = ("norm", "value")


class ManualOptimizationMethod(WeakSupMethod):
    """Base of the methods that step their optimizers themselves (`automatic_optimization=False`).

    A subclass logs its loss terms (`log_loss_terms("train", ...)`) and then, per update, calls
    `step_with_loss(optimizer, loss)` or `step_with_gradients(optimizer, params, grads)` with an
    optimizer of `self.optimizers()`. It evaluates with `evaluation_forward(inputs)`. A subclass
    that overrides `on_before_optimizer_step`, `on_fit_start`, `configure_callbacks`, `setup`
    or `load_state_dict` calls the base's too.

    Args:
        optimizer, scheduler, check_finite_loss: as `WeakSupMethod`.
        scheduler_interval: step the schedulers every iteration (`"step"`) or every `"epoch"`.
        ema_decay: keep an EMA of `ema_network()`'s parameters with this decay (MPL: 0.995) and
            evaluate with it; None: evaluate the live weights.
    """

    def __init__(
        self,
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        scheduler_interval: str = "step",
        check_finite_loss: bool = True,
        ema_decay: float | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval, check_finite_loss)
        self.automatic_optimization = False
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ConfigError(
                f"method.ema_decay={ema_decay} is not an EMA decay: use a value in (0, 1) "
                "(e.g. 0.995), or null for no EMA"
            )
        self.ema_decay = ema_decay
        # Handed over from `trainer.*` by `weaksup.build.build_trainer` (Lightning refuses them).
        self.gradient_clip_val: float | None = None
        self.gradient_clip_algorithm: str = "norm"
        self.weight_average: ParameterAverage | None = None
        # Raw optimizers that applied a step in this iteration, and schedulers passed explicitly.
        self._stepped_optimizers: set[int] = set()
        self._requested_schedulers: dict[int, LRScheduler] = {}

    # ---- optimizers ---------------------------------------------------------------------------

    def optimizer_with_scheduler(self, parameters: Iterator[nn.Parameter]) -> dict[str, Any]:
        """One optimizer of `method.optimizer` (and scheduler of `scheduler`) over `parameters`.

        For `configure_optimizers` of a method with several optimizers: return a list of these.
        """
        optimizer = instantiate(self.optimizer_config, params=parameters)
        if self.scheduler_config is None:
            return {"optimizer": optimizer}
        scheduler = instantiate(self.scheduler_config, optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }

    def on_fit_start(self) -> None:
        for config in self.trainer.lr_scheduler_configs:
            if config.reduce_on_plateau:
                raise ConfigError(
                    f"scheduler {type(config.scheduler).__name__} needs a monitored metric, "
                    f"which {type(self).__name__} (manual optimisation) does not feed it; "
                    "choose a scheduler that steps by iteration or epoch"
                )

    def step_with_loss(
        self, optimizer: LightningOptimizer, loss: Tensor, scheduler: LRScheduler | None = None
    ) -> bool:
        """Zero the gradients, back-propagate `loss`, clip, and step `optimizer`.

        `scheduler` (besides the one `configure_optimizers` paired with `optimizer`) is stepped
        at the end of the iteration if this step was applied. Returns False when AMP skipped the
        step (Inf/NaN gradients under `16-mixed`).
        """
        raw = self._raw_optimizer(optimizer)
        if self.check_finite_loss:
            index = self.trainer.optimizers.index(raw)
            self._non_finite["train"].record(
                f"loss stepped by optimizer {index}", loss, self.global_step
            )
            self.stop_if_not_finite("train")
        optimizer.zero_grad()
        with self._local_gradients():
            self.manual_backward(loss)
        return self._step(optimizer, raw, scheduler)

    def loss_gradients(
        self, loss: Tensor, params: Sequence[nn.Parameter], *, retain_graph: bool = False
    ) -> tuple[list[Tensor | None], float | None]:
        """`torch.autograd.grad(loss, params)` for `step_with_gradients`, and the scale they carry.

        Under a `GradScaler` (`16-mixed`) the gradient of `loss × scale` is taken, as
        `manual_backward` does, so that gradients too small for half precision do not underflow
        to 0 in the backward pass; the scale is returned with them (None without a scaler) and
        `step_with_gradients(..., scale=...)` turns them into what the scaler expects even if a
        step in between changed its scale. None for a parameter the loss does not reach.
        """
        scale = self._loss_scale(loss.device)
        scaled = loss if scale is None else loss * scale
        grads = torch.autograd.grad(scaled, params, retain_graph=retain_graph, allow_unused=True)
        return list(grads), None if scale is None else float(scale)

    def step_with_gradients(
        self,
        optimizer: LightningOptimizer,
        params: Sequence[nn.Parameter],
        grads: Sequence[Tensor | None],
        scheduler: LRScheduler | None = None,
        scale: float | None = None,
    ) -> bool:
        """Step `optimizer` with gradients computed elsewhere (`loss_gradients`).

        `grads[i]` (None: no gradient) becomes `params[i].grad` and is modified in place
        (averaged over ranks, scaled, unscaled, clipped). `scale` is the loss scale the
        gradients carry (`loss_gradients` gives it; None: true, unscaled gradients). Under a
        `GradScaler` they are multiplied by `current scale / scale` (powers of two: exact),
        which Lightning's `unscale_` divides out, so the Inf/NaN check and skip apply as for a
        loss.
        """
        raw = self._raw_optimizer(optimizer)
        if self.check_finite_loss:
            self.stop_if_not_finite("train")
        owned = {id(param) for group in raw.param_groups for param in group["params"]}
        if any(id(param) not in owned for param in params):
            raise ValueError("step_with_gradients: a parameter is not one of this optimizer's")
        optimizer.zero_grad()
        current = self._loss_scale(params[0].device) if params else None
        factor = (1.0 if current is None else float(current)) / (1.0 if scale is None else scale)
        for param, grad in zip(params, grads, strict=True):
            if grad is not None:
                param.grad = grad.detach() if factor == 1.0 else grad.detach() * factor
        return self._step(optimizer, raw, scheduler)

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Clip after Lightning's precision plugin has unscaled the gradients (`_after_closure`)."""
        if self.gradient_clip_val:
            self.clip_gradients(
                optimizer,
                gradient_clip_val=self.gradient_clip_val,
                gradient_clip_algorithm=self.gradient_clip_algorithm,
            )

    def _step(
        self, optimizer: LightningOptimizer, raw: Optimizer, scheduler: LRScheduler | None
    ) -> bool:
        self._average_gradients_over_ranks(raw)
        scaler = self._grad_scaler()
        scale_before = None if scaler is None else scaler.get_scale()
        optimizer.step()
        applied = scaler is None or scaler.get_scale() >= scale_before
        if applied:
            self._stepped_optimizers.add(id(raw))
            if scheduler is not None:
                self._requested_schedulers[id(scheduler)] = scheduler
        return applied

    @staticmethod
    def _raw_optimizer(optimizer: LightningOptimizer) -> Optimizer:
        if not isinstance(optimizer, LightningOptimizer):
            raise TypeError(
                "pass an optimizer of self.optimizers() (a LightningOptimizer): a bare "
                "torch optimizer would skip precision scaling, clipping and Lightning's step count"
            )
        return optimizer.optimizer

    def _grad_scaler(self) -> torch.amp.GradScaler | None:
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        return scaler if scaler is not None and scaler.is_enabled() else None

    def _loss_scale(self, device: torch.device) -> Tensor | None:
        scaler = self._grad_scaler()
        # `scale` creates the scale tensor on first use, as `manual_backward` would.
        return None if scaler is None else scaler.scale(torch.ones((), device=device))

    def _local_gradients(self) -> contextlib.AbstractContextManager[Any]:
        """Switch DDP's reducer off for a backward (the method averages the gradients itself)."""
        if self.trainer.world_size > 1 and hasattr(self.trainer.strategy, "block_backward_sync"):
            return self.trainer.strategy.block_backward_sync()
        return contextlib.nullcontext()

    def _average_gradients_over_ranks(self, optimizer: Optimizer) -> None:
        """Mean of the optimizer's gradients over the DDP ranks, in one flattened all-reduce."""
        world_size = self.trainer.world_size
        if world_size == 1 or not torch.distributed.is_initialized():
            return
        grads = [
            param.grad
            for group in optimizer.param_groups
            for param in group["params"]
            if param.grad is not None
        ]
        if not grads:
            return
        flat = torch.cat([grad.reshape(-1) for grad in grads])
        torch.distributed.all_reduce(flat)
        flat /= world_size
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()

    def _broadcast_buffers(self) -> None:
        """Rank 0's buffers (BatchNorm statistics) to every rank, once per iteration.

        What DDP does before each forward (`broadcast_buffers=True`) after a synchronised
        backward, which the method's own gradient averaging leaves out; without it every rank
        keeps the running statistics of its own shard.
        """
        if self.trainer.world_size == 1 or not torch.distributed.is_initialized():
            return
        by_dtype: dict[torch.dtype, list[Tensor]] = {}
        for name, buffer in self.named_buffers():
            if not name.startswith("weight_average."):  # equal on every rank already
                by_dtype.setdefault(buffer.dtype, []).append(buffer)
        for buffers in by_dtype.values():
            flat = torch.cat([buffer.reshape(-1) for buffer in buffers])
            torch.distributed.broadcast(flat, src=0)
            offset = 0
            for buffer in buffers:
                buffer.copy_(flat[offset : offset + buffer.numel()].view_as(buffer))
                offset += buffer.numel()

    # ---- iterations, schedulers and the EMA -----------------------------------------------------

    @property
    def iteration(self) -> int:
        """Training batches completed before the current one (Lightning's log x-axis)."""
        if self._trainer is None:
            return 0
        return self.trainer.fit_loop.epoch_loop._batches_that_stepped

    def configure_callbacks(self) -> list[pl.Callback]:
        return [IterationEnd()]

    def finish_iteration(self) -> None:
        """Batch end: sync the buffers over ranks, step the schedulers of the optimizers that
        stepped, update the EMA."""
        self._broadcast_buffers()
        stepped, self._stepped_optimizers = self._stepped_optimizers, set()
        requested, self._requested_schedulers = self._requested_schedulers, {}
        if not stepped:
            return
        for config in self.trainer.lr_scheduler_configs:
            if config.interval == "step" and id(config.scheduler.optimizer) in stepped:
                requested.setdefault(id(config.scheduler), config.scheduler)
        for scheduler in requested.values():
            scheduler.step()
        average = self._weight_average()
        if average is not None:
            average.update(self._network_to_average())

    def finish_epoch(self) -> None:
        for config in self.trainer.lr_scheduler_configs:
            if config.interval == "epoch":
                config.scheduler.step()

    def ema_network(self) -> nn.Module | None:
        """The module whose parameters get an EMA (default: `self.network`, if there is one)."""
        network = getattr(self, "network", None)
        return network if isinstance(network, nn.Module) else None

    def evaluation_forward(self, inputs: Tensor) -> Tensor:
        """Outputs of `ema_network()` with the EMA weights when `ema_decay` is set, else live."""
        network = self._network_to_average()
        average = self._weight_average()
        if average is None:
            return network(inputs)
        return average.forward_with_averages(network, inputs)

    def _network_to_average(self) -> nn.Module:
        network = self.ema_network()
        if network is None:
            raise TypeError(
                f"{type(self).__name__} has no `network` module: override ema_network() to "
                "return the module to evaluate and average"
            )
        return network

    def _weight_average(self) -> ParameterAverage | None:
        """The EMA buffers, made on first use (the subclass builds its network after this
        base's `__init__`); from the network's current weights, as MPL-pytorch's copy."""
        if self.ema_decay is None:
            return None
        if self.weight_average is None:
            self.weight_average = ParameterAverage(self._network_to_average(), self.ema_decay)
        return self.weight_average

    def setup(self, stage: str) -> None:
        self._weight_average()  # before the strategy moves the model and restores a checkpoint

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        self._weight_average()  # `weaksup-eval` loads the weights before any Trainer hook
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


class IterationEnd(pl.Callback):
    """Ends each iteration of a `ManualOptimizationMethod` before any checkpoint is written.

    Lightning calls the checkpoint callbacks after every other callback and after the module's
    `on_train_epoch_end` (`trainer/connectors/callback_connector.py`, `_reorder_callbacks`).
    """

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        assert isinstance(pl_module, ManualOptimizationMethod)
        pl_module.finish_iteration()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert isinstance(pl_module, ManualOptimizationMethod)
        pl_module.finish_epoch()
