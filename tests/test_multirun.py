"""Real in-process Hydra multiruns through `weaksup-train -m`: job folders named by number, a
mean ± std summary over seeds, a failed job listed with its error while the others are kept."""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

import pytest
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser

from weaksup.config.validation import ConfigError
from weaksup.hydra_callbacks import print_stopped_multirun_summary
from weaksup.train import main

from conftest import QUIET_OVERRIDES, read_csv_rows


def _run_multirun(monkeypatch: pytest.MonkeyPatch, sweep_dir: Path, *overrides: str) -> None:
    """`weaksup-train -m <overrides>`; Hydra's basic launcher runs the jobs in this process."""
    # Hydra leaves the last job's config in its singleton: restore it for the tests that follow.
    monkeypatch.setattr(HydraConfig.instance(), "cfg", HydraConfig.instance().cfg)
    argv = ["weaksup-train", "-m", *overrides, *QUIET_OVERRIDES, f"hydra.sweep.dir={sweep_dir}"]
    monkeypatch.setattr(sys, "argv", argv)
    main()


def _job_dirs(sweep_dir: Path) -> list[Path]:
    jobs = [path for path in sweep_dir.iterdir() if path.is_dir() and not path.name.startswith(".")]
    return sorted(jobs, key=lambda path: int(path.name))


def _overrides(job_dir: Path) -> list[str]:
    return yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())


def test_multirun_writes_job_folders_and_a_seed_summary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep_dir = tmp_path / "sweep"
    _run_multirun(monkeypatch, sweep_dir, "loss=ce,hinge", "seed=1,2", "trainer.max_epochs=2")

    job_dirs = _job_dirs(sweep_dir)
    assert [path.name for path in job_dirs] == ["0", "1", "2", "3"]
    per_job = {}
    for job_dir in job_dirs:
        results = json.loads((job_dir / "metrics.json").read_text())
        assert (job_dir / "checkpoints" / "last.ckpt").is_file()
        overrides = dict(item.split("=", 1) for item in _overrides(job_dir))
        per_job[(overrides["loss"], overrides["seed"])] = results["test"]
    assert per_job[("ce", "1")]["test/acc"] != per_job[("ce", "2")]["test/acc"]  # seeds differ

    rows = {row["loss"]: row for row in read_csv_rows(sweep_dir / "summary.csv")}
    assert set(rows) == {"ce", "hinge"}
    for loss, row in rows.items():
        values = [per_job[(loss, "1")]["test/acc"], per_job[(loss, "2")]["test/acc"]]
        assert int(row["n"]) == 2
        assert float(row["test/acc_mean"]) == pytest.approx(sum(values) / 2)
        assert float(row["test/acc_std"]) == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    markdown = (sweep_dir / "summary.md").read_text().splitlines()
    assert markdown[0] == "| loss | n | test/acc | test/loss |"  # every metric in the file
    ce_acc = f"{float(rows['ce']['test/acc_mean']):.4f} ± {float(rows['ce']['test/acc_std']):.4f}"
    assert markdown[2].startswith(f"| ce | 2 | {ce_acc} | ")
    assert "## Failed jobs" not in "\n".join(markdown)

    jobs = read_csv_rows(sweep_dir / "jobs.csv")  # job folder -> overrides, status, metrics
    assert [(j["job"], j["loss"], j["seed"], j["status"]) for j in jobs] == [
        ("0", "ce", "1", "completed"),
        ("1", "ce", "2", "completed"),
        ("2", "hinge", "1", "completed"),
        ("3", "hinge", "2", "completed"),
    ]
    assert float(jobs[3]["test/loss"]) == pytest.approx(per_job[("hinge", "2")]["test/loss"])

    # The terminal gets the overrides that vary and the monitored metric (val/acc -> test/acc).
    printed = capsys.readouterr().out
    report = printed[printed.index("multirun summary: 4 of 4 jobs finished") :].splitlines()
    assert report[1:5] == [
        "| loss | n | test/acc |",
        "|---|---|---|",
        f"| ce | 2 | {ce_acc} |",
        f"| hinge | 2 | {float(rows['hinge']['test/acc_mean']):.4f} ± "
        f"{float(rows['hinge']['test/acc_std']):.4f} |",
    ]
    assert report[5] == "all metrics and jobs: " + ", ".join(
        str(sweep_dir / name) for name in ("summary.md", "summary.csv", "jobs.csv")
    )


