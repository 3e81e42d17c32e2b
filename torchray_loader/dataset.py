"""``Dataset``: a lazy, immutable plan over Arrow blocks with the ``ray.data.Dataset`` API."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
import logging
import math
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence, Sized
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .blocks import Schema, block_to_batch, block_to_rows, check_batch_format, concat_blocks
from .context import DataContext
from .execution import ExecutionStats, execute
from .execution.progress import with_progress
from .iteration import BatchRun, iter_batch_runs, prefetch
from .plan import (
    AllToAll,
    InputBlocks,
    Limit,
    LogicalOp,
    MapStage,
    Read,
    Union,
    append_transform,
    resolve_compute,
)
from .plan.compute import ComputeStrategy, TaskPoolStrategy
from .plan.expressions import ArrowFilter
from .plan.transforms import (
    AddColumn,
    BlockTransform,
    DropColumns,
    Filter,
    FlatMap,
    MapBatches,
    MapRows,
    RenameColumns,
    SelectColumns,
)

if TYPE_CHECKING:
    import pandas
    import torch

    from .io.read_task import ReadTask

__all__ = ["Dataset", "MaterializedDataset", "DataIterator"]

#: ``map_batches``' default batch size, as Ray's.
DEFAULT_MAP_BATCH_SIZE = 1024
#: ``iter_batches``' default batch size, as Ray's.
DEFAULT_ITER_BATCH_SIZE = 256

# Transforms that keep the row count of every block (used to count rows from metadata).
_ROW_PRESERVING = (MapRows, AddColumn, SelectColumns, DropColumns, RenameColumns)


#: Ray's remote-function and actor options, which Ray Data's transforms pass on to Ray (`to_ray()`
#: keeps the pipeline's transforms, not these): accepted and ignored here, anything else is a typo.
_RAY_REMOTE_OPTIONS = frozenset({
    "accelerator_type", "allow_out_of_order_execution", "concurrency_groups", "enable_task_events",
    "enable_tensor_transport", "fallback_strategy", "get_if_exists", "label_selector", "lifetime", "max_calls",
    "max_concurrency", "max_pending_calls", "max_restarts", "max_retries", "max_task_retries", "memory", "name",
    "namespace", "num_cpus", "num_gpus", "num_returns", "object_store_memory", "placement_group",
    "placement_group_bundle_index", "placement_group_capture_child_tasks", "resources", "retry_exceptions",
    "runtime_env", "scheduling_strategy", "_labels", "_generator_backpressure_num_objects",
    # Ray Data's own scheduling arguments, where a method here does not name them itself
    "ray_remote_args", "ray_remote_args_fn", "udf_modifying_row_count", "compute", "concurrency",
})


def _check_remote_args(args: Mapping[str, Any], method: str) -> None:
    unknown = sorted(k for k in args if k not in _RAY_REMOTE_OPTIONS)
    if unknown:
        raise TypeError(
            f"{method}() got unexpected keyword argument(s) {unknown}: besides its own arguments it takes only Ray's "
            "remote options (num_cpus, num_gpus, memory, resources, ...)"
        )


def _check_fn(fn: Any, name: str = "fn") -> None:
    if not callable(fn):
        raise TypeError(f"{name} must be a function or a callable class, got {type(fn).__name__}")


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_seed(value: Any, name: str = "seed") -> int | None:
    """``None`` (a new draw each execution) or a non-negative int, as numpy's seeding needs."""
    return None if value is None else _check_int(value, name, 0)


def _split_rows(blocks: Sequence[pa.Table], bounds: Sequence[tuple[int, int]]) -> list[list[pa.Table]]:
    """Zero-copy row ranges ``[start, stop)`` of the concatenation of ``blocks``."""
    offsets = np.cumsum([0] + [b.num_rows for b in blocks])
    out = []
    for start, stop in bounds:
        pieces = []
        for i, b in enumerate(blocks):
            lo, hi = max(start, offsets[i]), min(stop, offsets[i + 1])
            if hi > lo:
                pieces.append(b.slice(int(lo - offsets[i]), int(hi - lo)))
        out.append(pieces)
    return out


# ------------------------------------------------------------------------------ all-to-all bodies


