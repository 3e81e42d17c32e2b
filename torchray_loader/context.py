"""Process-wide execution defaults, as Ray's ``DataContext``."""

from __future__ import annotations

import copy
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import ClassVar, Literal

__all__ = ["DataContext"]

StartMethod = Literal["fork", "forkserver", "spawn"]


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("0", "false", "no", "off", "")


def _default_start_method() -> StartMethod:
    # fork, as torch's DataLoader does on Linux: workers start in milliseconds and share the parent's
    # imported modules and read-only data. Workers never touch CUDA or the parent's threads' locks
    # (they only run user transforms), which is what makes fork unsafe elsewhere. macOS/Windows
    # have no safe fork, so they get spawn, again as DataLoader.
    return "fork" if sys.platform.startswith("linux") else "spawn"


@dataclass
class DataContext:
    """Defaults for execution, shared by every Dataset built in this process.

    Example:
        >>> import torchray_loader as rd
        >>> ctx = rd.DataContext.get_current()
        >>> ctx.target_max_block_size > 0
        True
    """

    #: Target size of one block produced by a source or a transform, in bytes.
    target_max_block_size: int = 128 * 1024 * 1024
    #: Rows per block for in-memory sources (``range``, ``from_items``...), when not given.
    target_rows_per_block: int = 32_768
    #: Bytes of data allowed in flight between workers and the consumer (tasks running, results
    #: waiting in the reorder buffer); batches made ahead are bounded by ``prefetch_batches`` on top
    #: (docs/reliability.md, "What the memory budget covers").
    memory_budget_bytes: int = 1024 * 1024 * 1024
    #: Worker processes for transforms and reads; ``None`` means ``os.cpu_count()``. A read that is
    #: Arrow from end to end (``read_parquet`` with nothing fused after it) runs on this many threads
    #: of this process instead: Arrow releases the GIL, and its blocks then need no copy between
    #: processes.
    num_workers: int | None = None
    #: How worker processes are started.
    start_method: StartMethod = field(default_factory=_default_start_method)
    #: Deliver blocks in task order (deterministic). ``False`` trades order for throughput.
    preserve_order: bool = True
    #: Show tqdm progress bars for long operations (never when stderr is not a TTY).
    enable_progress_bars: bool = field(default_factory=lambda: _env_flag("TORCHRAY_PROGRESS_BARS", True))
    #: Times a task is re-run after its worker died or timed out.
    max_task_retries: int = 3
    #: Seconds a single task may run before its worker is killed and the task retried; ``None``: no limit.
    task_timeout_s: float | None = None
    #: Policy for unreadable files and rows: ``"raise"`` or ``"skip"`` (log and count).
    on_read_error: Literal["raise", "skip"] = "raise"
    #: With ``on_read_error="skip"``: how many failures are tolerated before raising.
    read_error_budget: int = 0
    #: Allow reading files that carry pickled Python objects (never by default).
    allow_pickle: bool = False
    #: Seed of the random operators given no seed (``random_shuffle()``, ``randomize_block_order()``,
    #: ``repartition(shuffle=True)``) in one execution, each its own stream of it; ``None`` draws new
    #: entropy every execution, as Ray does. ``RayStyleLoader`` sets it per epoch (and keeps it in its
    #: state), so a resumed epoch and every rank's share see the same permutation.
    unseeded_random_seed: int | None = None

    _current: ClassVar[DataContext | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def get_current(cls) -> DataContext:
        """The process-wide context, created on first use.

        Example:
            >>> import torchray_loader as rd
            >>> rd.DataContext.get_current() is rd.DataContext.get_current()
            True
        """
        with cls._lock:
            if cls._current is None:
                cls._current = DataContext()
            return cls._current

    @classmethod
    def _set_current(cls, ctx: DataContext) -> None:
        with cls._lock:
            cls._current = ctx

    def copy(self) -> DataContext:
        """A detached copy (what a Dataset snapshots when it executes)."""
        return copy.copy(self)

    def resolved_num_workers(self) -> int:
        """``num_workers`` with ``None`` resolved to the CPU count."""
        if self.num_workers is not None:
            return self.num_workers
        return os.cpu_count() or 1
