"""Gaussian jitter: the weak/strong pair for feature vectors (the 2-D toy data)."""

from __future__ import annotations

import torch
from torch import Tensor

from weaksup.augment._checks import check_number
from weaksup.config.validation import ConfigError


class GaussianJitter:
    """Weak view `x + weak_sigma·ε`, strong view `x + strong_sigma·ε`, `ε ~ N(0, I)` per call.

    The image operations have no counterpart for points in the plane; isotropic Gaussian noise
    is the perturbation consistency training uses there (our choice: no source fixes it for
    the SMPL two-moons toy). The shipped values are set against `data=two_moons`
    (`sklearn.datasets.make_moons`, moons of radius 1 about 0.5 apart, generated with noise
    0.1): weak 0.02, a fifth of the data's own noise, so the weak prediction stays that of the
    clean point; strong 0.1, the data's own noise level, which moves a point by 0.125 on
    average, half the gap between the moons. Inputs standardised to unit variance
    (`data=mnist1d`) see the same sigmas as a few percent of a feature's spread.

    Configured at `augment.vectors` (conf/augment/). Draws `x.numel()` normals from the global
    torch generator of the inputs' device per view.

    Args:
        weak_sigma: standard deviation of the weak view's noise, >= 0.
        strong_sigma: standard deviation of the strong view's noise, >= weak_sigma.
    """

    CONFIG_KEY = "augment.vectors"
    #: What `for_input` requires, in words.
    NEEDS = "feature vectors of shape (D,)"

    def __init__(self, weak_sigma: float = 0.02, strong_sigma: float = 0.1) -> None:
        key = self.CONFIG_KEY
        self.weak_sigma = check_number(f"{key}.weak_sigma", weak_sigma, minimum=0.0)
        self.strong_sigma = check_number(f"{key}.strong_sigma", strong_sigma, minimum=0.0)
        if self.strong_sigma < self.weak_sigma:
            raise ConfigError(
                f"{key}.strong_sigma must be >= {key}.weak_sigma (the strong view perturbs "
                f"more), got {self.strong_sigma:g} < {self.weak_sigma:g}"
            )

    @staticmethod
    def fits(input_shape: tuple[int, ...]) -> bool:
        """Whether one example of this shape is a feature vector `[D]`."""
        return len(input_shape) == 1 and input_shape[0] >= 1

    def weak_view(self, inputs: Tensor) -> Tensor:
        return inputs + self.weak_sigma * torch.randn_like(inputs)

    def strong_view(self, inputs: Tensor) -> Tensor:
        return inputs + self.strong_sigma * torch.randn_like(inputs)
