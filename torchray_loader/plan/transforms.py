"""Block transforms: each is a picklable callable ``Iterator[Block] -> Iterator[Block]`` (a generator).

A map stage is a tuple of these; fusing two stages concatenates their tuples (``run_chain``). User
functions are called through ``_call`` so an exception names the operator it came from. Callable
classes are constructed once per process per transform (``_instance``), which is what makes a
long-lived worker an "actor".
"""

from __future__ import annotations

import inspect
import itertools
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

import pyarrow as pa

from ..blocks import (
    as_tables,
    block_from_batch,
    block_from_rows,
    block_to_batch,
    block_to_rows,
    check_batch_format,
    concat_blocks,
)
from ..blocks.ownership import mark_fresh, ref_counts, sole_owner
from ..errors import TorchRayError, mark_operator

__all__ = [
    "BlockTransform",
    "MapRows",
    "MapBatches",
    "FlatMap",
    "Filter",
    "AddColumn",
    "SelectColumns",
    "DropColumns",
    "RenameColumns",
    "run_chain",
    "udf_name",
]

Block: TypeAlias = pa.Table

# Callable-class instances of this process, by transform uid (one per "actor").
_INSTANCES: dict[str, Any] = {}


def udf_name(fn: Any) -> str:
    """A readable name for a user function or class."""
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


