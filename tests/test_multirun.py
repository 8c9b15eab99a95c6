"""A real in-process Hydra multirun: one folder per job and a mean ± std summary over seeds."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from weaksup.results import summarize_jobs
from weaksup.train import main


def test_multirun_writes_job_folders_and_a_seed_summary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "sweep"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "weaksup-train",
            "-m",
            "loss=ce,hinge",
            "seed=1,2",
            "trainer.max_epochs=2",
            "trainer.enable_progress_bar=false",
            "++trainer.enable_model_summary=false",
            "callbacks.progress_bar=null",
            "callbacks.model_summary=null",
            "trainer.log_every_n_steps=1",
            f"hydra.sweep.dir={sweep_dir}",
        ],
    )
    main()  # Hydra's basic launcher runs the four jobs in this process, one after the other

    job_dirs = sorted(
        path for path in sweep_dir.iterdir() if path.is_dir() and not path.name.startswith(".")
    )
    assert [path.name.split("_", 1)[0] for path in job_dirs] == ["0", "1", "2", "3"]
    assert len({path.name for path in job_dirs}) == 4
    per_job = {}
    for job_dir in job_dirs:
        results = json.loads((job_dir / "metrics.json").read_text())
        assert (job_dir / "checkpoints" / "last.ckpt").is_file()
        overrides = dict(line.split("=", 1) for line in job_dir.name.split("_", 1)[1].split(","))
        per_job[(overrides["loss"], overrides["seed"])] = results["test"]["test/acc"]
    assert per_job[("ce", "1")] != per_job[("ce", "2")]  # seeds really differ

    with (sweep_dir / "summary.csv").open() as handle:
        rows = {row["loss"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"ce", "hinge"}
    for loss, row in rows.items():
        values = [per_job[(loss, "1")], per_job[(loss, "2")]]
        assert int(row["n"]) == 2
        assert float(row["test/acc_mean"]) == pytest.approx(sum(values) / 2)
        assert float(row["test/acc_std"]) == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    markdown = (sweep_dir / "summary.md").read_text()
    lines = markdown.splitlines()
    assert lines[0] == "| loss | n | test/acc | test/loss |"
    assert lines[2].startswith("| ce | 2 | ") and " ± " in lines[2]


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
