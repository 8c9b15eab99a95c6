"""Run results: `metrics.json` of a run, the printed results table, multirun summaries.

A multirun summary is rebuilt from the job folders alone: every job folder holds Hydra's
`.hydra/overrides.yaml`, then `metrics.json` when the job finished or `error.txt` when it
failed. So the summary is the same whichever launcher ran the jobs (in this process, joblib
workers, SLURM) and whichever process rebuilds it, and it survives a sweep that stops early.
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from weaksup.files import atomic_write, atomic_write_text

METRICS_FILE = "metrics.json"
ERROR_FILE = "error.txt"
SUMMARY_CSV = "summary.csv"
SUMMARY_MARKDOWN = "summary.md"
JOBS_CSV = "jobs.csv"

# libyaml's loader when PyYAML has it: the summary reads every job's overrides after every job.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Override keys whose jobs repeat one configuration (one summary row, mean ± std): the seed,
# and the fold and split seed of cross-validation (`conf/data/musk1.yaml`). Of those, the
# fold keys are averaged within one repetition first (see `summarize_jobs`).
REPETITION_KEYS = ("seed", "data.source.fold", "data.source.split_seed")
FOLD_KEYS = ("data.source.fold",)

COMPLETED, FAILED, UNFINISHED = "completed", "failed", "unfinished"
UNFINISHED_ERROR = (
    f"no {METRICS_FILE} and no {ERROR_FILE}: still running, killed, or a task without metrics"
)


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Plain floats of Lightning's `callback_metrics` (tensors) or test results."""
    return {str(name): float(value) for name, value in sorted(metrics.items())}


def write_metrics(output_dir: Path, results: Mapping[str, Any]) -> Path:
    """`metrics.json`, written atomically; non-finite numbers become `null` (strict JSON)."""
    text = json.dumps(_finite_or_none(results), indent=2, sort_keys=True, allow_nan=False)
    return atomic_write_text(Path(output_dir) / METRICS_FILE, text + "\n")


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(item) for item in value]
    return value


def print_results(
    results: Mapping[str, Any], output_dir: Path, console: Console | None = None
) -> None:
    """A small table of the final validation and test metrics, then the output folder."""
    console = console or Console()
    table = Table(title="weaksup results")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for section in ("val", "test"):
        for name, value in results.get(section, {}).items():
            table.add_row(name, f"{value:.4f}")
    if results.get("best_score") is not None:
        table.add_row(f"best {results['monitor']}", f"{results['best_score']:.4f}")
    console.print(table)
    console.print(f"output folder: {output_dir}", soft_wrap=True, highlight=False)


