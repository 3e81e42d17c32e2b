"""Cooperative cancellation of the thread that produces a consumer's data.

A prefetch thread drives its source one item at a time and checks its stop flag between items. A
step that runs long *between* two items (an all-to-all operator materializes its whole input first)
would keep the thread, and the worker pools under it, running after the consumer stopped (Ctrl-C,
``break``, an exception). Such steps call :func:`check_cancelled` as they go; the producing thread
runs its source inside :func:`cancellable` with the consumer's stop flag.

Invariant: :class:`Cancelled` is raised only in a thread whose consumer has already stopped, so it
never reaches user code; it derives from ``BaseException`` so that no ``except Exception`` on the
way swallows it, and the ``finally`` blocks it passes through close the pools.

Example:
    >>> import threading
    >>> flag = threading.Event()
    >>> with cancellable(flag):
    ...     check_cancelled()  # not set: returns
    ...     flag.set()
    ...     try:
    ...         check_cancelled()
    ...     except Cancelled:
    ...         print("stopped")
    stopped
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Cancelled", "cancellable", "check_cancelled"]

_state = threading.local()


class Cancelled(BaseException):
    """The consumer of this thread's data has stopped."""


@contextmanager
def cancellable(flag: threading.Event) -> Iterator[None]:
    """Within the block, :func:`check_cancelled` in this thread raises once ``flag`` is set."""
    previous = getattr(_state, "flag", None)
    _state.flag = flag
    try:
        yield
    finally:
        _state.flag = previous


def check_cancelled() -> None:
    """Raise :class:`Cancelled` if this thread's consumer has stopped (no-op outside
    :func:`cancellable`)."""
    flag = getattr(_state, "flag", None)
    if flag is not None and flag.is_set():
        raise Cancelled
