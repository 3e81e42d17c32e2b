"""``ProcessPool``: persistent worker processes running ``fn(item)`` tasks for the executor.

How it works (one consumer thread drives everything; there is no background thread):

* Each worker has its own duplex ``Pipe``, so the consumer knows which tasks each worker holds: a
  FIFO ``queue`` of at most ``_TASKS_PER_WORKER`` tasks (one running, one waiting, so a worker never
  idles between tasks). A worker answers its tasks strictly in order, hence the head of the queue is the
  task it is running.
* ``fn`` is serialized once per ``imap`` (dill, so lambdas and closures work) and reaches each worker
  with the first task it gets from that ``imap``; the worker caches it by imap id. Items and results
  travel through :mod:`.shm` (zero-copy for arrays and Arrow buffers); pipe messages stay small.
* The consumer waits with ``multiprocess.connection.wait`` on every pipe and every process sentinel,
  so a result or a worker's death is seen at once, never by polling.
* A pool started below ``num_workers`` grows by one worker when a task waits, no worker is idle and
  no worker's message waits: a fork stops the consumer for milliseconds (tens in a large CUDA
  process), so results are taken first. The first batch does not wait for all the forks, and the
  workers already started get their next tasks sooner. Measured at 15 workers on 2 cores (W3):
  first batch 433 -> 155 ms.
* Several ``imap`` generators may be active on one pool at the same time (the executor nests them: a
  stage's items are the output of an upstream stage on the same pool). Whichever generator is waiting
  routes every arriving result to the imap it belongs to.

Invariants:

* Every pulled item has exactly one index; a result is delivered for an index only while the index is
  ``outstanding`` (then removed), so retries and stale results can never deliver twice.
* Bytes in flight (estimated) plus bytes received but not yet yielded stay under
  ``ctx.memory_budget_bytes``, except that the task an ordered imap must yield next may always run,
  so backpressure never deadlocks.
* Tasks of a dead worker go back to the front of their imap's pending queue; only the task it was
  running counts a retry (the others never started).
* Everything a pool starts is stopped by ``close()``, its weakref finalizer (garbage collection) or
  at interpreter exit, only ever from the process that created the pool.
* With ``retire_idle`` (the executor's task pool), a worker with nothing queued is told to stop as
  soon as every open imap has handed out all its items; its slot is free for a later imap (a new
  worker starts there) and ``close()`` reaps it with the others.

Trade-offs, on purpose:

* A task queued behind a slow one on the same worker waits for it (as with DataLoader's per-worker
  prefetch); queueing is what keeps fast tasks from idling workers between round trips.
* Closing an ``imap`` early does not kill its running tasks (an actor's state would be lost): they
  finish and their results are dropped; at most ``_TASKS_PER_WORKER`` per worker. ``close()`` does
  terminate them.
* Forked workers inherit the consumer's mappings of results received so far; those pages are shared
  copy-on-write and freed when both sides let go (at the latest when the pool closes).
"""

from __future__ import annotations

import collections
import importlib
import io
import itertools
import os
import pickle
import secrets
import shlex
import signal
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import dill
import multiprocess
import multiprocess.util as _mp_util
from multiprocess.connection import wait as _wait

from ..blocks.block import warm_up_arrow
from ..context import DataContext
from ..errors import (
    TaskTimeoutError,
    TorchRayError,
    WorkerDiedError,
)
from ..exit_steps import at_exit
from . import shm
from .caught import pack_error, raise_packed
from .pool import WORKER_SHARED, item_size

__all__ = ["ProcessPool"]

# consumer -> worker messages
_TASK, _FORGET, _STOP, _WATCH = 0, 1, 2, 3
# worker -> consumer messages
_OK, _ERR, _INIT_ERR, _READY = 0, 1, 2, 3

_TASKS_PER_WORKER = 2  # in a worker's queue: one running, one ready to start
_PARENT_POLL_S = 1.0  # a worker checks this often whether its parent is still alive
_STOP_GRACE_S = 0.25  # close(): time for idle workers to exit before SIGTERM
_KILL_GRACE_S = 1.0  # close(): time after SIGTERM before SIGKILL
_MAX_WAIT_S = 5.0  # the consumer never blocks longer than this without re-checking its state
_PROTO = pickle.HIGHEST_PROTOCOL


# ============================================================================ serializing functions


def _save_module(pickler: Any, obj: types.ModuleType) -> None:
    # dill sends a module that lives outside site-packages (the user's project, an editable install
    # of this package) *by value*: its whole namespace, re-assigned over the worker's copy, and
    # unpicklable under pytest's import hook. An imported, file-backed module goes by name instead.
    if obj.__name__ != "__main__" and sys.modules.get(obj.__name__) is obj and getattr(obj, "__file__", None):
        pickler.save_reduce(importlib.import_module, (obj.__name__,), obj=obj)
    else:
        dill._dill.save_module(pickler, obj)


