"""Methods: LightningModules that wire losses, backbones and optimizers."""

from weaksup.methods.base import NonFiniteLossError, WeakSupMethod
from weaksup.methods.supervised import SupervisedClassifier

__all__ = ["NonFiniteLossError", "SupervisedClassifier", "WeakSupMethod"]
