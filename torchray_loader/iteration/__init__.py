"""Blocks -> batches: slicing, the seeded shuffle window, the prefetch thread."""

from .batcher import BatchTable, iter_batch_tables
from .prefetch import prefetch

__all__ = ["BatchTable", "iter_batch_tables", "prefetch"]