def test_a_failed_job_is_listed_with_its_error_and_the_sweep_exits_non_zero(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep_dir = tmp_path / "sweep"
    with pytest.raises((SystemExit, ConfigError)) as raised:
        _run_multirun(monkeypatch, sweep_dir, "optimizer.lr=-0.1,0.01", "trainer.max_epochs=1")
    if raised.type is SystemExit:
        assert raised.value.code not in (0, None)

    message = "ConfigError: 'optimizer.lr' must be > 0, got -0.1"
    failed_dir, good_dir = _job_dirs(sweep_dir)
    error_text = (failed_dir / "error.txt").read_text()
    assert error_text.splitlines()[0] == message
    assert "Traceback (most recent call last)" in error_text and "validate_config" in error_text
    assert not (failed_dir / "metrics.json").exists()
    good_acc = json.loads((good_dir / "metrics.json").read_text())["test"]["test/acc"]

    rows = read_csv_rows(sweep_dir / "summary.csv")
    assert [(row["optimizer.lr"], row["n"]) for row in rows] == [("0.01", "1")]
    assert float(rows[0]["test/acc_mean"]) == pytest.approx(good_acc)
    markdown = (sweep_dir / "summary.md").read_text()
    lines = markdown.splitlines()
    assert lines[0] == "| optimizer.lr | n | test/acc | test/loss |"
    assert lines[2].startswith(f"| 0.01 | 1 | {good_acc:.4f} | ")  # n=1: no "± 0.0000"
    assert "±" not in lines[2]
    failed_section = markdown[markdown.index("## Failed jobs") :].splitlines()
    assert failed_section[2:] == [
        "| job | optimizer.lr | error |",
        "|---|---|---|",
        f"| 0 | -0.1 | {message} |",
    ]
    jobs = read_csv_rows(sweep_dir / "jobs.csv")
    assert [(j["job"], j["status"], j["error"]) for j in jobs] == [
        ("0", "failed", message),
        ("1", "completed", ""),
    ]

    # Hydra skips `on_multirun_end`; the entry point prints the summary with the error (a no-op
    # here once it has). Printed once, after the jobs' own output.
    print_stopped_multirun_summary()
    printed = capsys.readouterr().out
    assert printed.count("multirun summary: ") == 1
    assert printed[printed.index("multirun summary: ") :].splitlines() == [
        "multirun summary: 1 of 2 jobs finished; the test value of monitor.metric,"
        " mean ± std over seed, data.source.fold, data.source.split_seed",  # none set: all
        "| optimizer.lr | n | test/acc |",
        "|---|---|---|",
        f"| 0.01 | 1 | {good_acc:.4f} |",
        "failed jobs:",
        "| job | optimizer.lr | error |",
        "|---|---|---|",
        f"| 0 | -0.1 | {message} |",
        "all metrics and jobs: "
        + ", ".join(str(sweep_dir / name) for name in ("summary.md", "summary.csv", "jobs.csv")),
    ]


def test_job_folders_are_short_safe_names_whatever_the_overrides(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Brackets, a comma inside quotes, `++key` and a list long enough that Hydra's default
    folder name (every override joined) would pass 255 characters: `OSError: File name too long`."""
    sweep_dir = tmp_path / "sweep"
    long_list = "[" + ",".join(["8"] * 130) + "]"
    swept = ("seed=1,2", f"backbone.hidden_sizes={long_list}", "logger.csv.name='a,b'")
    _run_multirun(monkeypatch, sweep_dir, *swept, "trainer.max_epochs=1")

    job_dirs = _job_dirs(sweep_dir)
    assert [path.name for path in job_dirs] == ["0", "1"]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", path.name) for path in job_dirs)
    assert _overrides(job_dirs[0])[:3] == [
        "seed=1",
        f"backbone.hidden_sizes={long_list}",
        "logger.csv.name='a,b'",
    ]
    assert "++trainer.enable_model_summary=False" in _overrides(job_dirs[0])
    assert (job_dirs[0] / "a,b" / "version_0" / "metrics.csv").is_file()  # the value arrived whole

    # `weaksup-predict ckpt_path=<job folder>/...` parses without quoting.
    checkpoint = job_dirs[1] / "checkpoints" / "last.ckpt"
    (override,) = OverridesParser.create().parse_overrides([f"ckpt_path={checkpoint}"])
    assert override.value() == str(checkpoint) and checkpoint.is_file()

    (row,) = read_csv_rows(sweep_dir / "summary.csv")  # the two seeds are one configuration
    assert row["n"] == "2" and row["backbone.hidden_sizes"] == long_list
    assert row["logger.csv.name"] == "'a,b'" and row["trainer.enable_model_summary"] == "False"
    jobs = read_csv_rows(sweep_dir / "jobs.csv")
    assert [(j["job"], j["seed"], j["status"]) for j in jobs] == [
        ("0", "1", "completed"),
        ("1", "2", "completed"),
    ]


def test_a_cross_validation_sweep_summarises_as_one_row(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 17: `experiment=mil_musk1` (2 repetitions x 2 folds here) is one row: mean ± std
    over every fold, and the std of the repetition means (each the mean over its folds)."""
    sweep_dir = tmp_path / "sweep"
    _run_multirun(
        monkeypatch,
        sweep_dir,
        "experiment=mil_musk1",
        "data.source.split_seed=0,1",
        "data.source.fold=0,1",
        "pooling=attention",
        "trainer.max_epochs=1",
        "callbacks.bag_mosaic=null",
    )

    accuracy = {}
    for job_dir in _job_dirs(sweep_dir):
        overrides = dict(item.split("=", 1) for item in _overrides(job_dir))
        key = (overrides["data.source.split_seed"], overrides["data.source.fold"])
        accuracy[key] = json.loads((job_dir / "metrics.json").read_text())["test"]["test/acc"]
    assert sorted(accuracy) == [("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")]
    every_fold = list(accuracy.values())
    repetition_means = [(accuracy[(r, "0")] + accuracy[(r, "1")]) / 2 for r in ("0", "1")]

    (row,) = read_csv_rows(sweep_dir / "summary.csv")
    assert row["n"] == "4" and row["repetitions"] == "2"
    assert float(row["test/acc_mean"]) == pytest.approx(sum(every_fold) / 4)
    assert float(row["test/acc_std"]) == pytest.approx(statistics.stdev(every_fold))
    assert float(row["test/acc_rep_std"]) == pytest.approx(statistics.stdev(repetition_means))
    cell = (
        f"{float(row['test/acc_mean']):.4f} ± {float(row['test/acc_std']):.4f}"
        f" (± {float(row['test/acc_rep_std']):.4f})"
    )
    printed = capsys.readouterr().out
    report = printed[printed.index("multirun summary: 4 of 4 jobs finished") :].splitlines()
    assert report[0].endswith(
        "mean ± std over data.source.fold, data.source.split_seed"
        " (± the std of the repetition means)"
    )
    # The test value of monitor.metric (train/loss_epoch -> test/loss) in the terminal; the
    # files hold every metric.
    assert report[1] == "| n | reps | test/loss |"
    assert f"| 4 | 2 | {cell} |" in (sweep_dir / "summary.md").read_text()
