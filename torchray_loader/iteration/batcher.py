"""Blocks -> batches of exactly ``batch_size`` rows, optionally through a seeded shuffle window.

Invariants:
* Every input row appears in exactly one output batch (less the tail under ``drop_last``).
* Output depends only on the block sequence, ``batch_size``, the buffer size and ``seed``.
* ``skip_batches`` drops the first k batches without converting them (resume).

Shuffling is window-based: blocks (cut where needed) are gathered until the window holds
``shuffle_buffer_size`` rows, the window (plus the previous window's leftover tail) is permuted, and
full batches are cut as zero-copy slices of a few vectorised gathers (pieces of about
``_GATHER_BYTES``) instead of per-batch work. Rows never wait longer than one window.

Batches come out in *runs* (:class:`BatchRun`): the consecutive equal-size batches cut from one parent
table, so a consumer can convert a whole run with one call per column instead of Python work per batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from ..blocks import concat_blocks, take_rows

__all__ = ["iter_batch_runs", "numpy_permutations", "BatchRun", "BatchTable"]

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


class BatchRun:
    """``count`` consecutive batches of ``num_rows`` rows each, from row ``offset`` of ``parent``.

    Invariant: ``offset + count * num_rows <= parent.num_rows``; ``fresh`` as in :class:`BatchTable`.

    Example:
        >>> import pyarrow as pa
        >>> run = BatchRun(pa.table({"x": list(range(6))}), False, 1, 2, 2)
        >>> [b.table["x"].to_pylist() for b in run.batches()]
        [[1, 2], [3, 4]]
    """

    __slots__ = ("parent", "fresh", "offset", "num_rows", "count")

    def __init__(self, parent: pa.Table, fresh: bool, offset: int, num_rows: int, count: int) -> None:
        self.parent = parent
        self.fresh = fresh
        self.offset = offset
        self.num_rows = num_rows
        self.count = count

    def batches(self) -> Iterator[BatchTable]:
        """The run's batches, one :class:`BatchTable` each."""
        for k in range(self.count):
            yield BatchTable(self.parent, self.fresh, self.offset + k * self.num_rows, self.num_rows)

    def pieces(self, most: int) -> Iterator[BatchRun]:
        """The run cut into runs of at most ``most`` batches, in order."""
        if self.count <= most:
            yield self
            return
        for k in range(0, self.count, most):
            yield BatchRun(self.parent, self.fresh, self.offset + k * self.num_rows, self.num_rows, min(most, self.count - k))


def _check_batch_size(batch_size: int | None) -> None:
    if batch_size is None:
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")


def numpy_permutations(seed: Any) -> Callable[[int], np.ndarray]:
    """``permute(n)``: the shuffle windows' row orders, drawn one after another from numpy's
    generator seeded with ``seed`` (``None``: fresh entropy).

    Example:
        >>> permute = numpy_permutations(0)
        >>> sorted(permute(4).tolist())
        [0, 1, 2, 3]
    """
    return np.random.default_rng(seed).permutation


def iter_batch_runs(
    blocks: Iterable[pa.Table],
    batch_size: int | None,
    *,
    drop_last: bool = False,
    shuffle_buffer_size: int | None = None,
    seed: int | None = None,
    skip_batches: int = 0,
    is_private: Callable[[pa.Table], bool] | None = None,
    permutations: Callable[[Any], Callable[[int], np.ndarray]] = numpy_permutations,
) -> Iterator[BatchRun]:
    """Cut a block stream into runs of batches: each run is yielded as soon as its parent (a block,
    or a full shuffle window) is complete. ``is_private(block)`` says that a block's memory is this
    iteration's alone: runs cut from it straight are then ``fresh`` too. ``permutations(seed)``
    gives the function that orders each shuffle window (the dataset passes torch's ``randperm``).

    Example:
        >>> import pyarrow as pa
        >>> blocks = [pa.table({"x": [0, 1, 2, 3, 4]}), pa.table({"x": [5]})]
        >>> [(r.offset, r.num_rows, r.count) for r in iter_batch_runs(blocks, 2)]
        [(0, 2, 2), (0, 2, 1)]
    """
    _check_batch_size(batch_size)
    if shuffle_buffer_size is not None:
        if isinstance(shuffle_buffer_size, bool) or not isinstance(shuffle_buffer_size, (int, np.integer)) or shuffle_buffer_size < 1:
            raise ValueError(f"local_shuffle_buffer_size must be a positive int, got {shuffle_buffer_size!r}")
    if batch_size is None:
        if shuffle_buffer_size is not None:
            raise ValueError("local_shuffle_buffer_size needs a batch_size")
        yield from _whole_blocks(blocks, skip_batches, is_private)
        return
    if shuffle_buffer_size is not None and shuffle_buffer_size < batch_size:
        logger.warning(
            "local_shuffle_buffer_size=%d is smaller than batch_size=%d: each batch mixes rows from at "
            "most one window; use a buffer of several batches for a useful shuffle",
            shuffle_buffer_size, batch_size,
        )
    if shuffle_buffer_size is None:
        yield from _sequential(blocks, batch_size, drop_last, skip_batches, is_private)
    else:
        yield from _shuffled(blocks, batch_size, drop_last, shuffle_buffer_size, permutations(seed), skip_batches)


