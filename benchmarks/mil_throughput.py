"""Training throughput of MIL on MNIST-bags: many bags per step (flat instances + segment
pooling) against one bag per step (the way of Ilse et al.'s repository), same device, one run.

    python benchmarks/mil_throughput.py                       # CPU, prints a table
    python benchmarks/mil_throughput.py --batch-sizes 1 32 64 --threads 2 --device cuda
    python benchmarks/mil_throughput.py --no-channels-last    # LeNet in NCHW memory

Each row trains the same model (LeNet-like backbone, attention pooling, bag BCE, Adam) from
the same initial weights for `--seconds` after a warm-up, reading batches from the real
`BagDataModule` loader, and counts bags per second (forward, loss, backward, optimizer step).
The GFLOP/s column is bags/s times the floating-point operations of one bag's training step
(forward + backward, counted once with `torch.utils.flop_counter.FlopCounterMode`): the
speed-up of a row is exactly its gain in arithmetic throughput, which shows how far a device
is from running the one-bag step as efficiently as the large one.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from hydra import compose, initialize_config_module
from torch.utils.flop_counter import FlopCounterMode

from weaksup.build import build_datamodule, build_method


def measure(
    model, datamodule, batch_size: int, seconds: float, warmup_steps: int, device: str
) -> dict:
    datamodule.batch_size = batch_size
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=1e-4)
    bags = steps = 0
    started = None
    while True:
        for batch in datamodule.train_dataloader():
            batch.instances = batch.instances.to(device)
            batch.bag_offsets = batch.bag_offsets.to(device)
            batch.bag_labels = batch.bag_labels.to(device)
            loss = model.loss(model(batch).bag_logits, batch.bag_labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            if steps == warmup_steps:
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                started, bags = time.perf_counter(), 0
                continue
            bags += len(batch)
            if started is not None and time.perf_counter() - started >= seconds:
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - started
                return {
                    "batch_size": batch_size,
                    "bags_per_s": bags / elapsed,
                    "steps": steps - warmup_steps,
                    "seconds": elapsed,
                }


def training_flops_per_instance(model, datamodule, num_bags: int = 8) -> float:
    """Floating-point operations of forward + backward per instance, counted on real bags."""
    datamodule.batch_size = num_bags
    batch = next(iter(datamodule.train_dataloader()))
    model = copy.deepcopy(model)
    with FlopCounterMode(display=False) as counter:
        model.loss(model(batch).bag_logits, batch.bag_labels).backward()
    return counter.get_total_flops() / batch.instances.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 64])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pooling", default="attention")
    parser.add_argument(
        "--no-channels-last",
        dest="channels_last",
        action="store_false",
        help="keep the LeNet convolutions in NCHW memory (backbone.channels_last=false)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with initialize_config_module("weaksup.conf", version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=mil_mnist_bags",
                f"pooling={args.pooling}",
                "data.source.num_train_bags=500",
                f"backbone.channels_last={str(args.channels_last).lower()}",
                "paths.output_dir=unused",
            ],
        )
    datamodule = build_datamodule(cfg)
    model = build_method(cfg, datamodule.metadata)
    train_bags = datamodule.splits.train
    instances_per_bag = train_bags.instances.shape[0] / train_bags.num_bags
    flops_per_bag = training_flops_per_instance(model, datamodule) * instances_per_bag
    rows = [
        measure(
            copy.deepcopy(model), datamodule, size, args.seconds, args.warmup_steps, args.device
        )
        for size in args.batch_sizes
    ]
    reference = next(
        (row["bags_per_s"] for row in rows if row["batch_size"] == 1), rows[0]["bags_per_s"]
    )
    memory = "channels-last" if args.channels_last else "NCHW"
    print(
        f"MNIST-bags training throughput, LeNet ({memory}) + {args.pooling} pooling, "
        f"device={args.device}, threads={args.threads}, {instances_per_bag:.1f} instances per bag, "
        f"{flops_per_bag / 1e6:.0f} MFLOP per bag (forward + backward)"
    )
    print(f"{'bags/step':>10} {'bags/s':>10} {'speed-up':>9} {'GFLOP/s':>8} {'steps':>7}")
    for row in rows:
        print(
            f"{row['batch_size']:>10} {row['bags_per_s']:>10.1f} "
            f"{row['bags_per_s'] / reference:>8.1f}x "
            f"{row['bags_per_s'] * flops_per_bag / 1e9:>8.1f} {row['steps']:>7}"
        )


if __name__ == "__main__":
    main()
