"""Blocks -> batches: slicing, the seeded shuffle window, the prefetch thread."""

from .batcher import BatchRun, BatchTable, iter_batch_runs
from .prefetch import prefetch

__all__ = ["BatchRun", "BatchTable", "iter_batch_runs", "prefetch"]
