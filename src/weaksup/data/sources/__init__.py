"""Readers and generators of real data sets, each returning fixed seeded train/val/test splits.

Every source is a plain class whose constructor arguments are its config keys and whose
`load()` returns a `DatasetSplits`. No source downloads anything.
"""

from weaksup.data.sources.base import ArrayDataset, DataError, DatasetSplits, check_finite
from weaksup.data.sources.digits import Digits
from weaksup.data.sources.idx import MNIST, FashionMNIST, IDXImageSource, read_idx
from weaksup.data.sources.mil_csv import MilTable, read_mil_csv
from weaksup.data.sources.mnist1d import MNIST1D
from weaksup.data.sources.mnist_npm import MNIST10k, read_mnist_npm
from weaksup.data.sources.toy import Blobs, TwoMoons

__all__ = [
    "MNIST",
    "MNIST1D",
    "ArrayDataset",
    "Blobs",
    "DataError",
    "DatasetSplits",
    "Digits",
    "FashionMNIST",
    "IDXImageSource",
    "MNIST10k",
    "MilTable",
    "TwoMoons",
    "check_finite",
    "read_idx",
    "read_mil_csv",
    "read_mnist_npm",
]
