"""Moving batches to a device: pinned host staging and copies on a side CUDA stream, ahead of use.

Two granularities, one rule:

* ``DeviceFeeder.transfer(piece)`` moves a *piece* (the batches made from one parent, see
  :mod:`.convert`) with one pinned staging copy and one host-to-device copy per column, then cuts the
  batches as views of the device copy. It runs in the producing thread (the prefetch thread when
  there is one), so the consumer's thread only waits on an event.
* ``DeviceFeeder.feed(batches)`` moves any stream of batches (nested dicts, lists, tuples,
  namedtuples of tensors), each batch as a piece of one, in a background thread ``depth`` batches
  ahead, while another thread drives ``batches``: the loader's map-style and iterable paths, whose
  batches come from workers one at a time.

Invariants:

* A batch handed to the training loop is ready on the consumer's current stream: its copy ran on a
  side stream and the current stream waits on that copy's event (``wait_event``: a device-side
  wait; the host never blocks), so the training stream never waits on a copy it does not consume.
* Device memory made on the side stream is ``record_stream``-ed on the consuming stream when the
  batch is handed over, so the caching allocator never reuses it while the training step runs.
* Pinned staging memory comes from torch's caching host allocator: a staging block is reused once
  the copy that read it has completed (the allocator records the copy's stream), so a steady epoch
  allocates no new pinned memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch

__all__ = ["DeviceFeeder", "map_tensors", "resolve_device"]

#: Batches the background thread of :meth:`DeviceFeeder.feed` moves ahead of the consumer.
FEED_DEPTH = 2
#: Most bytes of a run moved at once by :meth:`DeviceFeeder.transfer` (at least one batch): bounds the
#: pinned staging and device memory a piece holds while it is consumed.
PIECE_BYTES = 32 << 20


def resolve_device(device: str | torch.device | None) -> torch.device | None:
    """``"auto"``/``None`` -> None (stay on CPU, as Ray's "auto" without a GPU worker); else a device.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device is None or device == "auto":
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'auto', None or a torch device (e.g. 'cpu', 'cuda:0'), got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available")
    return dev


def map_tensors(obj: Any, fn: Any) -> Any:
    """Apply ``fn`` to every tensor in a nested structure (dict, list, tuple, namedtuple).

    Example:
        >>> map_tensors({"a": [torch.zeros(1)]}, lambda t: t + 1)
        {'a': [tensor([1.])]}
    """
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, Mapping):
        return type(obj)({k: map_tensors(v, fn) for k, v in obj.items()}) if type(obj) is not dict else {  # type: ignore[call-arg]
            k: map_tensors(v, fn) for k, v in obj.items()
        }
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(map_tensors(v, fn) for v in obj))
    if isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)):
        return type(obj)(map_tensors(v, fn) for v in obj) if isinstance(obj, (list, tuple)) else obj
    return obj


def _pinned(t: torch.Tensor) -> torch.Tensor:
    return t if t.device.type != "cpu" or t.is_pinned() else t.pin_memory()


def _each_tensor(piece: Iterable[Any], fn: Any) -> Iterable[Any]:
    """``piece`` with ``fn`` applied to its tensors: a run of views (``convert.RunBatches``) once per
    column, cut again when iterated; other batches tensor by tensor."""
    from .convert import RunBatches

    if isinstance(piece, RunBatches):
        return piece.moved(fn)
    return [map_tensors(b, fn) for b in piece]


class _Arrival:
    """A moved piece, iterated in the consumer's thread: the consumer's current stream first waits on
    the piece's copy event and adopts the piece's device memory (``record_stream``)."""

    __slots__ = ("device", "event", "moved", "piece")

    def __init__(self, piece: Iterable[Any], event: Any, moved: list[torch.Tensor], device: torch.device) -> None:
        self.piece = piece
        self.event = event
        self.moved = moved
        self.device = device

    def __iter__(self) -> Iterator[Any]:  # pragma: no cover - needs CUDA
        current = torch.cuda.current_stream(self.device)
        current.wait_event(self.event)
        for t in self.moved:
            t.record_stream(current)
        self.moved = []
        yield from self.piece


