"""Networks: backbones that expose per-layer features."""

from weaksup.nn.backbones import MLP, Backbone, LeNet, LinearEncoder
from weaksup.nn.convnets import ConvLarge, ConvSmall, running_batch_norm

__all__ = [
    "MLP",
    "Backbone",
    "ConvLarge",
    "ConvSmall",
    "LeNet",
    "LinearEncoder",
    "running_batch_norm",
]
