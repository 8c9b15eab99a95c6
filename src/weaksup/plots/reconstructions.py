"""Inputs beside their reconstruction at every level of a network (the inversion method's picture).

Row pairs are examples: the level's input `z_l` above its reconstruction `ẑ_l`; columns are the
levels, the input first. An image level `[C, H, W]` is drawn as the mean over its channels; a
vector level `[D]` is folded into the most nearly square rectangle (padded with its mean). Each
panel is scaled on its own (values differ by orders of magnitude between levels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from weaksup.files import atomic_save_figure


def as_image(level: Tensor) -> np.ndarray:
    """One example's level as a 2-D array: channel mean of an image, a folded vector otherwise."""
    values = level.detach().float().cpu()
    if values.dim() == 3:
        return values.mean(dim=0).numpy()
    if values.dim() == 2:
        return values.numpy()
    flat = values.flatten().numpy()
    width = math.ceil(math.sqrt(flat.size))
    height = math.ceil(flat.size / width)
    padded = np.full(width * height, flat.mean() if flat.size else 0.0, dtype=np.float32)
    padded[: flat.size] = flat
    return padded.reshape(height, width)


def plot_reconstructions(
    levels: Sequence[Tensor], reconstructed: Sequence[Tensor], path: str | Path
) -> Path:
    """Save the figure of `levels[l][i]` over `reconstructed[l][i]` to `path` and return it."""
    if not levels or len(levels) != len(reconstructed):
        raise ValueError(
            f"need one reconstruction per level, got {len(levels)} levels and "
            f"{len(reconstructed)} reconstructions"
        )
    num_examples = int(levels[0].shape[0])
    num_levels = len(levels)
    figure = Figure(figsize=(1.3 * num_levels, 1.3 * 2 * num_examples), layout="constrained")
    axes = figure.subplots(2 * num_examples, num_levels, squeeze=False)
    for level_index, (level, rebuilt) in enumerate(zip(levels, reconstructed, strict=True)):
        name = "input" if level_index == 0 else f"level {level_index}"
        for example in range(num_examples):
            for row, (tensor, kind) in enumerate(((level, "z"), (rebuilt, "ẑ"))):
                axis = axes[2 * example + row, level_index]
                axis.imshow(as_image(tensor[example]), cmap="gray" if row == 0 else "magma")
                axis.set_xticks([])
                axis.set_yticks([])
                if example == 0:
                    axis.set_title(f"{name}: {kind}" if row == 0 else kind, fontsize=7)
                elif level_index == 0:
                    axis.set_ylabel(kind, fontsize=7)
    return atomic_save_figure(figure, path, dpi=80)
