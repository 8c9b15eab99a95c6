"""`weaksup-report PATH...` on multirun folders written by real `weaksup-train -m` runs: the
table of mean ± std and n per configuration (markdown + CSV), the failed jobs with their
errors, and the metric against each swept numeric setting."""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig

from weaksup.report import main as report_main
from weaksup.train import main as train_main

from conftest import QUIET_OVERRIDES, read_csv_rows

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FAILED = "ConfigError: 'optimizer.lr' must be > 0, got -0.1"


def _multirun(monkeypatch: pytest.MonkeyPatch, sweep_dir: Path, *overrides: str) -> None:
    """`weaksup-train -m <overrides>` (two moons, one epoch); a failed job exits 1 at the end."""
    monkeypatch.setattr(HydraConfig.instance(), "cfg", HydraConfig.instance().cfg)
    argv = ["weaksup-train", "-m", *overrides, "trainer.max_epochs=1", *QUIET_OVERRIDES]
    monkeypatch.setattr(sys, "argv", [*argv, f"hydra.sweep.dir={sweep_dir}"])
    try:
        train_main()
    except SystemExit as stopped:
        assert stopped.code == 1  # the failed job's error, after the other jobs


def _test_acc(job_dir: Path) -> float:
    return json.loads((job_dir / "metrics.json").read_text())["test"]["test/acc"]


@pytest.fixture(scope="module")
def lr_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """optimizer.lr=-0.1,0.01,0.05 x seed=1,2: 6 jobs, the two with lr=-0.1 fail."""
    sweep_dir = tmp_path_factory.mktemp("report") / "lr"
    with pytest.MonkeyPatch.context() as monkeypatch:
        _multirun(monkeypatch, sweep_dir, "optimizer.lr=-0.1,0.01,0.05", "seed=1,2")
    return sweep_dir


def test_report_of_a_sweep_with_failed_jobs(lr_sweep: Path, run_entry_point) -> None:
    result = run_entry_point(report_main, str(lr_sweep))
    assert result.code == 0, result.err
    out = lr_sweep / "report"

    # Job folders in order: (lr, seed) = (-0.1, 1), (-0.1, 2), (0.01, 1), (0.01, 2), ...
    expected = {
        "0.01": [_test_acc(lr_sweep / "2"), _test_acc(lr_sweep / "3")],
        "0.05": [_test_acc(lr_sweep / "4"), _test_acc(lr_sweep / "5")],
    }
    rows = {row["optimizer.lr"]: row for row in read_csv_rows(out / "report.csv")}
    assert set(rows) == set(expected)
    for lr, values in expected.items():
        assert rows[lr]["n"] == "2"
        assert float(rows[lr]["test/acc_mean"]) == pytest.approx(statistics.fmean(values))
        assert float(rows[lr]["test/acc_std"]) == pytest.approx(statistics.stdev(values))
    jobs = read_csv_rows(out / "jobs.csv")
    assert [(job["job"], job["status"]) for job in jobs] == [
        ("0", "failed"),
        ("1", "failed"),
        *((str(n), "completed") for n in range(2, 6)),
    ]
    assert {jobs[0]["error"], jobs[1]["error"]} == {FAILED}

    markdown = (out / "report.md").read_text()
    mean, std = statistics.fmean(expected["0.01"]), statistics.stdev(expected["0.01"])
    assert f"| 0.01 | 2 | {mean:.4f} ± {std:.4f} |" in markdown
    failed = markdown[markdown.index("## Failed jobs") : markdown.index("## Plots")]
    assert failed.splitlines()[2:6] == [
        "| job | optimizer.lr | seed | error |",
        "|---|---|---|---|",
        f"| 0 | -0.1 | 1 | {FAILED} |",
        f"| 1 | -0.1 | 2 | {FAILED} |",
    ]
    plot = out / "plots" / "test-acc_vs_optimizer.lr.png"
    assert "![test/acc against optimizer.lr](plots/test-acc_vs_optimizer.lr.png)" in markdown
    assert plot.read_bytes().startswith(PNG_SIGNATURE)
    assert sorted(p.name for p in (out / "plots").iterdir()) == [plot.name]  # seed: no plot
    assert result.out.startswith("# Sweep report\n\n4 of 6 jobs finished, from ")
    assert result.out.rstrip().endswith(
        f"report of 4 of 6 jobs: {out / 'report.md'}, {out / 'report.csv'}"
    )


def test_report_of_several_sweeps_pools_their_jobs(
    lr_sweep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_entry_point
) -> None:
    more = tmp_path / "more"
    _multirun(monkeypatch, more, "optimizer.lr=0.01", "seed=3")
    out = tmp_path / "report"

    result = run_entry_point(report_main, str(lr_sweep), str(more), "--out", str(out))

    assert result.code == 0, result.err
    rows = {row["optimizer.lr"]: row for row in read_csv_rows(out / "report.csv")}
    values = [_test_acc(lr_sweep / "2"), _test_acc(lr_sweep / "3"), _test_acc(more / "0")]
    assert rows["0.01"]["n"] == "3"
    assert float(rows["0.01"]["test/acc_mean"]) == pytest.approx(statistics.fmean(values))
    names = [job["job"] for job in read_csv_rows(out / "jobs.csv")]  # <sweep>/<job>, two job 0s
    root = Path(os.path.commonpath([lr_sweep, more]))
    first, second = lr_sweep.relative_to(root), more.relative_to(root)
    assert names == [f"{first}/{n}" for n in range(6)] + [f"{second}/0"]


def test_report_errors_are_one_line(tmp_path: Path, run_entry_point) -> None:
    missing = run_entry_point(report_main, str(tmp_path / "missing"))
    assert missing.code == 1
    assert missing.err.strip() == (
        f"FileNotFoundError: weaksup-report: {tmp_path / 'missing'} is not a folder"
    )
    empty = run_entry_point(report_main, str(tmp_path))
    assert empty.code == 1
    assert empty.err.strip().startswith(
        f"FileNotFoundError: weaksup-report: no multirun folder at or under {tmp_path}"
    )
    several = run_entry_point(report_main, str(tmp_path), str(tmp_path))
    assert several.code == 2  # argparse
    assert "--out is required with several PATHs" in several.err