class _FnPickler(dill.Pickler):
    """dill (lambdas and closures by value), with modules by reference, and the script's own classes
    and functions by name with a by-value copy to fall back on.

    By name, as DataLoader's workers see them: a worker runs the script's very function, whose
    globals are the worker's ``__main__`` (a ``global`` that ``worker_init_fn`` sets is seen by the
    dataset), and makes instances of the script's very classes (``isinstance`` and ``except`` hold
    once they come back). The copy serves a worker whose ``__main__`` lacks the name: a function
    defined under ``if __name__ == "__main__":`` in a spawned worker, or in a notebook cell."""

    dispatch = dill._dill.MetaCatchingDict(dill.Pickler.dispatch.copy())
    dispatch[types.ModuleType] = _save_module

    def __init__(self, *args: Any, by_value: frozenset[int] = frozenset(), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._by_value = by_value  # ids of the objects whose by-value copies are being written

    def reducer_override(self, obj: Any) -> Any:
        if id(obj) not in self._by_value:
            qualname = shm.main_qualname(obj)
            if qualname is not None:
                return (_main_or_copy, (qualname, _dumps_fn(obj, self._by_value | {id(obj)})))
        return NotImplemented


def _dumps_fn(fn: Any, by_value: frozenset[int] = frozenset()) -> bytes:
    """``fn`` serialized for the workers (``dill.dumps(fn, recurse=True)``, modules by reference,
    the script's classes and functions by name with a by-value copy)."""
    f = io.BytesIO()
    _FnPickler(f, _PROTO, recurse=True, by_value=by_value).dump(fn)
    return f.getvalue()


def _main_or_copy(qualname: str, copy: bytes) -> Any:
    """The script's object ``qualname`` in this worker's ``__main__``; else its by-value copy."""
    try:
        return shm.main_object(qualname)
    except AttributeError:
        return dill.loads(copy)


# ============================================================================ worker side


class _FailedFn:
    """Stands in for a task function that could not be unpickled in the worker."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __call__(self, item: Any) -> Any:
        raise self.exc


# glibc malloc in a worker: blocks below _MMAP_THRESHOLD come from the heap, and up to _TRIM_THRESHOLD
# of free heap is kept for reuse. Left to glibc's adaptive defaults, a worker forked from a
# long-running consumer kept mmap-ing and unmapping each sample's buffers (a 224x224 float image
# transform allocates ~1 MB): ~220 extra page faults a sample, a fifth of the worker's CPU time.
_MMAP_THRESHOLD = 16 << 20
_TRIM_THRESHOLD = 64 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)


def _keep_freed_memory() -> None:
    """Make glibc keep freed memory for reuse in this worker process (no-op without glibc)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return
    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)


def _limit_torch_threads() -> bool:
    """``torch.set_num_threads(1)`` if torch is loaded (as DataLoader does in its workers): N workers
    times N intra-op threads would oversubscribe the CPUs."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    try:
        torch.set_num_threads(1)
    except Exception:  # pragma: no cover - never fatal
        pass
    return True


def _send(conn: Any, msg: tuple[Any, ...]) -> bool:
    try:
        conn.send_bytes(pickle.dumps(msg, _PROTO))
        return True
    except (OSError, EOFError):  # the consumer is gone
        return False


def _owner_gone(owner_pid: int, wait_s: float = 0.0) -> bool:
    """Whether the pool's owner has exited (a zombie not yet reaped counts as exited), waiting up to
    ``wait_s`` for it to get there: a dying process closes its pipes before it becomes a zombie."""
    import psutil

    deadline = time.monotonic() + wait_s
    while True:
        try:
            if psutil.Process(owner_pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.Error:  # NoSuchProcess: gone
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _sweep_if_orphaned(owner_pid: int) -> None:
    """Remove every transfer file of ``owner_pid`` if it has exited: they can only be garbage.

    Called when the owner's pipe broke or our parent changed; an owner that is alive and closed the
    pipe on purpose costs this worker at most half a second more of life."""
    if _owner_gone(owner_pid, wait_s=0.5):
        try:
            shm.stop_recycling()
            shm.sweep(owner_pid)
        except Exception:  # pragma: no cover - best effort
            pass


def _become_watchdog(owner_pid: int) -> None:
    """Replace this retired worker by a ``/bin/sh`` loop that waits for the owner to exit and then
    removes the owner's transfer files; the pool kills it when it closes.

    Why: the task pool retires idle workers early, but the consumer may still hold received transfer
    files (an all-to-all step gathers every block). Killed then (SIGKILL, the OOM killer) it leaves
    them in shared memory, with no worker left to see its death. The exec frees this process's copy
    of the consumer's memory as an exit would, so the watch costs a shell and no more."""
    dirs = " ".join(shlex.quote(os.path.join(d, f"{shm.PREFIX}{owner_pid}_")) + "*" for d in shm.shm_dirs())
    # The owner is gone once it no longer exists, or once this process, its child, was re-parented
    # (a dead owner not yet reaped is a zombie that ``kill -0`` still finds). A forkserver's child
    # watches the owner's pid alone: its parent is the forkserver, whose exit says nothing.
    reparented = (
        f'if read -r _ _ _ ppid _ < /proc/$$/stat && [ "$ppid" != {owner_pid} ]; then break; fi; '
        if os.getppid() == owner_pid
        else ""
    )
    script = f"while kill -0 {owner_pid} 2>/dev/null; do {reparented}sleep 1; done; rm -f {dirs}"
    try:
        # No inherited stdio: a caller reading the owner's output to its end must not wait for us.
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.execv("/bin/sh", ["/bin/sh", "-c", script])
    except OSError:
        pass


def _watch_parent(parent: int, owner_pid: int) -> None:
    """Exit this worker as soon as its parent is gone, even in the middle of a (hanging) task: a
    daemon thread polls ``getppid()`` (it changes when the parent dies and we are re-parented).

    An owner that died without cleaning up (SIGKILL, ``os._exit``) leaves transfer files behind
    that nobody else will remove: a worker that sees its owner gone (here, or as a broken pipe in
    its task loop) removes every file of that owner before exiting.

    The same thread makes an idle worker forget its kept mappings of transfer files removed since
    (``shm.forget_removed_mappings``), so they do not hold memory while it waits for tasks."""

    def watch() -> None:
        while True:
            time.sleep(_PARENT_POLL_S)
            if os.getppid() != parent:
                _sweep_if_orphaned(owner_pid)
                os._exit(0)
            shm.forget_removed_mappings()  # an idle worker's kept mappings must not hold removed files

    threading.Thread(target=watch, name="torchray-parent-watch", daemon=True).start()


