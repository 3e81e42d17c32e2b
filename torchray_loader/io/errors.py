"""The skip-and-log policy for unreadable files and rows: one helper every reader uses.

A reader never writes ``try/except`` around its own decoding. It hands failures to a
:class:`ReadErrorPolicy`, which either raises a :class:`~torchray_loader.errors.ReadError` naming the
file (and row), or logs the failure, counts it and lets the reader go on (``on_read_error="skip"``),
raising :class:`~torchray_loader.errors.ErrorBudgetExceeded` once more than ``budget`` items failed.

The policy is a knob, as WebDataset's handlers: files fail as one unit (see
:meth:`ReadErrorPolicy.run_unit`), rows fail one at a time (:meth:`ReadErrorPolicy.bad_row`).

How the budget is counted across worker processes
-------------------------------------------------
The budget belongs to one ``read_*`` call, but its read tasks run in several worker processes
(forked or spawned) that share no memory. The policy is built in the consumer when ``read_*`` is
called and travels (pickled) inside each task. In ``skip`` mode it names a *ledger*: a small
append-only file in the temp directory, private to that read call. Every skip appends one JSON line
(``O_APPEND`` writes of one short line are atomic on a local file system) and then counts the
**distinct** ``(path, row)`` items in the ledger; more than ``budget`` raises. Counting distinct
items makes the count a property of the data, not of how often it was read: the second epoch over
the same bad file does not spend the budget again, and a retried task does not either. The ledger
is created on the first skip only (a clean read writes nothing) and removed when the policy object
in the consumer is garbage-collected or the interpreter exits. :func:`read_skips` reads it back:
the report of what was skipped. Where no shared ledger can be written (e.g. tasks shipped to other
machines), the count falls back to per-process counting, and that fallback is logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import uuid
import weakref
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa

from ..errors import ErrorBudgetExceeded, ReadError

__all__ = [
    "ReadErrorPolicy",
    "SkippedItem",
    "MissingPathError",
    "read_skips",
    "refuse_pickled",
    "logger",
]

#: The package logger; every skip is logged here at WARNING level.
logger = logging.getLogger("torchray_loader")

#: Longest reason kept in the ledger (one ledger line must stay one short atomic write).
_MAX_REASON = 300


class MissingPathError(ReadError, FileNotFoundError):
    """An input path does not exist (a ``FileNotFoundError`` whose message names the path).

    Example:
        >>> str(MissingPathError("/data/x.csv", "no such file or directory"))
        '/data/x.csv: no such file or directory'
    """


@dataclass(frozen=True)
class SkippedItem:
    """One file (``row is None``) or one row that the skip policy dropped.

    Example:
        >>> SkippedItem("a.csv", 3, "expected 2 columns, got 1")
        SkippedItem(path='a.csv', row=3, reason='expected 2 columns, got 1')
    """

    path: str
    row: int | None
    reason: str


def _is_transport_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the storage could not be reached (refused, reset, timed out): the file
    may be fine, so skipping it would lose its rows silently. Besides the builtin ``ConnectionError``
    and ``TimeoutError``, fsspec backends raise their clients' own (botocore's
    ``EndpointConnectionError``, aiohttp's ``ClientConnectionError``), which do not subclass them."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    return any(
        "ConnectionError" in k.__name__ or "ConnectTimeout" in k.__name__ or "ReadTimeout" in k.__name__
        for k in type(exc).__mro__
    )


def _is_data_error(exc: BaseException) -> bool:
    """Whether ``exc`` means "this input is unreadable" (as opposed to a setup problem that skipping
    would only hide: a missing extra, a budget already exceeded, running out of memory)."""
    return isinstance(exc, Exception) and not isinstance(
        exc, (ErrorBudgetExceeded, ImportError, MemoryError, KeyboardInterrupt)
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ReadError):
        return exc.reason
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, FileNotFoundError) and (not exc.strerror and " " not in text):
        text = f"no such file or directory: {text}"  # s3fs raises FileNotFoundError(key): a bare path
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, (OSError, pa.ArrowException)) else text


def _remove_ledger(path: str, owner_pid: int) -> None:
    # Forked workers inherit this finalizer; only the process that created the ledger removes it.
    if os.getpid() == owner_pid:
        with contextlib.suppress(OSError):
            os.unlink(path)


@dataclass(frozen=True)
class ReadErrorPolicy:
    """What to do when a file or a row cannot be read; built once per ``read_*`` call.

    ``mode`` is ``"raise"`` (the default: a :class:`ReadError` naming the file and row) or ``"skip"``
    (log, count, go on). ``budget`` is how many distinct items may be skipped before
    :class:`ErrorBudgetExceeded`; a negative budget means no limit.

    Example:
        >>> policy = ReadErrorPolicy("skip", budget=1)
        >>> out = list(policy.run_unit("bad.bin", lambda: iter([1 / 0])))
        >>> out, [s.path for s in policy.skipped()]
        ([], ['bad.bin'])
    """

    mode: Literal["raise", "skip"] = "raise"
    budget: int = 0
    #: Path of this read call's shared ledger (``skip`` mode only).
    ledger: str | None = None
    _finalizer: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in ("raise", "skip"):
            raise ValueError(f"on_read_error must be 'raise' or 'skip', got {self.mode!r}")
        if isinstance(self.budget, bool) or not isinstance(self.budget, int):
            raise TypeError(f"read_error_budget must be an int, got {self.budget!r}")
        if self.mode == "skip" and self.ledger is None:
            ledger = os.path.join(tempfile.gettempdir(), f"torchray-read-skips-{uuid.uuid4().hex}.jsonl")
            object.__setattr__(self, "ledger", ledger)
            # Removed when this (consumer-side) policy dies; unpickled copies in workers do not run
            # __post_init__, so they register nothing.
            fin = weakref.finalize(self, _remove_ledger, ledger, os.getpid())
            object.__setattr__(self, "_finalizer", fin)

    def __reduce__(self):
        return (_rebuild_policy, (self.mode, self.budget, self.ledger))

    @classmethod
    def from_context(
        cls, on_read_error: str | None = None, read_error_budget: int | None = None
    ) -> ReadErrorPolicy:
        """The policy for one read call: explicit reader options win over ``DataContext``.

        Example:
            >>> ReadErrorPolicy.from_context().mode
            'raise'
        """
        from ..context import DataContext

        ctx = DataContext.get_current()
        mode = ctx.on_read_error if on_read_error is None else on_read_error
        budget = ctx.read_error_budget if read_error_budget is None else read_error_budget
        return cls(mode, budget)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ the two entry points

    def run_unit(self, path: str, produce: Callable[[], Iterable[Any]]) -> Generator[Any, None, None]:
        """Run ``produce()`` (the reading of one file or file part) under the policy.

        ``raise`` mode streams the results and turns a failure into a :class:`ReadError` naming
        ``path``. ``skip`` mode buffers the unit's results, so a unit that fails part-way yields
        nothing (never half a file); the failure is logged and counted.
        """
        if self.mode == "raise":
            try:
                yield from produce()
            except Exception as exc:
                if not _is_data_error(exc) or isinstance(exc, ReadError):
                    raise
                raise ReadError(path, _reason(exc)) from exc
            return
        try:
            results = list(produce())
        except Exception as exc:
            if not _is_data_error(exc):
                raise
            if _is_transport_error(exc):
                raise ReadError(path, f"{_reason(exc)} (not skipped: the storage could not be reached)") from exc
            self._skip(path, None, _reason(exc))
            return
        yield from results

    def bad_row(self, path: str, row: int | None, reason: str) -> None:
        """Report one unreadable row (``row`` is 1-based, a line number where the format has lines).

        Raises :class:`ReadError` in ``raise`` mode; in ``skip`` mode logs, counts and returns, and
        the reader drops the row.
        """
        if self.mode == "raise":
            where = f"row {row}: " if row is not None else ""
            raise ReadError(path, f"{where}{reason}")
        self._skip(path, row, reason)

    # ------------------------------------------------------------------ counting

    def _skip(self, path: str, row: int | None, reason: str) -> None:
        reason = reason if len(reason) <= _MAX_REASON else reason[: _MAX_REASON - 3] + "..."
        item = SkippedItem(path, row, reason)
        count = self._record(item)
        where = f" row {row}" if row is not None else ""
        limit = "unlimited" if self.budget < 0 else str(self.budget)
        logger.warning(
            "skipped unreadable %s%s: %s (%d skipped, budget %s)", path, where, reason, count, limit
        )
        if 0 <= self.budget < count:
            items = self.skipped() or [item]
            listing = "; ".join(
                f"{s.path}{'' if s.row is None else f' row {s.row}'}: {s.reason}" for s in items[:20]
            )
            more = f" (and {len(items) - 20} more)" if len(items) > 20 else ""
            raise ErrorBudgetExceeded(
                f"{count} unreadable items exceed read_error_budget={self.budget}: {listing}{more}"
            )

    def _record(self, item: SkippedItem) -> int:
        """Append ``item`` to the ledger and return the number of distinct items skipped so far."""
        line = json.dumps({"path": item.path, "row": item.row, "reason": item.reason}) + "\n"
        assert self.ledger is not None
        try:
            fd = os.open(self.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
            return len(self.skipped())
        except OSError as exc:  # no shared ledger here: count what this process saw
            logger.warning(
                "read-error ledger %s unavailable (%s); counting skips per process", self.ledger, exc
            )
            seen = _LOCAL_SKIPS.setdefault(self.ledger, {})
            seen[(item.path, item.row)] = item
            return len(seen)

    def skipped(self) -> list[SkippedItem]:
        """Distinct items skipped so far by this read call, sorted by path and row (workers record
        them in whatever order they run; the report does not depend on that).

        Example:
            >>> ReadErrorPolicy().skipped()
            []
        """
        if self.ledger is None:
            return []
        items: dict[tuple[str, int | None], SkippedItem] = {}
        try:
            with open(self.ledger, encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:  # a line being written right now
                        continue
                    key = (rec["path"], rec["row"])
                    items.setdefault(key, SkippedItem(rec["path"], rec["row"], rec["reason"]))
        except FileNotFoundError:
            pass
        for key, item in _LOCAL_SKIPS.get(self.ledger, {}).items():
            items.setdefault(key, item)
        return sorted(items.values(), key=lambda s: (s.path, -1 if s.row is None else s.row))


#: Per-process fallback counts, keyed by ledger path (used only when the ledger cannot be written).
_LOCAL_SKIPS: dict[str, dict[tuple[str, int | None], SkippedItem]] = {}


def _rebuild_policy(mode: str, budget: int, ledger: str | None) -> ReadErrorPolicy:
    # Unpickled copies share the ledger but never own (remove) it.
    policy = object.__new__(ReadErrorPolicy)
    object.__setattr__(policy, "mode", mode)
    object.__setattr__(policy, "budget", budget)
    object.__setattr__(policy, "ledger", ledger)
    object.__setattr__(policy, "_finalizer", None)
    return policy


def read_skips(dataset: Any) -> list[SkippedItem]:
    """What the skip policy dropped while reading ``dataset``'s files (all its read_* sources).

    Example:
        >>> import torchray_loader as rd
        >>> read_skips(rd.range(3))
        []
    """
    out: list[SkippedItem] = []
    seen_ledgers: set[str] = set()
    stack = [getattr(dataset, "_plan", dataset)]
    while stack:
        op = stack.pop()
        for task in getattr(op, "tasks", ()) or ():
            policy = getattr(getattr(task, "read_fn", None), "keywords", {}).get("policy")
            if isinstance(policy, ReadErrorPolicy) and policy.ledger and policy.ledger not in seen_ledgers:
                seen_ledgers.add(policy.ledger)
                out.extend(policy.skipped())
        stack.extend(getattr(op, "inputs", ()))
    return out


#: Arrow extension types whose values are pickles: this package's object columns and Ray Data's
#: (a file Ray wrote; with ``ray.data`` imported, converting such a column would unpickle it).
PICKLED_EXTENSION_NAMES = frozenset({"torchray.python_object", "ray.data.arrow_pickled_object"})


def _pickled_columns(schema: pa.Schema) -> list[str]:
    """Top-level columns that hold (or nest) a pickled-object extension type. A type is recognised
    whether or not it is registered in this process (unregistered, its name is still in the field
    metadata), so the verdict never depends on which libraries happen to be imported."""

    def walk_type(t: pa.DataType) -> bool:
        if isinstance(t, pa.BaseExtensionType):
            return t.extension_name in PICKLED_EXTENSION_NAMES or walk_type(t.storage_type)
        return any(walk_field(t.field(i)) for i in range(t.num_fields)) if t.num_fields else False

    def walk_field(f: pa.Field) -> bool:
        name = (f.metadata or {}).get(b"ARROW:extension:name", b"")
        return name.decode("utf-8", "replace") in PICKLED_EXTENSION_NAMES or walk_type(f.type)

    return [f.name for f in schema if walk_field(f)]


def refuse_pickled(schema: pa.Schema, path: str, allow_pickle: bool) -> None:
    """Raise :class:`ReadError` when a file's ``schema`` carries pickled Python objects, unless the
    caller opted in with ``DataContext.allow_pickle`` (promise 8: never unpickle a file's bytes).

    Example:
        >>> import pyarrow as pa
        >>> refuse_pickled(pa.schema([("a", pa.int64())]), "a.parquet", False)
    """
    if allow_pickle:
        return
    cols = _pickled_columns(schema)
    if cols:
        raise ReadError(
            path,
            f"column(s) {cols} hold pickled Python objects; refusing to unpickle data from a file "
            "(set DataContext.get_current().allow_pickle = True if you trust it)",
        )
