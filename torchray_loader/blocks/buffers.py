"""Memory for the large arrays a task builds: inside a worker task, the task's transfer file.

An array built in the transfer file crosses to the consumer without a copy. The execution layer
installs the file's allocator for the duration of one task (``execution.shm.task_arena``); readers
and collate functions below it ask for memory here and never import the execution layer. Outside a
task (the consumer, an inline pool) there is no allocator and arrays live in private memory.

Example:
    >>> import numpy as np
    >>> empty_rows(2, (3,), np.uint8).shape  # no task here: private memory
    (2, 3)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = ["transfer_buffer", "empty_rows", "allocating_in", "MIN_TRANSFER_BYTES"]

#: ``allocator(nbytes) -> writable buffer or None`` of the task running in this process, if any.
_allocator: Callable[[int], Any] | None = None

#: Below this size an array is cheaper to copy at transfer than to give a region of its own.
MIN_TRANSFER_BYTES = 1 << 20


@contextmanager
def allocating_in(allocator: Callable[[int], Any]) -> Iterator[None]:
    """Make ``allocator`` the source of :func:`transfer_buffer` for the duration of the block.

    Example:
        >>> with allocating_in(bytearray):
        ...     len(transfer_buffer(4))
        4
    """
    global _allocator
    previous, _allocator = _allocator, allocator
    try:
        yield
    finally:
        _allocator = previous


def transfer_buffer(nbytes: int) -> Any:
    """A writable buffer of ``nbytes`` in the current task's transfer file, or ``None`` (no task
    here, or no space): then the caller allocates ordinary memory.

    Example:
        >>> transfer_buffer(1024) is None  # outside a task
        True
    """
    allocator = _allocator
    return None if allocator is None else allocator(nbytes)


def empty_rows(n: int, row_shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised ``(n, *row_shape)`` array, in the task's transfer file when there is one
    and it is large enough to be worth a region.

    Example:
        >>> empty_rows(4, (2, 2), np.float32).dtype
        dtype('float32')
    """
    dtype = np.dtype(dtype)
    count = n * int(np.prod(row_shape, dtype=np.int64))
    nbytes = count * dtype.itemsize
    buf = transfer_buffer(nbytes) if nbytes >= MIN_TRANSFER_BYTES else None
    if buf is None:
        return np.empty((n, *row_shape), dtype)
    return np.frombuffer(buf, dtype=dtype, count=count).reshape(n, *row_shape)
