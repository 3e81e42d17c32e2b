"""The streaming executor: walks a logical plan and yields its output blocks, lazily.

Invariants:
* Output order is a pure function of the plan and the seeds (task order, via ordered ``imap``),
  never of ``num_workers`` or timing, unless ``DataContext.preserve_order`` is False.
* Task stages run on one shared pool per execution; each actor stage gets its own pool, whose
  workers construct the stage's callable classes once.
* Everything started here is stopped in ``finally`` (normal end, ``break``, error, GC).
* A block recorded in ``private_blocks`` is memory no one else references: a worker's result,
  unpickled in this process for this execution, a block a ``fresh_output`` read built here, or a
  ``map_batches`` result whose arrays the function did not keep (``blocks.ownership``); never a
  block of the plan's inputs or a cache.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
import weakref
from collections.abc import Generator, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..blocks import buffers, column_from_values, column_to_numpy
from ..blocks.block import first_rows
from ..blocks.ownership import collecting_fresh
from ..cancellation import check_cancelled
from ..context import DataContext
from ..io.read_task import ReadTask
from ..plan.compute import ActorPoolStrategy
from ..plan.operators import AllToAll, InputBlocks, Limit, LogicalOp, MapStage, Read, Union
from ..plan.transforms import BlockTransform, MapBatches, run_chain
from ..seeds import epoch_seed
from .pool import TaskPool, make_pool, shared_objects
from .stats import ExecutionStats
from .thread_pool import ThreadPool

__all__ = ["execute", "TaskResult"]

logger = logging.getLogger("torchray_loader")


@dataclass
class TaskResult:
    """What one task sends back: its output blocks and how long it ran."""

    blocks: list[pa.Table]
    wall_s: float
    cpu_s: float
    #: Per block: a ``map_batches`` result whose arrays its function did not keep (``blocks.ownership``).
    fresh: tuple[bool, ...]


def _timed(gen: Iterator[pa.Table]) -> TaskResult:
    t0, c0 = time.perf_counter(), time.process_time()
    with collecting_fresh() as marked:
        blocks = [_tensors_in_transfer_file(b) for b in gen if b.num_rows > 0 or b.num_columns > 0]
    fresh = tuple(marked.get(id(b)) is b for b in blocks)
    return TaskResult(blocks, time.perf_counter() - t0, time.process_time() - c0, fresh)


def _tensors_in_transfer_file(block: pa.Table) -> pa.Table:
    """``block`` with each fixed-shape tensor column of several chunks (a read task's per-file
    tables: one chunk per image) rebuilt as one chunk inside the task's transfer file.

    The copy replaces the one the transfer would make, and the consumer then slices batches out of
    one array instead of concatenating a chunk per row. Without a transfer file (an inline task) or
    with null rows, the block is returned unchanged.
    """
    for i, field in enumerate(block.schema):
        column = block.column(i)
        if column.num_chunks < 2 or not isinstance(field.type, pa.FixedShapeTensorType) or column.null_count:
            continue
        shape = tuple(field.type.shape)
        dtype = np.dtype(field.type.value_type.to_pandas_dtype())
        nbytes = block.num_rows * int(np.prod(shape)) * dtype.itemsize
        if nbytes < buffers.MIN_TRANSFER_BYTES:
            continue
        buf = buffers.transfer_buffer(nbytes)
        if buf is None:
            return block
        out = np.frombuffer(buf, dtype=dtype).reshape(block.num_rows, *shape)
        np.concatenate([column_to_numpy(chunk) for chunk in column.chunks], out=out)
        block = block.set_column(i, field, column_from_values(out))
    return block


def read_and_transform(
    transforms: tuple[BlockTransform, ...], shared: Mapping[str, Any], task: ReadTask
) -> TaskResult:
    """Task body: read (``shared``: the Read's shared objects), then apply the fused transforms."""
    with shared_objects(shared):
        return _timed(run_chain(transforms, task.blocks()))


def transform_blocks(transforms: tuple[BlockTransform, ...], blocks: list[pa.Table]) -> TaskResult:
    """Task body: apply the fused transforms to one task's input, consecutive upstream blocks."""
    return _timed(run_chain(transforms, blocks))


def _bundle_rows(transforms: tuple[BlockTransform, ...]) -> int | None:
    """Rows a task's input should hold: a stage that starts with ``map_batches(batch_size=n)`` gets
    upstream blocks bundled up to ``n`` rows (as Ray bundles them), so small blocks still make
    full batches; ``None``: one block per task."""
    first = transforms[0] if transforms else None
    return first.batch_size if isinstance(first, MapBatches) and first.batch_size is not None else None


def bundle_blocks(blocks: Iterable[pa.Table], min_rows: int) -> Iterator[list[pa.Table]]:
    """Consecutive blocks, grouped until a group holds at least ``min_rows`` rows (the last group
    may hold fewer). A block of ``min_rows`` or more goes alone.

    Example:
        >>> sizes = [1, 2, 5, 1, 1]
        >>> [[b.num_rows for b in g] for g in bundle_blocks([pa.table({"a": [0] * n}) for n in sizes], 3)]
        [[1, 2], [5], [1, 1]]
    """
    group: list[pa.Table] = []
    rows = 0
    for block in blocks:
        group.append(block)
        rows += block.num_rows
        if rows >= min_rows:
            yield group
            group, rows = [], 0
    if group:
        yield group


class _Execution:
    def __init__(
        self, ctx: DataContext, stats: ExecutionStats, shared: dict[str, Any],
        private_blocks: MutableMapping[int, pa.Table] | None = None,
    ) -> None:
        self.ctx = ctx
        self.private_blocks = private_blocks
        self.stats = stats
        self.pools: list[TaskPool] = []
        self._task_pool: TaskPool | None = None
        self.shared = shared  # every Read's shared objects: the task pool's workers get them at start
        self._thread_pool: ThreadPool | None = None
        self._unseeded_ops = 0  # random operators without a seed met so far (their order is the plan's)

    def task_pool(self) -> TaskPool:
        if self._task_pool is None:
            nw = self.ctx.resolved_num_workers()
            # One worker at once, the others as tasks wait for them: the first task runs while the
            # next worker forks (a fork of a consumer holding torch takes ~13 ms), and a read of
            # fewer tasks than workers never starts the rest. Idle workers stop once every task is
            # handed out: their exit overlaps the consumer's last batches, not the iterator's end.
            self._task_pool = make_pool(
                nw, self.ctx, name="tasks", min_workers=1, shared=self.shared or None, retire_idle=True
            )
            self.pools.append(self._task_pool)
        return self._task_pool

    def read_pool(self, read: Read) -> TaskPool:
        """The pool for ``read``'s tasks alone (no transform fused): threads of this process when
        every task releases the GIL (no fork, no copy of its blocks), else the task pool. A
        ``task_timeout_s`` needs processes: a thread cannot be stopped."""
        nw = self.ctx.resolved_num_workers()
        if (
            nw == 0
            or self.ctx.task_timeout_s is not None
            or read.shared
            or not read.tasks
            or not all(t.releases_gil for t in read.tasks)
        ):
            return self.task_pool()
        if self._thread_pool is None:
            self._thread_pool = ThreadPool(nw, self.ctx.memory_budget_bytes)
            self.pools.append(self._thread_pool)
        return self._thread_pool

    def read_fn(self, pool: TaskPool, transforms: tuple[BlockTransform, ...], read: Read) -> Any:
        """The task function of ``read``'s tasks on ``pool``: it carries the shared objects the
        pool's workers did not get at their start (an inline pool gets none)."""
        carried = read.shared if pool.num_workers == 0 else {
            k: v for k, v in read.shared.items() if k not in self.shared
        }
        return functools.partial(read_and_transform, transforms, carried)

    def actor_pool(self, compute: ActorPoolStrategy) -> TaskPool:
        workers = self.ctx.resolved_num_workers()
        max_size = compute.max_size or max(1, workers)
        min_size = compute.min_size or 1
        if workers == 0:
            pool = make_pool(0, self.ctx)
        else:
            pool = make_pool(max_size, self.ctx, name="actors", min_workers=min_size)
        self.pools.append(pool)
        return pool

    def close(self) -> None:
        for pool in reversed(self.pools):
            pool.close()
        self.pools.clear()

    # ------------------------------------------------------------------ plan walking

    def run_tasks(self, pool: TaskPool, fn, items, name: str, *, fresh_output: bool = False) -> Iterator[pa.Table]:
        """``fn`` over ``items`` on ``pool``, its blocks in order. ``fresh_output``: ``fn`` builds
        every block in new memory nothing else references, so its blocks are private even when they
        are built in this process (``num_workers=0``)."""
        private = self.private_blocks
        every_block = pool.num_workers > 0 or fresh_output
        for result in pool.imap(fn, items, ordered=self.ctx.preserve_order, name=name):
            self.stats.record_task(name, result.blocks, result.wall_s, result.cpu_s)
            if private is not None:
                for block, is_fresh in zip(result.blocks, result.fresh, strict=True):
                    if every_block or is_fresh:  # is_fresh: a UDF's return value it did not keep
                        private[id(block)] = block
            yield from result.blocks

    def iter_op(self, op: LogicalOp) -> Generator[pa.Table, None, None]:
        if isinstance(op, Read):
            pool = self.read_pool(op)
            yield from self.run_tasks(pool, self.read_fn(pool, (), op), op.tasks, op.name, fresh_output=op.fresh_output)
        elif isinstance(op, InputBlocks):
            for i in range(len(op.blocks)):
                yield op.blocks[i]
        elif isinstance(op, MapStage):
            yield from self.iter_map(op)
        elif isinstance(op, Limit):
            yield from self.iter_limit(op)
        elif isinstance(op, Union):
            for child in op.union_inputs:
                yield from self.iter_op(child)
        elif isinstance(op, AllToAll):
            yield from self.iter_all_to_all(op)
        else:  # pragma: no cover
            raise TypeError(f"unknown operator {op!r}")

    def iter_map(self, op: MapStage) -> Iterator[pa.Table]:
        if not isinstance(op.compute, ActorPoolStrategy) and isinstance(op.input, Read):
            pool = self.task_pool()  # the read fused into the map tasks (a task batches across its blocks)
            fn = self.read_fn(pool, op.transforms, op.input)
            yield from self.run_tasks(pool, fn, op.input.tasks, f"{op.input.name}->{op.name}")
            return
        pool = self.actor_pool(op.compute) if isinstance(op.compute, ActorPoolStrategy) else self.task_pool()
        upstream = self.iter_op(op.input)
        min_rows = _bundle_rows(op.transforms)
        inputs = ([b] for b in upstream) if min_rows is None else bundle_blocks(upstream, min_rows)
        yield from self.run_tasks(pool, functools.partial(transform_blocks, op.transforms), inputs, op.name)

    def iter_limit(self, op: Limit) -> Iterator[pa.Table]:
        if op.n > 0:
            yield from first_rows(self.iter_op(_limit_reads(op.input, op.n)), op.n)

    def _unseeded_seed(self) -> int:
        """A seed for the next random operator given none: from ``ctx.unseeded_random_seed`` (the
        k-th such operator of the plan gets stream k of it), else new entropy."""
        base = self.ctx.unseeded_random_seed
        self._unseeded_ops += 1
        if base is None:
            return int(np.random.SeedSequence().entropy % (2**63))  # type: ignore[operator]
        return epoch_seed(base, self._unseeded_ops)

    def iter_all_to_all(self, op: AllToAll) -> Iterator[pa.Table]:
        seed = op.seed if op.seed is not None else self._unseeded_seed()
        if op.block_order_only:
            permuted = _permute_source(op.input, seed)
            if permuted is not None:
                yield from self.iter_op(permuted)
                return
        t0 = time.perf_counter()
        blocks = []
        upstream = self.iter_op(op.input)
        try:
            for block in upstream:
                check_cancelled()  # the whole input arrives before the first output: stop on the way
                blocks.append(block)
        finally:
            upstream.close()
        check_cancelled()
        out = op.fn(blocks, seed)
        self.stats.record_task(op.name, out, time.perf_counter() - t0, 0.0)
        yield from out


def _shared_objects_of(op: LogicalOp) -> dict[str, Any]:
    """The shared objects of every Read in the plan below ``op``."""
    found = dict(op.shared) if isinstance(op, Read) else {}
    for child in op.inputs:
        found.update(_shared_objects_of(child))
    return found


def _limit_reads(op: LogicalOp, n: int) -> LogicalOp:
    """``op`` with each read task below it cut to its first ``n`` rows, where only stages that keep
    rows one for one (``preserves_rows``) lie between: no task is then needed beyond its first
    ``n`` rows for the plan's first ``n``, so ``take(1)`` reads one block, not whole files."""
    if isinstance(op, Read):
        return dataclasses.replace(op, tasks=tuple(t.limited(n) for t in op.tasks))
    if isinstance(op, MapStage) and all(t.preserves_rows for t in op.transforms):
        return MapStage(_limit_reads(op.input, n), op.transforms, op.compute)
    if isinstance(op, Limit):
        return Limit(_limit_reads(op.input, min(n, op.n)), op.n, op.name)
    if isinstance(op, Union):
        return Union(tuple(_limit_reads(child, n) for child in op.union_inputs), op.name)
    return op


def _permute_source(op: LogicalOp, seed: int) -> LogicalOp | None:
    """The same plan with its source's tasks/blocks permuted, or None when the chain below is not
    a pure map chain over one source (then blocks are materialized and permuted instead)."""
    if isinstance(op, MapStage):
        inner = _permute_source(op.input, seed)
        return None if inner is None else MapStage(inner, op.transforms, op.compute)
    rng = np.random.default_rng(seed)
    if isinstance(op, Read):
        order = rng.permutation(len(op.tasks))
        return dataclasses.replace(op, tasks=tuple(op.tasks[i] for i in order))
    if isinstance(op, InputBlocks):
        order = rng.permutation(len(op.blocks))
        return InputBlocks([op.blocks[i] for i in order], op.name)
    return None


_warned_workers: set[int] = set()


def _warn_oversubscribed(ctx: DataContext) -> None:
    cores = os.cpu_count() or 1
    n = ctx.resolved_num_workers()
    if n > cores and n not in _warned_workers:
        _warned_workers.add(n)
        logger.warning("num_workers=%d is above the %d CPU cores of this machine: workers will compete for CPU", n, cores)


def execute(
    plan: LogicalOp, ctx: DataContext | None = None, stats: ExecutionStats | None = None, *,
    private_blocks: weakref.WeakValueDictionary[int, pa.Table] | None = None,
) -> Generator[pa.Table, None, None]:
    """Yield the plan's output blocks. Closing the generator stops all workers.

    ``private_blocks``: when given, every block that is this execution's private memory (a worker's
    result, unpickled here, or a ``fresh_output`` read's block) is recorded there by ``id``, so a
    consumer that is the blocks' only user may hand their memory out without a copy.

    Example:
        >>> import pyarrow as pa
        >>> from torchray_loader.plan import InputBlocks
        >>> [b.num_rows for b in execute(InputBlocks([pa.table({"a": [1, 2]})]))]
        [2]
    """
    ctx = (ctx or DataContext.get_current()).copy()
    _warn_oversubscribed(ctx)
    execution = _Execution(ctx, stats if stats is not None else ExecutionStats(), _shared_objects_of(plan), private_blocks)
    try:
        yield from execution.iter_op(plan)
    finally:
        execution.close()
