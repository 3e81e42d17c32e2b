"""Logical operators: frozen descriptions of what to compute. Nothing here executes.

A plan is a tree of these; ``Dataset`` builds it, ``execution.executor`` walks it. ``MapStage``
holds a tuple of fused transforms, so ``ds.map(f).map(g)`` is one stage ``(Map(f), Map(g))``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ..io.read_task import ReadTask
from .compute import ActorPoolStrategy, ComputeStrategy, TaskPoolStrategy
from .transforms import BlockTransform

__all__ = [
    "LogicalOp",
    "Read",
    "InputBlocks",
    "MapStage",
    "Limit",
    "Union",
    "AllToAll",
    "append_transform",
]


class LogicalOp:
    """Base class; ``inputs`` lists upstream operators."""

    name: str = "Op"

    @property
    def inputs(self) -> tuple[LogicalOp, ...]:
        return ()


@dataclass(frozen=True, eq=False)
class Read(LogicalOp):
    """A source: read tasks, run in parallel. ``name`` is e.g. ``ReadParquet``.

    ``shared``: large objects the tasks reach through ``SharedRef`` keys (a user's torch dataset),
    sent to each worker once per execution instead of with every task. Rebuild a Read with
    ``dataclasses.replace`` so they stay with its tasks.

    ``on_device``: for ``read_images(..., decode_on_device=True)``, an ``io.images.DeviceDecode``:
    ``iter_torch_batches(device=...)`` runs the tasks' encoded ``twin`` tasks instead and decodes in
    the consumer on its device. Everything else runs ``tasks``.

    ``fresh_output``: every block a task returns is new memory that nothing else references (a file
    decoded, a range generated; never a user's object). A block such a task builds in the consumer
    (``num_workers=0``) is then the iteration's own, like a worker's result, and becomes tensors
    without a copy.
    """

    tasks: tuple[ReadTask, ...]
    name: str = "Read"
    schema_hint: pa.Schema | None = None
    shared: Mapping[str, Any] = field(default_factory=dict)
    on_device: Any = None
    fresh_output: bool = False


@dataclass(frozen=True, eq=False)
class InputBlocks(LogicalOp):
    """Blocks already in memory (``from_*`` sources and materialized datasets).

    ``blocks`` is a sequence of ``pa.Table`` or a block store exposing ``__len__``/``__getitem__``.
    """

    blocks: Sequence[pa.Table]
    name: str = "InputBlocks"


@dataclass(frozen=True, eq=False)
class MapStage(LogicalOp):
    """A chain of fused block transforms applied to each upstream block (or read task)."""

    input: LogicalOp
    transforms: tuple[BlockTransform, ...]
    compute: ComputeStrategy = TaskPoolStrategy()

    @property
    def inputs(self) -> tuple[LogicalOp, ...]:
        return (self.input,)

    @property
    def name(self) -> str:  # type: ignore[override]
        return "->".join(t.name for t in self.transforms)


@dataclass(frozen=True, eq=False)
class Limit(LogicalOp):
    """The first ``n`` rows of the input, in order."""

    input: LogicalOp
    n: int
    name: str = "Limit"

    @property
    def inputs(self) -> tuple[LogicalOp, ...]:
        return (self.input,)


@dataclass(frozen=True, eq=False)
class Union(LogicalOp):
    """Inputs one after another."""

    union_inputs: tuple[LogicalOp, ...]
    name: str = "Union"

    @property
    def inputs(self) -> tuple[LogicalOp, ...]:
        return self.union_inputs


@dataclass(frozen=True, eq=False)
class AllToAll(LogicalOp):
    """An operator that needs all input blocks: ``fn(blocks) -> blocks`` (shuffle, repartition...).

    ``fn`` receives ``(blocks, seed)``: the user's ``seed``, else one the executor picks per execution
    (from ``DataContext.unseeded_random_seed`` where set, else new entropy), so each epoch differs.
    """

    input: LogicalOp
    fn: Callable[[list[pa.Table], Any], list[pa.Table]]
    name: str
    seed: int | None = None
    #: True when the op only reorders blocks, so it can permute read tasks instead (streaming).
    block_order_only: bool = False

    @property
    def inputs(self) -> tuple[LogicalOp, ...]:
        return (self.input,)


def append_transform(op: LogicalOp, transform: BlockTransform, compute: ComputeStrategy) -> LogicalOp:
    """Add a transform after ``op``, fusing it into ``op`` when both run as plain tasks.

    Task stages fuse with task stages; an actor-pool stage fuses only with an identical strategy, so
    each actor stage keeps its own pool.
    """
    if isinstance(op, MapStage) and _fusable(op.compute, compute):
        return MapStage(op.input, op.transforms + (transform,), op.compute)
    return MapStage(op, (transform,), compute)


def _fusable(a: ComputeStrategy, b: ComputeStrategy) -> bool:
    if isinstance(a, TaskPoolStrategy) and isinstance(b, TaskPoolStrategy):
        return a == b
    return False


def is_actor(compute: ComputeStrategy) -> bool:
    return isinstance(compute, ActorPoolStrategy)