def _random_shuffle(blocks: list[pa.Table], seed: int) -> list[pa.Table]:
    table = concat_blocks(blocks)
    if table.num_rows == 0:
        return blocks
    perm = np.random.default_rng(seed).permutation(table.num_rows)
    shuffled = table.take(perm)
    n = max(1, len(blocks))
    edges = np.linspace(0, table.num_rows, n + 1).astype(np.int64)
    return [shuffled.slice(int(a), int(b - a)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _randomize_block_order(blocks: list[pa.Table], seed: int) -> list[pa.Table]:
    order = np.random.default_rng(seed).permutation(len(blocks))
    return [blocks[i] for i in order]


def _repartition(num_blocks: int, blocks: list[pa.Table], seed: Any) -> list[pa.Table]:
    table = concat_blocks(blocks)
    if table.num_rows == 0:
        return [table] if table.num_columns else []
    edges = np.linspace(0, table.num_rows, num_blocks + 1).astype(np.int64)
    return [table.slice(int(a), int(b - a)).combine_chunks() for a, b in zip(edges[:-1], edges[1:], strict=True)]


class Dataset:
    """A lazy, immutable dataset of rows held as Arrow blocks. Every method returns a new Dataset.

    Build one with a source (``range``, ``from_items``, ``read_parquet``...), chain transforms,
    then consume it (``iter_torch_batches``, ``take``, ``write_parquet``...). Nothing runs until then.

    Example:
        >>> import torchray_loader as rd
        >>> ds = rd.range(8).map(lambda r: {"id": r["id"], "sq": r["id"] ** 2}).filter(lambda r: r["id"] % 2 == 0)
        >>> ds.take(2)
        [{'id': 0, 'sq': 0}, {'id': 2, 'sq': 4}]
    """

    def __init__(self, plan: LogicalOp) -> None:
        if not isinstance(plan, LogicalOp):
            raise TypeError(f"Dataset expects a logical plan, got {type(plan).__name__}")
        self._plan = plan
        self._last_stats: ExecutionStats | None = None

    # ------------------------------------------------------------------------------ internals

    def _with(self, plan: LogicalOp) -> Dataset:
        return Dataset(plan)

    def _transform(self, transform: BlockTransform, compute: ComputeStrategy = TaskPoolStrategy()) -> Dataset:
        return self._with(append_transform(self._plan, transform, compute))

    def iter_internal_blocks(
        self, ctx: DataContext | None = None, *, progress: str | None = None
    ) -> Generator[pa.Table, None, None]:
        """The dataset's blocks, executed lazily (closing the iterator stops the workers).

        ``progress`` names a progress bar for whole-dataset operations (shown only on a terminal).
        """
        stats = ExecutionStats()
        self._last_stats = stats
        blocks = execute(self._plan, ctx, stats)
        if progress is None:
            return blocks
        return with_progress(blocks, progress, ctx, _known_num_rows(self._plan))

    def _udf_kwargs(self, fn: Any, fn_args: Any, fn_kwargs: Any, ctor_args: Any, ctor_kwargs: Any) -> dict[str, Any]:
        _check_fn(fn)
        is_class = inspect.isclass(fn)
        if not is_class and (ctor_args or ctor_kwargs):
            raise ValueError("fn_constructor_args/fn_constructor_kwargs are only for callable classes")
        return dict(
            fn=fn,
            fn_args=tuple(fn_args or ()),
            fn_kwargs=dict(fn_kwargs or {}),
            fn_constructor_args=tuple(ctor_args or ()),
            fn_constructor_kwargs=dict(ctor_kwargs or {}),
        )

    # ------------------------------------------------------------------------------ transforms

    def map(
        self,
        fn: Callable[[dict[str, Any]], dict[str, Any]] | type,
        *,
        compute: Any = None,
        fn_args: Sequence[Any] | None = None,
        fn_kwargs: Mapping[str, Any] | None = None,
        fn_constructor_args: Sequence[Any] | None = None,
        fn_constructor_kwargs: Mapping[str, Any] | None = None,
        concurrency: int | tuple[int, int] | None = None,
        **ray_remote_args: Any,
    ) -> Dataset:
        """Apply ``fn`` to each row (a dict of column -> value); it returns one row dict.

        Torch tensors in the returned row become tensor columns; later transforms see numpy arrays.

        Example:
            >>> import torchray_loader as rd
            >>> rd.range(2).map(lambda row: {"x": row["id"] * 10}).take_all()
            [{'x': 0}, {'x': 10}]
        """
        _check_remote_args(ray_remote_args, "map")
        kw = self._udf_kwargs(fn, fn_args, fn_kwargs, fn_constructor_args, fn_constructor_kwargs)
        c = resolve_compute(compute, concurrency, inspect.isclass(fn))
        return self._transform(MapRows(**kw), c)

    def map_batches(
        self,
        fn: Callable[[Any], Any] | type,
        *,
        batch_size: int | None | str = "default",
        compute: Any = None,
        batch_format: str | None = "default",
        zero_copy_batch: bool = False,
        fn_args: Sequence[Any] | None = None,
        fn_kwargs: Mapping[str, Any] | None = None,
        fn_constructor_args: Sequence[Any] | None = None,
        fn_constructor_kwargs: Mapping[str, Any] | None = None,
        concurrency: int | tuple[int, int] | None = None,
        **ray_remote_args: Any,
    ) -> Dataset:
        """Apply ``fn`` to batches: a dict of numpy arrays (``"numpy"``/``"default"``), a pandas
        DataFrame (``"pandas"``) or an Arrow table (``"pyarrow"``). ``fn`` may return any of these
        (torch tensors and lists too), or be a generator of them. A callable class is constructed
        once per worker (``compute=ActorPoolStrategy(size=n)`` or ``concurrency=n``).

        Example:
            >>> import torchray_loader as rd
            >>> rd.range(4).map_batches(lambda b: {"y": b["id"] + 1}, batch_size=2).take_batch(4)["y"].tolist()
            [1, 2, 3, 4]
        """
        _check_remote_args(ray_remote_args, "map_batches")
        if batch_size == "default":
            batch_size = DEFAULT_MAP_BATCH_SIZE
        elif batch_size is not None:
            batch_size = _check_int(batch_size, "batch_size", 1)
        fmt = "default" if batch_format is None else batch_format
        check_batch_format(fmt)
        kw = self._udf_kwargs(fn, fn_args, fn_kwargs, fn_constructor_args, fn_constructor_kwargs)
        c = resolve_compute(compute, concurrency, inspect.isclass(fn))
        return self._transform(MapBatches(**kw, batch_size=batch_size, batch_format=fmt), c)

    def flat_map(
        self,
        fn: Callable[[dict[str, Any]], list[dict[str, Any]]] | type,
        *,
        compute: Any = None,
        fn_args: Sequence[Any] | None = None,
        fn_kwargs: Mapping[str, Any] | None = None,
        fn_constructor_args: Sequence[Any] | None = None,
        fn_constructor_kwargs: Mapping[str, Any] | None = None,
        concurrency: int | tuple[int, int] | None = None,
        **ray_remote_args: Any,
    ) -> Dataset:
        """Apply ``fn`` to each row; it returns a list of rows (zero or more).

        Example:
            >>> import torchray_loader as rd
            >>> rd.range(2).flat_map(lambda r: [r, r]).count()
            4
        """
        _check_remote_args(ray_remote_args, "flat_map")
        kw = self._udf_kwargs(fn, fn_args, fn_kwargs, fn_constructor_args, fn_constructor_kwargs)
        c = resolve_compute(compute, concurrency, inspect.isclass(fn))
        return self._transform(FlatMap(**kw), c)

    def filter(
        self,
        fn: Callable[[dict[str, Any]], bool] | type | None = None,
        expr: str | None = None,
        *,
        compute: Any = None,
        fn_args: Sequence[Any] | None = None,
        fn_kwargs: Mapping[str, Any] | None = None,
        fn_constructor_args: Sequence[Any] | None = None,
        fn_constructor_kwargs: Mapping[str, Any] | None = None,
        concurrency: int | tuple[int, int] | None = None,
        **ray_remote_args: Any,
    ) -> Dataset:
        """Keep the rows for which ``fn(row)`` is true, or for which ``expr`` is: a Python-syntax
        predicate over column names (``"id > 2 and label != 'cat'"``), evaluated by Arrow, as in Ray
        (the syntax accepted: :mod:`torchray_loader.plan.expressions`).

        Example:
            >>> import torchray_loader as rd
            >>> rd.range(5).filter(lambda r: r["id"] > 2).take_all()
            [{'id': 3}, {'id': 4}]
            >>> rd.range(5).filter(expr="id > 2").take_all()
            [{'id': 3}, {'id': 4}]
        """
        _check_remote_args(ray_remote_args, "filter")
        if (fn is None) == (expr is None):
            raise TypeError("filter needs exactly one of fn and expr")
        if expr is not None:
            if any(a is not None for a in (fn_args, fn_kwargs, fn_constructor_args, fn_constructor_kwargs)):
                raise TypeError("fn_args, fn_kwargs and the fn_constructor_* arguments apply to fn, not to expr")
            return self.map_batches(
                ArrowFilter(expr), batch_size=None, batch_format="pyarrow", compute=compute, concurrency=concurrency
            )
        kw = self._udf_kwargs(fn, fn_args, fn_kwargs, fn_constructor_args, fn_constructor_kwargs)
        c = resolve_compute(compute, concurrency, inspect.isclass(fn))
        return self._transform(Filter(**kw), c)

    def add_column(
        self, col: str, fn: Callable[[Any], Any], *, batch_format: str | None = "pandas", compute: Any = None,
        concurrency: int | None = None, **ray_remote_args: Any,
    ) -> Dataset:
        """Add (or replace) column ``col`` computed by ``fn(batch)`` (a pandas DataFrame by default).

        Example:
            >>> import torchray_loader as rd
            >>> rd.range(2).add_column("double", lambda df: df["id"] * 2).take_all()
            [{'id': 0, 'double': 0}, {'id': 1, 'double': 2}]
        """
        _check_remote_args(ray_remote_args, "add_column")
        if not isinstance(col, str):
            raise TypeError(f"col must be a str, got {type(col).__name__}")
        _check_fn(fn)
        fmt = check_batch_format("default" if batch_format is None else batch_format)
        return self._transform(AddColumn(fn=fn, col=col, batch_format=fmt), resolve_compute(compute, concurrency, False))

    def _check_cols(self, cols: Any, name: str) -> tuple[str, ...]:
        if isinstance(cols, str):
            cols = [cols]
        if not isinstance(cols, (list, tuple)) or not all(isinstance(c, str) for c in cols):
            raise TypeError(f"{name} must be a str or a list of str, got {cols!r}")
        if len(set(cols)) != len(cols):
            raise ValueError(f"{name} has duplicates: {cols}")
        return tuple(cols)

    def drop_columns(self, cols: str | list[str], **ray_remote_args: Any) -> Dataset:
        """Remove columns.

        Example:
            >>> import torchray_loader as rd
            >>> rd.from_items([{"a": 1, "b": 2}]).drop_columns(["b"]).take_all()
            [{'a': 1}]
        """
        _check_remote_args(ray_remote_args, "drop_columns")
        return self._transform(DropColumns(self._check_cols(cols, "cols")))

    def select_columns(self, cols: str | list[str], **ray_remote_args: Any) -> Dataset:
        """Keep only ``cols``, in that order.

        Example:
            >>> import torchray_loader as rd
            >>> rd.from_items([{"a": 1, "b": 2}]).select_columns(["b"]).take_all()
            [{'b': 2}]
        """
        _check_remote_args(ray_remote_args, "select_columns")
        return self._transform(SelectColumns(self._check_cols(cols, "cols")))

    def rename_columns(self, names: Mapping[str, str] | list[str], **ray_remote_args: Any) -> Dataset:
        """Rename columns with a dict ``{old: new}``, or a list of new names for all columns in order.

        Example:
            >>> import torchray_loader as rd
            >>> rd.from_items([{"a": 1}]).rename_columns({"a": "b"}).take_all()
            [{'b': 1}]
            >>> rd.from_items([{"a": 1, "b": 2}]).rename_columns(["x", "y"]).take_all()
            [{'x': 1, 'y': 2}]
        """
        _check_remote_args(ray_remote_args, "rename_columns")
        if isinstance(names, (list, tuple)):
            if not all(isinstance(n, str) for n in names):
                raise TypeError(f"names must be str column names, got {names!r}")
            current = self.columns() or []
            if len(names) != len(current):
                raise ValueError(f"names lists {len(names)} new names for {len(current)} columns {current}: give one per column")
            names = dict(zip(current, names, strict=True))
        if isinstance(names, Mapping):
            pairs = tuple((str(k), str(v)) for k, v in names.items())
            if len(set(v for _, v in pairs)) != len(pairs):
                raise ValueError(f"names maps two columns to one name: {dict(names)}")
            return self._transform(RenameColumns(pairs))
        raise TypeError(f"names must be a dict of old -> new column names, got {type(names).__name__}")

    def limit(self, limit: int) -> Dataset:
        """The first ``limit`` rows.

        Example:
            >>> import torchray_loader as rd
            >>> rd.range(100).limit(3).count()
            3
        """
        limit = _check_int(limit, "limit", 0)
        return self._with(Limit(self._plan, limit))

    def union(self, *other: Dataset) -> Dataset:
        """This dataset's rows followed by each of ``other``'s.

        Example:
            >>> import torchray_loader as rd
            >>> rd.range(2).union(rd.range(1)).take_all()
            [{'id': 0}, {'id': 1}, {'id': 0}]
        """
        for o in other:
            if not isinstance(o, Dataset):
                raise TypeError(f"union expects Datasets, got {type(o).__name__}")
        return self._with(Union((self._plan, *(o._plan for o in other))))

    def random_shuffle(self, *, seed: int | None = None, num_blocks: int | None = None, **ray_remote_args: Any) -> Dataset:
        """A full random permutation of the rows (all blocks are gathered first).

        Without ``seed`` every execution (epoch) draws a new permutation. The whole dataset is held in
        memory while it is permuted (about three times its size at the peak), outside the memory
        budget and never spilled: for data larger than memory, use :meth:`randomize_block_order` with
        ``local_shuffle_buffer_size`` when iterating (or ``RayStyleLoader(shuffle=True)``), which streams.

        Example:
            >>> import torchray_loader as rd
            >>> sorted(r["id"] for r in rd.range(5).random_shuffle(seed=0).take_all())
            [0, 1, 2, 3, 4]
        """
        _check_remote_args(ray_remote_args, "random_shuffle")
        return self._with(AllToAll(self._plan, _random_shuffle, "RandomShuffle", _check_seed(seed)))

    def randomize_block_order(self, *, seed: int | None = None) -> Dataset:
        """Permute the order of blocks (cheap; streams when the source is a read or in memory).

        Example:
            >>> import torchray_loader as rd
            >>> rd.range(10).randomize_block_order(seed=1).count()
            10
        """
        seed = _check_seed(seed)
        return self._with(AllToAll(self._plan, _randomize_block_order, "RandomizeBlockOrder", seed, block_order_only=True))

    def repartition(self, num_blocks: int, *, shuffle: bool = False, **kwargs: Any) -> Dataset:
        """Re-cut the rows into ``num_blocks`` blocks of (nearly) equal size, order kept.

        Example:
            >>> import torchray_loader as rd
            >>> rd.range(10).repartition(3).materialize().num_blocks()
            3
        """
        num_blocks = _check_int(num_blocks, "num_blocks", 1)
        ds = self._with(AllToAll(self._plan, functools.partial(_repartition, num_blocks), "Repartition"))
        return ds.random_shuffle() if shuffle else ds

    def materialize(self) -> MaterializedDataset:
        """Execute now and keep the blocks (in memory, spilling to disk past the memory budget).

        Example:
            >>> import torchray_loader as rd
            >>> rd.range(3).materialize().count()
            3
        """
        store = _new_block_store()
        for block in self.iter_internal_blocks(progress="Materialize"):
            store.append(block)
        return MaterializedDataset(InputBlocks(store, "Materialized"))

    def split(self, n: int, *, equal: bool = False, locality_hints: Any = None) -> list[MaterializedDataset]:
        """Materialize and split into ``n`` datasets of contiguous rows.

        ``equal=True`` gives each exactly ``count() // n`` rows (the remainder is dropped, as in Ray);
        otherwise sizes differ by at most one row.

        Example:
            >>> import torchray_loader as rd
            >>> [s.count() for s in rd.range(10).split(3)]
            [4, 3, 3]
        """
        n = _check_int(n, "n", 1)
        blocks = list(self.materialize()._blocks())
        total = sum(b.num_rows for b in blocks)
        if equal:
            per = total // n
            bounds = [(i * per, (i + 1) * per) for i in range(n)]
        else:
            edges = [i * (total // n) + min(i, total % n) for i in range(n + 1)]
            bounds = list(zip(edges[:-1], edges[1:], strict=True))
        return [MaterializedDataset(InputBlocks(pieces, "Split")) for pieces in _split_rows(blocks, bounds)]

    def split_at_indices(self, indices: list[int]) -> list[MaterializedDataset]:
        """Materialize and split at row indices.

        Example:
            >>> import torchray_loader as rd
            >>> [s.count() for s in rd.range(10).split_at_indices([2, 5])]
            [2, 3, 5]
        """
        if any(b < a for a, b in zip(indices, indices[1:], strict=False)) or any(i < 0 for i in indices):
            raise ValueError(f"indices must be non-negative and sorted, got {indices}")
        blocks = list(self.materialize()._blocks())
        total = sum(b.num_rows for b in blocks)
        edges = [0, *[min(i, total) for i in indices], total]
        bounds = list(zip(edges[:-1], edges[1:], strict=True))
        return [MaterializedDataset(InputBlocks(pieces, "Split")) for pieces in _split_rows(blocks, bounds)]

    def streaming_split(self, n: int, *, equal: bool = False, locality_hints: Any = None) -> list[DataIterator]:
        """``n`` iterators over disjoint shards, e.g. one per training process.

        Without ``equal`` each shard takes every n-th block (streaming, nothing materialized);
        with ``equal=True`` every shard gets exactly ``count() // n`` rows.

        Example:
            >>> import torchray_loader as rd
            >>> its = rd.range(8).streaming_split(2, equal=True)
            >>> [sum(1 for _ in it.iter_rows()) for it in its]
            [4, 4]
        """
        n = _check_int(n, "n", 1)
        if equal:
            return [DataIterator(s) for s in self.split(n, equal=True)]
        return [DataIterator(self._with(_shard_plan(self._plan, i, n))) for i in range(n)]

    def train_test_split(
        self, test_size: float | int, *, shuffle: bool = False, seed: int | None = None
    ) -> tuple[MaterializedDataset, MaterializedDataset]:
        """Split into train and test datasets; ``test_size`` is a fraction or a row count.

        Example:
            >>> import torchray_loader as rd
            >>> train, test = rd.range(10).train_test_split(0.2)
            >>> train.count(), test.count()
            (8, 2)
        """
        ds = self.random_shuffle(seed=seed) if shuffle else self
        total = ds.materialize()
        count = total.count()
        if isinstance(test_size, float):
            if not 0 < test_size < 1:
                raise ValueError(f"test_size as a float must be in (0, 1), got {test_size}")
            n_test = math.ceil(count * test_size)
        elif isinstance(test_size, int) and not isinstance(test_size, bool):
            if not 0 < test_size < count:
                raise ValueError(f"test_size as an int must be in (0, {count}), got {test_size}")
            n_test = test_size
        else:
            raise TypeError(f"test_size must be a float or an int, got {test_size!r}")
        train, test = total.split_at_indices([count - n_test])
        return train, test

    # ------------------------------------------------------------------------------ consumption

    def iter_batches(
        self,
        *,
        prefetch_batches: int = 1,
        batch_size: int | None = DEFAULT_ITER_BATCH_SIZE,
        batch_format: str | None = "default",
        drop_last: bool = False,
        local_shuffle_buffer_size: int | None = None,
        local_shuffle_seed: int | None = None,
        _collate_fn: Callable[[Any], Any] | None = None,
        _skip_batches: int = 0,
        _ctx: DataContext | None = None,
    ) -> Iterator[Any]:
        """Iterate over batches in ``batch_format`` (numpy dict by default).

        Example:
            >>> import torchray_loader as rd
            >>> [b["id"].tolist() for b in rd.range(5).iter_batches(batch_size=2)]
            [[0, 1], [2, 3], [4]]
        """
        fmt = check_batch_format("default" if batch_format is None else batch_format)

        def convert_run(run: BatchRun) -> list[Any]:
            return [block_to_batch(bt.table, fmt) for bt in run.batches()]

        return self._iter_converted(
            convert_run, prefetch_batches, batch_size, drop_last, local_shuffle_buffer_size, local_shuffle_seed,
            _collate_fn, _skip_batches, _ctx=_ctx,
        )

    def iter_torch_batches(
        self,
        *,
        prefetch_batches: int = 1,
        batch_size: int | None = DEFAULT_ITER_BATCH_SIZE,
        dtypes: torch.dtype | dict[str, torch.dtype] | None = None,
        device: str | torch.device | None = "auto",
        collate_fn: Callable[[dict[str, np.ndarray]], Any] | None = None,
        drop_last: bool = False,
        local_shuffle_buffer_size: int | None = None,
        local_shuffle_seed: int | None = None,
        pin_memory: bool = False,
        _skip_batches: int = 0,
        _ctx: DataContext | None = None,
    ) -> Iterator[Any]:
        """Iterate over batches as ``dict[str, torch.Tensor]``.

        ``prefetch_batches`` batches are made ahead in a background thread, except for a dataset
        already in memory (``from_items``, ``from_numpy``, ``from_pandas``, ``from_arrow``, or
        materialized with nothing spilled): its batches are made in the caller's thread, where they
        cost less than the thread's handoffs.

        Numeric columns become tensors (``dtypes`` casts: one dtype, or a dict naming some columns);
        strings come back as lists of str and ragged tensors as lists of tensors. With
        ``collate_fn``, it receives the numpy dict batch and its result is returned (Ray semantics).
        ``device`` moves batches there (``"auto"``: stay on CPU): the batches cut from one block move
        together, one pinned staging copy and one side-stream copy per column, in a thread beside the
        one that makes batches; the loop's stream waits on the copy's event. ``pin_memory`` (no CUDA
        ``device``) pins the host batches.

        Example:
            >>> import torchray_loader as rd
            >>> next(iter(rd.range(4).iter_torch_batches(batch_size=2)))
            {'id': tensor([0, 1])}
        """
        from .pytorch.convert import ParentCache, check_dtypes
        from .pytorch.device import PIECE_BYTES, DeviceFeeder

        check_dtypes(dtypes)
        if collate_fn is not None:
            _check_fn(collate_fn, "collate_fn")
            if dtypes is not None:
                raise ValueError(
                    "collate_fn cannot be used with dtypes (as in Ray): collate_fn receives the numpy batch and "
                    "builds the tensors itself, so cast them there"
                )

            def convert(run: BatchRun) -> Iterable[Any]:
                return [collate_fn(block_to_batch(bt.table, "numpy", writable=True)) for bt in run.batches()]
        else:
            convert = ParentCache(dtypes).convert_run
        feeder = DeviceFeeder(device, pin_memory)
        decoding = self._decoding_on_device(feeder, device, dtypes) if collate_fn is None else None
        if decoding is not None:
            from .io.images import IMAGE_SIZE_RATIO

            source, decode = decoding
            feeder = DeviceFeeder(device, pin_memory, batch_fn=decode)
            # A piece is decoded at once: bound its decoded size, not its encoded one.
            return source._iter_converted(
                convert, prefetch_batches, batch_size, drop_last, local_shuffle_buffer_size, local_shuffle_seed,
                None, _skip_batches, _ctx=_ctx, stage=feeder.transfer, piece_bytes=int(PIECE_BYTES / IMAGE_SIZE_RATIO),
            )
        return self._iter_converted(
            convert, prefetch_batches, batch_size, drop_last, local_shuffle_buffer_size, local_shuffle_seed,
            None, _skip_batches, _ctx=_ctx, stage=feeder.transfer if feeder.active else None,
            piece_bytes=PIECE_BYTES if feeder.active else None,
        )

    def _decoding_on_device(self, feeder: Any, device: Any, dtypes: Any) -> tuple[Dataset, Any] | None:
        """For ``read_images(..., decode_on_device=True)`` iterated with an explicit CUDA or CPU
        ``device``: the dataset reading the encoded twin tasks instead, and the batch decoder; else
        ``None`` (the workers decode)."""
        from .pytorch.convert import _dtype_for
        from .pytorch.device import resolve_device
        from .pytorch.image_decode import DeviceImageDecoder

        target = resolve_device(device)  # None: "auto", batches stay where the workers made them
        if target is None or target.type not in ("cuda", "cpu"):
            return None  # a device torchvision cannot decode on
        found = _with_encoded_read(self._plan)
        if found is None:
            return None
        plan, spec = found
        if feeder.cuda:
            target = feeder.device  # with its index resolved
        return Dataset(plan), DeviceImageDecoder(target, spec, _dtype_for(dtypes, "image"))

    def _iter_converted(
        self,
        convert_run: Callable[[BatchRun], Iterable[Any]],
        prefetch_batches: int,
        batch_size: int | None,
        drop_last: bool,
        shuffle_buffer_size: int | None,
        shuffle_seed: int | None,
        collate_fn: Callable[[Any], Any] | None,
        skip_batches: int,
        *,
        _ctx: DataContext | None = None,
        stage: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
        piece_bytes: int | None = None,
    ) -> Iterator[Any]:
        # ``stage``: applied to each converted piece on its way to the consumer (a device copy: a run
        # of views moves with one copy per column, and the consumer's stream only waits on its
        # event); a piece then holds at most about ``piece_bytes`` of its parent (at least one batch).
        prefetch_batches = _check_int(prefetch_batches, "prefetch_batches", 0)
        if batch_size is not None:
            _check_int(batch_size, "batch_size", 1)
        shuffle_seed = _check_seed(shuffle_seed, "local_shuffle_seed")
        # ``_ctx``: an explicit context (RayStyleLoader passes one carrying its num_workers).
        ctx = (_ctx or DataContext.get_current()).copy()
        stats = ExecutionStats()
        self._last_stats = stats

        def produce() -> Iterator[Iterable[Any]]:
            # Batches cross the thread boundary in chunks (a run's batches, up to _CHUNK): a per-batch
            # queue handoff costs more than the batch. A chunk may make its batches as the consumer
            # iterates it (ParentCache: tensor views die young in the consumer's thread). A run is
            # complete when its parent (a block or a shuffle window) is, so no batch waits for the
            # next parent to be read.
            # Blocks that are this execution's own memory (workers' results, blocks a read decoded in
            # this process) become batches without a copy; any other block (the user's arrays, a
            # materialized cache, a UDF's return value at num_workers=0) is copied once.
            from .pytorch.sampling import randperm_permutations  # torch is imported once a window is shuffled

            private: weakref.WeakValueDictionary[int, pa.Table] = weakref.WeakValueDictionary()
            blocks = execute(self._plan, ctx, stats, private_blocks=private)
            try:
                for run in iter_batch_runs(
                    blocks, batch_size, drop_last=drop_last, shuffle_buffer_size=shuffle_buffer_size,
                    seed=shuffle_seed, skip_batches=skip_batches, is_private=lambda b: private.get(id(b)) is b,
                    permutations=randperm_permutations,
                ):
                    for piece in run.pieces(_batches_within(run, piece_bytes)):
                        chunk = convert_run(piece)
                        yield [collate_fn(out) for out in chunk] if collate_fn is not None else chunk
            finally:
                blocks.close()

        # ``prefetch_batches`` counts batches: a chunk of k batches weighs k in the queues (it holds
        # their memory), and one chunk may always wait, so the default of 1 keeps one chunk ahead.
        depth = 0 if _in_memory(self._plan) else prefetch_batches
        if stage is None:
            return _timed_iteration(prefetch(produce, depth, on_wait=_add_wait(stats), weigh=_chunk_len), stats)
        if depth == 0:
            # No thread makes pieces ahead: the next piece is made and staged (its device copy
            # started) before the consumer takes this one's batches, so that copy overlaps their use.
            made = prefetch(produce, 0, on_wait=_add_wait(stats))
            return _timed_iteration(_one_ahead(_staged(made, stage)), stats)
        # Two threads, as DataLoader's main and pin-memory threads: one makes pieces, the other
        # stages them, so a piece's staging copy (the GIL released) overlaps making the next.
        staged = prefetch(
            lambda: _staged(prefetch(produce, depth, weigh=_chunk_len), stage), depth, on_wait=_add_wait(stats),
            weigh=_chunk_len,
        )
        return _timed_iteration(staged, stats)

    def iter_rows(self) -> Iterator[dict[str, Any]]:
        """Iterate over rows as dicts.

        Example:
            >>> import torchray_loader as rd
            >>> list(rd.range(2).iter_rows())
            [{'id': 0}, {'id': 1}]
        """
        return self._iter_rows()

    def _iter_rows(self, progress: str | None = None) -> Iterator[dict[str, Any]]:
        blocks = self.iter_internal_blocks(progress=progress)
        try:
            for block in blocks:
                yield from block_to_rows(block)
        finally:
            blocks.close()

    def take(self, limit: int = 20) -> list[dict[str, Any]]:
        """The first ``limit`` rows as dicts.

        Example:
            >>> import torchray_loader as rd
            >>> rd.range(10).take(2)
            [{'id': 0}, {'id': 1}]
        """
        limit = _check_int(limit, "limit", 0)
        return list(itertools.islice(self.limit(limit).iter_rows(), limit))

    def take_all(self, limit: int | None = None) -> list[dict[str, Any]]:
        """All rows as dicts; with ``limit``, raise ``ValueError`` if there are more.

        Example:
            >>> import torchray_loader as rd
            >>> len(rd.range(5).take_all())
            5
        """
        rows = []
        for row in self._iter_rows(progress="TakeAll"):
            rows.append(row)
            if limit is not None and len(rows) > limit:
                raise ValueError(f"the dataset has more than limit={limit} rows")
        return rows

    def take_batch(self, batch_size: int = 20, *, batch_format: str | None = "default") -> Any:
        """The first ``batch_size`` rows as one batch.

        Example:
            >>> import torchray_loader as rd
            >>> rd.range(10).take_batch(3)["id"].tolist()
            [0, 1, 2]
        """
        batch_size = _check_int(batch_size, "batch_size", 1)
        fmt = check_batch_format("default" if batch_format is None else batch_format)
        table = concat_blocks(list(self.limit(batch_size).iter_internal_blocks()))
        if table.num_rows == 0:
            raise ValueError("take_batch: the dataset is empty")
        return block_to_batch(table, fmt)

    def show(self, limit: int = 20) -> None:
        """Print the first ``limit`` rows.

        Example:
            >>> import torchray_loader as rd
            >>> rd.range(2).show()
            {'id': 0}
            {'id': 1}
        """
        for row in self.take(limit):
            print(row)

    def count(self) -> int:
        """Number of rows: from metadata when known, else from what the sources tell without
        reading rows (parquet footers, when no ``filter`` is given), else by executing.

        Row-count-preserving stages (``map``, ``add_column``, column selection and renaming) are
        not run for a count from metadata or footers. A footer that cannot be read makes the count
        execute the plan, so the file is reported (or skipped) exactly as by a read.

        Example:
            >>> import torchray_loader as rd
            >>> rd.range(7).count()
            7
        """
        known = _known_num_rows(self._plan)
        if known is not None:
            return known
        counted = _count_without_reading(self._plan)
        if counted is not None:
            return counted
        return sum(b.num_rows for b in self.iter_internal_blocks(progress="Count"))

    def schema(self, fetch_if_missing: bool = True) -> Schema | None:
        """Column names and types (executes up to the first block when not known).

        Example:
            >>> import torchray_loader as rd
            >>> print(rd.range(1).schema())
            Column  Type
            ------  ----
            id      int64
        """
        known = _known_schema(self._plan)
        if known is not None:
            return Schema(known)
        if not fetch_if_missing:
            return None
        first_empty = None
        blocks = self.iter_internal_blocks()
        try:
            for block in blocks:
                if block.num_columns == 0:
                    continue
                if block.num_rows > 0:
                    return Schema(block.schema)
                first_empty = first_empty or block.schema
        finally:
            blocks.close()
        return Schema(first_empty) if first_empty is not None else None

    def columns(self, fetch_if_missing: bool = True) -> list[str] | None:
        """Column names.

        Example:
            >>> import torchray_loader as rd
            >>> rd.range(1).columns()
            ['id']
        """
        s = self.schema(fetch_if_missing)
        return None if s is None else s.names

    def stats(self) -> str:
        """Per-operator statistics of the last execution of this Dataset, as text.

        Example:
            >>> import torchray_loader as rd
            >>> ds = rd.range(10)
            >>> _ = ds.take_all()
            >>> "ReadRange" in ds.stats()
            True
        """
        return str(self._last_stats) if self._last_stats is not None else "(not executed yet)"

    def stats_dict(self) -> dict[str, Any]:
        """:meth:`stats` as a dict, for loggers."""
        return self._last_stats.to_dict() if self._last_stats is not None else {}

    def to_pandas(self, limit: int | None = None) -> pandas.DataFrame:
        """All rows as one pandas DataFrame (``limit``: raise if there are more rows).

        Example:
            >>> import torchray_loader as rd
            >>> len(rd.range(3).to_pandas())
            3
        """
        blocks = list(self.iter_internal_blocks(progress="ToPandas"))
        table = concat_blocks(blocks)
        if limit is not None and table.num_rows > limit:
            raise ValueError(f"the dataset has {table.num_rows} rows, more than limit={limit}")
        return block_to_batch(table, "pandas")

    def to_arrow_refs(self) -> list[pa.Table]:
        """The blocks as Arrow tables (local stand-in for Ray's object refs)."""
        return list(self.iter_internal_blocks())

    def num_blocks(self) -> int:
        """Number of blocks (executes unless materialized).

        Example:
            >>> import torchray_loader as rd
            >>> rd.from_items([1, 2], override_num_blocks=2).num_blocks()
            2
        """
        if isinstance(self._plan, InputBlocks):
            return len(self._plan.blocks)
        return sum(1 for _ in self.iter_internal_blocks())

    def size_bytes(self) -> int:
        """In-memory size of the data, in bytes (executes unless materialized)."""
        return sum(b.nbytes for b in self.iter_internal_blocks())

    def input_files(self) -> list[str]:
        """The files this dataset reads."""
        files: list[str] = []
        stack = [self._plan]
        while stack:
            op = stack.pop()
            if isinstance(op, Read):
                for t in op.tasks:
                    files.extend(t.paths)
            stack.extend(op.inputs)
        return sorted(set(files))

    # ------------------------------------------------------------------------------ writes

    def _write(self, fmt: str, path: str, **kwargs: Any) -> list[str]:
        from .io.write import write_blocks

        blocks = self.iter_internal_blocks(progress=f"Write{fmt.capitalize()}")
        try:
            return write_blocks(blocks, fmt, path, **kwargs)
        finally:
            blocks.close()

    def write_parquet(self, path: str, *, filesystem: Any = None, mode: str = "append", **kwargs: Any) -> None:
        """Write one parquet file per block under ``path`` (tensor columns round-trip). Into a directory
        that holds files, ``mode`` ``"append"`` (the default, as in Ray) adds files after the ones
        there; ``"overwrite"`` removes them first, ``"error"`` raises, ``"ignore"`` writes nothing.

        Example:
            >>> import torchray_loader as rd, tempfile
            >>> rd.range(3).write_parquet(tempfile.mkdtemp())
        """
        self._write("parquet", path, filesystem=filesystem, mode=mode, **kwargs)

    def write_numpy(self, path: str, *, column: str, filesystem: Any = None, mode: str = "append", **kwargs: Any) -> None:
        """Write column ``column`` as one ``.npy`` file per block under ``path`` (``mode``: as for
        :meth:`write_parquet`).

        Example:
            >>> import torchray_loader as rd, tempfile
            >>> rd.range(3).write_numpy(tempfile.mkdtemp(), column="id")
        """
        self._write("numpy", path, filesystem=filesystem, column=column, mode=mode, **kwargs)

    def write_csv(self, path: str, *, filesystem: Any = None, mode: str = "append", **kwargs: Any) -> None:
        """Write one CSV file per block under ``path`` (``mode``: as for :meth:`write_parquet`).

        Example:
            >>> import torchray_loader as rd, tempfile
            >>> rd.range(3).write_csv(tempfile.mkdtemp())
        """
        self._write("csv", path, filesystem=filesystem, mode=mode, **kwargs)

    def write_json(self, path: str, *, filesystem: Any = None, mode: str = "append", **kwargs: Any) -> None:
        """Write one JSON Lines file per block under ``path`` (``mode``: as for :meth:`write_parquet`).

        Example:
            >>> import torchray_loader as rd, tempfile
            >>> rd.range(3).write_json(tempfile.mkdtemp())
        """
        self._write("json", path, filesystem=filesystem, mode=mode, **kwargs)

    # ------------------------------------------------------------------------------ misc

    def to_ray(self, *, preserve_order: bool | None = None) -> Any:
        """This pipeline as a ``ray.data.Dataset`` built from the same plan (needs the ``ray`` extra).

        ``preserve_order=True`` asks Ray to keep this package's deterministic block order.

        Example:
            >>> import torchray_loader as rd
            >>> ds = rd.range(3)  # ds.to_ray() then runs on a Ray cluster
        """
        from .integrations.ray import to_ray

        return to_ray(self, preserve_order=preserve_order)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.iter_rows()

    def __repr__(self) -> str:
        rows = _known_num_rows(self._plan)
        schema = _known_schema(self._plan)
        rows_s = "?" if rows is None else str(rows)
        if schema is None:
            return f"Dataset(num_rows={rows_s}, schema=Unknown schema)"
        cols = ", ".join(f"{n}: {_short_type(t)}" for n, t in zip(schema.names, schema.types, strict=True))
        return f"Dataset(num_rows={rows_s}, schema={{{cols}}})"


def _short_type(t: pa.DataType) -> str:
    from .blocks.tensors import type_display_name

    return type_display_name(t)


def _add_wait(stats: ExecutionStats) -> Callable[[float], None]:
    def add(seconds: float) -> None:
        stats.consumer_wait_s += seconds

    return add


#: Most batches handed from the prefetch thread to the consumer at once.
_CHUNK = 64


def _chunk_len(chunk: Iterable[Any]) -> int:
    """The batches a chunk holds (its weight in the prefetch queues)."""
    return len(chunk) if isinstance(chunk, Sized) else 1


def _in_memory(plan: LogicalOp) -> bool:
    """Whether the plan only hands out blocks already in memory (no task to run, nothing spilled).

    Such an iteration runs in the consumer's thread whatever ``prefetch_batches`` says: a batch
    costs microseconds to make (a slice, or a shuffle window's gather), less than the thread's
    handoffs and its contention for the GIL with the consumer (W1 with the harness's per-batch
    read: 4.5-5.0M rows/s with the thread, 5.7M without)."""
    return isinstance(plan, InputBlocks) and getattr(plan.blocks, "num_spilled", 0) == 0


_NOTHING = object()


def _staged(
    chunks: Iterator[Iterable[Any]], stage: Callable[[Iterable[Any]], Iterable[Any]]
) -> Iterator[Iterable[Any]]:
    """``stage(chunk)`` for each of ``chunks`` (closing this closes ``chunks``)."""
    try:
        for chunk in chunks:
            yield stage(chunk)
    finally:
        chunks.close()  # type: ignore[attr-defined]


def _one_ahead(items: Iterator[Any]) -> Iterator[Any]:
    """``items``, each yielded once the one after it has been taken (closing this closes ``items``)."""
    try:
        held = next(items, _NOTHING)
        while held is not _NOTHING:
            following = next(items, _NOTHING)
            yield held
            held = following
    finally:
        items.close()  # type: ignore[attr-defined]


def _batches_within(run: BatchRun, nbytes: int | None) -> int:
    """How many of ``run``'s batches fit in about ``nbytes`` of its parent (at least one, at most
    _CHUNK; _CHUNK without a bound)."""
    if nbytes is None:
        return _CHUNK
    parent = run.parent
    batch_bytes = parent.nbytes / max(1, parent.num_rows) * run.num_rows
    return max(1, min(_CHUNK, int(nbytes // max(1.0, batch_bytes))))


def _timed_iteration(chunks: Iterator[Iterable[Any]], stats: ExecutionStats) -> Iterator[Any]:
    import time

    it = chunks
    start = time.perf_counter()
    try:
        for chunk in chunks:
            for item in chunk:
                stats.batches += 1
                stats.consumer_wall_s = time.perf_counter() - start
                yield item
    finally:
        stats.consumer_wall_s = time.perf_counter() - start
        it.close()  # type: ignore[attr-defined]


def _new_block_store() -> Any:
    try:
        from .execution.block_store import BlockStore
    except ImportError:  # pragma: no cover - store not built yet
        return []
    return BlockStore()


def _with_encoded_read(op: LogicalOp) -> tuple[LogicalOp, Any] | None:
    """``op`` with its ``read_images(..., decode_on_device=True)`` read replaced by the encoded twin
    tasks, and the read's ``DeviceDecode``; ``None`` unless every operator above the read keeps rows
    as they are (a block-order shuffle, a limit: nothing that looks at an image) and every task has
    its twin (a loader's row slices do not)."""
    if isinstance(op, Read):
        twins = tuple(t.twin for t in op.tasks)
        if op.on_device is None or any(t is None for t in twins):
            return None
        encoded = Read(twins, f"{op.name}(encoded)", shared=op.shared, fresh_output=op.fresh_output)  # type: ignore[arg-type]
        return encoded, op.on_device
    if isinstance(op, Limit) or (isinstance(op, AllToAll) and op.block_order_only):
        found = _with_encoded_read(op.input)
        return None if found is None else (dataclasses.replace(op, input=found[0]), found[1])
    return None


def _shard_plan(op: LogicalOp, index: int, n: int) -> LogicalOp:
    """The plan restricted to every n-th source task/block, starting at ``index``.

    Map chains are pushed through so only this shard's inputs are read; other plans are executed and
    their output blocks sharded.
    """
    if isinstance(op, MapStage):
        return MapStage(_shard_plan(op.input, index, n), op.transforms, op.compute)
    if isinstance(op, Read):
        return dataclasses.replace(op, tasks=op.tasks[index::n])
    if isinstance(op, InputBlocks):
        return InputBlocks([op.blocks[i] for i in range(index, len(op.blocks), n)], op.name)
    return AllToAll(op, functools.partial(_take_every, index, n), "StreamingSplit", 0)


def _take_every(index: int, n: int, blocks: list[pa.Table], seed: Any) -> list[pa.Table]:
    return blocks[index::n]


def _declared_rows(task: ReadTask) -> int | None:
    return task.num_rows


def _known_num_rows(op: LogicalOp, task_rows: Callable[[ReadTask], int | None] = _declared_rows) -> int | None:
    """Rows ``op`` yields, where its sources' row counts (``task_rows`` of each read task: by
    default what the task declares) and row-count-preserving stages tell it; else None."""
    if isinstance(op, InputBlocks):
        return sum(op.blocks[i].num_rows for i in range(len(op.blocks)))
    if isinstance(op, Read):
        rows = [task_rows(t) for t in op.tasks]
        return None if any(r is None for r in rows) else sum(rows)  # type: ignore[misc,arg-type]
    if isinstance(op, MapStage):
        if all(isinstance(t, _ROW_PRESERVING) for t in op.transforms):
            return _known_num_rows(op.input, task_rows)
        return None
    if isinstance(op, Limit):
        inner = _known_num_rows(op.input, task_rows)
        return None if inner is None else min(inner, op.n)
    if isinstance(op, Union):
        counts = [_known_num_rows(c, task_rows) for c in op.union_inputs]
        return None if any(c is None for c in counts) else sum(counts)  # type: ignore[misc,arg-type]
    if isinstance(op, AllToAll) and op.name in ("RandomShuffle", "RandomizeBlockOrder", "Repartition"):
        return _known_num_rows(op.input, task_rows)
    return None


#: Most threads ``count()`` reads footers with: the reads wait on storage (one request per remote
#: file), not on the CPU.
_MAX_COUNT_THREADS = 16


def _count_without_reading(op: LogicalOp) -> int | None:
    """Rows ``op`` yields, from its read tasks' ``count_rows`` (run in a thread pool) where
    :func:`_known_num_rows` cannot tell from declared counts; None where some task has neither, a
    stage may change the count, or a ``count_rows`` raised (the caller then executes the plan).

    Example:
        >>> import tempfile, pyarrow as pa, pyarrow.parquet as pq, torchray_loader as rd
        >>> d = tempfile.mkdtemp(); pq.write_table(pa.table({"x": [1, 2]}), d + "/a.parquet")
        >>> _count_without_reading(rd.read_parquet(d).map(lambda r: r)._plan)
        2
    """
    pending: dict[int, ReadTask] = {}

    def collect(task: ReadTask) -> int | None:
        if task.num_rows is not None:
            return task.num_rows
        if task.count_rows is None:
            return None
        pending[id(task)] = task
        return 0

    # A first walk checks that counts alone decide the answer and gathers the tasks to count.
    if _known_num_rows(op, collect) is None or not pending:
        return None
    counted: dict[int, int] = {}
    try:
        if len(pending) == 1:
            [(key, task)] = pending.items()
            counted[key] = task.count_rows()  # type: ignore[misc]
        else:
            from concurrent.futures import ThreadPoolExecutor

            workers = min(_MAX_COUNT_THREADS, len(pending))
            with ThreadPoolExecutor(workers, thread_name_prefix="torchray-count") as pool:
                futures = {key: pool.submit(t.count_rows) for key, t in pending.items()}  # type: ignore[arg-type]
                try:
                    counted = {key: f.result() for key, f in futures.items()}
                finally:
                    for f in futures.values():
                        f.cancel()  # after a failure: the footers not yet read are not needed
    except Exception as exc:
        logging.getLogger("torchray_loader").debug(
            "count(): counting from metadata failed (%s: %s); reading the data", type(exc).__name__, exc
        )
        return None

    def rows(task: ReadTask) -> int | None:
        if task.num_rows is not None:
            return task.num_rows
        n = counted[id(task)]
        return n if task.row_limit is None else min(n, task.row_limit)

    return _known_num_rows(op, rows)


def _known_schema(op: LogicalOp) -> pa.Schema | None:
    if isinstance(op, InputBlocks):
        if isinstance(op.blocks, (list, tuple)):
            return _unified_schema(op.blocks)
        for i in range(len(op.blocks)):  # a block store: one block read, not all of them
            b = op.blocks[i]
            if b.num_columns:
                return b.schema
        return None
    if isinstance(op, Read):
        return op.schema_hint
    if isinstance(op, (Limit, AllToAll)):
        return _known_schema(op.input)
    return None


def _unified_schema(blocks: Sequence[pa.Table]) -> pa.Schema | None:
    """The schema the blocks have together: what concatenating them gives (a tensor column whose
    shape differs between blocks is variable-shape), found from one row of each distinct schema."""
    samples: list[pa.Table] = []
    for b in blocks:
        if b.num_columns and not any(b.schema.equals(s.schema) for s in samples):
            samples.append(b.slice(0, 1))
    if len(samples) <= 1:
        return samples[0].schema if samples else None
    try:
        return concat_blocks(samples).schema
    except ValueError:  # incompatible: iteration raises; the schema says what the first block holds
        return samples[0].schema


class MaterializedDataset(Dataset):
    """A Dataset whose blocks are computed and held (in memory, spilled to disk past the budget).

    Example:
        >>> import torchray_loader as rd
        >>> m = rd.range(4).materialize()
        >>> m.count(), m.num_blocks() > 0
        (4, True)
    """

    def _blocks(self) -> Sequence[pa.Table]:
        assert isinstance(self._plan, InputBlocks)
        return self._plan.blocks


class DataIterator:
    """One consumer's view of a dataset shard (what ``streaming_split`` returns, like Ray's).

    Example:
        >>> import torchray_loader as rd
        >>> it = rd.range(4).streaming_split(2)[0]
        >>> sum(len(b["id"]) for b in it.iter_batches(batch_size=2)) > 0
        True
    """

    def __init__(self, dataset: Dataset) -> None:
        self._dataset = dataset

    def iter_batches(self, **kwargs: Any) -> Iterator[Any]:
        """As :meth:`Dataset.iter_batches`."""
        return self._dataset.iter_batches(**kwargs)

    def iter_torch_batches(self, **kwargs: Any) -> Iterator[Any]:
        """As :meth:`Dataset.iter_torch_batches`."""
        return self._dataset.iter_torch_batches(**kwargs)

    def iter_rows(self) -> Iterator[dict[str, Any]]:
        """As :meth:`Dataset.iter_rows`."""
        return self._dataset.iter_rows()

    def materialize(self) -> MaterializedDataset:
        """This shard's rows, materialized."""
        return self._dataset.materialize()

    def stats(self) -> str:
        """Statistics of this shard's last iteration."""
        return self._dataset.stats()
