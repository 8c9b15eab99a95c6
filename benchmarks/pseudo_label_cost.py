"""Memory and time per training step: SMPL vs Meta Pseudo Labels vs supervised.

    python benchmarks/pseudo_label_cost.py                  # part of make bench-ssl
    python benchmarks/pseudo_label_cost.py --backbone conv_small --device gpu

Every row is a real `weaksup-train` run (its own process) on MNIST-10k with the same backbone,
`B` labeled and `mu*B` unlabeled images per step, SGD, for `--warmup + --steps` iterations;
the callback `weaksup.step_cost.StepCostMeter` times each iteration inside the Trainer (updates
included, data loading excluded) and counts the bytes held at the peak of a step: on CUDA
`max_memory_allocated`; on the CPU the tensors autograd saves for backward at their peak
(`saved_tensors_hooks`), plus parameters, gradients and optimizer state.

Rows: `smpl` (one model, two updates), `mpl` (teacher + student), `smpl_supervised_only` (the
labeled loss on the same stream), and `supervised` on a labeled batch of `B + mu*B` images (the
same number of images through one network once).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROWS = ("smpl", "mpl", "smpl_supervised_only", "supervised")


def overrides(row: str, args: argparse.Namespace, run_dir: Path, result: Path) -> list[str]:
    steps = args.warmup + args.steps
    common = [
        f"method={row}",
        "data=mnist10k",
        f"backbone={args.backbone}",
        "optimizer=sgd",
        "trainer.max_epochs=1",
        f"+trainer.limit_train_batches={steps}",
        "+trainer.limit_val_batches=0",
        f"trainer.accelerator={args.device}",
        "test=false",
        "logger=none",
        "callbacks=none",
        "+callbacks.step_cost._target_=weaksup.step_cost.StepCostMeter",
        f"+callbacks.step_cost.path={result}",
        f"+callbacks.step_cost.warmup={args.warmup}",
        f"hydra.run.dir={run_dir}",
        "monitor.metric=train/loss_epoch",
        "monitor.mode=min",
    ]
    if row == "supervised":
        return [*common, f"data.batch_size={args.batch_size * (args.mu + 1)}"]
    return [
        *common,
        "data.num_labeled=100",
        f"data.batch_size={args.batch_size}",
        f"data.unlabeled_ratio={args.mu}",
        "method.plot_augmentations=false",
    ]


def measure(row: str, args: argparse.Namespace) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"bench-{row}-"))
    result = folder / "cost.json"
    command = [
        str(Path(sys.executable).with_name("weaksup-train")),
        *overrides(row, args, folder / "run", result),
        *args.set,
    ]
    env = {"OMP_NUM_THREADS": str(args.threads)}
    completed = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **env}, check=False
    )
    try:
        if completed.returncode != 0:
            raise RuntimeError(
                f"{row} failed:\n{completed.stdout[-2000:]}{completed.stderr[-2000:]}"
            )
        return {"row": row, **json.loads(result.read_text())}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="lenet")
    parser.add_argument("--batch-size", type=int, default=32, help="B, labeled images per step")
    parser.add_argument("--mu", type=int, default=7, help="unlabeled images per labeled one")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="trainer.accelerator: cpu or gpu")
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=ROWS)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    results = [measure(row, args) for row in args.rows]
    reference = {r["row"]: r for r in results}.get("mpl")
    table = Table(
        title=f"{args.backbone}, B={args.batch_size} labeled + {args.mu * args.batch_size} "
        f"unlabeled 28x28 images, {args.device}, {args.threads} threads, median of {args.steps}"
    )
    for column in ("method", "ms / step", "peak memory (MiB)", "x MPL memory", "x MPL time"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for result in results:
        table.add_row(
            result["row"],
            f"{result['ms_per_step']:.1f}",
            f"{result['peak_bytes'] / 2**20:.1f}",
            "" if reference is None else f"{result['peak_bytes'] / reference['peak_bytes']:.2f}",
            "" if reference is None else f"{result['ms_per_step'] / reference['ms_per_step']:.2f}",
        )
    Console(width=110).print(table)


if __name__ == "__main__":
    main()
