"""A MIL data set of one's own, by config (issue 17, item 1): `data=mil_csv` reads any CSV in the
usual MIL table layout, the `mil` package's data sets by name, and every problem in the file stops
the run with one message naming the file and the line (or the columns there are)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from weaksup.config.validation import ConfigError
from weaksup.data.bags import MilCsvBags, MuskBags
from weaksup.data.sources import DataError, read_mil_csv
from weaksup.data.sources.mil_csv import MilCsvLayout
from weaksup.train import main

from conftest import QUIET_OVERRIDES

README = Path(__file__).resolve().parents[2] / "README.md"
HEADER = ["instance", "molecule", "f1", "label", "f2", "f3"]
#: The layout of `HEADER` by name, and the same by position (no header line).
BY_NAME = (
    "data.source.header=true",
    "data.source.bag_column=molecule",
    "data.source.label_column=label",
    "data.source.ignore_columns=[instance]",
)
BY_POSITION = {"bag_column": 2, "label_column": 4, "ignore_columns": [1]}
FOLDS = ("data.source.num_folds=3",)


def table_cells(num_bags: int = 12, per_bag: int = 3, seed: int = 0) -> list[list[str]]:
    """Cells of a small MIL table in the `HEADER` layout: bags `mol-01` .. (odd ones positive,
    one witness per positive bag with f1 shifted by +4), text bag ids, label in the middle."""
    rng = np.random.default_rng(seed)
    lines, instance = [], 0
    for bag in range(1, num_bags + 1):
        label = bag % 2
        for position in range(per_bag):
            instance += 1
            shift = np.array([4.0 * (label and position == 0), 0.0, 0.0])
            f1, f2, f3 = (rng.normal(size=3) + shift).round(3)
            lines.append([str(instance), f"mol-{bag:02d}", str(f1), str(label), str(f2), str(f3)])
    return lines


def write_table(path: Path, lines: list[list[str]], header: bool = True) -> Path:
    rows = ([HEADER] if header else []) + lines
    path.write_text("".join(",".join(cells) + "\n" for cells in rows))
    return path


def train_args(run_dir: Path, *overrides: str) -> list[str]:
    return [
        "experiment=mil_csv",
        f"hydra.run.dir={run_dir}",
        *QUIET_OVERRIDES,
        "logger=csv",
        "callbacks.bag_mosaic=null",
        "trainer.max_epochs=1",
        *FOLDS,
        *overrides,
    ]


def test_own_csv_trains_through_weaksup_train(tmp_path: Path, run_entry_point) -> None:
    csv = write_table(tmp_path / "molecules.csv", table_cells())
    run = tmp_path / "run"
    result = run_entry_point(
        main,
        *train_args(run, f"data.source.path={csv}", *BY_NAME, "data.source.fold=1"),
        "data.source.split_seed=2",
    )
    assert result.code == 0, result.text
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"test/acc", "test/auc", "test/loss"}
    # 12 bags in 3 stratified folds: 4 test bags; every instance has the 3 features f1, f2, f3
    source = MilCsvBags(
        path=str(csv),
        header=True,
        bag_column="molecule",
        label_column="label",
        ignore_columns=["instance"],
        num_folds=3,
        fold=1,
        split_seed=2,
        val_fraction=0.0,
    )
    splits = source.load()
    assert splits.name == "molecules" and splits.instance_shape == (3,)
    assert splits.test.num_bags == 4 and splits.train.num_bags == 8
    assert splits.test.num_instances == 12 and int(splits.test.bag_labels.sum()) == 2


def test_columns_by_position_without_header_give_the_same_bags(tmp_path: Path) -> None:
    lines = table_cells()
    named = write_table(tmp_path / "named.csv", lines)
    plain = write_table(tmp_path / "plain.csv", lines, header=False)
    common = {"num_folds": 3, "fold": 2, "split_seed": 1, "val_fraction": 0.0}
    by_name = MilCsvBags(
        path=str(named),
        header=True,
        bag_column="molecule",
        label_column="label",
        ignore_columns=["instance"],
        **common,
    ).load()
    by_position = MilCsvBags(path=str(plain), **BY_POSITION, **common).load()
    for split in ("train", "val", "test"):
        ours, theirs = getattr(by_name, split), getattr(by_position, split)
        assert torch.equal(ours.instances, theirs.instances), split
        assert torch.equal(ours.bag_offsets, theirs.bag_offsets), split
        assert torch.equal(ours.bag_labels, theirs.bag_labels), split
    table = read_mil_csv(named, MilCsvLayout("molecule", "label", ("f3", "f1"), header=True))
    assert table.feature_names == ("column 6 ('f3')", "column 3 ('f1')")
    assert table.features[0].tolist() == pytest.approx([float(lines[0][5]), float(lines[0][2])])
    assert table.bag_ids[:4].tolist() == ["mol-01"] * 3 + ["mol-02"]
    assert table.lines[:2].tolist() == [2, 3]  # line 1 is the header


def test_mil_package_data_sets_by_name_are_the_musk_options() -> None:
    by_name = MilCsvBags(mil_dataset="musk1", fold=3, split_seed=2).load()
    musk = MuskBags("musk1", fold=3, split_seed=2).load()
    assert by_name.name == "musk1" and by_name.instance_shape == (166,)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(by_name, split).instances, getattr(musk, split).instances)
        assert torch.equal(getattr(by_name, split).bag_offsets, getattr(musk, split).bag_offsets)
    elephant = MilCsvBags(mil_dataset="elephant", val_fraction=0).read()
    assert elephant.features.shape == (1391, 230) and len(np.unique(elephant.bag_ids)) == 200


def test_readme_config_file_runs_as_copied(tmp_path: Path, run_entry_point) -> None:
    """The config file of the README's "Your own MIL data set", saved as the README says, trains."""
    section = README.read_text().split("## Your own MIL data set", 1)[1].split("\n## ", 1)[0]
    config = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert config is not None, "the README section has no yaml block"
    experiment = tmp_path / "my_conf" / "experiment" / "my_bags.yaml"
    experiment.parent.mkdir(parents=True)
    experiment.write_text(config.group(1))
    csv = write_table(tmp_path / "molecules.csv", table_cells())
    run = tmp_path / "run"
    args = train_args(run, f"data.source.path={csv}")
    args[0] = "experiment=my_bags"
    result = run_entry_point(main, "--config-dir", str(tmp_path / "my_conf"), *args)
    assert result.code == 0, result.text
    assert json.loads((run / "metrics.json").read_text())["test"]["test/acc"] >= 0