def _whole_blocks(blocks: Iterable[pa.Table], skip: int, is_private: Callable[[pa.Table], bool] | None) -> Iterator[BatchRun]:
    for block in blocks:
        if block.num_rows == 0:
            continue
        if skip > 0:
            skip -= 1
            continue
        yield BatchRun(block, is_private is not None and is_private(block), 0, block.num_rows, 1)


def _grid_run(parent: pa.Table, fresh: bool, start: int, batch_size: int, count: int, skip: int) -> tuple[BatchRun | None, int]:
    """The run of ``count`` batches from ``start``, less the first ``skip`` of them; and the skip left."""
    dropped = min(skip, count)
    if dropped == count:
        return None, skip - dropped
    return BatchRun(parent, fresh, start + dropped * batch_size, batch_size, count - dropped), skip - dropped


def _chunk_pieces(
    blocks: Iterable[pa.Table], batch_size: int, is_private: Callable[[pa.Table], bool] | None
) -> Iterator[tuple[pa.Table, bool]]:
    """Each block with whether it is private; a block of several chunks averaging at least a batch
    is cut at its chunk boundaries (zero-copy slices), so its runs convert without concatenating
    the block first. (A read task coalesces files into such blocks.)"""
    for block in blocks:
        private = is_private is not None and is_private(block)
        if block.num_columns and any(col.num_chunks > 1 for col in block.columns):
            parts = block.to_batches()
            if len(parts) > 1 and len(parts) * batch_size <= block.num_rows:
                for part in parts:
                    yield pa.Table.from_batches([part]), private
                continue
        yield block, private


def _sequential(
    blocks: Iterable[pa.Table], batch_size: int, drop_last: bool, skip: int, is_private: Callable[[pa.Table], bool] | None
) -> Iterator[BatchRun]:
    pending: list[pa.Table] = []  # partial batch pieces, fewer than batch_size rows in total
    pending_rows = 0
    for block, private in _chunk_pieces(blocks, batch_size, is_private):
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
                yield BatchRun(concat_blocks(pending).combine_chunks(), True, 0, batch_size, 1)
            pending, pending_rows = [], 0
        count = (n - start) // batch_size
        full_end = start + count * batch_size
        run, skip = _grid_run(block, private, start, batch_size, count, skip)
        if run is not None:
            yield run
        if full_end < n:
            pending.append(block.slice(full_end))
            pending_rows = n - full_end
    if pending_rows and not drop_last and skip <= 0:
        yield BatchRun(concat_blocks(pending).combine_chunks(), len(pending) > 1, 0, pending_rows, 1)


#: Bytes gathered at once from a shuffle window (rounded to whole batches, at least one).
_GATHER_BYTES = 4 << 20


def _shuffled(
    blocks: Iterable[pa.Table],
    batch_size: int,
    drop_last: bool,
    buffer_size: int,
    permute: Callable[[int], np.ndarray],
    skip: int,
) -> Iterator[BatchRun]:
    window_rows = max(buffer_size, batch_size)
    window: list[pa.Table] = []
    rows = 0

    def flush(final: bool) -> Iterator[BatchRun]:
        nonlocal window, rows, skip
        table = concat_blocks(window)
        n = table.num_rows
        perm = permute(n)
        full = n // batch_size * batch_size
        # The window's batches are gathered in pieces of about _GATHER_BYTES, each yielded as soon as
        # it is gathered: the first batch waits for one piece, not the whole window (a first gather
        # into fresh memory pays its page faults). Batches are the same as with one gather; skipped
        # pieces are never gathered. The last piece also gathers the leftover tail (rows past the
        # last full batch), which is then a slice of it: one gather, not a second one for a few rows.
        row_bytes = max(1, table.nbytes // max(n, 1))
        step = max(1, _GATHER_BYTES // (row_bytes * batch_size)) * batch_size
        tail: pa.Table | None = None
        for s in range(0, full, step):
            count = min(step, full - s) // batch_size
            if skip >= count:
                skip -= count
                continue
            first, skip = skip, 0
            last = s + count * batch_size == full
            piece = take_rows(table, perm[s + first * batch_size : n if last else s + count * batch_size])
            yield BatchRun(piece, True, 0, batch_size, count - first)
            if last and full < n:
                tail = piece.slice((count - first) * batch_size)
        if full < n and tail is None and (not final or (not drop_last and skip <= 0)):
            tail = take_rows(table, perm[full:])
        if final:
            if tail is not None and not drop_last and skip <= 0:
                yield BatchRun(tail, True, 0, n - full, 1)
            window, rows = [], 0
        else:
            # The leftover tail (< batch_size rows) joins the next window, so batches stay full.
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
