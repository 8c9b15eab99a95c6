"""`benchmarks/mil_throughput.py`'s padded layout (other MIL libraries' batches) computes what the
flat segments compute, so its row in `make bench-mil` times the same model on the same bags."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from weaksup.build import build_datamodule, build_method

from conftest import ComposeFn

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "mil_throughput.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mil_throughput", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mil_throughput", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("pooling", ["attention", "gated_attention"])
def test_padded_layout_gives_the_flat_bag_logits_and_gradients(
    bench: ModuleType, compose_train: ComposeFn, pooling: str
) -> None:
    cfg = compose_train(
        "method=mil", "data=mil_gaussian", f"pooling={pooling}", "data.source.num_train_bags=16"
    )
    datamodule = build_datamodule(cfg)
    torch.manual_seed(0)
    model = build_method(cfg, datamodule.metadata)
    datamodule.batch_size = 6
    batch = next(iter(datamodule.train_dataloader()))

    padded, mask = bench.pad_bags(batch)
    sizes = batch.bag_sizes
    assert padded.shape[:2] == (6, int(sizes.max())) and mask.sum(dim=1).tolist() == sizes.tolist()
    assert torch.equal(padded[mask], batch.instances)  # bag after bag, in order
    assert not padded[~mask].any()  # zero padding

    flat_logits = model(batch).bag_logits
    flat_logits.sum().backward()
    flat_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    padded_logits = bench.padded_bag_logits(model, padded, mask)
    padded_logits.sum().backward()
    torch.testing.assert_close(padded_logits, flat_logits, rtol=1e-5, atol=1e-6)
    for flat_grad, param in zip(flat_grads, model.parameters(), strict=True):
        torch.testing.assert_close(param.grad, flat_grad, rtol=1e-4, atol=1e-6)


def test_measure_counts_the_padding(bench: ModuleType, compose_train: ComposeFn) -> None:
    cfg = compose_train("method=mil", "data=mil_gaussian", "data.source.num_train_bags=32")
    datamodule = build_datamodule(cfg)
    model = build_method(cfg, datamodule.metadata)
    flat = bench.measure(model, datamodule, 8, 0.0, 1, "cpu", "flat")
    padded = bench.measure(model, datamodule, 8, 0.0, 1, "cpu", "padded")
    assert flat["computed_per_real"] == 1.0
    assert padded["computed_per_real"] > 1.0  # bag sizes differ: some padding
    assert (flat["layout"], padded["layout"]) == ("flat", "padded")
