"""Execution statistics per operator, plus the consumer's view (time blocked waiting for data)."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["OperatorStats", "ExecutionStats"]


@dataclass
class OperatorStats:
    """Counters for one operator."""

    name: str
    tasks: int = 0
    blocks: int = 0
    rows: int = 0
    bytes: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0


@dataclass
class ExecutionStats:
    """Counters for one execution; ``to_dict()`` for loggers, ``str()`` for people.

    Example:
        >>> s = ExecutionStats()
        >>> s.operator("Read").rows += 3
        >>> s.to_dict()["operators"]["Read"]["rows"]
        3
    """

    operators: dict[str, OperatorStats] = field(default_factory=dict)
    consumer_wait_s: float = 0.0
    consumer_wall_s: float = 0.0
    batches: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def operator(self, name: str) -> OperatorStats:
        with self._lock:
            op = self.operators.get(name)
            if op is None:
                op = self.operators[name] = OperatorStats(name)
            return op

    def record_task(self, name: str, blocks: list[Any], wall_s: float, cpu_s: float) -> None:
        op = self.operator(name)
        with self._lock:
            op.tasks += 1
            op.blocks += len(blocks)
            op.rows += sum(b.num_rows for b in blocks)
            op.bytes += sum(b.nbytes for b in blocks)
            op.wall_s += wall_s
            op.cpu_s += cpu_s

    def to_dict(self) -> dict[str, Any]:
        wall = self.consumer_wall_s
        return {
            "operators": {k: {f: v for f, v in asdict(o).items() if f != "name"} for k, o in self.operators.items()},
            "iteration": {
                "batches": self.batches,
                "wait_s": self.consumer_wait_s,
                "wall_s": wall,
                "wait_fraction": (self.consumer_wait_s / wall) if wall > 0 else 0.0,
                "batches_per_s": (self.batches / wall) if wall > 0 else 0.0,
            },
        }

    def __str__(self) -> str:
        lines = []
        for name, o in self.operators.items():
            lines.append(
                f"Operator {name}: {o.tasks} tasks, {o.blocks} blocks, {o.rows} rows, "
                f"{o.bytes / 2**20:.1f} MiB, {o.wall_s:.3f}s wall, {o.cpu_s:.3f}s cpu in tasks"
            )
        it = self.to_dict()["iteration"]
        if it["batches"]:
            lines.append(
                f"Iteration: {it['batches']} batches, {it['batches_per_s']:.1f} batches/s, blocked on data "
                f"{it['wait_s']:.3f}s of {it['wall_s']:.3f}s ({100 * it['wait_fraction']:.1f}%)"
            )
        return "\n".join(lines) if lines else "(not executed yet)"
