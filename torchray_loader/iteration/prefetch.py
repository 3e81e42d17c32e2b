"""Run an iterator in a background thread, ``depth`` items ahead of the consumer.

Invariant: a prefetch thread never outlives the interpreter's orderly shutdown. Its source (the
executor: worker pools, shared memory) is closed in the thread; when the program ends with an
iterator still open, the first exit step (:mod:`..exit_steps`, stage 0) stops the live threads
and waits for them to close their sources while the interpreter and the worker pools are intact
(a daemon thread still running native code while the interpreter finalizes can abort the process).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..cancellation import cancellable
from ..exit_steps import at_exit

__all__ = ["prefetch"]

T = TypeVar("T")
_DONE = object()

#: Live prefetch threads and their stop flags, by id of the flag.
_LIVE: dict[int, tuple[threading.Event, threading.Thread]] = {}
_LIVE_LOCK = threading.Lock()
#: At interpreter exit, how long all live prefetch threads get, together, to close their sources.
_EXIT_JOIN_S = 10.0


def _stop_live_threads() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE.values())
    for stop, _ in live:
        stop.set()
    deadline = time.monotonic() + _EXIT_JOIN_S
    for _, thread in live:
        thread.join(max(0.0, deadline - time.monotonic()))


at_exit("prefetch-threads", 0, _stop_live_threads)


class _Weight:
    """The total weight of the items a prefetch queue holds, and the wait for room in it."""

    def __init__(self) -> None:
        self.total = 0
        self.cond = threading.Condition()

    def reserve(self, weight: int, limit: int, stop: threading.Event) -> bool:
        """Wait until ``weight`` fits under ``limit`` (or nothing waits), then count it; False if
        ``stop`` is set first."""
        with self.cond:
            while self.total and self.total + weight > limit:
                if stop.is_set():
                    return False
                self.cond.wait(0.05)
            if stop.is_set():
                return False
            self.total += weight
            return True

    def release(self, weight: int) -> None:
        with self.cond:
            self.total -= weight
            self.cond.notify()


class _Raised:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetch(
    make_iter: Callable[[], Iterator[T]],
    depth: int,
    on_wait: Callable[[float], None] | None = None,
    weigh: Callable[[T], int] | None = None,
) -> Iterator[T]:
    """Yield the items of ``make_iter()`` produced by a daemon thread, at most ``depth`` ahead.

    With ``weigh``, ``depth`` bounds the items' total weight instead of their number (a chunk of
    ``k`` batches weighs ``k``): an item waits until the waiting ones weigh at most ``depth`` with
    it, except that one item always may wait (however heavy), so the thread never stalls.

    The source iterator is created, driven and closed in the thread (so its ``finally`` blocks run
    there). Closing this generator stops the thread promptly; an exception in the source re-raises
    here with its original type. ``on_wait`` receives the seconds the consumer spent blocked.

    Example:
        >>> list(prefetch(lambda: iter(range(3)), depth=2))
        [0, 1, 2]
    """
    if depth <= 0:
        it = make_iter()
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    return
                if on_wait is not None:
                    on_wait(time.perf_counter() - t0)
                yield item
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
        return

    q: queue.Queue[Any] = queue.Queue(maxsize=depth if weigh is None else 0)
    stop = threading.Event()
    waiting = _Weight()  # total weight of the items in ``q`` (with ``weigh``)

    def put(item: Any) -> bool:
        if weigh is not None and item is not _DONE and not isinstance(item, _Raised):
            if not waiting.reserve(weigh(item), depth, stop):
                return False
            q.put(item)
            return True
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        it = None
        try:
            with cancellable(stop):  # long steps of the source stop when the consumer does
                it = make_iter()
                for item in it:
                    if not put(item):
                        break
                else:
                    put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - forwarded to the consumer
            put(_Raised(exc))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001
                    pass
            with _LIVE_LOCK:
                _LIVE.pop(id(stop), None)

    thread = threading.Thread(target=run, name="torchray-prefetch", daemon=True)
    with _LIVE_LOCK:
        _LIVE[id(stop)] = (stop, thread)
    thread.start()
    try:
        while True:
            t0 = time.perf_counter()
            while True:
                try:
                    item = q.get(timeout=0.1)
                    break
                except queue.Empty:
                    if not thread.is_alive() and q.empty():
                        raise RuntimeError("prefetch thread ended without a result") from None
            if on_wait is not None:
                on_wait(time.perf_counter() - t0)
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.exc
            if weigh is not None:
                waiting.release(weigh(item))
            yield item
    finally:
        # A set flag means the exit step already stopped and joined the thread, and this runs in
        # module teardown (globals such as ``queue`` may be None): nothing is left to do.
        if not stop.is_set():
            stop.set()
            # Drain so a producer blocked in put() sees the stop flag; then wait for its cleanup.
            try:
                while True:
                    q.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=30)
