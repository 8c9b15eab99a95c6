"""Data: typed batches, datamodules and readers of real data sets (no downloads)."""

from weaksup.data.batches import Batch, SemiSupervisedBatch
from weaksup.data.datamodules import ClassificationDataModule, DataMetadata

__all__ = ["Batch", "ClassificationDataModule", "DataMetadata", "SemiSupervisedBatch"]