@pytest.mark.parametrize(
    ("edit", "overrides", "problem"),
    [
        (
            None,
            ("data.source.bag_column=molecules",),
            "no column 'molecules' (bag_column) in the header on line 1; its columns are: "
            "'instance', 'molecule', 'f1', 'label', 'f2', 'f3'",
        ),
        (
            None,
            ("data.source.feature_columns=[f1,2]",),
            "feature_columns holds column 2 ('molecule'), which is the bag_column",
        ),
        (
            None,
            ("data.source.label_column=9",),
            "label_column=9 but line 1 has 6 column(s) (positions 1 to 6); its header names "
            "'instance'",
        ),
        ((5, 2, "abc"), (), "line 5, column 3 ('f1'): 'abc' is not a number"),
        ((5, 4, " "), (), "line 5, column 5 ('f2'): '' is not a number"),
        (
            (4, 3, "2"),
            (),
            "line 4: bag label 2 (column 4 ('label')) must be 0 or 1 (1 line(s) with another",
        ),
        (
            (6, 3, "1"),
            (),
            "bag 'mol-02' has label 0 on line 5 but 1 on line 6; every line of a bag must carry",
        ),
        ((7, None, None), (), "line 7 has 5 columns, line 1 has 6: every line needs the same"),
        ((9, 5, "inf"), (), "line 9 holds inf at column 6 (1 row(s) hold NaN or infinite"),
    ],
    ids=[
        "missing-column-name",
        "feature-is-the-bag",
        "missing-column-position",
        "not-a-number",
        "blank-cell",
        "label-2",
        "bag-disagrees",
        "ragged-row",
        "infinite",
    ],
)
def test_csv_problems_stop_the_run_naming_file_and_line(
    tmp_path: Path,
    run_entry_point,
    edit: tuple[int, int | None, str | None] | None,
    overrides: tuple[str, ...],
    problem: str,
) -> None:
    lines = table_cells()
    if edit is not None:
        line, column, text = edit  # 1-based line of the file (line 1 is the header)
        if column is None:
            lines[line - 2] = lines[line - 2][:-1]
        else:
            lines[line - 2][column] = text
    csv = write_table(tmp_path / "bad.csv", lines)
    run = tmp_path / "run"
    result = run_entry_point(
        main, *train_args(run, f"data.source.path={csv}", *BY_NAME, *overrides)
    )
    assert result.code == 1
    assert f"DataError: {csv}: {problem}" in result.text, result.text
    assert "Traceback" not in result.text and not (run / "checkpoints").exists()


