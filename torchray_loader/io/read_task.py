"""``ReadTask``: the picklable unit of reading. One task yields the blocks of one file or file part."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa

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

    def __call__(self) -> Iterator[pa.Table]:
        yield from as_tables(self.blocks())

    def blocks(self) -> Iterator[pa.Table | ObjectBlock]:
        """The blocks as the reader made them: some may still be ObjectBlocks, for a
        fused transform chain (``run_chain``) to hand to a row or batch UDF without pickling.

        Example:
            >>> import functools
            >>> task = ReadTask(functools.partial(lambda: [ObjectBlock("item", [1])]))
            >>> [type(b).__name__ for b in task.blocks()], [type(b).__name__ for b in task()]
            (['ObjectBlock'], ['Table'])
        """
        yield from self.read_fn()
