"""weaksup: a Hydra + PyTorch Lightning framework for learning from weak labels."""

from weaksup import resolvers  # noqa: F401  (registers the ${weaksup.*} config resolvers)

__version__ = "0.1.0"
