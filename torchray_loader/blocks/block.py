"""A block is a ``pyarrow.Table``. This module builds blocks from what UDFs return and turns them into
the batch formats and rows that UDFs and consumers receive."""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, Literal, TypeVar

import numpy as np
import pyarrow as pa

from .object_block import ObjectBlock
from .tensors import (
    _fixed_tensor_column,
    _variable_tensor_column,
    column_from_values,
    column_to_numpy,
    is_tensor_type,
    without_time_zone,
)

__all__ = [
    "Block",
    "BatchFormat",
    "BATCH_FORMATS",
    "check_batch_format",
    "block_from_batch",
    "block_from_rows",
    "block_to_batch",
    "block_to_rows",
    "columnless_table",
    "concat_blocks",
    "empty_block",
    "first_rows",
    "start_arrow_warm_up",
    "take_rows",
    "warm_up_arrow",
]

Block = pa.Table
BatchFormat = Literal["default", "numpy", "pandas", "pyarrow"]
BATCH_FORMATS: tuple[str, ...] = ("default", "numpy", "pandas", "pyarrow")
B = TypeVar("B", pa.Table, ObjectBlock)


def check_batch_format(batch_format: Any) -> str:
    """Validate ``batch_format``; ``"default"`` means numpy, as in Ray.

    Example:
        >>> check_batch_format("default")
        'numpy'
    """
    if batch_format not in BATCH_FORMATS:
        raise ValueError(f"batch_format must be one of {BATCH_FORMATS}, got {batch_format!r}")
    return "numpy" if batch_format == "default" else batch_format


# pyarrow imports pandas (when installed, ~0.5-1 s) on its first ``pa.array``/``take``/``concat``,
# and fsspec scans entry points when imported.
# ``start_arrow_warm_up`` pays that in a background thread at package import, while the user builds
# their data. Invariants: no fork happens while that thread runs (an ``os.fork`` hook waits for it,
# so a child never inherits a module lock held by a thread it does not have), and it is not a daemon
# thread, so the interpreter waits for it before finalizing.
_ARROW_WARM = False
_warm_up_thread: threading.Thread | None = None
_warm_up_lock = threading.Lock()


def _touch_arrow() -> None:
    global _ARROW_WARM
    pa.array([0])
    _ARROW_WARM = True


def _warm_up() -> None:
    _touch_arrow()
    # Every file read lists paths through fsspec, whose import scans the installed packages' entry
    # points (tens of milliseconds): paid here too, not on the way to the first batch.
    import fsspec.implementations.local  # noqa: F401


def _join_warm_up() -> None:
    thread = _warm_up_thread
    if thread is not None and thread is not threading.current_thread():
        thread.join()


def start_arrow_warm_up() -> None:
    """Start paying pyarrow's lazy imports in a background thread (once per process).

    Example:
        >>> start_arrow_warm_up(); warm_up_arrow()
    """
    global _warm_up_thread
    with _warm_up_lock:
        if _ARROW_WARM or _warm_up_thread is not None:
            return
        pandas_left = "pandas" not in sys.modules and importlib.util.find_spec("pandas") is not None
        if not pandas_left and "fsspec" in sys.modules:
            _touch_arrow()  # nothing slow left to import
            return
        # pandas imports this, which registers a threading exit hook: refused once the interpreter
        # has begun shutting down, so it must not first happen in the thread of a short script.
        import concurrent.futures.thread  # noqa: F401

        _warm_up_thread = threading.Thread(target=_warm_up, name="torchray-arrow-warm-up", daemon=False)
        os.register_at_fork(before=_join_warm_up)
        _warm_up_thread.start()


def warm_up_arrow() -> None:
    """Make sure pyarrow's one-time lazy imports (its pandas shim) are done in this process.

    Called before forking workers, so every forked worker inherits the loaded modules instead of
    paying the import again on its first ``pa.array``.

    Example:
        >>> warm_up_arrow()
    """
    _join_warm_up()
    if not _ARROW_WARM:
        _touch_arrow()


def empty_block() -> pa.Table:
    """A block with no rows and no columns."""
    return pa.table({})


def _is_pandas(obj: Any) -> bool:
    return type(obj).__module__.startswith("pandas") and type(obj).__name__ == "DataFrame"


