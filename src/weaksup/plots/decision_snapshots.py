"""How a classifier of 2-D points draws its boundary over training: one panel per snapshot.

The picture of the SMPL paper's two-moons toy: the predicted class regions after a few points of
training, with the unlabeled points in grey and the few labeled ones large and coloured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from weaksup.files import atomic_save_figure


@dataclass(frozen=True)
class BoundarySnapshot:
    """The predicted class of every grid point at one moment of training."""

    title: str
    classes: Tensor  # [resolution, resolution] int64


@dataclass(frozen=True)
class Grid:
    """A square grid around 2-D points (1 unit of margin)."""

    axis_x: Tensor
    axis_y: Tensor

    @classmethod
    def around(cls, points: Tensor, resolution: int = 120) -> Grid:
        low = points.min(dim=0).values - 1.0
        high = points.max(dim=0).values + 1.0
        return cls(
            torch.linspace(float(low[0]), float(high[0]), resolution),
            torch.linspace(float(low[1]), float(high[1]), resolution),
        )

    def points(self) -> Tensor:
        grid_x, grid_y = torch.meshgrid(self.axis_x, self.axis_y, indexing="xy")
        return torch.stack([grid_x.flatten(), grid_y.flatten()], dim=1)

    def snapshot(self, title: str, predict: Callable[[Tensor], Tensor]) -> BoundarySnapshot:
        """Classes `argmax predict(grid)` for the grid, `predict` mapping `[M, 2]` to `[M, C]`."""
        with torch.no_grad():
            scores = predict(self.points())
        shape = (len(self.axis_y), len(self.axis_x))
        return BoundarySnapshot(title, scores.argmax(dim=1).cpu().reshape(shape))


def plot_boundary_snapshots(
    grid: Grid,
    snapshots: Sequence[BoundarySnapshot],
    points: Tensor,
    labeled_points: Tensor,
    labeled_classes: Tensor,
    path: str | Path,
) -> Path:
    """Save one panel per snapshot (class regions, unlabeled points, labeled points) to `path`."""
    if not snapshots:
        raise ValueError("plot_boundary_snapshots needs at least one snapshot")
    points = points.detach().cpu().float()
    labeled_points = labeled_points.detach().cpu().float()
    figure = Figure(figsize=(4 * len(snapshots), 4))
    for index, snapshot in enumerate(snapshots):
        axes = figure.add_subplot(1, len(snapshots), index + 1)
        axes.pcolormesh(
            grid.axis_x.numpy(),
            grid.axis_y.numpy(),
            snapshot.classes.numpy(),
            cmap="coolwarm",
            alpha=0.35,
        )
        axes.scatter(points[:, 0].numpy(), points[:, 1].numpy(), s=4, c="0.45", linewidths=0)
        axes.scatter(
            labeled_points[:, 0].numpy(),
            labeled_points[:, 1].numpy(),
            s=70,
            c=labeled_classes.cpu().numpy(),
            cmap="coolwarm",
            edgecolors="black",
            linewidths=1.2,
        )
        axes.set_title(snapshot.title)
        axes.set_xticks([])
        axes.set_yticks([])
    figure.tight_layout()
    return atomic_save_figure(figure, path, dpi=80)
