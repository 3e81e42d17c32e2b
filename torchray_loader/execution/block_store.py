"""``BlockStore``: the blocks of a materialized dataset, in memory up to a byte budget, spilled to disk
beyond it.

Spilled blocks are Arrow IPC files in a private temporary directory (mode 0700, files 0600, unique
names) and come back memory-mapped, so reading one costs no copy and no heap: the OS pages it in and
out. The directory is removed when the store is garbage-collected, closed, or at interpreter exit.

A store pickles cheaply: in-memory blocks travel as Arrow data, spilled blocks as their file path only
(the receiving process maps the same file). Only the process that created the store deletes files;
a copy in another process must not outlive the original.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa

from ..context import DataContext

__all__ = ["BlockStore"]


@dataclass(frozen=True)
class _Spilled:
    """A block written to ``path``; ``num_rows``/``nbytes`` kept so the store never opens it to count."""

    path: str
    num_rows: int
    nbytes: int


def _remove_dir(path: str, owner_pid: int) -> None:
    if os.getpid() == owner_pid:  # a forked child holds a copy of the store: never delete for it
        shutil.rmtree(path, ignore_errors=True)


def _read_spilled(path: str) -> pa.Table:
    # The table's buffers keep the mapping alive after the file object is gone (and after the file
    # is deleted: an unlinked file stays readable while mapped).
    return pa.ipc.open_file(pa.memory_map(path, "r")).read_all()


class BlockStore:
    """A sequence of blocks (``pa.Table``) that keeps at most ``budget_bytes`` in memory.

    ``budget_bytes`` defaults to ``DataContext.memory_budget_bytes``. Blocks are appended in order;
    the first ones stay in memory, later ones (once the budget is used) are spilled to Arrow IPC
    files and memory-mapped back by ``store[i]``.

    Example:
        >>> import pyarrow as pa
        >>> store = BlockStore(budget_bytes=0)       # spill everything
        >>> store.append(pa.table({"x": [1, 2, 3]}))
        >>> len(store), store.num_rows, store[0]["x"].to_pylist()
        (1, 3, [1, 2, 3])
        >>> store.num_spilled
        1
    """

    def __init__(
        self,
        blocks: Iterable[pa.Table] = (),
        *,
        budget_bytes: int | None = None,
        ctx: DataContext | None = None,
        spill_dir: str | None = None,
    ) -> None:
        if budget_bytes is None:
            budget_bytes = (ctx or DataContext.get_current()).memory_budget_bytes
        if budget_bytes < 0:
            raise ValueError(f"budget_bytes must be >= 0, got {budget_bytes}")
        self.budget_bytes = budget_bytes
        self._entries: list[pa.Table | _Spilled] = []
        self._memory_bytes = 0
        self._parent_dir = spill_dir
        self._dir: str | None = None
        self._finalizer: weakref.finalize | None = None
        for block in blocks:
            self.append(block)

    # ------------------------------------------------------------------ sequence API

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, i: int) -> pa.Table:
        entry = self._entries[i]
        if isinstance(entry, _Spilled):
            return _read_spilled(entry.path)
        return entry

    def __iter__(self) -> Iterator[pa.Table]:
        for i in range(len(self._entries)):
            yield self[i]

    def append(self, block: pa.Table) -> None:
        """Add ``block`` at the end: in memory while the budget allows, else spilled to disk."""
        if isinstance(block, pa.RecordBatch):
            block = pa.Table.from_batches([block])
        if not isinstance(block, pa.Table):
            raise TypeError(f"block must be a pyarrow.Table, got {type(block).__name__}")
        size = block.get_total_buffer_size()
        if self._memory_bytes + size <= self.budget_bytes:
            self._entries.append(block)
            self._memory_bytes += size
        else:
            self._entries.append(self._spill(block, size))

    def extend(self, blocks: Iterable[pa.Table]) -> None:
        """Append each of ``blocks``."""
        for block in blocks:
            self.append(block)

    @property
    def num_rows(self) -> int:
        """Rows in all blocks."""
        return sum(e.num_rows for e in self._entries)

    @property
    def size_bytes(self) -> int:
        """Bytes of all blocks (in memory and spilled)."""
        return sum(e.nbytes if isinstance(e, _Spilled) else e.get_total_buffer_size() for e in self._entries)

    @property
    def memory_bytes(self) -> int:
        """Bytes of the blocks held in memory."""
        return self._memory_bytes

    @property
    def num_spilled(self) -> int:
        """How many blocks live on disk."""
        return sum(isinstance(e, _Spilled) for e in self._entries)

    def close(self) -> None:
        """Drop all blocks and delete the spill files now (tables already read stay valid)."""
        self._entries.clear()
        self._memory_bytes = 0
        if self._finalizer is not None:
            self._finalizer()

    def __repr__(self) -> str:
        return (
            f"BlockStore(blocks={len(self)}, rows={self.num_rows}, in_memory={self._memory_bytes}B, "
            f"spilled={self.num_spilled})"
        )

    # ------------------------------------------------------------------ spilling

    def _spill_dir(self) -> str:
        if self._dir is None:
            # mkdtemp: a fresh directory only this user can enter (0700).
            self._dir = tempfile.mkdtemp(prefix="torchray-store-", dir=self._parent_dir)
            self._finalizer = weakref.finalize(self, _remove_dir, self._dir, os.getpid())
        return self._dir

    def _spill(self, block: pa.Table, size: int) -> _Spilled:
        fd, path = tempfile.mkstemp(suffix=".arrow", dir=self._spill_dir())  # unique, 0600
        try:
            with os.fdopen(fd, "wb") as f, pa.ipc.new_file(f, block.schema) as writer:
                writer.write_table(block)
        except BaseException:
            os.unlink(path)
            raise
        return _Spilled(path, block.num_rows, size)

    # ------------------------------------------------------------------ pickling

    def __reduce__(self):
        # Spilled blocks travel as paths; the copy owns no files (no finalizer), so only the
        # original deletes them.
        return (_rebuild, (self.budget_bytes, list(self._entries)))


def _rebuild(budget_bytes: int, entries: list[pa.Table | _Spilled]) -> BlockStore:
    store = BlockStore(budget_bytes=budget_bytes)
    store._entries = entries
    store._memory_bytes = sum(e.get_total_buffer_size() for e in entries if isinstance(e, pa.Table))
    return store