def block_from_batch(batch: Any, *, producer: str = "UDF") -> pa.Table:
    """A block from a batch: a dict of columns, a pandas DataFrame or an Arrow table.

    Columns may be numpy arrays, torch tensors, lists or Arrow arrays, all of one length.

    Example:
        >>> import numpy as np
        >>> block_from_batch({"x": np.arange(3)}).num_rows
        3
    """
    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, pa.RecordBatch):
        return pa.Table.from_batches([batch])
    if _is_pandas(batch):
        return _block_from_pandas(batch)
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"{producer} must return a dict of columns (str -> array), a pandas DataFrame or a pyarrow "
            f"Table; got {type(batch).__name__}"
        )
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    lengths: dict[str, int] = {}
    for name, values in batch.items():
        if not isinstance(name, str):
            raise TypeError(f"{producer} returned a column name that is not a str: {name!r}")
        if values is None or isinstance(values, (str, bytes, int, float, complex, np.generic)) or getattr(values, "ndim", None) == 0:
            raise TypeError(
                f"{producer} returned column {name!r} as a single {type(values).__name__} ({values!r:.60}); a column "
                "holds one value per row: a list, numpy array, tensor or Arrow array (e.g. [value] * n)"
            )
        col = column_from_values(values)
        columns[name] = col
        lengths[name] = len(col)
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{producer} returned columns of unequal lengths: {lengths}")
    return pa.table(columns)


def _block_from_pandas(df: Any) -> pa.Table:
    columns = {}
    for name in df.columns:
        series = df[name]
        if series.dtype == object:
            columns[str(name)] = column_from_values(list(series))
        elif isinstance(series.dtype, np.dtype):
            columns[str(name)] = pa.array(series.to_numpy())
        else:  # pandas' own dtypes (nullable ints, str, pyarrow-backed, categorical): nulls stay null
            columns[str(name)] = pa.array(series)
    if not columns:
        return columnless_table(len(df))
    return pa.table(columns)


def columnless_table(num_rows: int) -> pa.Table:
    """A table of ``num_rows`` rows and no columns (pyarrow builds none directly).

    Example:
        >>> columnless_table(3).num_rows, columnless_table(3).num_columns
        (3, 0)
    """
    return pa.table({"_": pa.nulls(num_rows)}).drop_columns(["_"])


def block_from_rows(rows: Sequence[Any], *, producer: str = "UDF") -> pa.Table:
    """A block from row dicts. Every row must be a dict; a key some rows lack is ``None`` (null) in
    them, as in Ray (columns in the order their keys first appear).

    Example:
        >>> block_from_rows([{"a": 1}, {"a": 2, "b": "x"}]).to_pylist()
        [{'a': 1, 'b': None}, {'a': 2, 'b': 'x'}]
    """
    if not rows:
        return empty_block()
    keys = None
    uniform = True
    for row in rows:
        if type(row) is not dict and not isinstance(row, Mapping):
            raise TypeError(f"{producer} must return a dict per row, got {type(row).__name__}: {row!r:.80}")
        if keys is None:
            keys = row.keys()
        elif uniform and row.keys() != keys:
            uniform = False
    assert keys is not None  # rows is not empty
    if uniform:  # every row has the first row's keys (in any order)
        return block_from_batch({name: list(map(itemgetter(name), rows)) for name in keys}, producer=producer)
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return block_from_batch({name: [row.get(name) for row in rows] for name in names}, producer=producer)


def _numpy_column(col: Any, writable: bool) -> np.ndarray:
    arr = column_to_numpy(col)
    return np.array(arr, copy=True) if writable and not arr.flags.writeable else arr


def block_to_batch(block: pa.Table | ObjectBlock, batch_format: str, *, writable: bool = False) -> Any:
    """A block as a batch in ``batch_format`` (``numpy``/``default``, ``pandas``, ``pyarrow``).

    Numpy arrays are zero-copy read-only views unless ``writable`` (then read-only ones are copied,
    as Ray does for UDF batches with ``zero_copy_batch=False``).

    Example:
        >>> import pyarrow as pa
        >>> block_to_batch(pa.table({"a": [1, 2]}), "numpy")["a"].tolist()
        [1, 2]
    """
    fmt = check_batch_format(batch_format)
    if isinstance(block, ObjectBlock):  # a read's own objects: no pickle round trip for numpy
        if fmt == "numpy":
            return block.to_batch()
        block = block.to_table()
    if fmt == "pyarrow":
        return block
    if fmt == "numpy":
        return {name: _numpy_column(block.column(name), writable) for name in block.column_names}
    import pandas as pd

    data = {}
    for name in block.column_names:
        col = block.column(name)
        if _arrow_native(col.type) and (col.null_count or pa.types.is_temporal(col.type)):
            # A column with nulls keeps them, in the pyarrow-backed dtype Ray's pandas batches use
            # (numpy would make ints floats and strings NaN-filled objects); so does a temporal
            # column its time zone and unit (numpy's datetime64 has neither a zone nor dates).
            data[name] = col.to_pandas(types_mapper=pd.ArrowDtype)
            continue
        arr = column_to_numpy(col)
        data[name] = list(arr) if arr.ndim > 1 else arr
    return pd.DataFrame(data, index=pd.RangeIndex(block.num_rows))


