"""Figures of runs (matplotlib, Agg backend: no display needed)."""
