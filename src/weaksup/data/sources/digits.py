"""The handwritten digits shipped inside scikit-learn (`sklearn.datasets.load_digits`).

1,797 images of 8x8 pixels with 17 grey levels (0..16), ten classes: the test part of the UCI
"Optical Recognition of Handwritten Digits" data set. No file is downloaded.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from weaksup.data.sources.base import (
    DatasetSplits,
    check_int,
    check_nonempty_splits,
    check_split_fractions,
    split_train_val_test,
)

#: Number of images in `load_digits`.
NUM_DIGITS = 1797
#: Brightest grey level in `load_digits` images.
MAX_GREY_LEVEL = 16


class Digits:
    """8x8 digit images as `[N, 1, 8, 8]` float32 in [0, 1] (grey level / 16), ten classes.

    One seeded random train/val/test split of the 1,797 images.
    """

    def __init__(
        self, val_fraction: float = 0.15, test_fraction: float = 0.2, seed: int = 0
    ) -> None:
        self.val_fraction, self.test_fraction = check_split_fractions(val_fraction, test_fraction)
        self.seed = check_int("seed", seed, minimum=0)
        check_nonempty_splits("len(digits)", NUM_DIGITS, self.val_fraction, self.test_fraction)

    def load(self) -> DatasetSplits:
        digits = load_digits()
        images = digits.images.astype(np.float32)[:, None] / MAX_GREY_LEVEL
        return split_train_val_test(
            images,
            digits.target,
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            seed=self.seed,
            num_classes=10,
            name="digits",
        )
