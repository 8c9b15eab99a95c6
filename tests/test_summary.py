"""Multirun summaries rebuilt from job folders written by hand: what the files and the terminal
show for finished, failed and unfinished jobs, repetitions, and one job per row."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import InstantiationException

from weaksup.hydra_callbacks import MultirunSummary, record_job_end
from weaksup.results import (
    error_line,
    monitored_test_metric,
    read_job,
    summarize_jobs,
    sweep_report,
    write_metrics,
    write_sweep_summary,
)


def _job(
    sweep_dir: Path,
    name: str,
    overrides: list[str],
    test: dict[str, float] | None = None,
    monitor: str | None = "val/acc",
    error: str | None = None,
) -> Path:
    job_dir = sweep_dir / name
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "overrides.yaml").write_text(
        "".join(f"- {json.dumps(item)}\n" for item in overrides)
    )
    if test is not None:
        write_metrics(job_dir, {"test": test, "monitor": monitor, "best_score": 0.5})
    if error is not None:
        (job_dir / "error.txt").write_text(f"{error}\n\nTraceback (most recent call last):\n")
    return job_dir


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_summary_groups_over_ignored_keys_only() -> None:
    jobs = [
        ({"loss": "ce", "seed": "1"}, {"test/acc": 0.8}),
        ({"loss": "ce", "seed": "2"}, {"test/acc": 0.6}),
        ({"loss": "hinge", "seed": "1"}, {"test/acc": 0.5}),
    ]
    rows = {row["loss"]: row for row in summarize_jobs(jobs, ignore_keys=["seed"])}
    assert rows["ce"]["n"] == 2 and rows["ce"]["test/acc_mean"] == pytest.approx(0.7)
    assert rows["ce"]["test/acc_std"] == pytest.approx(0.1414213562)
    assert rows["hinge"]["n"] == 1 and rows["hinge"]["test/acc_std"] == 0.0


def test_failed_and_unfinished_jobs_are_listed_and_left_out(tmp_path: Path) -> None:
    sweep = tmp_path
    _job(sweep, "10", ["loss=ce", "seed=2", "trainer.max_epochs=3"], {"test/acc": 0.6})
    _job(sweep, "2", ["loss=ce", "seed=1", "trainer.max_epochs=3"], {"test/acc": 0.8})
    _job(sweep, "3", ["loss=hinge", "seed=1", "trainer.max_epochs=3"], {"test/acc": 0.5})
    error = "ValueError: bad | value"
    _job(sweep, "4", ["loss=bce", "seed=1", "trainer.max_epochs=3"], error=error)
    _job(sweep, "5", ["loss=bce", "seed=2", "trainer.max_epochs=3"])  # killed: no record

    summary = write_sweep_summary(sweep, ignore_keys=["seed"])

    assert [job.name for job in summary.jobs] == ["2", "3", "4", "5", "10"]  # 2 before 10
    assert [(row["loss"], row["n"]) for row in _csv(sweep / "summary.csv")] == [
        ("ce", "2"),
        ("hinge", "1"),
    ]
    unfinished = (
        "no metrics.json and no error.txt: still running, killed, or a task without metrics"
    )
    assert (sweep / "summary.md").read_text() == (
        "| loss | n | test/acc |\n"
        "|---|---|---|\n"
        "| ce | 2 | 0.7000 ± 0.1414 |\n"
        "| hinge | 1 | 0.5000 |\n"  # one job: its value, no "± 0.0000"
        "\n"
        "Overrides of every job: `trainer.max_epochs=3`\n"
        "\n"
        "Mean ± std over the jobs that differ only in `seed`; n=1: the value.\n"
        "\n"
        "## Failed jobs\n"
        "\n"
        "| job | loss | seed | error |\n"
        "|---|---|---|---|\n"
        "| 4 | bce | 1 | ValueError: bad \\| value |\n"
        f"| 5 | bce | 2 | {unfinished} |\n"
    )
    jobs = _csv(sweep / "jobs.csv")
    assert [(j["job"], j["status"], j["loss"], j["seed"], j["test/acc"]) for j in jobs] == [
        ("2", "completed", "ce", "1", "0.8"),
        ("3", "completed", "hinge", "1", "0.5"),
        ("4", "failed", "bce", "1", ""),
        ("5", "unfinished", "bce", "2", ""),
        ("10", "completed", "ce", "2", "0.6"),
    ]
    assert jobs[2]["error"] == error
    assert sorted(path.name for path in sweep.iterdir() if path.is_file()) == [
        "jobs.csv",
        "summary.csv",
        "summary.md",
    ]  # atomic writes leave no temporary file behind


def test_terminal_shows_varying_overrides_and_the_monitored_test_metric_only(
    tmp_path: Path,
) -> None:
    many = {f"test/metric_{i:02d}": i / 100 for i in range(30)}
    _job(tmp_path, "0", ["experiment=a", "seed=1"], {**many, "test/acc": 0.9}, "val/acc")
    _job(tmp_path, "1", ["experiment=a", "seed=2"], {**many, "test/acc": 0.7}, "val/acc")
    _job(tmp_path, "2", ["experiment=b", "seed=1"], {**many, "test/loss": 0.25}, "train/loss_epoch")

    summary = write_sweep_summary(tmp_path, ignore_keys=["seed"])

    assert sweep_report(summary).splitlines()[:5] == [
        "multirun summary: 3 of 3 jobs finished; the test value of monitor.metric,"
        " mean ± std over seed",
        "| experiment | n | test/acc | test/loss |",
        "|---|---|---|---|",
        "| a | 2 | 0.8000 ± 0.1414 |  |",
        "| b | 1 |  | 0.2500 |",
    ]
    header = (tmp_path / "summary.md").read_text().splitlines()[0]
    assert header.count("|") == 2 + 1 + 32  # the file keeps every metric


def test_terminal_shows_every_metric_when_no_job_names_a_monitor(tmp_path: Path) -> None:
    """`weaksup-eval -m`: metrics.json holds no monitor."""
    _job(tmp_path, "0", ["ckpt_path=a.ckpt"], {"test/acc": 0.5, "test/loss": 0.7}, None)
    _job(tmp_path, "1", ["ckpt_path=b.ckpt"], {"test/acc": 0.75, "test/loss": 0.6}, None)
    report = sweep_report(write_sweep_summary(tmp_path, ignore_keys=["seed"]))
    assert report.splitlines()[1:5] == [
        "| ckpt_path | n | test/acc | test/loss |",
        "|---|---|---|---|",
        "| a.ckpt | 1 | 0.5000 | 0.7000 |",
        "| b.ckpt | 1 | 0.7500 | 0.6000 |",
    ]


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (ValueError("bad value\nmore detail"), "ValueError: bad value"),
        (RuntimeError(), "RuntimeError"),
        (
            InstantiationException("Error in call to target 'T':\nMisconfigurationException('x')"),
            "InstantiationException: Error in call to target 'T': MisconfigurationException('x')",
        ),
    ],
)
def test_error_line(error: Exception, line: str) -> None:
    assert error_line(error) == line


@pytest.mark.parametrize(
    ("monitor", "test_metric"),
    [("val/acc", "test/acc"), ("train/loss_epoch", "test/loss"), ("val/auc_step", "test/auc")],
)
def test_monitored_test_metric(monitor: str, test_metric: str) -> None:
    assert monitored_test_metric(monitor) == test_metric


def test_cross_validation_folds_can_be_repetitions(tmp_path: Path) -> None:
    """Issue 17: `group_by_ignore` takes any override keys, e.g. the fold and the split seed."""
    for number, (split_seed, fold, acc) in enumerate([(0, 0, 0.9), (0, 1, 0.7), (1, 0, 0.8)]):
        overrides = [f"data.source.split_seed={split_seed}", f"data.source.fold={fold}"]
        _job(tmp_path, str(number), ["experiment=mil_musk1", *overrides], {"test/acc": acc})
    ignore = ["seed", "data.source.fold", "data.source.split_seed"]
    (row,) = write_sweep_summary(tmp_path, ignore_keys=ignore).rows
    assert row["n"] == 3 and row["test/acc_mean"] == pytest.approx(0.8)
    assert "repetitions" not in row  # no fold keys given: no repetition means
    assert MultirunSummary(group_by_ignore=[]).group_by_ignore == []  # not the default


def test_cross_validation_rows_give_the_std_of_the_repetition_means(tmp_path: Path) -> None:
    """Issue 17: by default the seed, fold and split seed are repetitions; a row gives the mean
    ± std over every fold and the std of the means of the repetitions (split seeds)."""
    accuracies = {  # (pooling, split seed) -> accuracy of folds 0, 1
        ("attention", 0): (0.9, 0.7),
        ("attention", 1): (0.6, 0.8),
        ("gated_attention", 0): (1.0, 0.8),
        ("gated_attention", 1): (0.8, 0.8),
    }
    number = 0
    for (pooling, split_seed), per_fold in accuracies.items():
        for fold, acc in enumerate(per_fold):
            overrides = [f"pooling={pooling}", f"data.source.split_seed={split_seed}"]
            _job(tmp_path, str(number), [*overrides, f"data.source.fold={fold}"], {"test/acc": acc})
            number += 1
    callback = MultirunSummary()
    assert callback.group_by_ignore == ["seed", "data.source.fold", "data.source.split_seed"]
    assert callback.fold_keys == ["data.source.fold"]

    summary = callback.rebuild(tmp_path, ".hydra")

    assert summary is not None
    rows = {row["pooling"]: row for row in summary.rows}
    assert rows["attention"]["n"] == 4 and rows["attention"]["repetitions"] == 2
    assert rows["attention"]["test/acc_mean"] == pytest.approx(0.75)
    assert rows["attention"]["test/acc_std"] == pytest.approx(0.1290994)  # over the 4 folds
    assert rows["attention"]["test/acc_rep_std"] == pytest.approx(0.0707107)  # of 0.8 and 0.7
    assert rows["gated_attention"]["test/acc_rep_std"] == pytest.approx(0.0707107)  # 0.9, 0.8
    lines = (tmp_path / "summary.md").read_text().splitlines()
    assert lines[:4] == [
        "| pooling | n | reps | test/acc |",
        "|---|---|---|---|",
        "| attention | 4 | 2 | 0.7500 ± 0.1291 (± 0.0707) |",
        "| gated_attention | 4 | 2 | 0.8500 ± 0.1000 (± 0.0707) |",
    ]
    assert lines[5:7] == [
        "Mean ± std over the jobs that differ only in `data.source.fold`,"
        " `data.source.split_seed`; n=1: the value.",
        "(± ...): the std of the means of the `reps` repetitions, each the mean over the folds"
        " (`data.source.fold`).",
    ]
    csv_row = _csv(tmp_path / "summary.csv")[0]
    assert csv_row["repetitions"] == "2" and float(csv_row["test/acc_rep_std"]) == pytest.approx(
        0.0707107
    )
    assert (
        sweep_report(summary)
        .splitlines()[0]
        .endswith(
            "mean ± std over data.source.fold, data.source.split_seed"
            " (± the std of the repetition means)"
        )
    )

    # group_by_ignore=[seed]: a row per fold, no repetition means.
    per_fold = MultirunSummary(group_by_ignore=["seed"]).rebuild(tmp_path, ".hydra")
    assert per_fold is not None and len(per_fold.rows) == 8
    assert all("repetitions" not in row for row in per_fold.rows)


def test_an_error_file_outranks_an_earlier_runs_metrics_and_success_removes_it(
    tmp_path: Path,
) -> None:
    job_dir = _job(tmp_path, "0", ["seed=1"], {"test/acc": 0.5})
    try:
        raise ValueError("data.path is not a file\nsecond line")
    except ValueError as error:
        failed = JobReturn(status=JobStatus.FAILED, _return_value=error)
    record_job_end(job_dir, failed)
    error_text = (job_dir / "error.txt").read_text()
    assert error_text.startswith("ValueError: data.path is not a file\n\nTraceback")
    assert error_text.endswith("ValueError: data.path is not a file\nsecond line\n")
    assert read_job(job_dir).status == "failed"
    assert read_job(job_dir).error == "ValueError: data.path is not a file"
    assert (job_dir / "metrics.json").is_file()  # nothing is deleted

    record_job_end(job_dir, JobReturn(status=JobStatus.COMPLETED))
    assert not (job_dir / "error.txt").exists() and read_job(job_dir).status == "completed"

    (job_dir / "metrics.json").write_text('{"test": {"test/acc": 0.')
    assert read_job(job_dir).status == "failed"
    assert read_job(job_dir).error.startswith("unreadable metrics.json: ")


def test_metrics_json_is_strict_json_with_null_for_non_finite_values(tmp_path: Path) -> None:
    path = write_metrics(tmp_path, {"test": {"test/loss": math.nan, "test/acc": 0.5}})

    def reject(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    assert json.loads(path.read_text(), parse_constant=reject) == {
        "test": {"test/acc": 0.5, "test/loss": None}
    }
    job_dir = _job(tmp_path, "job", ["seed=1"])
    write_metrics(job_dir, {"test": {"test/loss": math.inf, "test/acc": 0.5}})
    assert math.isnan(read_job(job_dir).metrics["test/loss"])  # left out of the statistics
