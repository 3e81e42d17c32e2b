"""Worker pools: the one interface the executor and the loader use to run tasks.

``TaskPool.imap(fn, items)`` runs ``fn(item)`` for each item, lazily pulling ``items`` and yielding
results, in item order when ``ordered``. Tasks are first submitted at the first ``next()``, or at the
call with ``start=True`` (a consumer that drives several pools in turn starts them all at once). ``fn`` reaches each worker once per ``imap`` call; items and
results travel per task. Errors in ``fn`` surface in the consumer as the original exception type
chained to a ``UserCodeError`` (see ``errors.raise_user_error``).

``InlinePool`` (``num_workers=0``) runs everything in the calling thread; ``ProcessPool`` (in
``process_pool.py``) runs worker processes.

Nesting: a pipeline iterated *inside* a worker process (a UDF that reads a small dataset, a
``RayStyleLoader`` inside a ``torch.utils.data.DataLoader`` worker...) runs inline in that worker.
Workers are daemonic processes, which cannot start processes of their own, and the machine's cores
are already taken by the outer workers.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from ..context import DataContext
from ..errors import TorchRayError, raise_user_error

__all__ = ["SharedRef", "TaskPool", "InlinePool", "make_pool", "run_user_task", "shared_objects"]

T = TypeVar("T")
R = TypeVar("R")


#: In a worker process: the objects its pool was started with (``make_pool(shared=...)``), by key.
WORKER_SHARED: dict[str, Any] = {}
_MISSING = object()


#: In a worker process: the objects that came with the running task's function (see shared_objects).
_TASK_SHARED: dict[str, Any] = {}


@contextmanager
def shared_objects(objects: Mapping[str, Any]) -> Iterator[None]:
    """Let :meth:`SharedRef.get` find ``objects`` while a task runs.

    For objects a task *function* carries (it reaches each worker once per ``imap``) where the
    items (pickled per task) hold only ``SharedRef`` keys.

    Example:
        >>> import pickle
        >>> ref = pickle.loads(pickle.dumps(SharedRef("k-doc", None)))  # as a worker sees it
        >>> with shared_objects({"k-doc": [1, 2]}):
        ...     ref.get()
        [1, 2]
    """
    _TASK_SHARED.update(objects)
    try:
        yield
    finally:
        for key in objects:
            _TASK_SHARED.pop(key, None)


def _resolve_shared(key: str) -> SharedRef:
    ref = SharedRef.__new__(SharedRef)
    ref.key, ref._obj = key, WORKER_SHARED.get(key, _MISSING)
    return ref


class SharedRef:
    """A large object (a user's dataset) handed to workers once, when they start, instead of with
    every task function that uses it: a function holding the ref pickles only its key.

    Workers started by ``fork`` inherit the object without any copy (as DataLoader's do); other start
    methods pickle it once per worker start. The pool must have been made with
    ``shared={ref.key: obj}``; :meth:`get` returns the object in the consumer and in those workers.

    Example:
        >>> import pickle
        >>> ref = SharedRef("doc", [1, 2, 3])
        >>> ref.get(), len(pickle.dumps(ref)) < 100
        ([1, 2, 3], True)
    """

    __slots__ = ("key", "_obj")

    def __init__(self, key: str, obj: Any) -> None:
        self.key = key
        self._obj = obj

    def get(self) -> Any:
        if self._obj is _MISSING:
            self._obj = _TASK_SHARED.get(self.key, _MISSING)
            if self._obj is _MISSING:
                raise TorchRayError(f"shared object {self.key!r} was not given to this worker's pool")
        return self._obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (_resolve_shared, (self.key,))


class TaskPool(Protocol):
    """What every pool provides."""

    num_workers: int

    def imap(
        self,
        fn: Callable[[Any], Any],
        items: Iterable[Any],
        *,
        ordered: bool = True,
        name: str = "",
        start: bool = False,
    ) -> Iterator[Any]: ...

    def close(self) -> None: ...


def item_size(item: Any) -> int:
    """Bytes an item is known to weigh before running it (Arrow/numpy ``nbytes``, ReadTask
    ``size_bytes``, the sum over a list of blocks), else 0: what a pool counts against
    ``DataContext.memory_budget_bytes`` for a task not yet run.

    Example:
        >>> import numpy as np
        >>> item_size([np.zeros(4), np.zeros(2)]), item_size("x")
        (48, 0)
    """
    if isinstance(item, list):
        return sum(item_size(x) for x in item)
    for attr in ("nbytes", "size_bytes"):
        value = getattr(item, attr, None)
        if isinstance(value, int):
            return value
    return 0


def run_user_task(fn: Callable[[T], R], item: T) -> R:
    """Run ``fn(item)`` in this process, raising errors as the process pool does."""
    try:
        return fn(item)
    except TorchRayError:
        raise
    except Exception as exc:
        raise_user_error(exc, traceback.format_exc())
        raise  # unreachable


class InlinePool:
    """Runs tasks in the consumer's thread, lazily. The reference behaviour for every other pool.

    Example:
        >>> list(InlinePool().imap(abs, [-1, 2]))
        [1, 2]
    """

    num_workers = 0

    def imap(
        self,
        fn: Callable[[Any], Any],
        items: Iterable[Any],
        *,
        ordered: bool = True,
        name: str = "",
        start: bool = False,
    ) -> Iterator[Any]:
        for item in items:  # ``start`` has nothing to do: tasks run when their result is asked for
            yield run_user_task(fn, item)

    def close(self) -> None:
        pass

    def __enter__(self) -> InlinePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def in_daemon_process() -> bool:
    """True inside a daemonic worker process (ours, or a ``torch.utils.data.DataLoader``'s), where
    starting worker processes is impossible.

    Example:
        >>> in_daemon_process()
        False
    """
    for mod in ("multiprocess", "multiprocessing"):
        mp = sys.modules.get(mod)
        if mp is not None and getattr(mp.current_process(), "daemon", False):
            return True
    return False


def make_pool(
    num_workers: int,
    ctx: DataContext,
    *,
    name: str = "tasks",
    min_workers: int | None = None,
    worker_init_fn: Callable[[int], None] | None = None,
    shared: dict[str, Any] | None = None,
    retire_idle: bool = False,
) -> TaskPool:
    """A pool of ``num_workers`` processes (``0``, or inside a daemonic worker process: inline).
    ``min_workers`` < ``num_workers`` lets an actor pool start small and grow with queue depth;
    ``shared`` objects reach each worker once, at its start (see :class:`SharedRef`); with
    ``retire_idle`` a worker stops as soon as no open imap has work left for it.

    Example:
        >>> with make_pool(0, DataContext()) as pool:
        ...     list(pool.imap(abs, [-2]))
        [2]
    """
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if num_workers == 0 or in_daemon_process():
        return InlinePool()
    try:
        from .process_pool import ProcessPool
    except ImportError:  # pragma: no cover - process pool not built yet
        return InlinePool()
    return ProcessPool(
        num_workers,
        ctx,
        name=name,
        min_workers=min_workers,
        worker_init_fn=worker_init_fn,
        shared=shared,
        retire_idle=retire_idle,
    )