def test_missing_and_empty_files_say_where(tmp_path: Path, run_entry_point) -> None:
    run = tmp_path / "run"
    missing = run_entry_point(main, *train_args(run, "data.source.path=nowhere/bags.csv"))
    assert missing.code == 1
    assert "FileNotFoundError: data.source.path=nowhere/bags.csv not found (looked in: " in (
        missing.text
    )
    assert f"{Path.cwd() / 'nowhere' / 'bags.csv'}" in missing.text
    empty = tmp_path / "empty.csv"
    empty.write_text("\n  \n")
    result = run_entry_point(main, *train_args(run, f"data.source.path={empty}"))
    assert f"DataError: {empty}: the CSV file is empty; expected one instance per line" in (
        result.text
    )
    header_only = write_table(tmp_path / "header.csv", [])
    with pytest.raises(DataError, match=re.escape(f"{header_only}: the CSV file holds a header")):
        MilCsvBags(path=str(header_only), header=True, bag_column="molecule").read()


def test_config_mistakes_name_the_key(tmp_path: Path, run_entry_point) -> None:
    csv = write_table(tmp_path / "bags.csv", table_cells())
    run = tmp_path / "run"
    cases = [
        (
            ("data.source.bag_column=molecule",),
            "ConfigError: data.source.bag_column='molecule' names a column, but "
            "data.source.header=false: set data.source.header=true",
        ),
        (
            ("data.source.label_column=0",),
            "ConfigError: data.source.label_column=0: column positions count from 1",
        ),
        (
            ("data.source.mil_dataset=musk1",),
            "ConfigError: set exactly one of data.source.path=<file.csv> (a CSV of your own) and "
            "data.source.mil_dataset=<name>",
        ),
    ]
    for overrides, message in cases:
        result = run_entry_point(main, *train_args(run, f"data.source.path={csv}", *overrides))
        assert result.code == 1 and message in result.text, result.text
    with pytest.raises(FileNotFoundError, match=r"mil_dataset=musk3: no musk3.csv .*elephant"):
        MilCsvBags(mil_dataset="musk3").read()


def test_a_path_as_the_musk_name_points_to_the_csv_option(run_entry_point, tmp_path: Path) -> None:
    """`data.source.name=/abs/path/musk1` used to read /abs/path/musk1.csv by accident."""
    result = run_entry_point(
        main,
        "experiment=mil_musk1",
        f"hydra.run.dir={tmp_path / 'run'}",
        *QUIET_OVERRIDES,
        f"data.source.name={tmp_path / 'musk1'}",
    )
    assert result.code == 1
    assert (
        f"ConfigError: data.source.name={tmp_path / 'musk1'} is a file path, not the name of a "
        f"data set of the mil package; for a CSV file of your own use data=mil_csv "
        f"data.source.path={tmp_path / 'musk1'}.csv"
    ) in result.text
    with pytest.raises(ConfigError, match="is a file path"):
        MuskBags("elephant.csv").load()
