"""Training throughput of MIL on MNIST-bags in three batch layouts, same device, one run:

- **flat segments** (weaksup): the instances of all bags of a batch in one `[N, ...]` tensor
  with bag offsets, pooled per segment;
- **padded + mask** (the layout of other MIL libraries): every bag padded with zero instances to
  the longest bag of the batch, `[B, K_max, ...]` plus a `[B, K_max]` mask, the instance network
  run on the padding too and the attention softmax masked;
- **one bag per step** (Ilse et al.'s repository): batch size 1, where both layouts coincide.

    python benchmarks/mil_throughput.py                       # CPU, prints a table
    python benchmarks/mil_throughput.py --batch-sizes 1 32 64 --threads 2 --device cuda
    python benchmarks/mil_throughput.py --layouts flat        # no padded rows
    python benchmarks/mil_throughput.py --no-channels-last    # LeNet in NCHW memory

Each row trains the same model (LeNet-like backbone, attention pooling, bag BCE, Adam) from
the same initial weights for `--seconds` after a warm-up, `--rounds` times in turn with the
other rows (the median is shown, the range beside it), reading batches from the real
`BagDataModule` loader (the same bags, of the same sizes, in the same order for every row),
and counts bags per second (padding, forward, loss, backward, optimizer step). Before timing,
the padded forward is checked to give the flat forward's bag logits on a real batch.
The GFLOP/s column is bags/s times the floating-point operations of one bag's training step
(forward + backward, counted once with `torch.utils.flop_counter.FlopCounterMode`): the
speed-up of a row is exactly its gain in useful arithmetic throughput, which shows how far a
device is from running the one-bag step as efficiently as the large one. The `computed`
column is instances run through the network per real instance (the padding's extra work).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from hydra import compose, initialize_config_module
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.flop_counter import FlopCounterMode

from weaksup.build import build_datamodule, build_method
from weaksup.data.bags import BagBatch
from weaksup.losses.pooling import AttentionPooling

LAYOUTS = ("flat", "padded")


def pad_bags(batch: BagBatch) -> tuple[Tensor, Tensor]:
    """The padding collate of other MIL libraries: `[B, K_max, ...]` instances (zeros after each
    bag's own) and the `[B, K_max]` mask of real instances."""
    sizes = batch.bag_sizes
    bags = list(batch.instances.split(sizes.tolist()))
    padded = pad_sequence(bags, batch_first=True)
    mask = torch.arange(padded.shape[1])[None, :] < sizes[:, None]
    return padded, mask


def padded_bag_logits(model, padded: Tensor, mask: Tensor) -> Tensor:
    """Bag logits `[B]` of the padded layout: the instance network on all `B·K_max` instances,
    attention logits of the padding set to -inf before the softmax over each row."""
    num_bags, longest = mask.shape
    embeddings = model.embed(padded.flatten(0, 1))
    logits = model.pooling.attention_logits(embeddings).view(num_bags, longest)
    weights = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=1)
    pooled = (weights.unsqueeze(2) * embeddings.view(num_bags, longest, -1)).sum(dim=1)
    return model.classifier(pooled)[:, 0]


def check_padded_layout(model, datamodule, num_bags: int = 8) -> None:
    """The padded forward gives the flat forward's bag logits (eval mode, one real batch)."""
    datamodule.batch_size = num_bags
    batch = next(iter(datamodule.train_dataloader()))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        flat = model(batch).bag_logits
        padded = padded_bag_logits(model, *pad_bags(batch))
    model.train(was_training)
    torch.testing.assert_close(padded, flat, rtol=1e-4, atol=1e-5)


