"""Hydra callbacks: the summary table written at the end of every multirun; W&B runs finished per job."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from weaksup.results import METRICS_FILE, summarize_jobs, write_summary


def _parse_override(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


class MultirunSummary(Callback):
    """After a multirun, collect each job's `metrics.json` test metrics into summary.{csv,md}.

    Jobs that differ only in `group_by_ignore` (the seed, by default) form one row: mean ± std.
    Failed jobs (no metrics file) are listed and left out of the statistics.
    """

    def __init__(self, group_by_ignore: list[str] | None = None) -> None:
        self.group_by_ignore = list(group_by_ignore or ["seed"])

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs, missing = [], []
        for overrides_file in sorted(sweep_dir.glob("*/.hydra/overrides.yaml")):
            job_dir = overrides_file.parent.parent
            metrics_file = job_dir / METRICS_FILE
            if not metrics_file.exists():
                missing.append(job_dir.name)
                continue
            overrides = dict(_parse_override(o) for o in OmegaConf.load(overrides_file))
            test_metrics = json.loads(metrics_file.read_text()).get("test", {})
            jobs.append((overrides, test_metrics))
        if not jobs:
            print(f"multirun summary: no finished job under {sweep_dir}")
            return
        csv_path, markdown_path = write_summary(
            summarize_jobs(jobs, self.group_by_ignore), sweep_dir
        )
        print(markdown_path.read_text())
        print(f"multirun summary: {markdown_path} and {csv_path}")
        if missing:
            print(f"multirun summary: jobs without metrics (failed?): {', '.join(missing)}")


class FinishWandbRun(Callback):
    """Finish the active W&B run at the end of every job: exit code 0, or 1 when the job failed.

    Without it the next job of a multirun (same process) silently logs into this job's run.
    A no-op when wandb was never imported (or is not installed) or no run is active.
    """

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        wandb = sys.modules.get("wandb")  # never imported: no run to finish, and no slow import
        if wandb is None or getattr(wandb, "run", None) is None:
            return
        wandb.finish(exit_code=0 if job_return.status == JobStatus.COMPLETED else 1)
