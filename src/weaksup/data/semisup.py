"""Semi-supervised training steps: a labeled stream and an unlabeled stream, drawn independently.

Each training step gets `B` labeled examples and `μ·B` unlabeled inputs (μ = `unlabeled_ratio`,
the "relative size of the unlabeled batch" of FixMatch, Sohn et al. 2020, Sec. 2.3; FixMatch
and Meta Pseudo Labels both train with μ = 7). The two streams:

* **unlabeled**: one permutation of the pool per epoch, drawn from `(seed, epoch, "unlabeled")`
  alone. An epoch is one pass over the pool: `ceil(U / μB)` steps, or `floor(U / μB)` with
  `drop_last` (which drops the incomplete last unlabeled batch).
* **labeled**: cycled inside the epoch. Pass `p` of epoch `e` over the labeled set is a
  permutation drawn from `(seed, e, "labeled", p)` alone; the passes are laid end to end and cut
  into batches of `B`, so a batch may span two passes (every batch does when the labeled set is
  smaller than `B`), and every step gets a full labeled batch. Each pass is a fresh draw,
  unlike an epoch-seeded sampler cycled inside an epoch, which repeats one order pass after pass.

So the labeled order depends only on `(seed, epoch)` and the labeled set, never on the pool, μ or
the batch size (those only decide how much of it an epoch uses), and the unlabeled order only on
`(seed, epoch)` and the pool size. A resumed run (Lightning calls `set_epoch`) replays both.

One sampler item is one whole step, `(labeled positions [B], unlabeled positions [<= μB])`, and
`SemiSupervisedDataset` gathers it with one index per stream: no per-example Python work, and
DataLoader workers receive the positions drawn in the main process, so `num_workers > 0` gives
the same batches. Under DDP, Lightning's `DistributedSamplerWrapper` deals whole steps to the
ranks (each rank trains on its own `B + μB` per step) and forwards `set_epoch`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from weaksup.data.batches import Batch, SemiSupervisedBatch
from weaksup.data.sources.base import ArrayDataset

#: Stream identifiers mixed into the seed: the two orders never share random numbers.
LABELED_STREAM = 1
UNLABELED_STREAM = 2

Step = tuple[Tensor, Tensor]


def stream_generator(seed: int, epoch: int, stream: int, pass_index: int = 0) -> torch.Generator:
    """A generator seeded by `(seed, epoch, stream, pass_index)` alone.

    NumPy's `SeedSequence` hashes the tuple, so neighbouring tuples give unrelated streams
    (unlike `seed * K + epoch`, where seed s, epoch K and seed s + 1, epoch 0 coincide).
    """
    entropy = [seed, epoch, stream, pass_index]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0]))


def _check_count(key: str, value: object, minimum: int) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class SemiSupervisedSampler(Sampler[Step]):
    """Yields one `(labeled positions, unlabeled positions)` pair per training step.

    Positions index the labeled set (`[0, num_labeled)`) and the unlabeled pool
    (`[0, num_unlabeled)`); `SemiSupervisedDataset` turns them into rows. See the module
    docstring for how each stream is ordered.

    Args:
        num_labeled: size of the labeled set (may be smaller than `batch_size`).
        num_unlabeled: size of the unlabeled pool; it sets the epoch length.
        batch_size: labeled examples per step (`B`).
        unlabeled_ratio: unlabeled inputs per labeled example (`μ`).
        seed: seeds both streams.
        drop_last: drop the incomplete last unlabeled batch.
    """

    def __init__(
        self,
        num_labeled: int,
        num_unlabeled: int,
        batch_size: int,
        unlabeled_ratio: int,
        seed: int,
        drop_last: bool = False,
    ) -> None:
        self.num_labeled = _check_count("the labeled set size", num_labeled, 1)
        self.num_unlabeled = _check_count("the unlabeled pool size", num_unlabeled, 1)
        self.batch_size = _check_count("data.batch_size", batch_size, 1)
        self.unlabeled_ratio = _check_count("data.unlabeled_ratio", unlabeled_ratio, 1)
        self.seed = _check_count("data.seed", seed, 0)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        if len(self) == 0:
            raise ValueError(
                f"data.drop_last=true leaves no training step: the unlabeled pool holds "
                f"{self.num_unlabeled} inputs, fewer than one unlabeled batch of data.batch_size "
                f"x data.unlabeled_ratio = {self.unlabeled_batch_size}; lower either, or set "
                "data.drop_last=false"
            )

    @property
    def unlabeled_batch_size(self) -> int:
        return self.batch_size * self.unlabeled_ratio

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.num_unlabeled, self.unlabeled_batch_size)
        return full + int(rest > 0 and not self.drop_last)

    def unlabeled_order(self) -> Tensor:
        """This epoch's permutation of the pool (its first `len(self) * μB` entries are used)."""
        generator = stream_generator(self.seed, self.epoch, UNLABELED_STREAM)
        return torch.randperm(self.num_unlabeled, generator=generator)

    def labeled_order(self, count: int) -> Tensor:
        """The first `count` labeled positions of this epoch: fresh permutations end to end."""
        passes = math.ceil(count / self.num_labeled)
        permutations = [
            torch.randperm(
                self.num_labeled,
                generator=stream_generator(self.seed, self.epoch, LABELED_STREAM, pass_index),
            )
            for pass_index in range(passes)
        ]
        return torch.cat(permutations)[:count]

    def __iter__(self) -> Iterator[Step]:
        # A generator: the orders are drawn at the first step, not when `iter()` is called. On
        # resume Lightning makes the loader iterator before it calls `set_epoch`, and without
        # auto-batching the DataLoader calls `iter(sampler)` at once.
        steps = len(self)
        labeled = self.labeled_order(steps * self.batch_size).view(steps, self.batch_size)
        unlabeled = self.unlabeled_order()[: steps * self.unlabeled_batch_size]
        yield from zip(labeled.unbind(0), unlabeled.split(self.unlabeled_batch_size), strict=True)


