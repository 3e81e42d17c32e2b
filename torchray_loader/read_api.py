"""Sources: ``range``, ``from_*`` (in memory) and ``read_*`` (files) -> :class:`Dataset`."""

from __future__ import annotations

import builtins
import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .blocks import block_from_batch, block_from_rows, column_from_values
from .context import DataContext
from .dataset import Dataset
from .io.read_task import ReadTask
from .plan import InputBlocks, Read

__all__ = [
    "range",
    "range_tensor",
    "from_items",
    "from_numpy",
    "from_pandas",
    "from_arrow",
]

#: In-memory sources make at least this many blocks (when there are that many rows), so there is
#: parallelism to exploit. It never depends on num_workers: block boundaries fix the order.
MIN_BLOCKS = 8


def _block_bounds(n: int, override_num_blocks: int | None) -> list[tuple[int, int]]:
    if override_num_blocks is not None:
        if not isinstance(override_num_blocks, int) or override_num_blocks < 1:
            raise ValueError(f"override_num_blocks must be a positive int, got {override_num_blocks!r}")
        k = override_num_blocks
    else:
        rows_per_block = DataContext.get_current().target_rows_per_block
        k = max(math.ceil(n / rows_per_block), min(n, MIN_BLOCKS))
    k = max(1, min(k, n)) if n else 1
    edges = np.linspace(0, n, k + 1).astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _range_block(start: int, stop: int, shape: tuple[int, ...] | None) -> list[pa.Table]:
    ids = np.arange(start, stop, dtype=np.int64)
    if shape is None:
        return [pa.table({"id": ids})]
    data = np.broadcast_to(ids.reshape((-1,) + (1,) * len(shape)), (len(ids), *shape))
    return [block_from_batch({"data": np.ascontiguousarray(data)})]


def _check_count(n: Any, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"{name} must be a non-negative int, got {n!r}")
    return int(n)


def range(n: int, *, override_num_blocks: int | None = None) -> Dataset:  # noqa: A001
    """Rows ``{"id": 0}`` ... ``{"id": n-1}``, generated in parallel read tasks.

    Example:
        >>> import torchray_loader as rd
        >>> rd.range(3).take_all()
        [{'id': 0}, {'id': 1}, {'id': 2}]
    """
    n = _check_count(n)
    tasks = tuple(
        ReadTask(functools.partial(_range_block, a, b, None), num_rows=b - a, size_bytes=8 * (b - a))
        for a, b in _block_bounds(n, override_num_blocks)
    )
    return Dataset(Read(tasks, "ReadRange", pa.schema([("id", pa.int64())])))


def range_tensor(n: int, *, shape: tuple[int, ...] = (1,), override_num_blocks: int | None = None) -> Dataset:
    """Rows ``{"data": np.full(shape, i)}`` for ``i`` in ``range(n)``.

    Example:
        >>> import torchray_loader as rd
        >>> rd.range_tensor(2, shape=(2, 2)).take(1)[0]["data"].tolist()
        [[0, 0], [0, 0]]
    """
    n = _check_count(n)
    shape = tuple(int(s) for s in shape)
    tasks = tuple(
        ReadTask(functools.partial(_range_block, a, b, shape), num_rows=b - a)
        for a, b in _block_bounds(n, override_num_blocks)
    )
    return Dataset(Read(tasks, "ReadRangeTensor", pa.schema([("data", pa.fixed_shape_tensor(pa.int64(), shape))])))


def from_items(items: Sequence[Any], *, override_num_blocks: int | None = None) -> Dataset:
    """A Dataset from a list of rows. Dict items become rows; anything else goes in column ``item``.

    Example:
        >>> import torchray_loader as rd
        >>> rd.from_items([{"a": 1}, {"a": 2}]).count()
        2
    """
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
        raise TypeError(f"items must be a list, got {type(items).__name__}")
    blocks = []
    for a, b in _block_bounds(len(items), override_num_blocks):
        chunk = items[a:b]
        if chunk and all(isinstance(x, dict) for x in chunk):
            blocks.append(block_from_rows(chunk, producer="from_items"))
        elif any(isinstance(x, dict) for x in chunk):
            raise TypeError("from_items: items must be all dicts or all non-dicts")
        else:
            blocks.append(pa.table({"item": column_from_values(list(chunk))}) if chunk else pa.table({}))
    return Dataset(InputBlocks(blocks, "FromItems"))


def from_numpy(ndarrays: np.ndarray | Sequence[np.ndarray]) -> Dataset:
    """A Dataset with column ``data`` from an ndarray (or a list: one block each). The first axis is rows.

    Example:
        >>> import numpy as np, torchray_loader as rd
        >>> rd.from_numpy(np.ones((2, 3))).schema().names
        ['data']
    """
    arrays = [ndarrays] if isinstance(ndarrays, np.ndarray) else list(ndarrays)
    for a in arrays:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"from_numpy expects ndarrays, got {type(a).__name__}")
        if a.ndim == 0:
            raise ValueError("from_numpy: arrays need at least one dimension (rows)")
    return Dataset(InputBlocks([block_from_batch({"data": a}) for a in arrays], "FromNumpy"))


def from_pandas(dfs: Any) -> Dataset:
    """A Dataset from a pandas DataFrame or a list of them (one block each).

    Example:
        >>> import pandas as pd, torchray_loader as rd
        >>> rd.from_pandas(pd.DataFrame({"a": [1, 2]})).count()
        2
    """
    dfs = dfs if isinstance(dfs, (list, tuple)) else [dfs]
    blocks = []
    for df in dfs:
        if not (type(df).__module__.startswith("pandas") and type(df).__name__ == "DataFrame"):
            raise TypeError(f"from_pandas expects DataFrames, got {type(df).__name__}")
        blocks.append(block_from_batch(df))
    return Dataset(InputBlocks(blocks, "FromPandas"))


def from_arrow(tables: pa.Table | Sequence[pa.Table]) -> Dataset:
    """A Dataset from a pyarrow Table or a list of them (one block each).

    Example:
        >>> import pyarrow as pa, torchray_loader as rd
        >>> rd.from_arrow(pa.table({"a": [1, 2]})).count()
        2
    """
    tables = [tables] if isinstance(tables, (pa.Table, pa.RecordBatch)) else list(tables)
    blocks = []
    for t in tables:
        if isinstance(t, pa.RecordBatch):
            t = pa.Table.from_batches([t])
        if not isinstance(t, pa.Table):
            raise TypeError(f"from_arrow expects pyarrow Tables, got {type(t).__name__}")
        blocks.append(t)
    return Dataset(InputBlocks(blocks, "FromArrow"))


_ = builtins  # `range` is shadowed above; use builtins.range in this module.

# ---------------------------------------------------------------------------------------------
# File sources (read_*) follow below this line; see torchray_loader/io/ for the readers.
