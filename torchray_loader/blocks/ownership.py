"""Which blocks hold memory that nothing outside the running iteration can reach.

A worker's result is always such a block: it was unpickled from a transfer file into this process.
At ``num_workers=0`` a ``map_batches`` result is made of the very arrays the user's function returned,
and the function may keep one of them (a constant mask, a cached buffer): handing that memory out as
a tensor would let a training loop that writes to its batch change the function's state. So such a
block counts as fresh only when the function returned a plain ``dict`` it does not keep, whose values
are lists of scalars or plain numpy arrays of numbers or strings that nothing else references and that
own their memory (or view an array only they reference, as a reshape does). Anything else (tensors,
other views, object arrays, pandas, Arrow, a generator's items) is not fresh, and is copied once when
it becomes tensors.

The references are counted with ``sys.getrefcount`` against counts calibrated at import on a batch
known to be fresh, taken through the same calling shape (a local variable passed to
:func:`ref_counts`), so the interpreter's own references cancel out.

Invariant: a block is fresh only for the task that made it. Marks are collected per task
(:func:`collecting_fresh`); a block that outlives its task (a materialized dataset) and comes out of a
later task unchanged (a pass-through function) is not fresh there.

Example:
    >>> import numpy as np
    >>> batch = {"x": np.arange(3)}
    >>> counts = ref_counts(batch)
    >>> sole_owner(batch, counts)
    True
    >>> kept = batch["x"]
    >>> counts = ref_counts(batch)
    >>> sole_owner(batch, counts)
    False
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np
import pyarrow as pa

__all__ = ["collecting_fresh", "mark_fresh", "ref_counts", "sole_owner"]

#: numpy kinds whose values a column holds itself (numbers, booleans, strings), not other objects.
_FRESH_KINDS = "biufcUS"
_SCALARS = (bool, int, float, complex, str, bytes, np.generic)

#: The fresh blocks of the task running in this context (``collecting_fresh``), by ``id``.
_collector: ContextVar[weakref.WeakValueDictionary[int, pa.Table] | None] = ContextVar("fresh_blocks", default=None)


@contextmanager
def collecting_fresh() -> Iterator[weakref.WeakValueDictionary[int, pa.Table]]:
    """Collect the blocks :func:`mark_fresh` marks while the body runs (one task), by ``id``.

    A mark lives only in this collection: a block that outlives its task (a materialized dataset)
    and comes back out of a later task unchanged (a pass-through function) is not fresh there.

    Example:
        >>> with collecting_fresh() as fresh:
        ...     block = pa.table({"x": [1]})
        ...     mark_fresh(block)
        >>> fresh.get(id(block)) is block
        True
    """
    fresh: weakref.WeakValueDictionary[int, pa.Table] = weakref.WeakValueDictionary()
    token = _collector.set(fresh)
    try:
        yield fresh
    finally:
        _collector.reset(token)


def mark_fresh(block: pa.Table) -> None:
    """Record, for the running task, that ``block``'s memory is reachable only through ``block``
    (nothing outside :func:`collecting_fresh` records it).

    Example:
        >>> mark_fresh(pa.table({"x": [1]}))  # outside a task: nothing to record
    """
    fresh = _collector.get()
    if fresh is not None:
        fresh[id(block)] = block


def ref_counts(batch: Any) -> tuple[int, list[int]]:
    """Reference counts of ``batch`` (a dict) and of each of its values, for :func:`sole_owner`.

    Call it on a local variable, ``counts = ref_counts(result)``: the calibration does the same.

    Example:
        >>> ref_counts([1, 2])  # not a dict: never fresh
        (-1, [])
    """
    if type(batch) is not dict:
        return -1, []
    return sys.getrefcount(batch), [sys.getrefcount(v) for v in batch.values()]


def _base_ref_counts(array: np.ndarray) -> list[int] | None:
    """Reference counts along ``array``'s chain of bases; ``None`` if a base is not an ndarray or
    the last array does not own its memory (it wraps memory allocated by someone else)."""
    counts = []
    last, base = array, array.base
    while base is not None:
        if type(base) is not np.ndarray:
            return None
        counts.append(sys.getrefcount(base))
        last, base = base, base.base
    return counts if last.flags.owndata else None


def _count_sole_references() -> tuple[int, int, int]:
    batch = {"x": np.empty(2).reshape(1, 2)}  # held by this local only, as a returned batch nobody kept
    counts = ref_counts(batch)
    (base_refs,) = _base_ref_counts(batch["x"]) or [0]
    return counts[0], counts[1][0], base_refs


def _calibrate() -> tuple[int, int, int]:
    # Without a tracer: one that reads frame locals (a debugger at import) would hold extra
    # references and raise the counts, and a later extra reference could then pass for none.
    trace, profile = sys.gettrace(), sys.getprofile()
    sys.settrace(None)
    sys.setprofile(None)
    try:
        return _count_sole_references()
    finally:
        sys.settrace(trace)
        sys.setprofile(profile)


_SOLE_DICT_REFS, _SOLE_VALUE_REFS, _SOLE_BASE_REFS = _calibrate()
#: In a free-threaded build (no GIL) reference counts are split between threads and partly
#: deferred, so they cannot prove that nothing else holds an object: nothing is fresh there.
_COUNTS_ARE_EXACT = getattr(sys, "_is_gil_enabled", lambda: True)()


def sole_owner(batch: Any, counts: tuple[int, list[int]]) -> bool:
    """Whether ``batch`` (a user function's return value, ``counts`` from :func:`ref_counts`) is a
    plain dict that only the caller holds, and each array in it is held by that dict alone and owns
    its memory (or views an array only it references).

    Example:
        >>> import numpy as np
        >>> whole = np.arange(3)
        >>> batch = {"x": whole[1:]}  # a view of an array held elsewhere
        >>> counts = ref_counts(batch)
        >>> sole_owner(batch, counts)
        False
    """
    dict_refs, value_refs = counts
    if not _COUNTS_ARE_EXACT or dict_refs != _SOLE_DICT_REFS:
        return False
    for value, refs in zip(batch.values(), value_refs, strict=True):
        if isinstance(value, (list, tuple)):
            # Arrow copies scalars and strings; arrays in a list may be used as they are.
            if all(v is None or isinstance(v, _SCALARS) for v in value):
                continue
            return False
        if type(value) is not np.ndarray or refs != _SOLE_VALUE_REFS:
            return False
        base_refs = _base_ref_counts(value)  # a view (a reshape) of an array only it references is fine
        if base_refs is None or any(n != _SOLE_BASE_REFS for n in base_refs):
            return False
        if value.dtype.kind not in _FRESH_KINDS:
            return False  # object arrays hold other objects, which may be kept elsewhere
    return True
