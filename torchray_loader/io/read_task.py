"""``ReadTask``: the picklable unit of reading. One task yields the blocks of one file or file part."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa

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

    read_fn: Callable[[], Iterable[pa.Table]]
    num_rows: int | None = None
    size_bytes: int | None = None
    paths: tuple[str, ...] = field(default=())

    def __call__(self) -> Iterator[pa.Table]:
        yield from self.read_fn()