class SemiSupervisedDataset(Dataset):
    """Serves whole `SemiSupervisedBatch`es from tensors, one gather per stream.

    An item is either a step drawn by `SemiSupervisedSampler` (a pair of position tensors), or
    an integer `i`: step `i` in stored order, no shuffling (labeled positions `iB ... iB + B - 1`
    modulo the labeled set, the `i`-th slice of the pool). The integer form is what
    `trainer.overfit_batches` replays when Lightning swaps in a sequential sampler; `len` is
    the number of steps of an epoch.

    Args:
        labeled: the labeled examples.
        unlabeled_inputs: the inputs the pool draws from (the whole training split).
        unlabeled_rows: rows of `unlabeled_inputs` that form the pool (None: all of them).
        batch_size: labeled examples per step (`B`), for the integer form.
        unlabeled_batch_size: unlabeled inputs per step (`μB`), for the integer form.
    """

    def __init__(
        self,
        labeled: ArrayDataset,
        unlabeled_inputs: Tensor,
        unlabeled_rows: Tensor | None,
        batch_size: int,
        unlabeled_batch_size: int,
    ) -> None:
        self.labeled = labeled
        self.unlabeled_inputs = unlabeled_inputs
        self.unlabeled_rows = unlabeled_rows
        self.batch_size = batch_size
        self.unlabeled_batch_size = unlabeled_batch_size

    @property
    def num_unlabeled(self) -> int:
        rows = self.unlabeled_rows
        return int(self.unlabeled_inputs.shape[0] if rows is None else rows.shape[0])

    def __len__(self) -> int:
        return math.ceil(self.num_unlabeled / self.unlabeled_batch_size)

    def __getitem__(self, step: Step | int) -> SemiSupervisedBatch:
        if isinstance(step, numbers.Integral):
            step = self.stored_order_step(int(step))
        labeled_positions, unlabeled_positions = step
        rows = unlabeled_positions
        if self.unlabeled_rows is not None:
            rows = self.unlabeled_rows[unlabeled_positions]
        return SemiSupervisedBatch(
            labeled=Batch(
                self.labeled.inputs[labeled_positions], self.labeled.targets[labeled_positions]
            ),
            unlabeled=self.unlabeled_inputs[rows],
        )

    def stored_order_step(self, index: int) -> Step:
        """Step `index` without shuffling (what `overfit_batches` trains on)."""
        if not 0 <= index < len(self):
            raise IndexError(f"step {index} is outside the {len(self)} steps of an epoch")
        start = index * self.batch_size
        labeled = torch.arange(start, start + self.batch_size) % len(self.labeled)
        unlabeled_start = index * self.unlabeled_batch_size
        unlabeled = torch.arange(
            unlabeled_start, min(unlabeled_start + self.unlabeled_batch_size, self.num_unlabeled)
        )
        return labeled, unlabeled