def _seed_worker(seed: int) -> None:
    """Give each worker its own random streams (``random``, numpy's and torch's global RNGs, where
    loaded), as DataLoader does: forked workers would otherwise all inherit the parent's state and
    draw the same "random" augmentations."""
    import random

    random.seed(seed)
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed(seed % (2**32))
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            torch.manual_seed(seed)
        except Exception:  # pragma: no cover - never fatal
            pass


def _worker_main(
    worker_id: int,
    conn: Any,
    owner_pid: int,
    tag: str,
    init_fn: bytes | None,
    inherited_fds: tuple[int, ...],
    seed: int,
    shared: dict[str, Any] | bytes,
) -> None:
    """Body of a worker process: run tasks until told to stop or the parent disappears."""
    WORKER_SHARED.update(dill.loads(shared) if isinstance(shared, bytes) else shared)
    shm.send_main_by_reference()
    # Ctrl-C goes to the whole process group; the consumer handles it and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for fd in inherited_fds:  # (fork) the consumer's ends of other workers' pipes
        try:
            os.close(fd)
        except OSError:
            pass
    _watch_parent(os.getppid(), owner_pid)
    _seed_worker(seed)
    _keep_freed_memory()
    torch_limited = _limit_torch_threads()
    if init_fn is not None:
        try:
            dill.loads(init_fn)(worker_id)
        except BaseException as exc:
            _send(conn, (_INIT_ERR, -1, *pack_error(exc, "worker_init_fn")))
            return
    if not _send(conn, (_READY, -1)):  # task timeouts count from here, not from process start
        return
    fns: dict[int, Callable[[Any], Any]] = {}
    while True:
        try:
            msg = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):  # the consumer closed our pipe or died
            _sweep_if_orphaned(owner_pid)
            return
        kind = msg[0]
        if kind == _STOP:
            return
        if kind == _WATCH:
            _become_watchdog(owner_pid)
            return  # exec failed (no /bin/sh): an ordinary retirement
        if kind == _FORGET:
            fns.pop(msg[1], None)
            continue
        _, imap_id, tid, item_ref, fn_ref, op_name = msg
        try:
            if fn_ref is not None:
                try:
                    fns[imap_id] = dill.loads(shm.loads_from_shm(fn_ref))
                except Exception as exc:
                    fns[imap_id] = _FailedFn(exc)
            item = shm.loads_from_shm(item_ref, recycle=True)
            # The task may build its result in place in the transfer file (blocks.buffers.transfer_buffer).
            with shm.task_arena(owner_pid, tag) as arena:
                result = fns[imap_id](item)
                del item
                ref = shm.dumps_to_shm(result, owner_pid=owner_pid, tag=tag, arena=arena)
                reply: tuple[Any, ...] = (_OK, tid, ref)
                del result
        except BaseException as exc:  # SystemExit from user code too: the worker lives on
            reply = (_ERR, tid, *pack_error(exc, op_name))
        if not _send(conn, reply):
            if reply[0] == _OK:
                shm.discard(reply[2])
            _sweep_if_orphaned(owner_pid)
            return
        if not torch_limited:  # the task may have imported torch
            torch_limited = _limit_torch_threads()


# ============================================================================ consumer side


class _Task:
    """One item of one imap. ``item`` is kept until the result arrives so a retry can resend it."""

    __slots__ = ("tid", "imap", "index", "item", "ref", "fn_ref", "est", "attempts")

    def __init__(self, tid: int, imap: _Imap, index: int, item: Any, est: int) -> None:
        self.tid = tid
        self.imap = imap
        self.index = index
        self.item = item
        self.ref: shm.ShmRef | None = None  # the item, in transit to a worker
        self.fn_ref: shm.ShmRef | None = None  # the function, when this task carries it
        self.est = est  # estimated result bytes, counted in the pool's in-flight bytes
        self.attempts = 0


# A received result: (index, value, nbytes, packed error or None)
_Entry = tuple[int, Any, int, Any]


class _Imap:
    """State of one ``imap`` call. Every task is in exactly one of: ``pending`` (to send), a worker's
    queue, ``ready`` (received), or gone (yielded); ``outstanding`` holds those not yet received."""

    __slots__ = (
        "id", "fn_bytes", "name", "ordered", "items", "exhausted", "next_index", "next_yield",
        "pending", "ready", "outstanding", "inflight", "buffered", "error", "cancelled",
        "result_bytes", "result_count",
    )  # fmt: skip

    def __init__(self, iid: int, fn_bytes: bytes, name: str, ordered: bool, items: Iterator[Any]) -> None:
        self.id = iid
        self.fn_bytes = fn_bytes
        self.name = name
        self.ordered = ordered
        self.items = items
        self.exhausted = False
        self.next_index = 0  # index of the next item pulled
        self.next_yield = 0  # ordered: index of the next result to yield
        self.pending: collections.deque[_Task] = collections.deque()  # sorted by index
        # ordered: index -> entry; unordered: entries in arrival order
        self.ready: dict[int, _Entry] | collections.deque[_Entry] = {} if ordered else collections.deque()
        self.outstanding: dict[int, _Task] = {}  # pulled, result not yet received
        self.inflight = 0  # tasks of this imap in worker queues
        self.buffered = 0  # bytes in ``ready``
        self.error: BaseException | None = None  # pool-level failure (dead worker, timeout)
        self.cancelled = False
        self.result_bytes = 0
        self.result_count = 0

    def estimate(self) -> int:
        """Expected bytes of one result: the mean so far."""
        return self.result_bytes // self.result_count if self.result_count else 0

    def has_ready(self) -> bool:
        if self.ordered:
            return self.next_yield in self.ready  # type: ignore[operator]
        return bool(self.ready)

    def done(self) -> bool:
        return self.exhausted and not self.outstanding and not self.ready

    def ready_entries(self) -> Iterable[_Entry]:
        return self.ready.values() if isinstance(self.ready, dict) else self.ready


