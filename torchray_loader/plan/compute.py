"""Compute strategies, as ``ray.data.ActorPoolStrategy`` / ``TaskPoolStrategy``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ActorPoolStrategy", "TaskPoolStrategy", "ComputeStrategy", "resolve_compute"]


@dataclass(frozen=True)
class TaskPoolStrategy:
    """Run a transform as stateless tasks on the shared worker pool (fused with neighbours).

    Example:
        >>> TaskPoolStrategy(size=2).size
        2
    """

    size: int | None = None

    def __post_init__(self) -> None:
        if self.size is not None and (not isinstance(self.size, int) or self.size < 1):
            raise ValueError(f"size must be a positive int, got {self.size!r}")


@dataclass(frozen=True)
class ActorPoolStrategy:
    """Run a transform in long-lived worker processes ("actors") that construct a callable class once.

    ``size`` fixes the pool; ``min_size``/``max_size`` let it grow with queue depth.

    Example:
        >>> ActorPoolStrategy(size=2).max_size
        2
    """

    size: int | None = None
    min_size: int | None = None
    max_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("size", "min_size", "max_size"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.size is not None and (self.min_size is not None or self.max_size is not None):
            raise ValueError("give either size or min_size/max_size, not both")
        if self.size is not None:
            object.__setattr__(self, "min_size", self.size)
            object.__setattr__(self, "max_size", self.size)
        if self.min_size is None:
            object.__setattr__(self, "min_size", 1)
        if self.max_size is not None and self.max_size < self.min_size:  # type: ignore[operator]
            raise ValueError(f"max_size ({self.max_size}) must be >= min_size ({self.min_size})")


ComputeStrategy = TaskPoolStrategy | ActorPoolStrategy


def resolve_compute(compute: Any, concurrency: Any, is_class: bool) -> ComputeStrategy:
    """The strategy for one transform, from ``compute=`` / ``concurrency=`` as Ray accepts them."""
    if compute is not None and concurrency is not None:
        raise ValueError("give either compute or concurrency, not both")
    if compute is not None:
        if isinstance(compute, (TaskPoolStrategy, ActorPoolStrategy)):
            if isinstance(compute, TaskPoolStrategy) and is_class:
                raise ValueError("a callable class needs compute=ActorPoolStrategy(...) or concurrency=")
            return compute
        if compute == "tasks":
            return TaskPoolStrategy()
        if compute == "actors":
            return ActorPoolStrategy()
        raise TypeError(f"compute must be an ActorPoolStrategy or TaskPoolStrategy, got {compute!r}")
    if concurrency is not None:
        if isinstance(concurrency, tuple):
            if len(concurrency) != 2:
                raise ValueError(f"concurrency tuple must be (min, max), got {concurrency!r}")
            lo, hi = concurrency
            return ActorPoolStrategy(min_size=lo, max_size=hi) if is_class else TaskPoolStrategy(size=hi)
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise ValueError(f"concurrency must be a positive int or a (min, max) tuple, got {concurrency!r}")
        return ActorPoolStrategy(size=concurrency) if is_class else TaskPoolStrategy(size=concurrency)
    return ActorPoolStrategy() if is_class else TaskPoolStrategy()
