"""``ThreadPool``: tasks on threads of the consumer's process, for tasks that hold no GIL.

A read task that is Arrow from end to end (parquet: I/O, decompression and decoding in C++ with the
GIL released) gains nothing from a worker process and pays for one: a fork, and a copy of every
block into a transfer file and out of it. On threads, ``num_workers`` tasks still run side by side,
and their blocks are the consumer's own memory, handed on without a copy.

Invariants: results come in item order when ``ordered`` (else as they complete); at most
``num_workers + 1`` tasks are submitted and not yet consumed (so at most that many tasks' blocks are
held beyond the consumer's); closing the iterator cancels the tasks not yet started and waits for
those running (threads cannot be killed; a task is one file or row-group run). Exceptions are
raised in the consumer as they were raised in the task.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from .pool import item_size, run_user_task

__all__ = ["ThreadPool"]


class ThreadPool:
    """``num_workers`` threads running tasks that release the GIL (see the module docstring).

    Example:
        >>> with ThreadPool(2) as pool:
        ...     list(pool.imap(abs, [-1, -2, 3]))
        [1, 2, 3]
    """

    def __init__(self, num_workers: int, memory_budget_bytes: int | None = None) -> None:
        if num_workers < 1:
            raise ValueError(f"a ThreadPool needs at least one thread, got {num_workers}")
        self.num_workers = num_workers
        self.memory_budget_bytes = memory_budget_bytes
        self._executor: ThreadPoolExecutor | None = None

    def _threads(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.num_workers, thread_name_prefix="torchray-read")
        return self._executor

    def imap(
        self,
        fn: Callable[[Any], Any],
        items: Iterable[Any],
        *,
        ordered: bool = True,
        name: str = "",
        start: bool = False,
    ) -> Iterator[Any]:
        run = _Run(self._threads(), fn, iter(items), self.num_workers + 1, self.memory_budget_bytes)
        if start:  # the first tasks run before the first result is asked for, as ProcessPool's do
            run.submit()
        return run.results(ordered)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> ThreadPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Run:
    """One ``imap``'s tasks: at most ``cap`` submitted and not consumed, and (beyond the first) no
    more than ``budget`` bytes of them by their :func:`~.pool.item_size` estimates."""

    def __init__(
        self, threads: ThreadPoolExecutor, fn: Callable[[Any], Any], items: Iterator[Any], cap: int, budget: int | None
    ) -> None:
        self.threads, self.fn, self.items, self.cap, self.budget = threads, fn, items, cap, budget
        self.pending: collections.deque[tuple[Future[Any], int]] = collections.deque()
        self.held = 0  # estimated bytes of the pending tasks
        self.next_item: Any = _NONE  # taken from ``items`` but not submitted (over the budget)

    def submit(self) -> None:
        while len(self.pending) < self.cap:
            if self.next_item is _NONE:
                self.next_item = next(self.items, _NONE)
                if self.next_item is _NONE:
                    return
            est = item_size(self.next_item)
            if self.pending and self.budget is not None and self.held + est > self.budget:
                return
            self.pending.append((self.threads.submit(run_user_task, self.fn, self.next_item), est))
            self.held += est
            self.next_item = _NONE

    def results(self, ordered: bool) -> Iterator[Any]:
        try:
            self.submit()
            while self.pending:
                if ordered:
                    entry = self.pending.popleft()
                else:
                    finished, _ = wait([f for f, _ in self.pending], return_when=FIRST_COMPLETED)
                    entry = next(e for e in self.pending if e[0] in finished)
                    self.pending.remove(entry)
                self.held -= entry[1]
                result = entry[0].result()
                self.submit()
                yield result
        finally:
            for f, _ in self.pending:
                f.cancel()
            wait([f for f, _ in self.pending])


_NONE = object()
