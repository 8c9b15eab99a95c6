"""Tensor augmentations for semi-supervised methods: a weak and a strong view of a batch.

```python
augment = build_node(cfg.augment)          # weaksup.config.instantiate.build_node
pair = augment.for_input(input_shape)      # (1, 28, 28) -> images; (2,) -> jitter
weak_inputs, strong_inputs = pair.weak(inputs), pair.strong(inputs)
```
Options in `conf/augment/`; what each view does is in `docs/augmentations.md`.
"""

from weaksup.augment.images import ImageAugmentation
from weaksup.augment.jitter import GaussianJitter
from weaksup.augment.pair import Augmentation, AugmentationPair
from weaksup.augment.randaugment import ALL_OPS, RandAugment
from weaksup.augment.translate import RandomTranslateFlip

__all__ = [
    "ALL_OPS",
    "Augmentation",
    "AugmentationPair",
    "GaussianJitter",
    "ImageAugmentation",
    "RandAugment",
    "RandomTranslateFlip",
]
