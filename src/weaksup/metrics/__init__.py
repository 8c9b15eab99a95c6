"""Metrics beyond torchmetrics: multi-label tag sets of partially tagged data."""
