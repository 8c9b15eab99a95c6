"""Time of the weak + strong views of one batch: `python -m weaksup.augment.benchmark`.

Prints milliseconds per call (median and fastest of `--repeats` after `--warmup` calls; on a
shared machine the fastest is the better estimate of the cost) of `pair.weak`, `pair.strong`
and both, for a shipped `augment` option on random inputs; on CUDA the clock
waits for the device (`torch.cuda.synchronize`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from weaksup.build import group_options
from weaksup.config.instantiate import build_node


def time_call(
    function: Callable[[], object], device: torch.device, warmup: int, repeats: int
) -> tuple[float, float]:
    """Median and fastest milliseconds of `function()`."""

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        function()
    samples = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        function()
        synchronize()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples), min(samples)


def main(argv: list[str] | None = None) -> dict[str, tuple[float, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--option", default="images", help="an option of conf/augment/")
    parser.add_argument(
        "--shape", type=int, nargs="+", default=[224, 1, 28, 28], help="B, *input_shape"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    arguments = parser.parse_args(argv)
    device = torch.device(arguments.device)
    augmentation = build_node(group_options("augment")[arguments.option])
    pair = augmentation.for_input(tuple(arguments.shape[1:]))
    inputs = torch.rand(*arguments.shape, device=device, dtype=getattr(torch, arguments.dtype))
    torch.manual_seed(0)
    timings = {
        "weak_ms": time_call(
            lambda: pair.weak(inputs), device, arguments.warmup, arguments.repeats
        ),
        "strong_ms": time_call(
            lambda: pair.strong(inputs), device, arguments.warmup, arguments.repeats
        ),
        "weak_and_strong_ms": time_call(
            lambda: (pair.weak(inputs), pair.strong(inputs)),
            device,
            arguments.warmup,
            arguments.repeats,
        ),
    }
    print(
        f"augment={arguments.option} inputs {list(inputs.shape)} {arguments.dtype} on {device} "
        f"(torch threads {torch.get_num_threads()}): "
        + ", ".join(
            f"{name} {median:.2f} (fastest {best:.2f})" for name, (median, best) in timings.items()
        )
    )
    return timings


if __name__ == "__main__":
    main()