def _call(operator: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except TorchRayError:
        raise
    except Exception as exc:
        mark_operator(exc, operator)
        raise


@dataclass(frozen=True)
class BlockTransform:
    """Base: ``name`` is the operator name shown in stats and errors.

    ``takes_object_blocks``: the transform reads its input only through ``block_to_rows`` /
    ``block_to_batch`` (and ``slice``), so a read's :class:`~torchray_loader.blocks.ObjectBlock` may
    reach it unconverted; every other transform gets Arrow tables.
    """

    takes_object_blocks: ClassVar[bool] = False
    #: Row ``i`` of the output comes from row ``i`` of the input, one for one (so the first ``n``
    #: output rows need only the first ``n`` input rows: a ``limit`` may run before it).
    preserves_rows: ClassVar[bool] = False

    @property
    def name(self) -> str:
        raise NotImplementedError

    def __call__(self, blocks: Iterator[Block]) -> Iterator[Block]:
        raise NotImplementedError


@dataclass(frozen=True)
class _UDFTransform(BlockTransform):
    fn: Any
    fn_args: tuple = ()
    fn_kwargs: Mapping[str, Any] = field(default_factory=dict)
    fn_constructor_args: tuple = ()
    fn_constructor_kwargs: Mapping[str, Any] = field(default_factory=dict)
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def is_class(self) -> bool:
        return inspect.isclass(self.fn)

    def callable(self) -> Callable[..., Any]:
        """The user function; a callable class is constructed on first use in this process."""
        if not self.is_class:
            return self.fn
        inst = _INSTANCES.get(self.uid)
        if inst is None:
            inst = _call(self.name, self.fn, *self.fn_constructor_args, **dict(self.fn_constructor_kwargs))
            _INSTANCES[self.uid] = inst
        return inst

    def invoke(self, fn: Callable[..., Any], arg: Any) -> Any:
        return _call(self.name, fn, arg, *self.fn_args, **dict(self.fn_kwargs))

    def invoke_each(self, fn: Callable[..., Any], args: list[Any]) -> list[Any]:
        """``[invoke(fn, a) for a in args]`` at the cost of one try per list, not per call."""
        extra, kwargs = self.fn_args, dict(self.fn_kwargs)
        try:
            if extra or kwargs:
                return [fn(a, *extra, **kwargs) for a in args]
            return [fn(a) for a in args]
        except TorchRayError:
            raise
        except Exception as exc:
            mark_operator(exc, self.name)
            raise


def _iter_results(operator: str, result: Any) -> Iterator[Any]:
    """UDF results one by one: a generator's items (errors inside it name the operator), else the value."""
    if inspect.isgenerator(result):
        while True:
            try:
                item = next(result)
            except StopIteration:
                return
            except TorchRayError:
                raise
            except Exception as exc:
                mark_operator(exc, operator)
                raise
            yield item
    else:
        yield result


@dataclass(frozen=True)
class MapRows(_UDFTransform):
    """``Dataset.map``: one row dict in, one row dict out."""

    takes_object_blocks: ClassVar[bool] = True
    preserves_rows: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return f"Map({udf_name(self.fn)})"

    def __call__(self, blocks: Iterator[Block]) -> Iterator[Block]:
        fn = self.callable()
        for block in blocks:
            out = self.invoke_each(fn, list(block_to_rows(block, writable=True)))
            yield block_from_rows(out, producer=f"{self.name}: the function")  # which checks each row is a dict


@dataclass(frozen=True)
class FlatMap(_UDFTransform):
    """``Dataset.flat_map``: one row in, a list (or generator) of rows out."""

    takes_object_blocks: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return f"FlatMap({udf_name(self.fn)})"

    def __call__(self, blocks: Iterator[Block]) -> Iterator[Block]:
        fn = self.callable()
        for block in blocks:
            out: list[Any] = []
            for row in block_to_rows(block, writable=True):
                result = self.invoke(fn, row)
                if isinstance(result, Mapping):
                    raise TypeError(f"{self.name}: the function must return a list of dicts, got a dict")
                out.extend(_iter_results(self.name, result) if inspect.isgenerator(result) else result)
            yield block_from_rows(out, producer=self.name)


@dataclass(frozen=True)
class Filter(_UDFTransform):
    """``Dataset.filter``: keep rows for which the function returns True."""

    @property
    def name(self) -> str:
        return f"Filter({udf_name(self.fn)})"

    def __call__(self, blocks: Iterator[Block]) -> Iterator[Block]:
        fn = self.callable()
        for block in blocks:
            keep = self.invoke_each(fn, list(block_to_rows(block, writable=True)))
            yield block.filter(pa.array(list(map(bool, keep)), type=pa.bool_())) if block.num_rows else block


@dataclass(frozen=True)
class MapBatches(_UDFTransform):
    """``Dataset.map_batches``: batches of ``batch_size`` rows (``None``: whole blocks) in ``batch_format``."""

    takes_object_blocks: ClassVar[bool] = True

    batch_size: int | None = 1024
    batch_format: str = "default"

    @property
    def name(self) -> str:
        return f"MapBatches({udf_name(self.fn)})"

    def __call__(self, blocks: Iterator[Block]) -> Iterator[Block]:
        fn = self.callable()
        fmt = check_batch_format(self.batch_format)
        for batch_block in _batches(blocks, self.batch_size):
            result = self.invoke(fn, block_to_batch(batch_block, fmt, writable=True))
            if inspect.isgenerator(result):
                for out in _iter_results(self.name, result):
                    yield block_from_batch(out, producer=self.name)
                continue
            counts = ref_counts(result)  # before anything else holds ``result`` (see ownership)
            fresh = sole_owner(result, counts)
            out_block = block_from_batch(result, producer=self.name)
            if fresh:
                mark_fresh(out_block)
            del result
            yield out_block


def _batches(blocks: Iterable[Block], batch_size: int | None) -> Iterator[Block]:
    """The task's rows cut into batches of exactly ``batch_size`` rows across its blocks (the last
    may be shorter), as Ray's batcher cuts them; ``None``: each block whole.

    A batch spanning blocks is their concatenation; blocks whose schemas cannot be concatenated
    (or an ObjectBlock) are cut on their own. An empty block with columns, with nothing pending,
    is one (empty) batch, so a function still sees the schema of an empty input.
    """
    if batch_size is None:
        for block in blocks:
            yield from _slices(block, None)
        return
    pending: list[pa.Table] = []
    rows = 0
    for block in blocks:
        if not isinstance(block, pa.Table):
            yield from _joined(pending)
            pending, rows = [], 0
            yield from _slices(block, batch_size)
            continue
        n, start = block.num_rows, 0
        if n == 0:
            if block.num_columns and not pending:
                yield block
            continue
        if pending:
            take = min(batch_size - rows, n)
            pending.append(block.slice(0, take))
            rows, start = rows + take, take
            if rows < batch_size:
                continue
            yield from _joined(pending)
            pending, rows = [], 0
        while n - start >= batch_size:
            yield block.slice(start, batch_size)
            start += batch_size
        if start < n:
            pending, rows = [block.slice(start)], n - start
    yield from _joined(pending)


def _joined(pieces: list[pa.Table]) -> Iterator[pa.Table]:
    if len(pieces) <= 1:
        yield from pieces
        return
    try:
        yield concat_blocks(pieces)
    except ValueError:  # schemas that do not concatenate: the pieces go as they are
        yield from pieces


def _slices(block: Block, batch_size: int | None) -> Iterator[Block]:
    n = block.num_rows
    if batch_size is None or n <= batch_size:
        if n or block.num_columns:
            yield block
        return
    for start in range(0, n, batch_size):
        yield block.slice(start, batch_size)


@dataclass(frozen=True)
class AddColumn(_UDFTransform):
    """``Dataset.add_column``: ``fn(batch) -> column``, batch in ``batch_format`` (pandas by default).

    Not ``preserves_rows``: a row's value may depend on the batch it came in (a batch statistic).
    """

    col: str = ""
    batch_format: str = "pandas"

    @property
    def name(self) -> str:
        return f"AddColumn({self.col})"

    def __call__(self, blocks: Iterator[Block]) -> Iterator[Block]:
        fn = self.callable()
        for block in blocks:
            values = self.invoke(fn, block_to_batch(block, self.batch_format, writable=True))
            if type(values).__module__.startswith("pandas"):
                values = values.to_numpy()
            column = block_from_batch({self.col: values}, producer=self.name).column(0)
            if len(column) != block.num_rows:
                raise ValueError(f"{self.name}: returned {len(column)} values for {block.num_rows} rows")
            if self.col in block.column_names:
                block = block.drop_columns([self.col])
            yield block.append_column(self.col, column)


def _has_columns(block: Block, cols: Iterable[str], operation: str, operator: str) -> bool:
    """Whether a column operation applies to ``block``: ``False`` for a block of no rows and no
    columns (what a row function makes of no rows: it never ran, so its columns are unknown), which
    goes on unchanged; a ``ValueError`` naming ``operator`` when ``block`` lacks some of ``cols``."""
    if block.num_rows == 0 and block.num_columns == 0:
        return False
    missing = [c for c in cols if c not in block.column_names]
    if missing:
        msg = f"{operation}: no column(s) {missing}; columns are {block.column_names}"
        raise mark_operator(ValueError(msg), operator)
    return True


@dataclass(frozen=True)
class SelectColumns(BlockTransform):
    preserves_rows: ClassVar[bool] = True

    cols: tuple[str, ...]

    @property
    def name(self) -> str:
        return "SelectColumns"

    def __call__(self, blocks: Iterator[Block]) -> Iterator[Block]:
        for block in blocks:
            yield block.select(list(self.cols)) if _has_columns(block, self.cols, "select_columns", self.name) else block


@dataclass(frozen=True)
class DropColumns(BlockTransform):
    preserves_rows: ClassVar[bool] = True

    cols: tuple[str, ...]

    @property
    def name(self) -> str:
        return "DropColumns"

    def __call__(self, blocks: Iterator[Block]) -> Iterator[Block]:
        for block in blocks:
            yield block.drop_columns(list(self.cols)) if _has_columns(block, self.cols, "drop_columns", self.name) else block


@dataclass(frozen=True)
class RenameColumns(BlockTransform):
    preserves_rows: ClassVar[bool] = True

    mapping: tuple[tuple[str, str], ...]

    @property
    def name(self) -> str:
        return "RenameColumns"

    def __call__(self, blocks: Iterator[Block]) -> Iterator[Block]:
        mapping = dict(self.mapping)
        for block in blocks:
            if not _has_columns(block, mapping, "rename_columns", self.name):
                yield block
                continue
            yield block.rename_columns([mapping.get(c, c) for c in block.column_names])


def run_chain(transforms: Iterable[BlockTransform], blocks: Iterable[Any]) -> Iterator[Block]:
    """Apply fused transforms lazily: the output of each generator feeds the next.

    ``blocks`` may hold ObjectBlocks (``blocks.ObjectBlock``): they reach a first
    transform that takes them as they are, anything else (and the output) as Arrow tables.
    """
    it: Iterator[Any] = iter(blocks)
    for t in transforms:
        it = t(it if t.takes_object_blocks else as_tables(it))
    return as_tables(it)


def chunked(it: Iterable[Any], n: int) -> Iterator[list[Any]]:
    """Lists of ``n`` consecutive items (the last may be shorter)."""
    it = iter(it)
    while chunk := list(itertools.islice(it, n)):
        yield chunk