def _arrow_native(t: pa.DataType) -> bool:
    """Whether pandas can hold ``t`` as a pyarrow-backed dtype (not one of this package's extension
    types: tensors and Python objects keep their numpy/object form)."""
    return not isinstance(t, pa.ExtensionType)


def _python_valued(t: pa.DataType) -> bool:
    """Whether row values of type ``t`` are Arrow's Python values (``as_py``) rather than numpy's:
    lists, and temporal types, whose numpy ``tolist`` loses the type (``timestamp[ns]`` becomes an
    int, a time zone is dropped). Ray's rows hold ``as_py`` values: ``pd.Timestamp`` and
    ``pd.Timedelta`` for nanosecond units, ``datetime``/``date``/``time``/``timedelta`` otherwise."""
    return (
        pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_temporal(t)
    )


def _row_column(col: pa.ChunkedArray, writable: bool) -> Any:
    """A column's row values: Python values, as Ray's rows hold them, for list and temporal columns
    and columns with nulls (``None``, not NaN); numpy for the rest (tensors stay arrays)."""
    t = col.type
    if _arrow_native(t) and (col.null_count or _python_valued(t)):
        return col.to_pylist()
    return _numpy_column(col, writable)


def _row_values(col: Any) -> Any:
    """A row column as something indexable by row: Python scalars for a 1-D numpy column (one
    ``tolist`` call), row views for a tensor column, and Python lists as they are."""
    if not isinstance(col, np.ndarray) or col.ndim != 1:
        return col
    if col.dtype != object:
        return col.tolist()
    return [v.item() if isinstance(v, np.generic) else v for v in col]


def block_to_rows(block: pa.Table | ObjectBlock, *, writable: bool = False) -> Iterator[dict[str, Any]]:
    """Rows of a block as dicts: Python scalars, str, lists, ``None`` for nulls, and numpy arrays for
    tensor columns (read-only views into the block unless ``writable``).

    Example:
        >>> import pyarrow as pa
        >>> list(block_to_rows(pa.table({"a": [1]})))
        [{'a': 1}]
    """
    if isinstance(block, ObjectBlock):
        yield from block.to_rows()
        return
    names = block.column_names
    if not names:
        for _ in range(block.num_rows):
            yield {}
        return
    cols = [_row_values(_row_column(block.column(n), writable)) for n in names]
    for values in zip(*cols, strict=True):
        yield dict(zip(names, values, strict=True))


def first_rows(blocks: Iterable[B], n: int) -> Iterator[B]:
    """The first ``n`` rows of ``blocks`` (tables or ObjectBlocks), the last block cut to fit; no
    block is asked for once they are out, and ``blocks`` is closed then (a reader stops reading).

    Example:
        >>> import pyarrow as pa
        >>> [b.num_rows for b in first_rows(iter([pa.table({"a": [1, 2]})] * 3), 3)]
        [2, 1]
    """
    source = iter(blocks)
    remaining = n
    try:
        if remaining <= 0:
            return
        for block in source:
            if block.num_rows >= remaining:
                yield block.slice(0, remaining)
                return
            remaining -= block.num_rows
            yield block
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def concat_blocks(blocks: Sequence[pa.Table]) -> pa.Table:
    """Concatenate blocks with compatible schemas (null-typed columns promote, a tensor column whose
    shape differs between blocks becomes variable-shape, and a timestamp column whose time zone
    differs between blocks naive UTC, as Ray's row ``map`` makes such values).

    Example:
        >>> import pyarrow as pa
        >>> concat_blocks([pa.table({"a": [1]}), pa.table({"a": [2]})]).num_rows
        2
    """
    blocks = [b for b in blocks if b.num_columns > 0 or b.num_rows > 0]
    if not blocks:
        return empty_block()
    if len(blocks) == 1:
        return blocks[0]
    try:
        return pa.concat_tables(blocks)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    blocks = _unify_time_zones(_unify_tensor_columns(blocks))
    try:
        return pa.concat_tables(blocks, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"blocks have incompatible schemas: {exc}") from exc


