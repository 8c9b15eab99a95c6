"""Networks: backbones that expose per-layer features."""

from weaksup.nn.backbones import LeNet, MLP, Backbone

__all__ = ["MLP", "Backbone", "LeNet"]
