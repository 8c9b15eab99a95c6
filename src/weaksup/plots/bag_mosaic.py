"""A bag's instances as a mosaic, each titled with its own score and its attention weight.

Ilse et al. 2018 (Fig. 4/5) show MNIST-bags and histopathology bags this way: a positive bag's
attention should sit on the target instances. `BagMosaicCallback` saves one such figure of a few
test bags to the run folder after testing and logs it to every W&B logger (`publish_figure`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytorch_lightning as pl
import torch
from torch import Tensor

from weaksup.plots.publish import publish_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from weaksup.data.bags import BagBatch


def _as_image(instance: Tensor) -> Tensor | None:
    """`[H, W]` for image-like instances (`[1, H, W]`, `[H, W]`), None otherwise."""
    if instance.dim() == 3 and instance.shape[0] == 1:
        return instance[0]
    if instance.dim() == 2 and min(instance.shape) > 1:
        return instance
    return None


def bag_mosaic(
    bags: BagBatch,
    bag_scores: Tensor,
    instance_scores: Tensor,
    attention: Tensor | None = None,
    max_instances: int = 16,
) -> Figure:
    """One row per bag: its instances (images, or bars of the feature vector), titled with the
    instance score `s`, the attention weight `a` (when given) and `*` on positive instances.

    Args:
        bags: the bags to draw.
        bag_scores: `[B]` bag probabilities; instance_scores: `[N]` each instance alone.
        attention: `[N]` attention weights or None.
        max_instances: instances drawn per bag (the first ones).
    """
    num_bags = bags.num_bags
    columns = min(max_instances, int(bags.bag_sizes.max()))
    figure, axes = plt.subplots(
        num_bags, columns, figsize=(1.3 * columns, 1.6 * num_bags + 0.3), squeeze=False
    )
    for row in range(num_bags):
        start, stop = int(bags.bag_offsets[row]), int(bags.bag_offsets[row + 1])
        axes[row, 0].set_ylabel(
            f"bag {row}\nY={int(bags.bag_labels[row])}  p={float(bag_scores[row]):.2f}", fontsize=8
        )
        for column in range(columns):
            axis = axes[row, column]
            axis.set_xticks([])
            axis.set_yticks([])
            index = start + column
            if index >= stop:
                axis.axis("off")
                continue
            instance = bags.instances[index].detach().cpu().float()
            image = _as_image(instance)
            if image is not None:
                axis.imshow(image.numpy(), cmap="gray")
            else:
                axis.bar(range(instance.numel()), instance.flatten().numpy(), width=1.0)
            title = f"s={float(instance_scores[index]):.2f}"
            if attention is not None:
                title += f"\na={float(attention[index]):.2f}"
            positive = bags.instance_labels is not None and int(bags.instance_labels[index]) == 1
            axis.set_title(
                title + (" *" if positive else ""), fontsize=7, color="red" if positive else "black"
            )
    figure.tight_layout()
    return figure


def pick_bags(bags: BagBatch, num_bags: int) -> Tensor:
    """Indices of up to `num_bags` bags, positives and negatives alternating (first of each)."""
    positive = torch.nonzero(bags.bag_labels == 1).flatten()
    negative = torch.nonzero(bags.bag_labels == 0).flatten()
    order = (
        torch.stack([positive[:num_bags], negative[:num_bags]], dim=1).flatten()
        if (len(positive) >= num_bags and len(negative) >= num_bags)
        else torch.arange(bags.num_bags)
    )
    return order[:num_bags]


class BagMosaicCallback(pl.Callback):
    """After testing, draw `num_bags` test bags with their scores and attention weights.

    Saves `<dirpath>/bag_mosaic.png` and logs it as `test/bag_mosaic` to every W&B logger.

    Args:
        dirpath: folder of the figure (created).
        num_bags: bags drawn (positives and negatives alternating).
        max_instances: instances drawn per bag.
    """

    def __init__(self, dirpath: str, num_bags: int = 4, max_instances: int = 16) -> None:
        if num_bags <= 0 or max_instances <= 0:
            raise ValueError(
                f"num_bags and max_instances must be positive, got {num_bags}, {max_instances}"
            )
        self.dirpath = Path(dirpath)
        self.num_bags = num_bags
        self.max_instances = max_instances
        self.path: Path | None = None

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        if not trainer.is_global_zero or datamodule is None or not hasattr(datamodule, "split"):
            return
        test_bags = datamodule.split("test")
        bags = test_bags.select(pick_bags(test_bags, min(self.num_bags, test_bags.num_bags)))
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            device_bags = bags.select(torch.arange(bags.num_bags))
            device_bags.instances = device_bags.instances.to(pl_module.device)
            device_bags.bag_offsets = device_bags.bag_offsets.to(pl_module.device)
            scores = pl_module.predict_step(device_bags, 0)
        pl_module.train(was_training)
        attention = scores["attention"]
        figure = bag_mosaic(
            bags,
            scores["bag_scores"].cpu(),
            scores["instance_scores"].cpu(),
            None if attention is None else attention.cpu(),
            self.max_instances,
        )
        self.path = publish_figure(
            trainer,
            figure,
            "test/bag_mosaic",
            path=self.dirpath.resolve() / "bag_mosaic.png",
            dpi=110,
        )