class _Worker:
    __slots__ = ("slot", "proc", "conn", "sentinel", "queue", "imaps", "head_since", "ready", "watchdog")

    def __init__(self, slot: int, proc: Any, conn: Any) -> None:
        self.slot = slot
        self.proc = proc
        self.conn = conn
        self.sentinel = proc.sentinel
        self.queue: collections.deque[_Task] = collections.deque()
        self.imaps: set[int] = set()  # imap ids whose fn this worker has
        self.head_since: float | None = None  # when the head of ``queue`` started (about)
        self.ready = False  # the process is up (imports, worker_init_fn done)
        self.watchdog = False  # retired into the owner's watchdog (see _become_watchdog)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit code {code}"


def _release(w: _Worker) -> None:
    """Close a finished worker's pipe and process handle (its sentinel fd) now, not at GC.

    Not the handle during interpreter exit: multiprocess's exit handler joins every child handle it
    listed, and a prefetch thread still running then would close one under it."""
    try:
        w.conn.close()
    except OSError:
        pass
    if _mp_util._exiting:
        return
    try:
        w.proc.close()
    except ValueError:  # still running (could not be killed): leave it to multiprocess
        pass


def _exitcode(w: _Worker) -> int | None:
    """``w``'s exit code; 0 once its process handle was released (it was reaped then)."""
    try:
        return w.proc.exitcode
    except ValueError:  # "process object is closed"
        return 0


def _shutdown(
    workers: list[_Worker | None],
    owner_pid: int,
    tag: str,
    lifecycle: threading.Lock,
    retired: list[_Worker],
) -> None:
    """Stop ``workers``: ask idle ones to exit and SIGTERM busy ones, SIGTERM what is left after a short
    grace, then SIGKILL; join them and the ``retired`` ones (told to stop earlier); remove the pool's
    shm files.

    Runs from ``close()``, from the weakref finalizer or at exit; never in another process (a forked
    child holds a copy of the pool and must not kill its siblings). At interpreter exit a daemon
    thread (a prefetch thread) may still drive the pool meanwhile and release dead workers: handles
    released under our feet count as stopped."""
    if os.getpid() != owner_pid:
        return
    with lifecycle:  # a worker being started (or retired) now is in its list afterwards; none later
        live = [w for w in workers if w is not None]
        stopped = list(retired)
    for w in live:
        try:
            if w.queue:  # busy: it would read STOP only after its tasks, whose results nobody wants
                w.proc.terminate()
            else:
                w.conn.send_bytes(pickle.dumps((_STOP,), _PROTO))
        except (OSError, EOFError, ValueError, AttributeError):
            pass
    for w in stopped:
        if w.watchdog:  # its watch ends with the pool (it would wait for this process's exit)
            try:
                w.proc.kill()
            except (OSError, ValueError, AttributeError):
                pass
    live += stopped  # told to stop already (and usually gone): reaped like the others
    for grace, action in ((_STOP_GRACE_S, "terminate"), (_KILL_GRACE_S, "kill"), (_KILL_GRACE_S, None)):
        deadline = time.monotonic() + grace
        while True:
            alive = [w for w in live if _exitcode(w) is None]
            remaining = deadline - time.monotonic()
            if not alive or remaining <= 0:
                break
            _wait([w.sentinel for w in alive], remaining)
        if not alive or action is None:
            break
        for w in alive:
            try:
                getattr(w.proc, action)()
            except (OSError, ValueError, AttributeError):
                pass
    for w in live:
        try:
            w.proc.join(0.1)
        except (OSError, ValueError, AssertionError):
            pass
        _release(w)
    workers[:] = [None] * len(workers)
    retired.clear()
    shm.sweep(owner_pid, tag)


def _preload_in_forkserver(mp_ctx: Any) -> None:
    """Have the forkserver import this module once, so each worker it forks starts in milliseconds
    instead of importing the package again (only effective before the forkserver starts)."""
    try:
        from multiprocess import forkserver

        current = list(getattr(forkserver._forkserver, "_preload_modules", ["__main__"]))
        if __name__ not in current:
            mp_ctx.set_forkserver_preload([*current, __name__])
    except Exception:  # pragma: no cover - an optimisation only
        pass


#: Pools not yet shut down, shut down at interpreter exit by :func:`_shutdown_live_pools`.
_LIVE_POOLS: weakref.WeakSet[ProcessPool] = weakref.WeakSet()


def _shutdown_live_pools() -> None:
    for pool in list(_LIVE_POOLS):
        pool._finalizer()


_swept_for_pid: int | None = None


def _sweep_own_files() -> None:
    shm.stop_recycling()
    shm.sweep(os.getpid())


def _register_exit_steps() -> None:
    """At interpreter exit, after prefetch threads stopped: shut down the pools still open, then
    remove every shm file this process owns (items of workers that were killed, say). Once per
    process, before its first pool: remove the files that dead owners left behind."""
    global _swept_for_pid
    at_exit("process-pools", 1, _shutdown_live_pools)
    at_exit("transfer-files", 2, _sweep_own_files)
    if _swept_for_pid != os.getpid():
        _swept_for_pid = os.getpid()
        shm.sweep_dead_owners()


class ProcessPool:
    """A pool of persistent worker processes implementing :class:`~.pool.TaskPool`.

    ``num_workers`` processes (or ``min_workers`` at first, growing to ``num_workers`` while tasks
    queue up), started with ``ctx.start_method``. Results come back zero-copy through shared memory;
    memory in flight is bounded by ``ctx.memory_budget_bytes``; a dead or timed-out worker is
    replaced and its task re-run up to ``ctx.max_task_retries`` times. ``shared`` objects are given to
    each worker at its start (see :class:`~.pool.SharedRef`).

    Example:
        >>> from torchray_loader.context import DataContext
        >>> with ProcessPool(2, DataContext()) as pool:
        ...     list(pool.imap(abs, [-1, 2, -3]))
        [1, 2, 3]
    """

    def __init__(
        self,
        num_workers: int,
        ctx: DataContext,
        *,
        name: str = "tasks",
        min_workers: int | None = None,
        worker_init_fn: Callable[[int], None] | None = None,
        shared: dict[str, Any] | None = None,
        retire_idle: bool = False,
    ) -> None:
        if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 1:
            raise ValueError(f"num_workers must be a positive int, got {num_workers!r}")
        if min_workers is not None and (not isinstance(min_workers, int) or min_workers < 0):
            raise ValueError(f"min_workers must be a non-negative int, got {min_workers!r}")
        self.num_workers = num_workers
        self.min_workers = num_workers if min_workers is None else max(1, min(min_workers, num_workers))
        self.ctx = ctx
        self.name = name
        self._mp = multiprocess.get_context(ctx.start_method)
        if ctx.start_method == "fork":
            warm_up_arrow()
        if ctx.start_method == "forkserver":
            _preload_in_forkserver(self._mp)
        self._owner_pid = os.getpid()
        self._tag = secrets.token_hex(4)  # names this pool's shm files
        try:
            self._init_fn = (
                None if worker_init_fn is None else _dumps_fn(worker_init_fn)
            )
        except Exception as exc:
            raise TypeError(f"worker_init_fn cannot be sent to worker processes: {exc}") from exc
        self._shared = dict(shared or {})  # Process arguments: inherited under fork, else pickled per start
        self._shared_copy: bytes | None = None  # (not fork) pickled once, as task functions are
        self._workers: list[_Worker | None] = [None] * num_workers  # by slot = worker_id
        self.retire_idle = retire_idle
        self._retired: list[_Worker] = []  # told to stop, reaped at close
        self._imaps: dict[int, _Imap] = {}
        self._imap_ids = itertools.count()
        self._task_ids = itertools.count()
        self._inflight_bytes = 0  # sum of ``est`` of tasks in worker queues
        self._buffered_bytes = 0  # sum of ``buffered`` of active imaps
        self._fatal: tuple[bytes, str | None, str, bool] | None = None  # a worker_init_fn failed
        self._closed = False
        self._lifecycle = threading.Lock()  # no worker starts once _shutdown has begun
        self._finalizer = weakref.finalize(
            self, _shutdown, self._workers, self._owner_pid, self._tag, self._lifecycle, self._retired
        )
        self._finalizer.atexit = False  # the ordered exit steps shut it down instead
        _LIVE_POOLS.add(self)
        _register_exit_steps()
        try:
            for slot in range(self.min_workers):
                self._start_worker(slot)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ public API

    def imap(
        self,
        fn: Callable[[Any], Any],
        items: Iterable[Any],
        *,
        ordered: bool = True,
        name: str = "",
        start: bool = False,
    ) -> Iterator[Any]:
        """Run ``fn(item)`` in the workers for each item of ``items`` (pulled lazily).

        Yields results in item order when ``ordered``, else as they complete. Closing the returned
        generator early cancels the outstanding tasks; the pool stays usable. With ``start``, the
        first tasks are submitted before this returns, not at the first ``next()``.

        Example:
            >>> from torchray_loader.context import DataContext
            >>> with ProcessPool(2, DataContext()) as pool:
            ...     sorted(pool.imap(lambda x: x * 10, range(3), ordered=False))
            [0, 10, 20]
        """
        self._check_open()
        try:
            fn_bytes = _dumps_fn(fn)
        except Exception as exc:
            raise TypeError(
                f"fn of operator {name or self.name!r} cannot be sent to worker processes: {exc}"
            ) from exc
        gen = self._imap(fn_bytes, iter(items), ordered, name or self.name, start)
        if start:
            next(gen)  # runs up to the first submission (and its ``finally`` now guards the tasks)
        return gen

    def close(self) -> None:
        """Stop all workers and remove this pool's shared-memory files. Idempotent.

        Results already yielded stay valid: each owns its own mapping.
        """
        self._closed = True
        self._finalizer()

    def __enter__(self) -> ProcessPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        alive = sum(w is not None for w in self._workers)
        return f"ProcessPool(name={self.name!r}, workers={alive}/{self.num_workers}, closed={self._closed})"

    # ------------------------------------------------------------------ imap driver

    def _imap(self, fn_bytes: bytes, items: Iterator[Any], ordered: bool, name: str, start: bool) -> Iterator[Any]:
        st = _Imap(next(self._imap_ids), fn_bytes, name, ordered, items)
        self._imaps[st.id] = st
        try:
            if start:
                self._fill(st)
                yield None  # consumed by imap(): not a result
            while True:
                self._check_open()
                if self._fatal is not None:
                    raise_packed(self._fatal, "worker_init_fn")
                if st.has_ready():
                    _, value, _, err = self._take_ready(st)
                    if err is not None:
                        raise_packed(err, st.name)
                    # Refill before yielding: the caller may hold this result for a long time (or
                    # drive another pool meanwhile), and the worker must not idle until it is back.
                    # A failure to submit (an unpicklable item, an error pulling the next item) is
                    # raised at the next call, after this good result, as it was before the refill.
                    try:
                        self._fill(st)
                    except Exception as exc:
                        st.error = exc
                    yield value
                    continue
                if st.error is not None:
                    raise st.error
                if st.done():
                    return
                self._fill(st)
                if st.has_ready() or st.error is not None or st.done():
                    continue
                self._pump()
        finally:
            self._cancel(st)

    def _take_ready(self, st: _Imap) -> _Entry:
        if st.ordered:
            entry = st.ready.pop(st.next_yield)  # type: ignore[call-overload,call-arg]
            st.next_yield += 1
        else:
            entry = st.ready.popleft()  # type: ignore[union-attr]
        st.buffered -= entry[2]
        self._buffered_bytes -= entry[2]
        return entry

    def _cancel(self, st: _Imap) -> None:
        """Forget ``st``: pending tasks are dropped; results still on their way will be discarded."""
        st.cancelled = True
        self._imaps.pop(st.id, None)
        self._buffered_bytes -= st.buffered
        st.buffered = 0
        st.ready.clear()
        st.pending.clear()
        st.outstanding.clear()
        if not self._closed:
            for w in self._workers:
                if w is not None and st.id in w.imaps:
                    w.imaps.discard(st.id)
                    try:
                        w.conn.send_bytes(pickle.dumps((_FORGET, st.id), _PROTO))
                    except (OSError, EOFError, ValueError):
                        pass  # dead: noticed by the next wait
        close = getattr(st.items, "close", None)
        if close is not None:
            close()  # upstream generators (nested imaps) release their tasks now, not at GC

    # ------------------------------------------------------------------ submitting

    def _fill(self, st: _Imap) -> None:
        """Pull items and send tasks while a worker has room and the memory budget allows."""
        while st.error is None and self._fatal is None and not self._closed:
            if not st.pending:
                if st.exhausted or not self._has_room(st):
                    return
                if not self._budget_allows(st, st.next_index, st.estimate()):
                    return
                try:
                    item = next(st.items)  # may run nested imaps on this pool: re-check after
                except StopIteration:
                    st.exhausted = True
                    self._retire_idle()
                    return
                if st.cancelled:
                    return
                task = _Task(
                    next(self._task_ids), st, st.next_index, item, max(item_size(item), st.estimate())
                )
                st.next_index += 1
                st.outstanding[task.index] = task
                st.pending.append(task)
            task = st.pending[0]
            if not self._budget_allows(st, task.index, task.est):
                return
            w = self._pick_worker(st)
            if w is None:
                return
            # Serializing may raise (an unpicklable item): not a pool failure, so outside _guarded.
            if task.ref is None:
                try:
                    task.ref = shm.dumps_to_shm(task.item, owner_pid=self._owner_pid, tag=self._tag)
                except (pickle.PicklingError, TypeError, AttributeError) as exc:
                    raise TypeError(
                        f"item {task.index} of operator {st.name!r} cannot be sent to worker processes: {exc}"
                    ) from exc
            if st.id not in w.imaps and task.fn_ref is None:
                fn_buf = pickle.PickleBuffer(st.fn_bytes)
                task.fn_ref = shm.dumps_to_shm(fn_buf, owner_pid=self._owner_pid, tag=self._tag)
            self._guarded(self._submit, w, task)

    def _budget_allows(self, st: _Imap, index: int, est: int) -> bool:
        # The task an ordered imap yields next always runs, as does an unordered imap's only task:
        # otherwise results buffered behind it could block it forever.
        if st.ordered and index == st.next_yield:
            return True
        if not st.ordered and st.inflight == 0 and not st.ready:
            return True
        return self._buffered_bytes + self._inflight_bytes + est <= self.ctx.memory_budget_bytes

    def _depth(self, st: _Imap) -> int:
        # Until the first result shows how big results are, one task per worker.
        return _TASKS_PER_WORKER if st.result_count else 1

    def _has_room(self, st: _Imap) -> bool:
        depth = self._depth(st)
        return any(w is None or len(w.queue) < depth for w in self._workers)

    def _pick_worker(self, st: _Imap) -> _Worker | None:
        """An idle worker; else, while the pool may grow (``min_workers < num_workers``, or a worker
        died), a new one; else the least busy worker with room; else None."""
        depth = self._depth(st)
        best: _Worker | None = None
        for w in self._workers:
            if w is not None and len(w.queue) < depth:
                if not w.queue:
                    return w
                if best is None or len(w.queue) < len(best.queue):
                    best = w
        if None in self._workers and not self._messages_waiting():
            # A task waits and no worker is idle: grow. But a fork holds the whole process for
            # milliseconds (tens in a large CUDA process): while a worker's result or message waits,
            # that is handled first, so the first batch never waits for every fork and the workers
            # already started get their next task.
            return self._start_worker(self._workers.index(None))
        return best

    def _messages_waiting(self) -> bool:
        """Whether a live worker's pipe or sentinel is ready (a result, a message or a death)."""
        objs = [o for w in self._workers if w is not None for o in (w.conn, w.sentinel)]
        return bool(objs) and bool(_wait(objs, 0))

    def _submit(self, w: _Worker, task: _Task) -> None:
        st = task.imap
        msg = pickle.dumps((_TASK, st.id, task.tid, task.ref, task.fn_ref, st.name), _PROTO)
        # Bookkeeping first, then the send: if the send fails the worker is dead, and the task is
        # requeued from its queue like any other.
        w.queue.append(task)
        st.pending.popleft()
        if len(w.queue) == 1 and w.ready:
            w.head_since = time.monotonic()
        w.imaps.add(st.id)
        st.inflight += 1
        self._inflight_bytes += task.est
        try:
            w.conn.send_bytes(msg)
        except (OSError, EOFError):
            pass

    # ------------------------------------------------------------------ receiving

    def _pump(self) -> None:
        """Wait for results, deaths or a timeout, and process what happened."""
        objs: dict[Any, _Worker] = {}
        for w in self._workers:
            if w is not None:
                objs[w.conn] = w
                objs[w.sentinel] = w
        if not objs:  # pragma: no cover - tasks in flight imply workers
            return
        timeout = _MAX_WAIT_S
        limit = self.ctx.task_timeout_s
        if limit is not None:
            now = time.monotonic()
            for w in self._workers:
                if w is not None and w.head_since is not None:
                    timeout = min(timeout, max(0.0, w.head_since + limit - now))
        ready = _wait(list(objs), timeout)
        self._guarded(self._process, objs, ready, limit)

    def _process(self, objs: dict[Any, _Worker], ready: list[Any], limit: float | None) -> None:
        dead: list[_Worker] = []
        for obj in ready:
            w = objs[obj]
            if obj is w.conn:
                if not self._drain(w) and w not in dead:
                    dead.append(w)
            elif w not in dead:
                dead.append(w)
        for w in dead:
            if self._workers[w.slot] is w:
                if w.proc.exitcode is None:  # pipe broken but still alive: make sure it is gone
                    _kill(w)
                self._on_death(w, timed_out=False)
        if limit is not None:
            now = time.monotonic()
            for w in list(self._workers):  # type: ignore[assignment]
                if w is not None and w.head_since is not None and now - w.head_since > limit:
                    _kill(w)
                    self._on_death(w, timed_out=True)

    def _drain(self, w: _Worker) -> bool:
        """Handle every message waiting on ``w``'s pipe; False when the pipe is broken."""
        try:
            while w.conn.poll():
                data = w.conn.recv_bytes()
                self._handle(w, pickle.loads(data))
        except (EOFError, OSError, pickle.UnpicklingError):
            return False
        return True

    def _handle(self, w: _Worker, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == _READY:
            w.ready = True
            if w.queue:
                w.head_since = time.monotonic()
            return
        if kind == _INIT_ERR:
            self._fatal = msg[2:]
            return
        if not w.queue or w.queue[0].tid != msg[1]:  # pragma: no cover - protocol invariant
            if kind == _OK:
                shm.discard(msg[2])
            return
        task = w.queue[0]
        st = task.imap
        if st.cancelled or task.index not in st.outstanding:  # stale: imap closed, or delivered
            if kind == _OK:
                shm.discard(msg[2])
        elif kind == _OK:
            ref: shm.ShmRef = msg[2]
            try:
                entry: _Entry = (task.index, shm.loads_from_shm(ref, recycle=True), ref.nbytes, None)
            except Exception as exc:
                entry = (task.index, None, 0, pack_error(exc, st.name))
            self._record(st, entry)
            st.result_bytes += entry[2]
            st.result_count += 1
        else:
            self._record(st, (task.index, None, 0, msg[2:]))
        # The task is recorded before it leaves the queue: an interruption in between makes it
        # look in flight (re-run, then deduplicated by ``outstanding``), never lost.
        w.queue.popleft()
        w.head_since = time.monotonic() if w.queue else None
        st.inflight -= 1
        self._inflight_bytes -= task.est
        task.item = None
        if not w.queue:
            self._retire_idle()

    def _record(self, st: _Imap, entry: _Entry) -> None:
        if st.ordered:
            st.ready[entry[0]] = entry  # type: ignore[index]
        else:
            st.ready.append(entry)  # type: ignore[union-attr]
        del st.outstanding[entry[0]]
        st.buffered += entry[2]
        self._buffered_bytes += entry[2]

    def _retire_idle(self) -> None:
        """With ``retire_idle``: once every open imap has handed out all its items, stop each worker
        with nothing queued, so its exit (~10 ms: the kernel tears down a copy of the consumer's page
        tables) overlaps the work still under way instead of waiting for ``close()``. A later imap
        starts workers again in the freed slots."""
        if not self.retire_idle or not self._imaps:
            return
        if any(not st.exhausted or st.pending for st in self._imaps.values()):
            return
        with self._lifecycle:  # each worker is in ``_workers`` or ``_retired`` when shutdown looks
            if self._closed or not self._finalizer.alive:
                return
            idle = [w for w in self._workers if w is not None and not w.queue]
            busy = any(w is not None and w.queue for w in self._workers)
            watched = any(w.watchdog and _exitcode(w) is None for w in self._retired)
            for w in idle:
                self._workers[w.slot] = None
                self._retired.append(w)
                # The last one to go stays as the consumer's watchdog: the consumer may hold transfer
                # files until close, and nobody else would remove them if it were killed.
                w.watchdog = w is idle[-1] and not busy and not watched
                try:
                    w.conn.send_bytes(pickle.dumps((_WATCH if w.watchdog else _STOP,), _PROTO))
                except (OSError, EOFError, ValueError):
                    pass  # already gone: reaped at close like the others
                w.conn.close()  # a worker forked later must not inherit this pipe end

    # ------------------------------------------------------------------ failures

    def _on_death(self, w: _Worker, *, timed_out: bool, count_retry: bool = True) -> None:
        """``w`` died (or was killed): requeue its tasks, replace it."""
        self._drain(w)  # results it sent before dying count
        self._workers[w.slot] = None
        try:
            w.proc.join(1.0)
        except ValueError:  # released by a concurrent shutdown (interpreter exit)
            pass
        code = _exitcode(w)
        shm.sweep(self._owner_pid, self._tag, w.proc.pid)  # results it wrote but never sent
        _release(w)
        requeue: dict[int, list[_Task]] = {}
        for position, task in enumerate(w.queue):
            st = task.imap
            st.inflight -= 1
            self._inflight_bytes -= task.est
            for ref in (task.ref, task.fn_ref):
                if ref is not None:
                    shm.discard(ref)
            task.ref = task.fn_ref = None
            if st.cancelled or st.error is not None or task.index not in st.outstanding:
                continue
            if position == 0 and count_retry:  # it was running this one
                task.attempts += 1
                if task.attempts > self.ctx.max_task_retries:
                    st.error = self._failure(st, task, code, timed_out)
                    continue
            requeue.setdefault(st.id, []).append(task)
        w.queue.clear()
        for iid, tasks in requeue.items():
            st = self._imaps[iid]
            st.pending = collections.deque(sorted([*tasks, *st.pending], key=lambda t: t.index))
        if not self._closed and self._finalizer.alive and self._fatal is None and not _mp_util._exiting:
            self._ensure_min_workers()

    def _failure(self, st: _Imap, task: _Task, code: int | None, timed_out: bool) -> TorchRayError:
        retries = self.ctx.max_task_retries
        if timed_out:
            return TaskTimeoutError(
                f"a task of operator {st.name!r} ran longer than task_timeout_s={self.ctx.task_timeout_s}s "
                f"{task.attempts} time(s) (DataContext.max_task_retries={retries}); its worker was killed"
            )
        return WorkerDiedError(
            f"a worker process of pool {self.name!r} died ({_describe_exit(code)}) while running a task of "
            f"operator {st.name!r}; the task ran {task.attempts} time(s) "
            f"(DataContext.max_task_retries={retries})"
        )

    def _guarded(self, method: Callable[..., None], *args: Any) -> None:
        """Run a bookkeeping step; if anything interrupts it (Ctrl-C lands between any two
        bytecodes, maybe halfway through a pipe message), restore a consistent state: kill every
        worker with work, requeue that work without counting a retry, recount the bytes."""
        try:
            method(*args)
        except BaseException:
            if self._closed:
                self._check_open()
            try:
                self._recover()
            except BaseException:  # pragma: no cover - best effort; close() still cleans up
                pass
            raise

    def _recover(self) -> None:
        for w in list(self._workers):
            if w is not None:
                _kill(w)
                self._on_death(w, timed_out=False, count_retry=False)
        self._inflight_bytes = 0
        self._buffered_bytes = 0
        for st in self._imaps.values():
            st.inflight = 0
            for entry in st.ready_entries():
                st.outstanding.pop(entry[0], None)
            st.buffered = sum(entry[2] for entry in st.ready_entries())
            self._buffered_bytes += st.buffered
            st.pending = collections.deque(sorted(st.outstanding.values(), key=lambda t: t.index))

    # ------------------------------------------------------------------ workers

    def _start_worker(self, slot: int) -> _Worker:
        with self._lifecycle:  # never start a worker after shutdown began (e.g. from a thread at exit)
            self._check_open()
            return self._start_worker_locked(slot)

    def _start_worker_locked(self, slot: int) -> _Worker:
        parent_conn, child_conn = self._mp.Pipe(duplex=True)
        inherited: tuple[int, ...] = ()
        if self.ctx.start_method == "fork":
            inherited = tuple(w.conn.fileno() for w in self._workers if w is not None) + (
                parent_conn.fileno(),
            )
        proc = self._mp.Process(
            target=_worker_main,
            args=(
                slot,
                child_conn,
                self._owner_pid,
                self._tag,
                self._init_fn,
                inherited,
                secrets.randbits(63),
                self._shared if self.ctx.start_method == "fork" else self._shared_pickled(),
            ),
            name=f"torchray-{self.name}-{slot}",
            daemon=True,
        )
        try:
            proc.start()
        finally:
            child_conn.close()
        w = _Worker(slot, proc, parent_conn)
        self._workers[slot] = w
        return w

    def _shared_pickled(self) -> bytes:
        if self._shared_copy is None:
            self._shared_copy = _dumps_fn(self._shared)
        return self._shared_copy

    def _ensure_min_workers(self) -> None:
        alive = sum(w is not None for w in self._workers)
        for slot, w in enumerate(self._workers):
            if alive >= self.min_workers:
                break
            if w is None:
                self._start_worker(slot)
                alive += 1

    def _check_open(self) -> None:
        # The finalizer is dead once the pool was shut down by GC or at interpreter exit.
        if self._closed or not self._finalizer.alive:
            raise TorchRayError(f"ProcessPool {self.name!r} is closed")


def _kill(w: _Worker) -> None:
    try:
        w.proc.kill()
        w.proc.join(1.0)
    except (OSError, ValueError, AttributeError):
        pass
