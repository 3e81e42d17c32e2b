"""``ReadTask``: the picklable unit of reading. One task yields the blocks of one file or file part."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from ..blocks.block import first_rows
from ..blocks.object_block import ObjectBlock, as_tables

__all__ = ["ReadTask"]


@dataclass(frozen=True)
class ReadTask:
    """A zero-argument callable producing blocks, plus what is known about them before reading.

    ``read_fn`` must be picklable (a module-level function or a ``functools.partial`` of one): it runs
    in a worker process. ``num_rows``/``size_bytes`` are ``None`` when unknown before reading.

    Example:
        >>> import functools, pyarrow as pa
        >>> task = ReadTask(functools.partial(lambda n: [pa.table({"id": list(range(n))})], 3), num_rows=3)
        >>> [b.num_rows for b in task()]
        [3]
    """

    read_fn: Callable[[], Iterable[pa.Table | ObjectBlock]]
    num_rows: int | None = None
    size_bytes: int | None = None
    paths: tuple[str, ...] = field(default=())
    #: The same rows read another way, or None: for ``read_images(..., decode_on_device=True)`` the
    #: files' encoded bytes, which ``iter_torch_batches(device=...)`` decodes in the consumer. Kept
    #: per task so a plan that reorders or shards tasks keeps each twin with its task.
    twin: ReadTask | None = None
    #: At most this many rows come out (``None``: all); see :meth:`limited`.
    row_limit: int | None = None
    #: ``read_fn`` takes a ``row_limit=`` keyword and stops reading once it has produced that many
    #: rows (a file reader), instead of reading everything for ``blocks`` to cut.
    accepts_row_limit: bool = False
    #: Counts the rows ``read_fn`` yields (before ``row_limit``) without reading them (parquet: the
    #: footers), or None; picklable like ``read_fn``, it runs in the consumer and raises when it cannot tell.
    count_rows: Callable[[], int] | None = None
    #: ``read_fn`` spends its time in code that releases the GIL (Arrow reading parquet): it may run
    #: on a thread of the consumer instead of in a worker process (``execution.thread_pool``).
    releases_gil: bool = False

    def __call__(self) -> Iterator[pa.Table]:
        yield from as_tables(self.blocks())

    def limited(self, n: int) -> ReadTask:
        """This task producing only its first ``n`` rows (for a ``limit`` pushed into the read).

        Example:
            >>> import functools, pyarrow as pa
            >>> task = ReadTask(functools.partial(lambda: [pa.table({"id": [0, 1]})] * 2), num_rows=4)
            >>> [b.num_rows for b in task.limited(3)()], task.limited(3).num_rows
            ([2, 1], 3)
        """
        n = max(0, n if self.row_limit is None else min(n, self.row_limit))
        return dataclasses.replace(
            self,
            row_limit=n,
            num_rows=None if self.num_rows is None else min(n, self.num_rows),
            twin=None if self.twin is None else self.twin.limited(n),
        )

    def blocks(self) -> Iterator[pa.Table | ObjectBlock]:
        """The blocks as the reader made them: some may still be ObjectBlocks, for a
        fused transform chain (``run_chain``) to hand to a row or batch UDF without pickling.

        Example:
            >>> import functools
            >>> task = ReadTask(functools.partial(lambda: [ObjectBlock("item", [1])]))
            >>> [type(b).__name__ for b in task.blocks()], [type(b).__name__ for b in task()]
            (['ObjectBlock'], ['Table'])
        """
        if self.row_limit is None:
            yield from self.read_fn()
            return
        source = self.read_fn(row_limit=self.row_limit) if self.accepts_row_limit else self.read_fn()  # type: ignore[call-arg]
        yield from first_rows(source, self.row_limit)
