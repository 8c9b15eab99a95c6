"""Run results: `metrics.json` of a run, the printed results table, multirun summaries."""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

METRICS_FILE = "metrics.json"


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Plain floats of Lightning's `callback_metrics` (tensors) or test results."""
    return {str(name): float(value) for name, value in sorted(metrics.items())}


def write_metrics(output_dir: Path, results: Mapping[str, Any]) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / METRICS_FILE
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return path


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
    jobs: Sequence[tuple[Mapping[str, str], Mapping[str, float]]], ignore_keys: Sequence[str]
) -> list[dict[str, Any]]:
    """Mean and std of every metric over jobs that differ only in `ignore_keys` (e.g. the seed).

    Each job is `(overrides, metrics)`; a row per configuration: its overrides, the job count
    `n`, and `<metric>_mean` / `<metric>_std` (sample std; 0 for one job).
    """
    groups: dict[tuple[tuple[str, str], ...], list[Mapping[str, float]]] = {}
    for overrides, metrics in jobs:
        key = tuple(sorted((k, v) for k, v in overrides.items() if k not in ignore_keys))
        groups.setdefault(key, []).append(metrics)
    rows = []
    for key, members in groups.items():
        row: dict[str, Any] = {**dict(key), "n": len(members)}
        for name in sorted({name for metrics in members for name in metrics}):
            values = [m[name] for m in members if name in m and math.isfinite(m[name])]
            if values:
                row[f"{name}_mean"] = statistics.fmean(values)
                row[f"{name}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def write_summary(rows: Sequence[Mapping[str, Any]], sweep_dir: Path) -> tuple[Path, Path]:
    """`summary.csv` (all columns) and `summary.md` (mean ± std per metric) in the sweep folder."""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    csv_path = sweep_dir / "summary.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    config_columns = [c for c in columns if c != "n" and not c.endswith(("_mean", "_std"))]
    if len(rows) > 1:  # the table shows what varies; summary.csv keeps every column
        config_columns = [c for c in config_columns if len({str(row.get(c)) for row in rows}) > 1]
    metric_names = [c[: -len("_mean")] for c in columns if c.endswith("_mean")]
    lines = [
        "| " + " | ".join([*config_columns, "n", *metric_names]) + " |",
        "|" + "---|" * (len(config_columns) + 1 + len(metric_names)),
    ]
    for row in rows:
        cells = [str(row.get(c, "")) for c in config_columns] + [str(row["n"])]
        cells += [
            f"{row[f'{m}_mean']:.4f} ± {row[f'{m}_std']:.4f}" if f"{m}_mean" in row else ""
            for m in metric_names
        ]
        lines.append("| " + " | ".join(cells) + " |")
    markdown_path = sweep_dir / "summary.md"
    markdown_path.write_text("\n".join(lines) + "\n")
    return csv_path, markdown_path