def _gather_chunked_tensor_rows(col: pa.ChunkedArray, indices: np.ndarray) -> pa.Array | None:
    """``col.take(indices)`` for a multi-chunk, null-free numeric fixed-shape tensor column, gathered
    chunk by chunk. Arrow's take first concatenates all chunks of such a column (a copy of the whole
    column for every call, however few rows it takes). None for any other column."""
    t = col.type
    if (
        col.num_chunks < 2 or not isinstance(t, pa.FixedShapeTensorType) or col.null_count
        or t.permutation is not None or t.dim_names is not None
        or not (pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type))
    ):
        return None
    chunks = [c.to_numpy_ndarray() for c in col.chunks]
    starts = np.cumsum([0] + [len(c) for c in chunks])
    which = np.searchsorted(starts, indices, side="right") - 1
    first = chunks[0]
    # The output lives in Arrow's memory pool, which reuses freed memory (a fresh malloc of this size
    # would be a new mapping, whose page faults cost more than the gather).
    buf = pa.allocate_buffer(len(indices) * int(np.prod(first.shape[1:])) * first.dtype.itemsize)
    out = np.frombuffer(buf, dtype=first.dtype).reshape((len(indices), *first.shape[1:]))
    for k, chunk in enumerate(chunks):
        rows = np.flatnonzero(which == k)
        if len(rows):
            out[rows] = np.take(chunk, indices[rows] - starts[k], axis=0)
    gathered = _fixed_tensor_column(out)
    return gathered if gathered.type == t else None


def take_rows(block: pa.Table, indices: np.ndarray) -> pa.Table:
    """``block.take(indices)``: the rows at ``indices``, in that order, in new memory.

    Example:
        >>> import numpy as np, pyarrow as pa
        >>> take_rows(pa.table({"a": [1, 2, 3]}), np.array([2, 0]))["a"].to_pylist()
        [3, 1]
    """
    # Arrow's concatenation is the cheaper way to take most of a column's rows; for a small part
    # (a piece of a shuffle window) the per-chunk gather avoids copying the whole column first.
    if len(indices) * 2 > block.num_rows or not any(isinstance(f.type, pa.FixedShapeTensorType) for f in block.schema):
        return block.take(indices)
    columns = []
    for col in block.columns:
        gathered = _gather_chunked_tensor_rows(col, indices)
        columns.append(gathered if gathered is not None else col.take(indices))
    return pa.Table.from_arrays(columns, schema=block.schema)


def _column_types(blocks: Sequence[pa.Table]) -> dict[str, list[pa.DataType]]:
    """Each column name (in first-appearance order) -> the distinct types the blocks holding it give
    it (a list: extension types need not be hashable)."""
    types: dict[str, list[pa.DataType]] = {}
    for b in blocks:
        for field in b.schema:
            seen = types.setdefault(field.name, [])
            if field.type not in seen:
                seen.append(field.type)
    return types


def _unify_tensor_columns(blocks: Sequence[pa.Table]) -> list[pa.Table]:
    """Tensor columns whose shapes differ between blocks become variable-shape in every block."""
    ragged = {
        name for name, types in _column_types(blocks).items() if len(types) > 1 and any(map(is_tensor_type, types))
    }
    if not ragged:
        return list(blocks)
    out = []
    for b in blocks:
        for name in ragged & set(b.column_names):
            arr = column_to_numpy(b.column(name))
            values = list(arr) if arr.dtype != object else list(arr)
            col = _variable_tensor_column([np.asarray(v) for v in values]) if values else b.column(name)
            b = b.set_column(b.column_names.index(name), name, col)
        out.append(b)
    return out


def _unify_time_zones(blocks: Sequence[pa.Table]) -> list[pa.Table]:
    """Timestamp columns whose time zone differs between blocks (zoned in some, naive in others
    included) become naive in every block, each value keeping its UTC instant: Ray's row ``map``
    makes every zoned ``pd.Timestamp`` so."""
    naive = {
        name for name, types in _column_types(blocks).items()
        if len({t.tz for t in types if pa.types.is_timestamp(t)}) > 1
    }
    if not naive:
        return list(blocks)
    out = []
    for b in blocks:
        for name in naive & set(b.column_names):
            index = b.column_names.index(name)
            if pa.types.is_timestamp(b.schema.field(index).type):
                b = b.set_column(index, name, without_time_zone(b.column(index)))
        out.append(b)
    return out
