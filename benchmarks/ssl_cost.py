"""Cost of a semi-supervised training step against a supervised one, same batch, same backbone.

    python benchmarks/ssl_cost.py                          # make bench-ssl: CPU, LeNet, B=32, mu=7
    python benchmarks/ssl_cost.py --backbone conv_small --device cuda

Every row trains the same backbone (built by the project's config, MNIST-10k shapes) from the
same initial weights with Adam on the same random batch of `B` labeled and `mu*B` unlabeled
28x28 images, for `--steps` steps after `--warmup` steps, each row in a fresh process:

* supervised, labeled batch: cross-entropy on the `B` labeled images (what a supervised run
  on `num_labeled` does per step);
* supervised, whole batch: cross-entropy on all `B + mu*B` images as if all were labeled: the
  same number of examples through the network, the reference of the cost targets;
* each method variant: its full training step (forward, loss terms, backward, optimizer step).

Printed per row: milliseconds per step (median), the ratio to the whole-batch supervised step,
and the peak memory of the steps: on CUDA `max_memory_allocated`, on the CPU the rise of the
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


def run_row(row: str, args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    network, loss = build(args.backbone, ROWS[row], args.set)
    network = network.to(device)
    generator = torch.Generator().manual_seed(1)
    labeled = torch.rand(args.batch_size, 1, 28, 28, generator=generator).to(device)
    targets = torch.randint(0, 10, (args.batch_size,), generator=generator).to(device)
    unlabeled = torch.rand(args.mu * args.batch_size, 1, 28, 28, generator=generator).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)

    def step() -> None:
        if row == "supervised, labeled batch":
            value = F.cross_entropy(network(labeled), targets)
        elif row == "supervised, whole batch":
            everything = torch.cat([labeled, unlabeled])
            value = F.cross_entropy(network(everything), targets.repeat(args.mu + 1))
        else:
            value = loss(network, labeled, targets, unlabeled)["loss"]
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    resident_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        resident_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_mb = (resident_after - resident_before) / 1024  # ru_maxrss is in KiB on Linux
    return {"row": row, "ms": 1000 * statistics.median(times), "peak_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="lenet", help="a backbone option: lenet, conv_small")
    parser.add_argument("--batch-size", type=int, default=32, help="B, labeled images per step")
    parser.add_argument("--mu", type=int, default=7, help="unlabeled images per labeled one")
    parser.add_argument("--steps", type=int, default=10)
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
    parser.add_argument("--row", help=argparse.SUPPRESS)  # internal: measure one row
    args = parser.parse_args()
    if args.row:
        print(json.dumps(run_row(args.row, args)))
        return
    results = []
    for row in ROWS:
        completed = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--row", row],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(completed.stdout.strip().splitlines()[-1]))
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