def measure(
    model,
    datamodule,
    batch_size: int,
    seconds: float,
    warmup_steps: int,
    device: str,
    layout: str = "flat",
) -> dict:
    datamodule.batch_size = batch_size
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=1e-4)
    bags = steps = computed = real = 0
    started = None
    while True:
        for batch in datamodule.train_dataloader():
            labels = batch.bag_labels.to(device)
            if layout == "padded":
                padded, mask = pad_bags(batch)
                logits = padded_bag_logits(model, padded.to(device), mask.to(device))
                step_computed = mask.numel()
            else:
                batch.instances = batch.instances.to(device)
                batch.bag_offsets = batch.bag_offsets.to(device)
                logits = model(batch).bag_logits
                step_computed = batch.instances.shape[0]
            loss = model.loss(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            if steps == warmup_steps:
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                started, bags, computed, real = time.perf_counter(), 0, 0, 0
                continue
            bags += len(batch)
            computed += step_computed
            real += batch.instances.shape[0]
            if started is not None and time.perf_counter() - started >= seconds:
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - started
                return {
                    "layout": layout,
                    "batch_size": batch_size,
                    "bags_per_s": bags / elapsed,
                    "computed_per_real": computed / real,
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


def median_row(measured: list[dict]) -> dict:
    """The measurement of median bags/s, with the lowest and highest bags/s of all of them."""
    ordered = sorted(measured, key=lambda row: row["bags_per_s"])
    speeds = [row["bags_per_s"] for row in ordered]
    return {**ordered[len(ordered) // 2], "low": speeds[0], "high": speeds[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32, 64])
    parser.add_argument("--seconds", type=float, default=10.0, help="per row and round")
    parser.add_argument(
        "--rounds", type=int, default=3, help="times every row is measured, in turn (median)"
    )
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pooling", default="attention", help="attention or gated_attention")
    parser.add_argument(
        "--layouts",
        nargs="+",
        choices=LAYOUTS,
        default=list(LAYOUTS),
        help="batch layouts timed for each batch size above 1 (batch size 1: flat only)",
    )
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
    if "padded" in args.layouts:
        if not isinstance(model.pooling, AttentionPooling):
            parser.error(
                f"the padded layout needs an attention pooling, got --pooling {args.pooling}"
            )
        check_padded_layout(model, datamodule)
    train_bags = datamodule.splits.train
    instances_per_bag = train_bags.instances.shape[0] / train_bags.num_bags
    flops_per_bag = training_flops_per_instance(model, datamodule) * instances_per_bag
    runs = [
        (size, layout)
        for size in args.batch_sizes
        for layout in (["flat"] if size == 1 else args.layouts)
    ]
    # Rounds run every row once, in turn: a machine whose load drifts slows all rows alike.
    rounds = [
        [
            measure(
                copy.deepcopy(model),
                datamodule,
                size,
                args.seconds,
                args.warmup_steps,
                args.device,
                layout,
            )
            for size, layout in runs
        ]
        for _ in range(args.rounds)
    ]
    rows = [median_row([measured[index] for measured in rounds]) for index in range(len(runs))]
    reference = next(
        (row["bags_per_s"] for row in rows if row["batch_size"] == 1), rows[0]["bags_per_s"]
    )
    memory = "channels-last" if args.channels_last else "NCHW"
    print(
        f"MNIST-bags training throughput, LeNet ({memory}) + {args.pooling} pooling, "
        f"device={args.device}, threads={args.threads}, {instances_per_bag:.1f} instances per bag, "
        f"{flops_per_bag / 1e6:.0f} MFLOP per bag (forward + backward); bags/s: median of "
        f"{args.rounds} round(s) of {args.seconds:g} s per row (range in brackets)"
    )
    names = {"flat": "flat segments", "padded": "padded + mask"}
    print(
        f"{'layout':<16} {'bags/step':>9} {'bags/s':>9} {'(range)':>15} {'speed-up':>9} "
        f"{'GFLOP/s':>8} {'computed':>9} {'steps':>6}"
    )
    for row in rows:
        layout = "one bag" if row["batch_size"] == 1 else names[row["layout"]]
        print(
            f"{layout:<16} {row['batch_size']:>9} {row['bags_per_s']:>9.1f} "
            f"{'[' + format(row['low'], '.1f') + ', ' + format(row['high'], '.1f') + ']':>15} "
            f"{row['bags_per_s'] / reference:>8.1f}x "
            f"{row['bags_per_s'] * flops_per_bag / 1e9:>8.1f} "
            f"{row['computed_per_real']:>8.2f}x {row['steps']:>6}"
        )


if __name__ == "__main__":
    main()
