"""A batch beside its weak and strong views: the picture of an `augment` option in the run folder.

Images `[B, C, H, W]`: three rows (original, weak, strong), one column per example, the channel
mean drawn on one grey scale (the originals' minimum and maximum), so intensity changes show.
Points `[B, 2]`: one scatter with the originals and both views, each view joined to its
original. Other vectors `[B, D]`: one panel per example, the three as profiles over the D
features. The views are drawn under `torch.random.fork_rng` from `seed`, so the picture is
the same every time and the training run's random streams are left as they were.
"""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from torch import Tensor

from weaksup.augment import AugmentationPair
from weaksup.files import atomic_save_figure

VIEW_COLOURS = {"original": "#222222", "weak": "#1f77b4", "strong": "#d62728"}
#: Examples drawn by default: a row of images (or vector profiles), a cloud of 2-D points.
DEFAULT_IMAGES = 8
DEFAULT_POINTS = 256


def save_augmentation_grid(
    inputs: Tensor,
    pair: AugmentationPair,
    path: str | Path,
    max_examples: int | None = None,
    seed: int = 0,
) -> Path:
    """Save the figure of `inputs[:max_examples]` and its two views to `path`; return the path.

    `max_examples` defaults to 8 (images, vector profiles) or 256 (2-D points).
    """
    if inputs.dim() < 2 or inputs.shape[0] == 0:
        raise ValueError(f"need a non-empty batch [B, ...], got shape {list(inputs.shape)}")
    points = inputs.dim() == 2 and inputs.shape[1] == 2
    if max_examples is None:
        max_examples = DEFAULT_POINTS if points else DEFAULT_IMAGES
    if max_examples < 1:
        raise ValueError(f"max_examples must be >= 1, got {max_examples}")
    originals = inputs[:max_examples].detach()
    devices = [originals.device] if originals.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        # Only the generators fork_rng restores (torch.manual_seed would reseed every GPU).
        torch.default_generator.manual_seed(seed)
        if devices:
            with torch.cuda.device(originals.device):
                torch.cuda.manual_seed(seed)
        views = {
            "original": originals,
            "weak": pair.weak(originals),
            "strong": pair.strong(originals),
        }
    views = {name: view.float().cpu() for name, view in views.items()}
    if originals.dim() == 4:
        figure = _image_rows(views)
    elif points:
        figure = _point_scatter(views)
    elif originals.dim() == 2:
        figure = _vector_profiles(views)
    else:
        raise ValueError(
            f"draws images [B, C, H, W] or vectors [B, D], got shape {list(inputs.shape)}"
        )
    return atomic_save_figure(figure, path, dpi=90)


def _image_rows(views: dict[str, Tensor]) -> Figure:
    originals = views["original"]
    count = originals.shape[0]
    low, high = float(originals.min()), float(originals.max())
    figure = Figure(figsize=(1.2 * count + 0.8, 3.9), layout="constrained")
    axes = figure.subplots(3, count, squeeze=False)
    for row, (name, view) in enumerate(views.items()):
        for column in range(count):
            axis = axes[row, column]
            axis.imshow(view[column].mean(dim=0).numpy(), cmap="gray", vmin=low, vmax=high)
            axis.set_xticks([])
            axis.set_yticks([])
        axes[row, 0].set_ylabel(name)
    return figure


def _point_scatter(views: dict[str, Tensor]) -> Figure:
    figure = Figure(figsize=(5.5, 5), layout="constrained")
    axis = figure.subplots()
    originals = views["original"]
    for name in ("weak", "strong"):
        segments = torch.stack([originals, views[name]], dim=1).numpy()  # [B, 2 ends, xy]
        axis.add_collection(
            LineCollection(segments, colors=VIEW_COLOURS[name], linewidths=0.6, alpha=0.6)
        )
    size = 18 if originals.shape[0] <= 64 else 7
    for name, view in views.items():
        axis.scatter(view[:, 0], view[:, 1], s=size, color=VIEW_COLOURS[name], label=name)
    axis.set_aspect("equal", adjustable="datalim")
    axis.legend(loc="best", fontsize=8)
    axis.set_title("inputs and their weak / strong views")
    return figure


def _vector_profiles(views: dict[str, Tensor]) -> Figure:
    count = views["original"].shape[0]
    figure = Figure(figsize=(2.2 * count, 2.2), layout="constrained")
    axes = figure.subplots(1, count, squeeze=False)[0]
    for column, axis in enumerate(axes):
        for name, view in views.items():
            axis.plot(view[column].numpy(), color=VIEW_COLOURS[name], lw=0.8, label=name)
        axis.set_xticks([])
    axes[0].legend(loc="best", fontsize=6)
    return figure
