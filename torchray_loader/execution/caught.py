"""User exceptions carried from where they were raised to where they are raised again.

A worker packs an exception (``pack_error``) and the consumer raises it as the original type chained
to a ``UserCodeError`` that holds the worker's traceback (``raise_packed``). :class:`CaughtError`
carries one as a *value*, in place of a result: the stream carrying it goes on, so the consumer
raises it and may then ask for the next result (DataLoader's iterator survives a failed batch).
"""

from __future__ import annotations

import pickle
import traceback
from typing import Any, NoReturn

from ..errors import UserCodeError, mark_operator, raise_user_error
from . import shm

__all__ = ["CaughtError", "pack_error", "raise_packed"]

#: ``(pickled exception, operator it was marked with, traceback text, wrapped)``.
PackedError = tuple[bytes, str | None, str, bool]


def pack_error(exc: BaseException, operator: str, tb: str | None = None) -> PackedError:
    """``exc`` ready to send to another process; ``tb``: its traceback text (default: the exception
    being handled).

    ``_torchray_operator`` travels separately: exceptions with a custom ``__reduce__`` drop
    attributes. An exception that does not survive a pickle round trip is replaced by a
    ``UserCodeError`` carrying its repr (``wrapped``).

    Example:
        >>> data, marked, tb, wrapped = pack_error(ValueError("x"), "op", tb="...")
        >>> pickle.loads(data), wrapped
        (ValueError('x'), False)
    """
    tb = traceback.format_exc() if tb is None else tb
    marked = getattr(exc, "_torchray_operator", None)
    marked = marked if isinstance(marked, str) else None
    try:
        data = shm.dumps(exc)
        pickle.loads(data)
        return data, marked, tb, False
    except Exception as perr:
        try:
            desc = repr(exc)
        except Exception:
            desc = f"<{type(exc).__name__}>"
        note = f"\n(the exception {desc} could not be sent to the main process: {perr!r})"
        return pickle.dumps(UserCodeError(marked or operator, tb + note)), marked, tb, True


def raise_packed(packed: PackedError, default_op: str) -> NoReturn:
    """Raise what :func:`pack_error` packed: the original exception chained to a ``UserCodeError``
    naming the operator and holding the worker's traceback.

    Example:
        >>> try:
        ...     raise_packed(pack_error(KeyError("k"), "fetch", tb="worker traceback"), "fetch")
        ... except KeyError as e:
        ...     print(type(e.__cause__).__name__)
        UserCodeError
    """
    data, marked, tb, wrapped = packed
    try:
        exc = pickle.loads(data)
    except Exception as uerr:
        raise UserCodeError(marked or default_op, f"{tb}\n(could not rebuild the exception: {uerr!r})") from None
    if wrapped:
        raise exc
    if marked is not None:
        mark_operator(exc, marked)
    raise_user_error(exc, tb, marked or default_op)
    raise AssertionError("unreachable")  # pragma: no cover - raise_user_error raises


class CaughtError:
    """A user exception caught where it was raised, travelling in place of a result.

    In the process that caught it, :meth:`reraise` raises the exception object itself; pickled (a
    worker's result), it travels packed and is raised as :func:`raise_packed` raises.

    Example:
        >>> try:
        ...     CaughtError.of(ValueError("bad sample"), "fetch").reraise()
        ... except ValueError as e:
        ...     print(e)
        bad sample
    """

    __slots__ = ("exc", "operator", "packed", "tb")

    def __init__(self, exc: BaseException | None, operator: str, tb: str, packed: PackedError | None = None) -> None:
        self.exc = exc
        self.operator = operator
        self.tb = tb
        self.packed = packed

    @classmethod
    def of(cls, exc: BaseException, operator: str) -> CaughtError:
        """Catch ``exc`` (being handled, or just raised) from ``operator``."""
        return cls(exc, operator, "".join(traceback.format_exception(exc)))

    def __reduce__(self) -> tuple[Any, ...]:
        packed = self.packed
        if packed is None:
            assert self.exc is not None
            packed = pack_error(self.exc, self.operator, self.tb)
        return (CaughtError, (None, self.operator, self.tb, packed))

    def reraise(self) -> NoReturn:
        if self.exc is not None:
            raise self.exc
        assert self.packed is not None
        raise_packed(self.packed, self.operator)