def summarize_jobs(
    jobs: Sequence[tuple[Mapping[str, str], Mapping[str, float]]],
    ignore_keys: Sequence[str],
    fold_keys: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Mean and std of every metric over jobs that differ only in `ignore_keys` (e.g. the seed).

    Each job is `(overrides, metrics)`; a row per configuration, in order of first appearance:
    its overrides, the job count `n`, and `<metric>_mean` / `<metric>_std` (sample std over
    every job; 0 for one job). Non-finite values are left out of the statistics.

    Cross-validation: when the jobs of a row set a key of `fold_keys` (which should also be in
    `ignore_keys`), the jobs that differ only in those keys form one repetition (e.g. the 10
    folds of one `data.source.split_seed`), and the row also gets `repetitions` (their count)
    and `<metric>_rep_std`, the sample std of the repetition means (0 for one repetition), as
    MIL papers report 5 x 10-fold cross-validation (Ilse et al. 2018, Sec. 5.1).
    """
    fold_keys = [key for key in fold_keys if key in ignore_keys]  # a fold row is no repetition
    groups: dict[tuple[tuple[str, str], ...], list[tuple[Mapping[str, str], Mapping[str, float]]]]
    groups = {}
    for overrides, metrics in jobs:
        key = tuple(sorted((k, v) for k, v in overrides.items() if k not in ignore_keys))
        groups.setdefault(key, []).append((overrides, metrics))
    rows = []
    for key, members in groups.items():
        row: dict[str, Any] = {**dict(key), "n": len(members)}
        repetitions = _repetitions(members, fold_keys)
        if repetitions is not None:
            row["repetitions"] = len(repetitions)
        for name in sorted({name for _, metrics in members for name in metrics}):
            values = _finite_values(members, name)
            if not values:
                continue
            row[f"{name}_mean"] = statistics.fmean(values)
            row[f"{name}_std"] = _sample_std(values)
            if repetitions is not None:
                per_repetition = (_finite_values(repetition, name) for repetition in repetitions)
                means = [statistics.fmean(values) for values in per_repetition if values]
                row[f"{name}_rep_std"] = _sample_std(means)
        rows.append(row)
    return rows


def _repetitions(
    members: Sequence[tuple[Mapping[str, str], Mapping[str, float]]], fold_keys: Sequence[str]
) -> list[list[tuple[Mapping[str, str], Mapping[str, float]]]] | None:
    """The jobs of one row split into repetitions (same overrides but the fold keys); None when
    no job sets a fold key (no cross-validation)."""
    if not any(key in overrides for overrides, _ in members for key in fold_keys):
        return None
    repetitions: dict[tuple[tuple[str, str], ...], list[Any]] = {}
    for overrides, metrics in members:
        key = tuple(sorted((k, v) for k, v in overrides.items() if k not in fold_keys))
        repetitions.setdefault(key, []).append((overrides, metrics))
    return list(repetitions.values())


def _finite_values(
    members: Sequence[tuple[Mapping[str, str], Mapping[str, float]]], name: str
) -> list[float]:
    return [m[name] for _, m in members if name in m and math.isfinite(m[name])]


def _sample_std(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


# --- multirun summaries -------------------------------------------------------------------


@dataclass(frozen=True)
class JobResult:
    """One multirun job as its folder tells it.

    `name` is the folder's name in the sweep folder (the job number); `error` is the failure's
    first line (`ConfigError: 'optimizer.lr' must be > 0, got -0.1`) or why no result exists.
    """

    name: str
    overrides: dict[str, str]
    status: str
    error: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    monitor: str | None = None


@dataclass(frozen=True)
class SweepSummary:
    """What `write_sweep_summary` found and wrote."""

    sweep_dir: Path
    jobs: list[JobResult]
    rows: list[dict[str, Any]]
    ignore_keys: list[str]
    fold_keys: list[str] = field(default_factory=list)

    @property
    def repetition_keys(self) -> list[str]:
        """The keys of `ignore_keys` some job sets (all of them when no job sets any)."""
        present = [key for key in self.ignore_keys if key in _override_keys(self.jobs)]
        return present or self.ignore_keys

    @property
    def cross_validated(self) -> bool:
        """Whether some row averages repetitions of folds (see `summarize_jobs`)."""
        return any(row.get("repetitions", 0) > 1 for row in self.rows)

    @property
    def failed(self) -> list[JobResult]:
        """Jobs without results: failed, or unfinished (running, killed)."""
        return [job for job in self.jobs if job.status != COMPLETED]

    @property
    def paths(self) -> list[Path]:
        return [self.sweep_dir / name for name in (SUMMARY_MARKDOWN, SUMMARY_CSV, JOBS_CSV)]


def parse_override(override: str) -> tuple[str, str]:
    """`'++trainer.max_epochs=3'` -> `('trainer.max_epochs', '3')`; a deletion `~key` -> `('key', '')`."""
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def error_line(error: BaseException) -> str:
    """The exception's type and the first line of its message: what a summary shows.

    A first line that ends with `:` announces the next one (Hydra's "Error in call to target
    'X':" then the constructor's error), so the next line is kept with it.
    """
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    message = lines[0]
    if message.endswith(":") and len(lines) > 1:
        message = f"{message} {lines[1]}"
    return f"{type(error).__name__}: {message}"


def read_job(job_dir: Path, output_subdir: str = ".hydra") -> JobResult:
    """The overrides, status and test metrics of the job in `job_dir`.

    `error.txt` wins over `metrics.json`: a finished job removes a stale `error.txt`, a failed
    one keeps an earlier run's `metrics.json` (nothing is deleted) but is reported as failed.
    """
    overrides_text = (job_dir / output_subdir / "overrides.yaml").read_text()
    overrides_list = yaml.load(overrides_text, Loader=_YAML_LOADER)
    overrides = dict(parse_override(str(item)) for item in overrides_list or [])
    error_file, metrics_file = job_dir / ERROR_FILE, job_dir / METRICS_FILE
    if error_file.is_file():
        first_line = error_file.read_text(errors="replace").partition("\n")[0]
        return JobResult(job_dir.name, overrides, FAILED, first_line or "failed (empty error.txt)")
    if not metrics_file.is_file():
        return JobResult(job_dir.name, overrides, UNFINISHED, UNFINISHED_ERROR)
    try:
        results = json.loads(metrics_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return JobResult(job_dir.name, overrides, FAILED, f"unreadable {METRICS_FILE}: {error}")
    metrics = {  # null is a non-finite value (write_metrics)
        str(name): math.nan if value is None else float(value)
        for name, value in (results.get("test") or {}).items()
    }
    return JobResult(
        job_dir.name, overrides, COMPLETED, metrics=metrics, monitor=results.get("monitor")
    )


def collect_jobs(sweep_dir: Path, output_subdir: str = ".hydra") -> list[JobResult]:
    """Every job folder of `sweep_dir` (one holding `<output_subdir>/overrides.yaml`), by number."""
    job_dirs = [
        path for path in sweep_dir.iterdir() if (path / output_subdir / "overrides.yaml").is_file()
    ]
    return [read_job(path, output_subdir) for path in sorted(job_dirs, key=_natural_key)]


def _natural_key(path: Path) -> list[int | str]:
    """`2` before `10`: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def summarize_sweep(
    sweep_dir: Path,
    jobs: Sequence[JobResult],
    ignore_keys: Sequence[str],
    fold_keys: Sequence[str] = (),
) -> SweepSummary:
    """The rows of `summarize_jobs` over the finished ones of `jobs`, with the jobs themselves."""
    finished = [(job.overrides, job.metrics) for job in jobs if job.status == COMPLETED]
    rows = summarize_jobs(finished, ignore_keys, fold_keys)
    return SweepSummary(sweep_dir, list(jobs), rows, list(ignore_keys), list(fold_keys))


def write_summary_tables(summary: SweepSummary, summary_csv: Path, jobs_csv: Path) -> None:
    """The rows of `summary` (a configuration each) and its jobs (one each) as CSV files."""
    _write_csv(summary_csv, summary.rows)
    _write_csv(jobs_csv, [_job_row(job) for job in summary.jobs])


def write_sweep_summary(
    sweep_dir: Path,
    ignore_keys: Sequence[str],
    output_subdir: str = ".hydra",
    fold_keys: Sequence[str] = (),
) -> SweepSummary:
    """Rebuild `summary.csv`, `summary.md` and `jobs.csv` of `sweep_dir` from its job folders.

    `summary.csv`: a row per configuration (jobs that differ only in `ignore_keys` are
    repetitions): its overrides, `n`, `<metric>_mean` and `<metric>_std` of every test metric
    over the finished jobs. `jobs.csv`: a row per job: `job` (its folder), `status`
    (completed, failed, unfinished), `error`, its overrides and test metrics. `summary.md`: the
    table of `summary.csv` with the overrides that vary, then the failed jobs with their errors.
    With `fold_keys` (cross-validation), rows also hold the std of the repetition means.
    """
    jobs = collect_jobs(sweep_dir, output_subdir)
    summary = summarize_sweep(sweep_dir, jobs, ignore_keys, fold_keys)
    if not jobs:
        return summary
    write_summary_tables(summary, sweep_dir / SUMMARY_CSV, sweep_dir / JOBS_CSV)
    atomic_write_text(sweep_dir / SUMMARY_MARKDOWN, summary_markdown(summary))
    return summary


def _job_row(job: JobResult) -> dict[str, Any]:
    return {
        "job": job.name,
        "status": job.status,
        "error": job.error,
        **job.overrides,
        **job.metrics,
    }


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    with atomic_write(path, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def varying_keys(jobs: Sequence[JobResult]) -> list[str]:
    """Override keys whose value is not the same in every job (set in some jobs only counts)."""
    keys = _override_keys(jobs)
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


def _override_keys(jobs: Sequence[JobResult]) -> list[str]:
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.overrides if k not in keys]
    return keys


def monitored_test_metric(monitor: str) -> str:
    """The test counterpart of a monitored metric: `val/acc` -> `test/acc`,
    `train/loss_epoch` -> `test/loss` (stage prefix replaced, Lightning's `_epoch`/`_step` dropped)."""
    name = monitor.split("/", 1)[-1]
    return "test/" + re.sub(r"_(epoch|step)$", "", name)


def format_mean_std(row: Mapping[str, Any], metric: str) -> str:
    """`0.8123 ± 0.0100` over several jobs; the plain value for one job (n=1); empty if missing.

    Over several repetitions of cross-validation, the std of the repetition means follows in
    parentheses: `0.8900 ± 0.0800 (± 0.0120)`.
    """
    if f"{metric}_mean" not in row:
        return ""
    if row["n"] == 1:
        return f"{row[f'{metric}_mean']:.4f}"
    text = f"{row[f'{metric}_mean']:.4f} ± {row[f'{metric}_std']:.4f}"
    if row.get("repetitions", 0) > 1 and f"{metric}_rep_std" in row:
        text += f" (± {row[f'{metric}_rep_std']:.4f})"
    return text


def summary_markdown(summary: SweepSummary) -> str:
    """`summary.md`: every test metric per configuration, shared overrides, failed jobs."""
    lines = _summary_table(summary, _metric_names(summary.rows))
    shared = [k for k in _override_keys(summary.jobs) if k not in varying_keys(summary.jobs)]
    if shared and summary.jobs:
        first = summary.jobs[0].overrides
        lines += ["", "Overrides of every job: " + " ".join(f"`{k}={first[k]}`" for k in shared)]
    repetitions = ", ".join(f"`{k}`" for k in summary.repetition_keys) or "nothing"
    lines += ["", f"Mean ± std over the jobs that differ only in {repetitions}; n=1: the value."]
    if summary.cross_validated:
        folds = ", ".join(f"`{k}`" for k in summary.fold_keys)
        lines += [
            "(± ...): the std of the means of the `reps` repetitions, each the mean over the"
            f" folds ({folds})."
        ]
    if summary.failed:
        lines += ["", "## Failed jobs", "", *_failed_table(summary)]
    return "\n".join(lines) + "\n"


def sweep_report(summary: SweepSummary) -> str:
    """The terminal summary: the overrides that vary and the monitored metric's test value
    (see `monitored_test_metric`; every metric when no job names a monitor, as in
    `weaksup-eval`), then the failed jobs and the files that hold everything."""
    monitors = [job.monitor for job in summary.jobs if job.monitor]
    candidates = dict.fromkeys(monitored_test_metric(m) for m in monitors)
    metrics = [m for m in candidates if any(f"{m}_mean" in row for row in summary.rows)]
    if not monitors:
        metrics = _metric_names(summary.rows)
    finished = len(summary.jobs) - len(summary.failed)
    repetitions = ", ".join(summary.repetition_keys) or "nothing"
    lines = [
        f"multirun summary: {finished} of {len(summary.jobs)} jobs finished; the test value of"
        f" monitor.metric, mean ± std over {repetitions}"
        + (" (± the std of the repetition means)" if summary.cross_validated else "")
    ]
    if summary.rows:
        lines += _summary_table(summary, metrics)
    if summary.failed:
        lines += ["failed jobs:", *_failed_table(summary)]
    lines.append("all metrics and jobs: " + ", ".join(str(path) for path in summary.paths))
    return "\n".join(lines)


def _metric_names(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The metrics of `summarize_jobs` rows, in order of first appearance."""
    columns = dict.fromkeys(column for row in rows for column in row)
    return [column.removesuffix("_mean") for column in columns if column.endswith("_mean")]


def _summary_table(summary: SweepSummary, metrics: Sequence[str]) -> list[str]:
    columns = [k for k in varying_keys(summary.jobs) if k not in summary.ignore_keys]
    counts = ["n", "reps"] if summary.cross_validated else ["n"]
    body = [
        [str(row.get(c, "")) for c in columns]
        + [str(row.get(count, "")) for count in ("n", "repetitions")[: len(counts)]]
        + [format_mean_std(row, m) for m in metrics]
        for row in summary.rows
    ]
    return markdown_table([*columns, *counts, *metrics], body)


def _failed_table(summary: SweepSummary) -> list[str]:
    columns = varying_keys(summary.jobs)
    body = [
        [job.name, *(job.overrides.get(c, "") for c in columns), job.error]
        for job in summary.failed
    ]
    return markdown_table(["job", *columns, "error"], body)


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table; `|` in a cell is escaped so that it stays one cell."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(cells) for cells in body)]
