"""What a fit prints: a progress bar that suits where the output goes, and a model summary.

In a terminal the Rich bar redraws one line in place. In a log file (CI, SLURM, `| tee`) the
same bar leaves its final frame wrapped over several lines, and a tqdm bar leaves carriage
returns and escape codes, so without a terminal `PlainProgressBar` prints one line per epoch
(and every `every_n_steps` training batches) instead. Lightning accepts exactly one
`ProgressBar` callback, so `progress_bar` chooses the kind when the callback is built.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ProgressBar, RichModelSummary, RichProgressBar

from weaksup.config.validation import ConfigError

PROGRESS_MODES = ("auto", "rich", "plain")
SEPARATOR = " · "
# Lightning's logger version ("v_num"): the run folder already names the run.
HIDDEN_METRICS = frozenset({"v_num"})


def progress_bar(mode: str = "auto", every_n_steps: int = 100, leave: bool = False) -> ProgressBar:
    """The progress bar callback for this process's output.

    mode: `auto` (a terminal gets the Rich bar, anything else plain lines), `rich`, or `plain`.
    every_n_steps: plain lines also every this many training batches (0: one line per epoch).
    leave: keep the finished Rich bars on screen.
    """
    if mode not in PROGRESS_MODES:
        raise ConfigError(
            f"callbacks.progress_bar.mode must be one of {', '.join(PROGRESS_MODES)}, got {mode!r}"
        )
    if every_n_steps < 0:
        raise ConfigError(
            "callbacks.progress_bar.every_n_steps must be >= 0 (0: one line per epoch), "
            f"got {every_n_steps}"
        )
    if mode == "rich" or (mode == "auto" and output_is_interactive()):
        return TerminalProgressBar(leave=leave)
    return PlainProgressBar(every_n_steps=every_n_steps)


def output_is_interactive() -> bool:
    """True when stdout is a terminal and no CI service runs us (a CI console is a log file)."""
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        return False
    return sys.stdout.isatty()


def _displayed(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in metrics.items() if name not in HIDDEN_METRICS}


class TerminalProgressBar(RichProgressBar):
    """Lightning's Rich bar without the logger version (`v_num`)."""

    def get_metrics(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> dict[str, int | str | float | dict[str, float]]:
        return _displayed(super().get_metrics(trainer, pl_module))


class PlainProgressBar(ProgressBar):
    """Plain lines: one per training epoch, and one every `every_n_steps` batches within an epoch.

        epoch 3/20 · step 30 · train/loss_epoch 0.4132 · val/loss 0.437 · val/acc 0.835 · 0.6 s
        epoch 4/20 · batch 100/400 · step 1300 · train/loss_step 0.3981 · val/acc 0.835 · 2.1 s

    The metrics are those the method logs with `prog_bar=True` (`v_num` left out); on the epoch
    line a `<name>_step` value gives way to the epoch mean `<name>_epoch` when one is logged.
    The time is the epoch's so far. No carriage returns, no escape codes: every line is final,
    so a log file reads like the console. Sanity check, validation, test and predict print nothing.
    """

    def __init__(self, every_n_steps: int = 100) -> None:
        super().__init__()
        self.every_n_steps = every_n_steps
        self._enabled = True
        self._epoch_started_at = time.monotonic()
        self._finished_epoch: tuple[str, int, float] | None = None

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._print_finished_epoch(trainer, pl_module)
        self._epoch_started_at = time.monotonic()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        batches_done = batch_idx + 1
        if (
            self.every_n_steps
            and batches_done % self.every_n_steps == 0
            and batches_done < self.total_train_batches
        ):
            position = f"batch {batches_done}/{self.total_train_batches}"
            metrics = _displayed(self.get_metrics(trainer, pl_module))
            self._print_line(
                [self._epoch_label(trainer), position, f"step {_iterations(trainer) + 1}"],
                metrics,
                time.monotonic() - self._epoch_started_at,
            )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The epoch means (`train/*_epoch`) are logged by the module's own epoch-end hook, which
        # Lightning calls after this one: the line is printed once they exist.
        self._finished_epoch = (
            self._epoch_label(trainer),
            _iterations(trainer),
            time.monotonic() - self._epoch_started_at,
        )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._print_finished_epoch(trainer, pl_module)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._print_finished_epoch(trainer, pl_module)  # the last epoch's numbers, before the error

    def _print_finished_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._finished_epoch is None:
            return
        epoch, step, seconds = self._finished_epoch
        self._finished_epoch = None
        metrics = _with_epoch_means(
            _displayed(self.get_metrics(trainer, pl_module)), trainer.callback_metrics
        )
        self._print_line([epoch, f"step {step}"], metrics, seconds)

    @staticmethod
    def _epoch_label(trainer: pl.Trainer) -> str:
        label = f"epoch {trainer.current_epoch + 1}"
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            label += f"/{trainer.max_epochs}"
        return label

    def _print_line(self, parts: list[str], metrics: Mapping[str, Any], seconds: float) -> None:
        if not self.is_enabled:
            return
        parts = parts + [f"{name} {_format_value(value)}" for name, value in metrics.items()]
        self.print(SEPARATOR.join([*parts, f"{seconds:.1f} s"]), flush=True)


def _with_epoch_means(metrics: Mapping[str, Any], logged: Mapping[str, Any]) -> dict[str, Any]:
    """`metrics` with each `<name>_step` replaced by `<name>_epoch` where that was logged."""
    shown: dict[str, Any] = {}
    for name, value in metrics.items():
        epoch_name = name.removesuffix("_step") + "_epoch"
        if name.endswith("_step") and epoch_name in logged:
            shown[epoch_name] = logged[epoch_name]
        else:
            shown[name] = value
    return shown


def _format_value(value: Any) -> str:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class ParameterSummary(RichModelSummary):
    """Lightning's Rich model summary without its FLOPs column when the FLOPs are unknown.

    Lightning counts FLOPs only by running the module's `example_input_array`; without one it
    prints a FLOPs column of zeros and "Total FLOPs: 0", which reads as a measurement.
    """

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        if total_flops:
            RichModelSummary.summarize(
                summary_data,
                total_parameters,
                trainable_parameters,
                model_size,
                total_training_modes,
                total_flops,
                **summarize_kwargs,
            )
            return
        _print_summary_without_flops(
            [(name, column) for name, column in summary_data if name != "FLOPs"],
            total_parameters,
            trainable_parameters,
            model_size,
            total_training_modes,
            summarize_kwargs.get("header_style", "bold magenta"),
        )


def _print_summary_without_flops(
    summary_data: list[tuple[str, list[str]]],
    total_parameters: int,
    trainable_parameters: int,
    model_size: float,
    total_training_modes: dict[str, int],
    header_style: str,
) -> None:
    """RichModelSummary's table and totals (Lightning 2.6), every column as given, no FLOPs."""
    from pytorch_lightning.utilities.model_summary.model_summary import (
        get_formatted_model_size,
        get_human_readable_count,
    )
    from rich import get_console
    from rich.table import Table

    right_aligned = {"Params", "Params per Device", "In sizes", "Out sizes"}
    table = Table(header_style=header_style)
    for name, _ in summary_data:
        table.add_column(
            name,
            justify="right" if name in right_aligned else "left",
            style="dim" if name == " " else "",
            no_wrap=name == "Name",
        )
    for row in zip(*(column for _, column in summary_data), strict=True):
        table.add_row(*row)
    console = get_console()
    console.print(table)

    totals = Table.grid(expand=True)
    totals.add_column()
    for label, value in (
        ("Trainable params", get_human_readable_count(int(trainable_parameters))),
        (
            "Non-trainable params",
            get_human_readable_count(int(total_parameters - trainable_parameters)),
        ),
        ("Total params", get_human_readable_count(int(total_parameters))),
        ("Total estimated model params size (MB)", get_formatted_model_size(model_size)),
        ("Modules in train mode", str(total_training_modes["train"])),
        ("Modules in eval mode", str(total_training_modes["eval"])),
    ):
        totals.add_row(f"[bold]{label}[/]: {value}")
    console.print(totals)


def progress_callbacks(cfg: Any) -> list[ProgressBar]:
    """The progress bar of a command without a `callbacks` group (eval, predict), if it shows one."""
    return [progress_bar()] if cfg.trainer.get("enable_progress_bar", True) else []


def _iterations(trainer: pl.Trainer) -> int:
    """Training iterations done (Lightning's log x-axis), not optimizer steps: a method that
    steps two optimizers per batch (SMPL, MPL) would show twice its iterations as `global_step`.
    Lightning counts the current batch only after `on_train_batch_end`."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped
