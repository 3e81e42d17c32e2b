"""The package's work at interpreter exit, as ordered steps run by one ``atexit`` hook.

Invariant: the hook runs before ``multiprocess``'s own exit handler. That handler terminates every
daemonic child and marks the interpreter as exiting; a prefetch thread still driving a worker pool
then would see its workers die under it, and worker handles released after it are only finalized
during module teardown (too late to close cleanly). ``atexit`` runs handlers last-registered-first,
so :func:`at_exit` re-registers the hook on every call: the package calls it when it creates a pool,
i.e. after ``multiprocess`` was imported and had registered its handler.

Steps run by ascending ``stage``: 0 stops prefetch threads (they close their sources, including
pools, in their own thread), 1 shuts down pools still open, 2 removes this process's transfer files.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable

__all__ = ["at_exit"]

_STEPS: dict[str, tuple[int, Callable[[], None]]] = {}
_LOCK = threading.Lock()
_OWNER_PID = os.getpid()


def _run_steps() -> None:
    if os.getpid() != _OWNER_PID:  # a forked child that exits normally owns none of this
        return
    with _LOCK:
        steps = sorted(_STEPS.values(), key=lambda s: s[0])
    for _, step in steps:
        try:
            step()
        except Exception:  # noqa: BLE001 - every later step still runs
            pass


def at_exit(key: str, stage: int, step: Callable[[], None]) -> None:
    """Run ``step`` at interpreter exit, in ``stage`` order, once per ``key`` (a later call with the
    same key replaces the step). Also moves the hook ahead of every exit handler registered so far.

    Example:
        >>> at_exit("doc-example", 9, lambda: None)
    """
    global _OWNER_PID
    with _LOCK:
        _STEPS[key] = (stage, step)
        _OWNER_PID = os.getpid()
        atexit.unregister(_run_steps)
        atexit.register(_run_steps)
