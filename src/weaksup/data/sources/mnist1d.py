"""MNIST-1D (Greydanus & Kobak, 2020): ten 1-D digit templates, randomly padded, translated,
sheared, scaled and noised into length-40 signals, generated in code by the PyPI package `mnist1d`.

Only `mnist1d.data.make_dataset` is used: `mnist1d.get_dataset` would try to download a pickle.
Inputs are `[N, 40]` vectors (not `[N, 1, 40]`: a 1-D CNN backbone adds the channel axis itself),
standardised by the generator to mean 0 and standard deviation 1 over the whole set, so they are
not in [0, 1]. The generator's own 80/20 train/test split is kept; val is carved from train.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np

from weaksup.data.sources.base import (
    DatasetSplits,
    as_dataset,
    check_float,
    check_int,
    check_nonempty_splits,
    seeded_split_indices,
)

#: Fraction of the generated examples the generator puts in its train split.
MNIST1D_TRAIN_SPLIT = 0.8


class MNIST1D:
    """MNIST-1D generated with the package's default arguments except `num_samples` and `seed`.

    The generator makes `num_samples / 10` signals per class; the first 80% (after its shuffle)
    are train, the rest test. `val_fraction` of train becomes a seeded val split.
    Generating 5,000 signals takes about 2 s; `cache_dir` (default None: no cache) keeps the
    generated arrays in an `.npz` named after a hash of every generator argument.
    The generator seeds Python's and NumPy's global RNGs: their states are restored afterwards.
    """

    def __init__(
        self,
        num_samples: int = 5000,
        val_fraction: float = 0.1,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        self.num_samples = check_int("num_samples", num_samples, minimum=50)
        if self.num_samples % 10:
            raise ValueError(
                f"num_samples must be a multiple of 10 (equal signals per class), got {num_samples}"
            )
        self.val_fraction = check_float(
            "val_fraction", val_fraction, minimum=0, maximum=1, open_minimum=True, open_maximum=True
        )
        self.seed = check_int("seed", seed, minimum=0, maximum=2**32 - 1)
        self.cache_dir = None if cache_dir is None else Path(cache_dir).expanduser()
        check_nonempty_splits(
            "num_samples * 0.8", int(self.num_samples * MNIST1D_TRAIN_SPLIT), self.val_fraction
        )

    def generator_args(self) -> dict[str, object]:
        """Every argument `mnist1d.data.make_dataset` reads (the download `url` excluded)."""
        from mnist1d.data import get_dataset_args

        args = get_dataset_args(as_dict=True)
        args.pop("url", None)
        args.update(num_samples=self.num_samples, seed=self.seed, train_split=MNIST1D_TRAIN_SPLIT)
        return args

    def cache_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        key = json.dumps(self.generator_args(), sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return self.cache_dir / f"mnist1d-n{self.num_samples}-seed{self.seed}-{digest}.npz"

    def generate(self) -> dict[str, np.ndarray]:
        """The generator's arrays `x, y, x_test, y_test`, from the cache when there is one."""
        path = self.cache_path()
        if path is not None and path.exists():
            with np.load(path, allow_pickle=False) as cached:
                return {name: cached[name] for name in ("x", "y", "x_test", "y_test")}
        from mnist1d.data import make_dataset
        from mnist1d.utils import ObjectView

        python_state, numpy_state = random.getstate(), np.random.get_state()
        try:
            dataset = make_dataset(ObjectView(self.generator_args()))
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
        arrays = {name: np.asarray(dataset[name]) for name in ("x", "y", "x_test", "y_test")}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename, so a concurrent reader never sees a half-written file.
            partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
            np.savez(partial, **arrays)
            os.replace(partial, path)
        return arrays

    def load(self) -> DatasetSplits:
        arrays = self.generate()
        train_idx, val_idx = seeded_split_indices(
            len(arrays["y"]), (1 - self.val_fraction, self.val_fraction), self.seed
        )
        return DatasetSplits(
            train=as_dataset(arrays["x"][train_idx], arrays["y"][train_idx]),
            val=as_dataset(arrays["x"][val_idx], arrays["y"][val_idx]),
            test=as_dataset(arrays["x_test"], arrays["y_test"]),
            num_classes=10,
            name="mnist1d",
        )
