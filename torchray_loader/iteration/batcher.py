"""Blocks -> batches of exactly ``batch_size`` rows, optionally through a seeded shuffle window.

Invariants:
* Every input row appears in exactly one output batch (less the tail under ``drop_last``).
* Output depends only on the block sequence, ``batch_size``, the buffer size and ``seed``.
* ``skip_batches`` drops the first k batches without converting them (resume).

Shuffling is window-based: blocks (cut where needed) are gathered until the window holds
``shuffle_buffer_size`` rows, the window (plus the previous window's leftover tail) is permuted with
one ``take``, and full batches are cut from it as zero-copy slices. Rows never wait longer than one
window, and the permutation is one vectorised gather per window instead of per-batch work.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa

from ..blocks import concat_blocks

__all__ = ["iter_batch_tables", "BatchTable"]

logger = logging.getLogger("torchray_loader")


class BatchTable:
    """One batch: rows ``[offset, offset + num_rows)`` of ``parent``, and whether that memory is
    private to this iteration (``fresh``).

    ``fresh`` is True when the rows were gathered into new memory by this layer (shuffle, concat),
    so handing it to the user without a copy cannot corrupt a cached block. The Arrow slice
    (``table``) is made only when asked for: the torch path works from ``parent`` and ``offset``.
    """

    __slots__ = ("parent", "offset", "num_rows", "fresh", "_table")

    def __init__(self, parent: pa.Table, fresh: bool, offset: int = 0, num_rows: int | None = None) -> None:
        self.parent = parent
        self.offset = offset
        self.num_rows = parent.num_rows - offset if num_rows is None else num_rows
        self.fresh = fresh
        self._table: pa.Table | None = None

    @property
    def table(self) -> pa.Table:
        """The batch as an Arrow table (a zero-copy slice of ``parent``)."""
        if self._table is None:
            whole = self.offset == 0 and self.num_rows == self.parent.num_rows
            self._table = self.parent if whole else self.parent.slice(self.offset, self.num_rows)
        return self._table


def _check_batch_size(batch_size: int | None) -> None:
    if batch_size is None:
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")


def iter_batch_tables(
    blocks: Iterable[pa.Table],
    batch_size: int | None,
    *,
    drop_last: bool = False,
    shuffle_buffer_size: int | None = None,
    seed: int | None = None,
    skip_batches: int = 0,
) -> Iterator[BatchTable]:
    """Cut a block stream into batches.

    Example:
        >>> import pyarrow as pa
        >>> blocks = [pa.table({"x": [0, 1, 2]}), pa.table({"x": [3, 4]})]
        >>> [b.table["x"].to_pylist() for b in iter_batch_tables(blocks, 2)]
        [[0, 1], [2, 3], [4]]
    """
    _check_batch_size(batch_size)
    if shuffle_buffer_size is not None:
        if isinstance(shuffle_buffer_size, bool) or not isinstance(shuffle_buffer_size, (int, np.integer)) or shuffle_buffer_size < 1:
            raise ValueError(f"local_shuffle_buffer_size must be a positive int, got {shuffle_buffer_size!r}")
    if batch_size is None:
        if shuffle_buffer_size is not None:
            raise ValueError("local_shuffle_buffer_size needs a batch_size")
        yield from _whole_blocks(blocks, skip_batches)
        return
    if shuffle_buffer_size is not None and shuffle_buffer_size < batch_size:
        logger.warning(
            "local_shuffle_buffer_size=%d is smaller than batch_size=%d: each batch mixes rows from at "
            "most one window; use a buffer of several batches for a useful shuffle",
            shuffle_buffer_size, batch_size,
        )
    if shuffle_buffer_size is None:
        yield from _sequential(blocks, batch_size, drop_last, skip_batches)
    else:
        yield from _shuffled(blocks, batch_size, drop_last, shuffle_buffer_size, seed, skip_batches)


def _whole_blocks(blocks: Iterable[pa.Table], skip: int) -> Iterator[BatchTable]:
    for block in blocks:
        if block.num_rows == 0:
            continue
        if skip > 0:
            skip -= 1
            continue
        yield BatchTable(block, False)


def _sequential(blocks: Iterable[pa.Table], batch_size: int, drop_last: bool, skip: int) -> Iterator[BatchTable]:
    pending: list[pa.Table] = []  # partial batch pieces, fewer than batch_size rows in total
    pending_rows = 0
    for block in blocks:
        n = block.num_rows
        if n == 0:
            continue
        start = 0
        if pending_rows:
            take = min(batch_size - pending_rows, n)
            pending.append(block.slice(0, take))
            pending_rows += take
            start = take
            if pending_rows < batch_size:
                continue
            if skip > 0:
                skip -= 1
            else:
                yield BatchTable(concat_blocks(pending).combine_chunks(), True)
            pending, pending_rows = [], 0
        full_end = start + (n - start) // batch_size * batch_size
        for s in range(start, full_end, batch_size):
            if skip > 0:
                skip -= 1
                continue
            yield BatchTable(block, False, s, batch_size)
        if full_end < n:
            pending.append(block.slice(full_end))
            pending_rows = n - full_end
    if pending_rows and not drop_last and skip <= 0:
        yield BatchTable(concat_blocks(pending).combine_chunks(), len(pending) > 1)


def _shuffled(
    blocks: Iterable[pa.Table], batch_size: int, drop_last: bool, buffer_size: int, seed: int | None, skip: int
) -> Iterator[BatchTable]:
    rng = np.random.default_rng(seed)
    window_rows = max(buffer_size, batch_size)
    window: list[pa.Table] = []
    rows = 0

    def flush(final: bool) -> Iterator[BatchTable]:
        nonlocal window, rows, skip
        table = concat_blocks(window)
        n = table.num_rows
        perm = rng.permutation(n)
        full = n // batch_size * batch_size
        # The leftover tail (< batch_size rows) joins the next window, so batches stay full.
        keep = n if final else full
        shuffled = table.take(perm[:keep]) if keep else table.slice(0, 0)
        for s in range(0, full, batch_size):
            if skip > 0:
                skip -= 1
                continue
            yield BatchTable(shuffled, True, s, batch_size)
        if final:
            if full < n and not drop_last and skip <= 0:
                yield BatchTable(shuffled, True, full, n - full)
            window, rows = [], 0
        else:
            tail = table.take(perm[full:]) if full < n else None
            window = [tail] if tail is not None else []
            rows = n - full

    for block in blocks:
        # Blocks are cut so a window never exceeds ``window_rows`` (plus the carried tail): a large
        # block would otherwise make one window (and one gather, before the first batch) of all of it.
        start, n = 0, block.num_rows
        while start < n:
            take = min(n - start, window_rows - rows)
            window.append(block if take == n else block.slice(start, take))
            rows += take
            start += take
            if rows >= window_rows:
                yield from flush(final=False)
    if rows:
        yield from flush(final=True)
