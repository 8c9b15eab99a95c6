"""Time and memory of each training step of any method, measured inside a real Trainer.

`StepCostMeter` is a callback for benchmarks (`make bench-ssl`): it times every training batch
(from `on_train_batch_start` to `on_train_batch_end`: the method's whole iteration, updates
included, data loading excluded) and counts the bytes a step holds at its peak:

- on CUDA, `torch.cuda.max_memory_allocated` over the steps;
- elsewhere, the tensors autograd saves for backward, tracked with
  `torch.autograd.graph.saved_tensors_hooks` (each storage counted once, while any graph holds
  it; parameters excluded), at their peak within the step, plus the bytes of the parameters,
  their gradients and the optimizer state at the end of the step.

The first `warmup` steps are not counted. At the end of training the figures are written as
JSON to `path`: steps, median ms per step, peak bytes, and the bytes a graph still held after
an iteration ended (0 unless a graph leaks across steps); `keep_every_step` adds every peak.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from weaksup.files import atomic_write_text


class _SavedTensorLedger:
    """Bytes of the storages autograd currently holds for backward, and their peak."""

    def __init__(self, excluded: set[int]) -> None:
        self.excluded = excluded
        self.live: dict[int, list[int]] = {}  # storage pointer -> [bytes, holders]
        self.current = 0
        self.peak = 0

    def pack(self, tensor: Tensor) -> Any:
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer in self.excluded or storage.nbytes() == 0:
            return tensor
        # Detached: an output saved with its own grad_fn would make a reference cycle through
        # the autograd node that Python's collector cannot see, and the graph would never go.
        return _Holder(self, tensor.detach(), pointer, storage.nbytes())

    @staticmethod
    def unpack(packed: Any) -> Tensor:
        return packed.tensor if isinstance(packed, _Holder) else packed

    def hold(self, pointer: int, nbytes: int) -> None:
        entry = self.live.setdefault(pointer, [nbytes, 0])
        if entry[1] == 0:
            self.current += nbytes
            self.peak = max(self.peak, self.current)
        entry[1] += 1

    def release(self, pointer: int) -> None:
        entry = self.live[pointer]
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[pointer]


class _Holder:
    """A saved tensor; releases its count in the ledger when autograd frees it."""

    __slots__ = ("ledger", "pointer", "tensor")

    def __init__(self, ledger: _SavedTensorLedger, tensor: Tensor, pointer: int, nbytes: int):
        self.ledger = ledger
        self.tensor = tensor
        self.pointer = pointer
        ledger.hold(pointer, nbytes)

    def __del__(self) -> None:
        self.ledger.release(self.pointer)


def _tensor_bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, Tensor))


class StepCostMeter(pl.Callback):
    """Per-step time and peak memory of training, written to `path` (JSON) at train end."""

    def __init__(self, path: str, warmup: int = 3, keep_every_step: bool = False) -> None:
        self.path = Path(path)
        self.warmup = warmup
        self.keep_every_step = keep_every_step
        self.held_between_steps = 0
        self.times: list[float] = []
        self.peaks: list[int] = []
        self._started = 0.0
        self._seen = 0
        self._hooks: Any = None
        self._ledger: _SavedTensorLedger | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, *_: Any):
        if module.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            excluded = {p.untyped_storage().data_ptr() for p in module.parameters()}
            self._ledger = _SavedTensorLedger(excluded)
            self._hooks = torch.autograd.graph.saved_tensors_hooks(
                self._ledger.pack, self._ledger.unpack
            )
            self._hooks.__enter__()
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *_: Any):
        if module.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - self._started
        if module.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated()
        else:
            self._hooks.__exit__(None, None, None)
            # What a graph still holds once the iteration is over (0 unless one is leaked).
            self.held_between_steps = max(self.held_between_steps, self._ledger.current)
            parameters = list(module.parameters())
            state = [
                value
                for optimizer in trainer.optimizers
                for per_parameter in optimizer.state.values()
                for value in per_parameter.values()
            ]
            peak = (
                self._ledger.peak
                + _tensor_bytes(parameters)
                + _tensor_bytes(p.grad for p in parameters)
                + _tensor_bytes(state)
            )
        self._seen += 1
        if self._seen > self.warmup:
            self.times.append(elapsed)
            self.peaks.append(peak)

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not self.times:
            raise RuntimeError(
                f"StepCostMeter measured no step: train more than warmup={self.warmup} batches"
            )
        figures: dict[str, Any] = {
            "steps": len(self.times),
            "ms_per_step": 1000 * statistics.median(self.times),
            "peak_bytes": max(self.peaks),
            "held_between_steps": self.held_between_steps,
            "device": module.device.type,
        }
        if self.keep_every_step:
            figures["peaks"] = self.peaks
        atomic_write_text(self.path, json.dumps(figures))
