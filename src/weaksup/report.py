"""`weaksup-report PATH...`: the table and plots of one or more finished multiruns.

    weaksup-report outputs/multiruns/2026-12-01/14-03-59-123456
    weaksup-report outputs/multiruns/mil_mnist_bags --out report   # every sweep of a study

Each PATH is a multirun folder (it holds Hydra's `multirun.yaml` or job folders with
`.hydra/overrides.yaml`) or a folder above several (an Optuna study folder, a date folder).
The jobs of all of them are summarised together, as the multirun summary does it
(`weaksup.results`): `report.md` and `report.csv` hold mean ± std and n per configuration
(jobs that differ only in the seed, fold or split seed are repetitions; cross-validation rows
also give the std of the repetition means), then the failed jobs with their errors;
`jobs.csv` holds every job; `plots/` the test metrics against every swept numeric setting
(`weaksup.plots.metric_curve`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from collections.abc import Sequence
from pathlib import Path

from weaksup.files import atomic_write_text
from weaksup.plots.metric_curve import CurveData, plot_metric_curve
from weaksup.results import (
    COMPLETED,
    FOLD_KEYS,
    REPETITION_KEYS,
    JobResult,
    SweepSummary,
    collect_jobs,
    monitored_test_metric,
    summarize_sweep,
    summary_markdown,
    varying_keys,
    write_summary_tables,
)

REPORT_MARKDOWN = "report.md"
REPORT_CSV = "report.csv"
JOBS_CSV = "jobs.csv"
PLOTS = "plots"
MULTIRUN_FILE = "multirun.yaml"  # the basic sweeper writes it into the sweep folder
OUTPUT_SUBDIR, OVERRIDES_FILE = ".hydra", "overrides.yaml"
# A swept setting with at most this many values splits a plot into one curve per value;
# one with more (an Optuna search's continuous settings) is pooled into the curves.
MAX_CURVES = 6


def find_sweeps(path: Path) -> list[Path]:
    """The multirun folders at or under `path`, sorted.

    Raises:
        FileNotFoundError: `path` is not a folder, or holds no multirun folder.
    """
    if not path.is_dir():
        raise FileNotFoundError(f"weaksup-report: {path} is not a folder")
    if (path / MULTIRUN_FILE).is_file() or collect_jobs(path):
        return [path]
    # The basic sweeper writes multirun.yaml, the Optuna sweeper does not: a sweep folder is
    # also the parent of job folders (<sweep>/<job>/.hydra/overrides.yaml).
    found = {match.parent for match in path.rglob(MULTIRUN_FILE)}
    found |= {match.parents[2] for match in path.rglob(f"{OUTPUT_SUBDIR}/{OVERRIDES_FILE}")}
    sweeps = sorted(found)
    if not sweeps:
        raise FileNotFoundError(
            f"weaksup-report: no multirun folder at or under {path} (one holds {MULTIRUN_FILE}"
            " or job folders with .hydra/overrides.yaml)"
        )
    return sweeps


def collect_report_jobs(sweeps: Sequence[Path]) -> list[JobResult]:
    """The jobs of every sweep folder; with several, each is named `<sweep folder>/<job>`
    relative to their common parent, so job `0` of two sweeps stays two jobs."""
    if len(sweeps) == 1:
        return collect_jobs(sweeps[0])
    root = Path(_common_parent(sweeps))
    return [
        dataclasses.replace(job, name=f"{sweep.resolve().relative_to(root)}/{job.name}")
        for sweep in sweeps
        for job in collect_jobs(sweep)
    ]


def _common_parent(paths: Sequence[Path]) -> Path:
    parts = [path.resolve().parts for path in paths]
    common = [names[0] for names in zip(*parts, strict=False) if len(set(names)) == 1]
    return Path(*common)


def numeric_settings(jobs: Sequence[JobResult], ignore_keys: Sequence[str]) -> list[str]:
    """Swept override keys (not repetitions) whose every value is a finite number."""
    return [
        key
        for key in varying_keys(jobs)
        if key not in ignore_keys
        and all(_number(job.overrides.get(key)) is not None for job in jobs)
    ]


def _number(text: str | None) -> float | None:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def curve_data(
    jobs: Sequence[JobResult], setting: str, metric: str, ignore_keys: Sequence[str]
) -> CurveData:
    """`metric` of the finished jobs against `setting`.

    On a grid (some value of `setting` is shared by several jobs), one curve per combination of
    the other swept settings with at most `MAX_CURVES` values (e.g. the pooling), the rest
    pooled; in a search (every job its own value, as Optuna proposes them), one curve.
    """
    finished = [job for job in jobs if job.status == COMPLETED]
    grid = len({job.overrides[setting] for job in finished}) < len(finished)
    others = [
        key
        for key in varying_keys(finished)
        if grid
        and key != setting
        and key not in ignore_keys
        and len({job.overrides.get(key) for job in finished}) <= MAX_CURVES
    ]
    series: dict[str, dict[float, list[float]]] = {}
    for job in finished:
        value = job.metrics.get(metric)
        if value is None or not math.isfinite(value):
            continue
        name = ", ".join(f"{key}={job.overrides.get(key, '')}" for key in others) or metric
        x = float(job.overrides[setting])
        series.setdefault(name, {}).setdefault(x, []).append(value)
    return series


def report_metrics(jobs: Sequence[JobResult]) -> list[str]:
    """The test counterparts of the jobs' monitored metrics; every test metric when no job
    names a monitor (`weaksup-eval`)."""
    monitors = {monitored_test_metric(job.monitor) for job in jobs if job.monitor}
    present = dict.fromkeys(name for job in jobs for name in job.metrics)
    chosen = [name for name in present if name in monitors]
    return chosen or list(present)


def write_plots(
    summary: SweepSummary, out_dir: Path, metrics: Sequence[str]
) -> list[tuple[str, str, Path]]:
    """A PNG per (metric, swept numeric setting): `plots/<metric>_vs_<setting>.png`."""
    plots = []
    for setting in numeric_settings(summary.jobs, summary.ignore_keys):
        for metric in metrics:
            series = curve_data(summary.jobs, setting, metric, summary.ignore_keys)
            if not series:
                continue
            path = out_dir / PLOTS / f"{_file_name(metric)}_vs_{_file_name(setting)}.png"
            plot_metric_curve(series, path, xlabel=setting, ylabel=metric)
            plots.append((metric, setting, path))
    return plots


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def write_report(
    paths: Sequence[Path],
    out_dir: Path,
    ignore_keys: Sequence[str] = REPETITION_KEYS,
    fold_keys: Sequence[str] = FOLD_KEYS,
    metrics: Sequence[str] | None = None,
) -> SweepSummary:
    """`report.md`, `report.csv`, `jobs.csv` and `plots/` in `out_dir` for the sweeps of `paths`."""
    sweeps = [sweep for path in paths for sweep in find_sweeps(Path(path))]
    jobs = collect_report_jobs(sweeps)
    summary = summarize_sweep(out_dir, jobs, ignore_keys, fold_keys)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_summary_tables(summary, out_dir / REPORT_CSV, out_dir / JOBS_CSV)
    plots = write_plots(summary, out_dir, metrics or report_metrics(jobs))
    finished = len(jobs) - len(summary.failed)
    lines = [
        "# Sweep report",
        "",
        f"{finished} of {len(jobs)} jobs finished, from "
        + ", ".join(f"`{sweep}`" for sweep in sweeps)
        + ".",
        "",
        summary_markdown(summary).rstrip("\n"),
    ]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [
            f"![{metric} against {setting}]({path.relative_to(out_dir).as_posix()})"
            for metric, setting, path in plots
        ]
    atomic_write_text(out_dir / REPORT_MARKDOWN, "\n".join(lines) + "\n")
    return summary


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="weaksup-report",
        description="Table (markdown + CSV) and plots of one or more finished multiruns.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="multirun folders")
    parser.add_argument(
        "--out",
        type=Path,
        help="output folder (default: <PATH>/report with one PATH; required with several)",
    )
    parser.add_argument(
        "--group-by-ignore",
        nargs="*",
        default=list(REPETITION_KEYS),
        metavar="KEY",
        help="override keys whose jobs are repetitions (default: %(default)s)",
    )
    parser.add_argument(
        "--fold-keys",
        nargs="*",
        default=list(FOLD_KEYS),
        metavar="KEY",
        help="of those, the cross-validation fold keys (default: %(default)s)",
    )
    parser.add_argument(
        "--metric",
        action="append",
        dest="metrics",
        metavar="NAME",
        help="metric to plot, repeatable (default: the test value of monitor.metric)",
    )
    arguments = parser.parse_args(argv)
    if arguments.out is None:
        if len(arguments.paths) > 1:
            parser.error("--out is required with several PATHs")
        arguments.out = arguments.paths[0] / "report"
    return arguments


def run(argv: Sequence[str] | None = None) -> Path:
    """Write the report of the command line's multiruns; print and return its markdown file."""
    arguments = parse_arguments(argv)
    summary = write_report(
        arguments.paths,
        arguments.out,
        arguments.group_by_ignore,
        arguments.fold_keys,
        arguments.metrics,
    )
    path = arguments.out / REPORT_MARKDOWN
    print(path.read_text(), end="")
    finished = len(summary.jobs) - len(summary.failed)
    print(f"report of {finished} of {len(summary.jobs)} jobs: {path}, {arguments.out / REPORT_CSV}")
    return path


def main() -> None:
    """The `weaksup-report` console script (errors as the other entry points print them)."""
    from weaksup.cli import script_entry_point

    script_entry_point(run)()


if __name__ == "__main__":
    main()
