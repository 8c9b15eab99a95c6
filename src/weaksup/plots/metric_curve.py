"""A metric against a swept setting: mean ± std over seeds per series, with reference points.

For reproductions that papers report as figures, e.g. MNIST-bags test AUC against the number of
training bags (Ilse et al. 2018, Fig. 2), one line per pooling and the paper's values as markers.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from weaksup.files import atomic_save_figure

#: series name -> {x: the metric of every seed at that x}
CurveData = Mapping[str, Mapping[float, Sequence[float]]]


def plot_metric_curve(
    series: CurveData,
    path: str | Path,
    xlabel: str,
    ylabel: str,
    reference: Mapping[float, float] | None = None,
    reference_label: str = "paper",
    title: str | None = None,
) -> Path:
    """Save the curves to `path` (PNG) and return it.

    Each series is drawn as its mean over seeds at every x with a ±1 std error bar (no bar for
    a single seed); `reference` values are drawn as black crosses.

    Raises:
        ValueError: no series, a series with no points, a point with no values, or a non-finite
            value (named by series and x).
    """
    if not series:
        raise ValueError("plot_metric_curve needs at least one series")
    for name, points in series.items():
        if not points:
            raise ValueError(f"series {name!r} has no points")
        for x, values in points.items():
            if len(values) == 0:
                raise ValueError(f"series {name!r} has no values at x={x}")
            if not all(math.isfinite(value) for value in values):
                raise ValueError(f"series {name!r} has a non-finite value at x={x}: {list(values)}")
    figure = Figure(figsize=(6, 4), dpi=120)
    axes = figure.add_subplot()
    for name, points in series.items():
        xs = sorted(points)
        means = [statistics.fmean(points[x]) for x in xs]
        stds = [statistics.stdev(points[x]) if len(points[x]) > 1 else 0.0 for x in xs]
        seeds = max(len(points[x]) for x in xs)
        axes.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=f"{name} (n={seeds})")
    if reference:
        xs = sorted(reference)
        axes.plot(xs, [reference[x] for x in xs], "kx", markersize=9, label=reference_label)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    if title:
        axes.set_title(title)
    figure.tight_layout()
    return atomic_save_figure(figure, path)
