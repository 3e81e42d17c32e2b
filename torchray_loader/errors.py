"""Exceptions raised by torchray_loader.

Every exception the package raises on its own account derives from :class:`TorchRayError`.
Exceptions raised by *user code* (a UDF, a dataset's ``__getitem__``, a ``collate_fn``) keep their
original type: the consumer re-raises the original exception, chained (``raise ... from``) to a
:class:`UserCodeError` that carries the worker-side traceback and the operator name.
"""

from __future__ import annotations

__all__ = [
    "TorchRayError",
    "UserCodeError",
    "WorkerDiedError",
    "TaskTimeoutError",
    "ReadError",
    "ErrorBudgetExceeded",
]


class TorchRayError(Exception):
    """Root of every exception raised by torchray_loader itself."""


class UserCodeError(TorchRayError, RuntimeError):
    """User code failed inside a worker (a ``RuntimeError``, as DataLoader's re-raised worker errors).

    Carries the operator name and the formatted worker traceback. The consumer raises the original
    exception ``from`` this one, so ``except ValueError`` still works and the traceback shows both.

    Example:
        >>> err = UserCodeError("Map(fn)", "Traceback ...\\nValueError: bad row")
        >>> err.operator
        'Map(fn)'
    """

    def __init__(self, operator: str, worker_traceback: str) -> None:
        super().__init__(f"user code in operator {operator!r} raised; worker traceback:\n{worker_traceback}")
        self.operator = operator
        self.worker_traceback = worker_traceback

    def __reduce__(self):  # picklable across processes
        return (type(self), (self.operator, self.worker_traceback))


class WorkerDiedError(TorchRayError, RuntimeError):
    """A worker process died (signal, OOM, ``os._exit``) and its task ran out of retries (a
    ``RuntimeError``, as DataLoader's "worker ... is killed")."""


class TaskTimeoutError(TorchRayError, TimeoutError):
    """A task ran longer than the configured timeout and ran out of retries."""


class ReadError(TorchRayError, OSError):
    """A file could not be read or decoded. The message names the file (and row where known).

    Example:
        >>> str(ReadError("broken.jpg", "cannot identify image file"))
        'broken.jpg: cannot identify image file'
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


class ErrorBudgetExceeded(TorchRayError):
    """More files/rows failed than the skip policy's error budget allows."""


def mark_operator(exc: BaseException, operator: str) -> BaseException:
    """Record on ``exc`` which operator's user code raised it (innermost wins)."""
    if not hasattr(exc, "_torchray_operator"):
        try:
            exc._torchray_operator = operator  # type: ignore[attr-defined]
        except AttributeError:  # exceptions with __slots__
            pass
    return exc


def raise_user_error(exc: BaseException, worker_traceback: str, operator: str | None = None) -> None:
    """Raise ``exc`` (user code's own exception) chained to a :class:`UserCodeError`.

    Package errors (:class:`TorchRayError`) are raised as they are, chained the same way.
    """
    op = operator or getattr(exc, "_torchray_operator", None) or "<unknown>"
    raise exc from UserCodeError(op, worker_traceback)
