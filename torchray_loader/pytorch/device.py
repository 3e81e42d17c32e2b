"""Moving batches to a device: pinned host buffers and copies on a side CUDA stream, one batch ahead.

Invariant: a batch handed to the training loop is ready to use on the current stream: the copy ran
on a side stream and the current stream waits on that copy's event (``wait_event``), so the training
stream never blocks the host and never waits on a copy it does not consume. Tensors are kept alive
with ``record_stream`` until the consuming stream is done with them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

__all__ = ["DeviceFeeder", "map_tensors", "resolve_device"]


def resolve_device(device: str | torch.device | None) -> torch.device | None:
    """``"auto"``/``None`` -> None (stay on CPU, as Ray's "auto" without a GPU worker); else a device.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device is None or device == "auto":
        return None
    dev = torch.device(device)
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


class DeviceFeeder:
    """Pins batches and/or copies them to ``device`` one batch ahead of the consumer.

    Example:
        >>> feeder = DeviceFeeder("cpu", pin_memory=False)
        >>> feeder.active
        False
    """

    def __init__(self, device: str | torch.device | None, pin_memory: bool) -> None:
        self.device = resolve_device(device)
        self.cuda = self.device is not None and self.device.type == "cuda"
        self.pin = bool(pin_memory) and torch.cuda.is_available()
        if self.device is not None and self.device.type == "cpu":
            self.device = None
        self.active = self.pin or self.device is not None

    def _pin(self, t: torch.Tensor) -> torch.Tensor:
        return t if t.is_pinned() or t.device.type != "cpu" else t.pin_memory()

    def feed(self, batches: Iterator[Any]) -> Iterator[Any]:
        """Yield ``batches`` moved to the device (or pinned), overlapping the next copy with use."""
        if not self.cuda:
            try:
                for batch in batches:
                    yield map_tensors(batch, self._pin) if self.pin else map_tensors(batch, lambda t: t.to(self.device))
            finally:
                close = getattr(batches, "close", None)
                if close:
                    close()
            return
        yield from self._feed_cuda(batches)

    def _feed_cuda(self, batches: Iterator[Any]) -> Iterator[Any]:  # pragma: no cover - needs CUDA
        stream = torch.cuda.Stream(device=self.device)

        def copy(batch: Any) -> tuple[Any, torch.cuda.Event]:
            with torch.cuda.stream(stream):
                moved = map_tensors(batch, lambda t: self._pin(t).to(self.device, non_blocking=True))
                event = torch.cuda.Event()
                event.record(stream)
            return moved, event

        it = iter(batches)
        try:
            pending = None
            for batch in it:
                nxt = copy(batch)
                if pending is not None:
                    yield self._ready(*pending)
                pending = nxt
            if pending is not None:
                yield self._ready(*pending)
        finally:
            close = getattr(it, "close", None)
            if close:
                close()

    def _ready(self, batch: Any, event: Any) -> Any:  # pragma: no cover - needs CUDA
        current = torch.cuda.current_stream(self.device)
        current.wait_event(event)

        def keep(t: torch.Tensor) -> torch.Tensor:
            if t.is_cuda:
                t.record_stream(current)
            return t

        return map_tensors(batch, keep)
