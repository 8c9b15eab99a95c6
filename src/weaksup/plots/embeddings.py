"""Features and class embeddings of a cosine min-max model, and the margins of its tag rule.

Two panels (docs/minmax.md, "Three or more tags"):

1. *Directions*: the unit features `f(x)/‖f(x)‖` and unit class embeddings `E_c/‖E_c‖` projected
   on the plane of their two leading principal directions (computed on the class embeddings
   and the features together). Class embeddings are arrows, pure points dots in their class's
   colour, common points (several true tags) grey triangles. With cosine similarity only
   directions matter, so this is the picture of what the tag rule sees.
2. *Margins*: for every (point, class) pair, the similarity minus the rule's threshold for that
   point, `s_c(x) − τ(x)`, in four histograms: the true tags of common points (should all be
   > 0), the own tag of pure points (> 0), the other classes of pure points (< 0) and the
   classes a common point does not belong to (< 0). A rule that sits on a knife edge shows up
   as mass of the first histogram at or below 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor

from weaksup.files import atomic_save_figure

EMBEDDINGS_FILE = "embeddings.png"
MAX_POINTS = 2000


def principal_plane(vectors: Tensor) -> Tensor:
    """The two leading principal directions `[D, 2]` of the rows of `vectors` (centred).

    Inputs with a single column get a zero second direction, so every point is drawn on a line.
    """
    centred = vectors - vectors.mean(dim=0, keepdim=True)
    _, _, right = torch.linalg.svd(centred, full_matrices=False)
    plane = right[:2].T
    if plane.shape[1] < 2:
        plane = torch.cat([plane, torch.zeros(plane.shape[0], 2 - plane.shape[1])], dim=1)
    return plane


def plot_embeddings(
    features: Tensor,
    class_embeddings: Tensor,
    similarities: Tensor,
    thresholds: Tensor,
    true_tags: Tensor,
    path: str | Path,
    tag_names: Sequence[str] | None = None,
    title: str | None = None,
    max_points: int = MAX_POINTS,
) -> Path:
    """Save the two panels to `path` (PNG) and return it.

    Args:
        features: `f(x)`, `[N, D]`.
        class_embeddings: `E`, `[C, D]`.
        similarities: `[N, C]`, what the tag rule thresholds (cosines).
        thresholds: the rule's τ per point, `[N, 1]` (or `[N, C]`).
        true_tags: multi-hot `[N, C]`; a row with several ones is a common point.
        tag_names: legend names of the classes (default: indices).
        max_points: draw at most this many points (the first ones; the margins use all).
    """
    if features.dim() != 2 or class_embeddings.dim() != 2:
        raise ValueError(
            f"features must be [N, D] and class embeddings [C, D], got "
            f"{tuple(features.shape)} and {tuple(class_embeddings.shape)}"
        )
    num_classes = class_embeddings.shape[0]
    if similarities.shape != (features.shape[0], num_classes) or true_tags.shape != (
        features.shape[0],
        num_classes,
    ):
        raise ValueError(
            f"similarities and true_tags must be [N, C] = [{features.shape[0]}, {num_classes}], "
            f"got {tuple(similarities.shape)} and {tuple(true_tags.shape)}"
        )
    features = F.normalize(features.detach().cpu().float(), dim=1)
    units = F.normalize(class_embeddings.detach().cpu().float(), dim=1)
    similarities = similarities.detach().cpu().float()
    thresholds = thresholds.detach().cpu().float().expand_as(similarities)
    true_tags = true_tags.detach().cpu().bool()
    names = list(tag_names) if tag_names is not None else [str(c) for c in range(num_classes)]
    common = true_tags.sum(dim=1) > 1
    colours = [f"C{c % 10}" for c in range(num_classes)]

    figure = Figure(figsize=(12, 5.5))
    directions = figure.add_subplot(1, 2, 1)
    plane = principal_plane(torch.cat([units, features]))
    shown = slice(0, max_points)
    projected = features[shown] @ plane
    shown_common = common[shown]
    own = true_tags[shown].float().argmax(dim=1)
    for c in range(num_classes):
        members = (~shown_common) & (own == c)
        directions.scatter(
            projected[members, 0].numpy(),
            projected[members, 1].numpy(),
            s=10,
            alpha=0.5,
            color=colours[c],
            label=f"pure {names[c]}",
        )
    directions.scatter(
        projected[shown_common, 0].numpy(),
        projected[shown_common, 1].numpy(),
        s=18,
        marker="^",
        color="0.35",
        edgecolors="k",
        linewidths=0.3,
        label="common",
    )
    arrows = units @ plane
    for c in range(num_classes):
        directions.annotate(
            "",
            xy=(float(arrows[c, 0]), float(arrows[c, 1])),
            xytext=(0.0, 0.0),
            arrowprops={"arrowstyle": "-|>", "color": colours[c], "lw": 2.5},
        )
        directions.text(
            1.12 * float(arrows[c, 0]), 1.12 * float(arrows[c, 1]), f"E[{names[c]}]", ha="center"
        )
    off_diagonal = ~torch.eye(num_classes, dtype=torch.bool)
    mean_cosine = float((units @ units.T)[off_diagonal].mean()) if num_classes > 1 else 1.0
    directions.set_title(
        f"unit features and class embeddings (2 principal directions)\n"
        f"mean pairwise cos(E_i, E_j) = {mean_cosine:.2f}; simplex "
        f"−1/(C−1) = {-1 / max(num_classes - 1, 1):.2f}"
    )
    angles = torch.linspace(0, 2 * torch.pi, 200)
    directions.plot(angles.cos().numpy(), angles.sin().numpy(), color="0.8", lw=0.8)
    directions.set_xlim(-1.3, 1.3)
    directions.set_ylim(-1.3, 1.3)
    directions.set_aspect("equal")
    directions.axhline(0, color="0.85", lw=0.5)
    directions.axvline(0, color="0.85", lw=0.5)
    directions.legend(fontsize=7, loc="lower left")

    margins = figure.add_subplot(1, 2, 2)
    margin = similarities - thresholds
    groups = (  # label, margins, colour, whether the tag should be given (margin > 0)
        ("common: true tags", margin[common][true_tags[common]], "C3", True),
        ("common: other classes", margin[common][~true_tags[common]], "C1", False),
        ("pure: own tag", margin[~common][true_tags[~common]], "C0", True),
        ("pure: other classes", margin[~common][~true_tags[~common]], "C2", False),
    )
    present = [values for _, values, _, _ in groups if values.numel()]
    low = min((float(values.min()) for values in present), default=-1.0)
    high = max((float(values.max()) for values in present), default=1.0)
    bins = torch.linspace(low, high, 60).numpy()
    for label, values, colour, given in groups:
        if not values.numel():
            continue
        wrong = float(((values <= 0) if given else (values > 0)).float().mean())
        margins.hist(
            values.numpy(),
            bins=bins,
            alpha=0.55,
            color=colour,
            density=True,
            label=f"{label} (wrong side: {wrong:.1%})",
        )
    margins.axvline(0.0, color="k", lw=1)
    margins.set_xlabel("s_c(x) − τ(x)  (> 0: tag given)")
    margins.set_ylabel("density")
    margins.set_title("margins of the tag rule")
    margins.legend(fontsize=7)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return atomic_save_figure(figure, path, dpi=80)