class DeviceFeeder:
    """Pins batches and/or copies them to ``device`` ahead of the consumer (see the module invariants).

    Example:
        >>> feeder = DeviceFeeder("cpu", pin_memory=False)
        >>> feeder.active
        False
        >>> list(feeder.transfer([{"x": torch.ones(2)}]))
        [{'x': tensor([1., 1.])}]
    """

    def __init__(
        self, device: str | torch.device | None, pin_memory: bool, batch_fn: Callable[[Any], Any] | None = None
    ) -> None:
        # ``batch_fn``: applied to each batch after its tensors moved, in the producing thread, on the
        # side stream (a decode on the device); tensors it returns are adopted as the copies are.
        self.batch_fn = batch_fn
        self.device = resolve_device(device)
        self.cuda = self.device is not None and self.device.type == "cuda"
        if self.cuda and self.device.index is None:  # type: ignore[union-attr]
            # The current device of the thread that asks for batches (the producing thread's is 0).
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.pin = bool(pin_memory) and torch.cuda.is_available() and not self.cuda
        if self.device is not None and self.device.type == "cpu":
            self.device = None
        self.active = self.pin or self.device is not None or batch_fn is not None
        self._stream: Any = None

    def _side_stream(self) -> Any:  # pragma: no cover - needs CUDA
        if self._stream is None:
            self._stream = torch.cuda.Stream(device=self.device)
        return self._stream

    def _device_context(self) -> contextlib.AbstractContextManager[Any]:
        """The target device made current (for a producing thread, whose default is device 0)."""
        return torch.cuda.device(self.device) if self.cuda else contextlib.nullcontext()

    def transfer(self, piece: Iterable[Any]) -> Iterable[Any]:
        """``piece`` (a run's batches, or a list of batches) moved to the device or pinned.

        A run of tensor views (``convert.RunBatches``) moves its rows once per column and is cut
        again on the device; other batches move tensor by tensor. Call it in the producing thread;
        iterate the result in the consumer's.

        Example:
            >>> batches = DeviceFeeder(None, pin_memory=False).transfer([{"x": torch.zeros(1)}])
            >>> [b["x"].device.type for b in batches]
            ['cpu']
        """
        if not self.active:
            return piece
        if not self.cuda:  # pinned host memory, or a device with synchronous copies
            if self.batch_fn is not None:
                piece = [self.batch_fn(b) for b in piece]
            if self.pin or self.device is not None:
                return _each_tensor(piece, _pinned if self.device is None else self._to_device)
            return piece
        return self._transfer_cuda(piece)  # pragma: no cover - needs CUDA

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device)

    def _transfer_cuda(self, piece: Iterable[Any]) -> _Arrival:  # pragma: no cover - needs CUDA
        moved: list[torch.Tensor] = []

        def copy(t: torch.Tensor) -> torch.Tensor:
            if t.device == self.device:
                return t
            out = _pinned(t).to(self.device, non_blocking=True)
            moved.append(out)
            return out

        def adopt(t: torch.Tensor) -> torch.Tensor:
            if t.device == self.device and id(t) not in copied:  # made by batch_fn, not a copy
                moved.append(t)
            return t

        stream = self._side_stream()
        with self._device_context(), torch.cuda.stream(stream):
            result = _each_tensor(piece, copy)
            if self.batch_fn is not None:
                copied = {id(t) for t in moved}
                result = [map_tensors(self.batch_fn(b), adopt) for b in result]
            event = torch.cuda.Event()
            event.record(stream)
        return _Arrival(result, event, moved, self.device)  # type: ignore[arg-type]

    def feed(self, batches: Iterator[Any], depth: int = FEED_DEPTH) -> Iterator[Any]:
        """Yield ``batches`` moved to the device (or pinned), ``depth`` batches ahead in a thread.

        Example:
            >>> list(DeviceFeeder("cpu", pin_memory=False).feed(iter([torch.ones(1)])))
            [tensor([1.])]
        """
        if not self.active:
            yield from batches
            return
        from ..iteration.prefetch import prefetch

        def moved() -> Iterator[Iterable[Any]]:
            # Two threads, as DataLoader's main and pin-memory threads: one drives ``batches`` (the
            # workers' results), this one stages and copies, so a large batch's staging copy (the GIL
            # released) overlaps receiving the next instead of following it.
            upstream = prefetch(lambda: batches, depth)
            try:
                with self._device_context():
                    for batch in upstream:
                        yield self.transfer([batch])
            finally:
                upstream.close()  # type: ignore[attr-defined]

        arrivals = prefetch(moved, depth)
        try:
            for arrival in arrivals:
                yield from arrival
        finally:
            arrivals.close()  # type: ignore[attr-defined]
