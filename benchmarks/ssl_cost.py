"""Cost of a semi-supervised training step against a supervised one, same batch, same backbone.

    python benchmarks/ssl_cost.py                          # make bench-ssl: CPU, LeNet, B=32, mu=7
    python benchmarks/ssl_cost.py --backbone conv_small --device cuda

Every row trains the same backbone (built by the project's config, MNIST-10k shapes) from the
same initial weights with Adam on the same random batch of `B` labeled and `mu*B` unlabeled
28x28 images:

* supervised, labeled batch: cross-entropy on the `B` labeled images (what a supervised run
  on `num_labeled` does per step);
* supervised, whole batch: cross-entropy on all `B + mu*B` images as if all were labeled: the
  same number of examples through the network, the reference of the cost targets;
* each method variant: its full training step (forward, loss terms, backward into the
  parameters as the method does, optimizer step).

Printed per row: milliseconds per step, the median of `--steps` steps after `--warmup`, the
rows' steps taken in turn in one process (so a slower stretch of the machine slows every row
alike); the ratio to the whole-batch supervised step; and the peak memory of the row's steps,
each row alone in a fresh process: on CUDA `max_memory_allocated`, on the CPU the rise of the
process's peak resident set size from before the first step to after the last (activations,
autograd graph, gradients and optimizer state; the weights and the batch are already resident).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table
from torch.nn import functional as F

ROWS = {
    "supervised, labeled batch": None,
    "supervised, whole batch": None,
    "inversion (multiscale)": "inversion",
    "inversion (single scale)": "inversion_single_scale",
    "inversion (entropy only)": "inversion_entropy_only",
}


def build(backbone: str, method: str | None, extra: list[str]):
    """The backbone and, for a method row, the method's loss, from the shipped configs."""
    from hydra import compose, initialize_config_module

    from weaksup.config.instantiate import build_node

    overrides = [f"backbone={backbone}", f"method={method or 'inversion'}", "paths.output_dir=."]
    overrides += extra
    with initialize_config_module(version_base="1.3", config_module="weaksup.conf"):
        cfg = compose(config_name="train", overrides=overrides)
    torch.manual_seed(0)
    network = build_node(cfg.backbone, input_shape=[1, 28, 28], num_outputs=10)
    loss = build_node(cfg.method.loss) if method else None
    return network, loss


def make_step(row: str, args: argparse.Namespace) -> Callable[[], None]:
    """One training step of `row` on its own copy of the network (same initial weights)."""
    device = torch.device(args.device)
    network, loss = build(args.backbone, ROWS[row], args.set)
    network = network.to(device)
    generator = torch.Generator().manual_seed(1)
    labeled = torch.rand(args.batch_size, 1, 28, 28, generator=generator).to(device)
    targets = torch.randint(0, 10, (args.batch_size,), generator=generator).to(device)
    unlabeled = torch.rand(args.mu * args.batch_size, 1, 28, 28, generator=generator).to(device)
    parameters = list(network.parameters())
    optimizer = torch.optim.Adam(parameters, lr=1e-3)

    def step() -> None:
        if row == "supervised, labeled batch":
            value = F.cross_entropy(network(labeled), targets)
        elif row == "supervised, whole batch":
            everything = torch.cat([labeled, unlabeled])
            value = F.cross_entropy(network(everything), targets.repeat(args.mu + 1))
        else:
            value = loss(network, labeled, targets, unlabeled)["loss"]
        optimizer.zero_grad(set_to_none=True)
        # As InversionClassifier.backward: into the parameters only, not the input leaf.
        value.backward(inputs=parameters)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def peak_memory_mb(row: str, args: argparse.Namespace) -> float:
    """Peak memory of `--warmup + --steps` steps of one row, alone in this process."""
    device = torch.device(args.device)
    step = make_step(row, args)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    resident_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(args.warmup + args.steps):
        step()
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    resident_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (resident_after - resident_before) / 1024  # ru_maxrss is in KiB on Linux


def interleaved_milliseconds(args: argparse.Namespace) -> dict[str, float]:
    """Median milliseconds per step of every row, the rows' steps taken in turn.

    Round-robin (row 1, row 2, ..., row 1, ...) so that a slower stretch of a shared machine
    hits every row alike and the ratios hold even when the absolute times drift; measured
    separately, one process after the other, the same row varied by up to 40% between runs here.
    """
    steps = {row: make_step(row, args) for row in ROWS}
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {row: [] for row in ROWS}
    for _ in range(args.steps):
        for row, step in steps.items():
            started = time.perf_counter()
            step()
            times[row].append(time.perf_counter() - started)
    return {row: 1000 * statistics.median(values) for row, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="lenet", help="a backbone option: lenet, conv_small")
    parser.add_argument("--batch-size", type=int, default=32, help="B, labeled images per step")
    parser.add_argument("--mu", type=int, default=7, help="unlabeled images per labeled one")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides, e.g. backbone.channels_last=false method.loss.scales=input",
    )
    parser.add_argument("--row", help=argparse.SUPPRESS)  # internal: one row's memory
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.row:
        print(json.dumps({"peak_mb": peak_memory_mb(args.row, args)}))
        return
    # Memory first: Linux carries a process's peak resident size over to the programs it
    # starts, so children started after this process's own steps would report no rise.
    memory = {}
    for row in ROWS:
        completed = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--row", row],
            capture_output=True,
            text=True,
            check=True,
        )
        memory[row] = json.loads(completed.stdout.strip().splitlines()[-1])
    milliseconds = interleaved_milliseconds(args)
    results = [{"row": row, "ms": milliseconds[row], **memory[row]} for row in ROWS]
    reference = next(r["ms"] for r in results if r["row"] == "supervised, whole batch")
    table = Table(
        title=f"{args.backbone} {' '.join(args.set)}, B={args.batch_size} labeled + "
        f"{args.mu * args.batch_size} unlabeled 28x28 images, {args.device}, {args.threads} threads"
    )
    for column in ("step", "ms / step", "x whole-batch supervised", "peak memory (MiB)"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for result in results:
        table.add_row(
            result["row"],
            f"{result['ms']:.1f}",
            f"{result['ms'] / reference:.2f}",
            f"{result['peak_mb']:.0f}",
        )
    Console(width=110).print(table)
    print("target: the multiscale inversion step <= 3x the whole-batch supervised step")


if __name__ == "__main__":
    main()
