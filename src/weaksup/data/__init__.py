"""Data: typed batches, datamodules and readers of real data sets (no downloads).

The names below load on first use (PEP 562), so that importing a pure-torch module of this
package (`weaksup.data.segments`, used by `weaksup.losses`) does not import Lightning.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from weaksup.data.batches import Batch, SemiSupervisedBatch
    from weaksup.data.datamodules import ClassificationDataModule, DataMetadata

_HOMES = {
    "Batch": "weaksup.data.batches",
    "SemiSupervisedBatch": "weaksup.data.batches",
    "ClassificationDataModule": "weaksup.data.datamodules",
    "DataMetadata": "weaksup.data.datamodules",
}

__all__ = ["Batch", "ClassificationDataModule", "DataMetadata", "SemiSupervisedBatch"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_HOMES[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
