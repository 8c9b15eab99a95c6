"""The metric-against-setting figure of reproductions (weaksup.plots.metric_curve)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from weaksup.plots.metric_curve import plot_metric_curve


def test_curves_with_reference_points_are_saved_as_a_png(tmp_path: Path) -> None:
    path = plot_metric_curve(
        {
            "attention": {100: [0.95, 0.96, 0.94], 500: [0.99, 0.98, 0.99]},
            "gated_attention": {100: [0.95], 500: [0.985]},  # one seed: no error bar
        },
        tmp_path / "figures" / "auc.png",
        xlabel="training bags",
        ylabel="test AUC",
        reference={100: 0.95, 500: 0.99},
        title="MNIST-bags",
    )
    assert path == tmp_path / "figures" / "auc.png"
    pixels = imread(path)
    assert pixels.shape[:2] == (480, 720)  # 6 x 4 inches at 120 dpi
    assert np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0).shape[0] > 50  # not blank


@pytest.mark.parametrize(
    ("series", "message"),
    [
        ({}, "needs at least one series"),
        ({"attention": {}}, "series 'attention' has no points"),
        ({"attention": {100: []}}, "series 'attention' has no values at x=100"),
        ({"mean": {50: [0.9, math.nan]}}, r"series 'mean' has a non-finite value at x=50"),
    ],
)
def test_bad_series_are_refused_with_the_series_and_point(
    tmp_path: Path, series: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        plot_metric_curve(series, tmp_path / "x.png", xlabel="x", ylabel="y")
    assert not (tmp_path / "x.png").exists()
