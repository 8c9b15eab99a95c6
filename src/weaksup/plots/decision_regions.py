"""Decision regions of a multi-label tagger on 2-D inputs: one panel per class.

The picture of the partial-tag posts ("Plot for Class=0", "Plot for Class=1"): each panel shades
where the model gives tag c and colours the points by whether they got it; points whose true tag
set has several tags (the common class) are drawn as triangles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from torch import Tensor

from weaksup.files import atomic_save_figure


def plot_decision_regions(
    predict_tags: Callable[[Tensor], Tensor],
    inputs: Tensor,
    true_tags: Tensor,
    path: str | Path,
    tag_names: Sequence[str] | None = None,
    resolution: int = 200,
    title: str | None = None,
) -> Path:
    """Save the panels to `path` (PNG) and return it.

    Args:
        predict_tags: maps inputs `[M, 2]` to predicted tags `[M, C]` (bool or 0/1).
        inputs: the points to draw, `[N, 2]`.
        true_tags: their true multi-hot tags `[N, C]` (common points: several ones).
        tag_names: panel titles (default: class indices).
        resolution: grid points per axis for the shaded regions.
    """
    if inputs.dim() != 2 or inputs.shape[1] != 2:
        raise ValueError(f"decision regions need 2-D inputs [N, 2], got {tuple(inputs.shape)}")
    inputs = inputs.detach().cpu().float()
    true_tags = true_tags.detach().cpu()
    low = inputs.min(dim=0).values - 1.0
    high = inputs.max(dim=0).values + 1.0
    axis_x = torch.linspace(float(low[0]), float(high[0]), resolution)
    axis_y = torch.linspace(float(low[1]), float(high[1]), resolution)
    grid_x, grid_y = torch.meshgrid(axis_x, axis_y, indexing="xy")
    grid = torch.stack([grid_x.flatten(), grid_y.flatten()], dim=1)
    with torch.no_grad():
        grid_tags = predict_tags(grid).detach().cpu().bool()
        point_tags = predict_tags(inputs).detach().cpu().bool()
    num_classes = grid_tags.shape[1]
    names = list(tag_names) if tag_names is not None else [str(c) for c in range(num_classes)]
    common = true_tags.sum(dim=1) > 1

    figure = Figure(figsize=(6 * num_classes, 5.5))
    regions = ListedColormap(["#f2f2f2", "#bcd7f5"])
    for column in range(num_classes):
        axes = figure.add_subplot(1, num_classes, column + 1)
        axes.pcolormesh(
            axis_x.numpy(),
            axis_y.numpy(),
            grid_tags[:, column].reshape(resolution, resolution).float().numpy(),
            cmap=regions,
            vmin=0,
            vmax=1,
            shading="auto",
        )
        for marker, members in (("o", ~common), ("^", common)):
            given = point_tags[members, column]
            points = inputs[members]
            axes.scatter(
                points[:, 0].numpy(),
                points[:, 1].numpy(),
                c=given.float().numpy(),
                cmap=ListedColormap(["#d62728", "#1f77b4"]),
                vmin=0,
                vmax=1,
                marker=marker,
                edgecolors="k",
                linewidths=0.4,
                s=22,
            )
        share = (
            float(point_tags[common, column].float().mean()) if bool(common.any()) else float("nan")
        )
        axes.set_title(
            f"tag {names[column]}: shaded = predicted; common points with it: {share:.0%}"
        )
        axes.set_xlabel("x0")
        axes.set_ylabel("x1")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return atomic_save_figure(figure, path, dpi=80)
