"""Hydra callbacks: the multirun summary, kept current after every job; W&B runs finished per job."""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from weaksup.files import atomic_write_text
from weaksup.results import (
    ERROR_FILE,
    FOLD_KEYS,
    REPETITION_KEYS,
    SUMMARY_MARKDOWN,
    SweepSummary,
    error_line,
    sweep_report,
    write_sweep_summary,
)

log = logging.getLogger(__name__)

SUMMARY_LOCK = ".summary.lock"


class MultirunSummary(Callback):
    """`summary.md`, `summary.csv` and `jobs.csv` of a multirun (see `write_sweep_summary`).

    Jobs that differ only in `group_by_ignore` (override keys; by default the seed and the fold
    and split seed of cross-validation, `results.REPETITION_KEYS`) are repetitions of one
    configuration: one row, mean ± std. Jobs of one row that differ only in `fold_keys` (the
    fold) are one repetition of a cross-validation: the row also gives the std of the
    repetition means. A failed job writes `error.txt` (its error, then the traceback) into its
    folder and is listed with that error.

    The summary is rebuilt from the job folders at the end of every job, in the job's own
    process, and at the end of the multirun: Hydra's basic sweeper raises a failed job's
    error before `on_multirun_end`, and the joblib/submitit launchers run `on_job_end` in
    worker processes, so the end of the multirun alone would lose it.
    """

    def __init__(
        self, group_by_ignore: Sequence[str] | None = None, fold_keys: Sequence[str] | None = None
    ) -> None:
        self.group_by_ignore = list(REPETITION_KEYS if group_by_ignore is None else group_by_ignore)
        self.fold_keys = list(FOLD_KEYS if fold_keys is None else fold_keys)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _open_multirun
        _open_multirun = (self, _sweep_location(config.hydra))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        record_job_end(job_dir, job_return)
        self.rebuild(*_sweep_location(config.hydra))
        if job_return.status == JobStatus.FAILED:
            log.error(
                "job %s failed: %s (traceback in %s; listed in %s)",
                job_dir.name,
                error_line(job_return._return_value),
                job_dir / ERROR_FILE,
                Path(config.hydra.sweep.dir) / SUMMARY_MARKDOWN,
            )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _open_multirun
        _open_multirun = None
        summary = self.rebuild(*_sweep_location(config.hydra))
        if summary is None or not summary.jobs:
            print(f"multirun summary: no job folder under {config.hydra.sweep.dir}")
            return
        print(sweep_report(summary))
        from weaksup.run_logging import log_sweep_summary  # imported late: it loads wandb

        log_sweep_summary(summary.sweep_dir, config.get("logger"))

    def rebuild(self, sweep_dir: Path, output_subdir: str | None) -> SweepSummary | None:
        """Rewrite the summary files from the job folders; `None` when there is nothing to
        read (no sweep folder yet, or `hydra.output_subdir=null`: no `.hydra/overrides.yaml`)."""
        if output_subdir is None or not sweep_dir.is_dir():
            return None
        with _exclusive(sweep_dir / SUMMARY_LOCK):
            return write_sweep_summary(
                sweep_dir, self.group_by_ignore, output_subdir, self.fold_keys
            )


# The multirun this process started and Hydra has not ended: Hydra gives the entry point no
# handle on its callbacks, and its config singleton is reset once the jobs have run.
_open_multirun: tuple[MultirunSummary, tuple[Path, str | None]] | None = None


def _sweep_location(hydra_cfg: DictConfig) -> tuple[Path, str | None]:
    """The sweep folder and the jobs' `.hydra` subfolder name, resolved now (`${now:...}` is
    cached in the config, so this is the folder the launcher uses)."""
    output_subdir = hydra_cfg.output_subdir
    return Path(str(hydra_cfg.sweep.dir)), None if output_subdir is None else str(output_subdir)


def print_stopped_multirun_summary() -> None:
    """Print the summary of a multirun of this process that stopped with an error.

    For the entry point to call when `hydra.main` raised: Hydra's basic sweeper raises a
    failed job's error after the other jobs have run but before `on_multirun_end`, so the
    summary, kept current at every job end, would otherwise not be shown. A no-op when no
    multirun is open or none of its jobs has a folder (an error before the first job).
    """
    global _open_multirun
    if _open_multirun is None:
        return
    callback, location = _open_multirun
    _open_multirun = None
    summary = callback.rebuild(*location)
    if summary is not None and summary.jobs:
        print(sweep_report(summary))


def record_job_end(job_dir: Path, job_return: JobReturn) -> None:
    """A failed job: `error.txt` with the error's first line, a blank line, the traceback.

    A finished job removes an earlier attempt's `error.txt` (same sweep folder run again).
    """
    error_file = job_dir / ERROR_FILE
    if job_return.status == JobStatus.COMPLETED:
        error_file.unlink(missing_ok=True)
    elif job_return.status == JobStatus.FAILED:
        error = job_return._return_value  # the exception; `.return_value` would raise it
        trace = "".join(traceback.format_exception(error))
        atomic_write_text(error_file, f"{error_line(error)}\n\n{trace}")


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """One rebuild at a time across parallel jobs (POSIX `flock`; elsewhere no lock), so a
    slower rebuild that started earlier never replaces a newer, more complete summary."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


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
