"""Networks: backbones that expose per-layer features."""

from weaksup.nn.backbones import MLP, Backbone, LeNet

__all__ = ["MLP", "Backbone", "LeNet"]
