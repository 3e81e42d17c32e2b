"""Arrow batches -> torch tensors.

A batch is usually a slice of a larger *parent* table (a block, or a shuffled window). Each parent is
converted once (``ParentCache``) and batches are cut as tensor views, so the per-batch cost is one
view per column. Memory rule: a parent whose memory is private to this iteration (``fresh``: produced
by a shuffle/concat here) becomes tensors without a copy; any other parent (a cached block, the
user's own ndarray) is copied once, so a training loop that mutates its batch in place can never
corrupt the dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from ..blocks.tensors import column_to_numpy
from ..iteration.batcher import BatchRun, BatchTable

__all__ = ["ParentCache", "RunBatches", "check_dtypes", "numpy_to_torch_value"]

_NUMERIC_KINDS = "biuf"


def _zero_copy_numpy(col: pa.ChunkedArray) -> np.ndarray | None:
    """A writable zero-copy view of a single-chunk, null-free numeric column, else None."""
    if col.num_chunks != 1:
        return None
    arr = col.chunk(0)
    if arr.null_count:
        return None
    t = arr.type
    shape: tuple[int, ...] = (len(arr),)
    if isinstance(t, pa.FixedShapeTensorType):
        storage = arr.storage
        values = storage.values
        if values.null_count or values.offset != 0 and storage.offset != 0:
            return None
        inner = int(np.prod(t.shape))
        offset = storage.offset * inner + values.offset
        arr, t, shape = values, t.value_type, (len(storage), *t.shape)
        count = len(storage) * inner
    else:
        offset, count = arr.offset, len(arr)
    if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        return None
    dtype = np.dtype(t.to_pandas_dtype())
    buf = arr.buffers()[1]
    if buf is None or not buf.is_mutable:
        return None
    try:
        view = np.frombuffer(buf, dtype=dtype, count=count, offset=offset * dtype.itemsize)
    except (ValueError, BufferError):
        return None
    if not view.flags.writeable:
        return None
    return view.reshape(shape)


def numpy_to_torch_value(arr: np.ndarray, dtype: torch.dtype | None, copy: bool) -> Any:
    """A column as a tensor (numeric, or arrays of one shape and dtype: stacked, whatever the block
    around them held), or a list (strings, ragged tensors as tensors, objects)."""
    if arr.dtype.kind in _NUMERIC_KINDS:
        t = torch.from_numpy(np.array(arr, copy=True) if copy or not arr.flags.writeable else arr)
        return t.to(dtype) if dtype is not None and t.dtype != dtype else t
    if _same_shape_arrays(arr):
        t = torch.from_numpy(np.stack(list(arr)))
        return t.to(dtype) if dtype is not None and t.dtype != dtype else t
    out = []
    for v in arr:
        if isinstance(v, np.ndarray) and v.dtype.kind in _NUMERIC_KINDS:
            tv = torch.from_numpy(np.array(v, copy=True))
            out.append(tv.to(dtype) if dtype is not None else tv)
        else:
            out.append(v)
    return out


def _same_shape_arrays(arr: np.ndarray) -> bool:
    """Whether an object array holds numeric arrays all of one shape and dtype (a batch of a
    variable-shape column whose rows happen to agree)."""
    if arr.dtype != object or len(arr) == 0:
        return False
    first = arr[0]
    if not isinstance(first, np.ndarray) or first.dtype.kind not in _NUMERIC_KINDS:
        return False
    return all(isinstance(v, np.ndarray) and v.shape == first.shape and v.dtype == first.dtype for v in arr)


def check_dtypes(dtypes: Any) -> None:
    """Validate ``dtypes``: a torch dtype, or a dict of column -> torch dtype (may name a subset)."""
    if dtypes is None or isinstance(dtypes, torch.dtype):
        return
    if isinstance(dtypes, Mapping) and all(isinstance(v, torch.dtype) for v in dtypes.values()):
        return
    raise TypeError(f"dtypes must be a torch.dtype or a dict of column -> torch.dtype, got {dtypes!r}")


def _dtype_for(dtypes: Any, name: str) -> torch.dtype | None:
    if dtypes is None or isinstance(dtypes, torch.dtype):
        return dtypes
    return dtypes.get(name)


def _run_views(value: torch.Tensor, start: int, n: int, count: int) -> tuple[torch.Tensor, ...]:
    """Views of ``value``'s rows ``[start + k*n, start + (k+1)*n)`` for k < ``count``, in one C++ call
    (``unbind`` of a reshaped view costs ~20% less per view than ``split``)."""
    rows = value[start : start + n * count]
    try:
        return rows.view(count, n, *rows.shape[1:]).unbind(0)
    except RuntimeError:  # strides that do not allow the reshape as a view
        return rows.split(n)


#: Tensor views made at once when a run is iterated: below the collector's young-generation
#: threshold (700 allocations), so a few batches' views usually die before any collection sees them.
VIEWS_AT_ONCE = 512


class RunBatches:
    """A run's batches, made when iterated (in the consumer's thread), a few at a time: one
    ``unbind`` per column makes ``VIEWS_AT_ONCE // columns`` batches' views (at least one batch).

    Invariant: only that many batches' tensors exist before the consumer takes them, so they are
    freed young, in the thread that made them (see :class:`ParentCache`).
    """

    __slots__ = ("columns", "run")

    def __init__(self, columns: dict[str, torch.Tensor], run: BatchRun) -> None:
        self.columns = columns
        self.run = run

    def __len__(self) -> int:
        return self.run.count

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        names = list(self.columns)
        offset, n, count = self.run.offset, self.run.num_rows, self.run.count
        step = max(1, VIEWS_AT_ONCE // len(names))
        for k in range(0, count, step):
            m = min(step, count - k)
            pieces = [_run_views(value, offset + k * n, n, m) for value in self.columns.values()]
            yield from [dict(zip(names, views, strict=True)) for views in zip(*pieces, strict=True)]

    def moved(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> RunBatches:
        """The same batches over ``fn`` of each column's run rows (one call per column: a pinned or
        device copy), cut again when iterated."""
        run = self.run
        start, stop = run.offset, run.offset + run.num_rows * run.count
        columns = {name: fn(value[start:stop]) for name, value in self.columns.items()}
        return RunBatches(columns, BatchRun(run.parent, run.fresh, 0, run.num_rows, run.count))


class ParentCache:
    """Converts batches to ``dict[str, Tensor | list]``, one parent conversion per parent table.

    A run's batches are consecutive equal slices of one parent, so each numeric column is cut into
    batch views a few batches at a time (one C++ call); a batch then costs one ``dict`` build.

    Invariant: a run's views are made when the run is iterated, ``VIEWS_AT_ONCE`` views at a time,
    in the iterating (consumer) thread; never for a whole parent ahead of time. Tensors are tracked
    by Python's cyclic garbage collector: views made ahead outlive young collections, get promoted,
    and the promotions trigger full collections that walk every object in the process (W2, 34
    columns: about 0.2 s each, once or twice per 0.8 s epoch).

    Example:
        >>> import pyarrow as pa
        >>> from torchray_loader.iteration import iter_batch_runs
        >>> cache = ParentCache(dtypes=None)
        >>> runs = iter_batch_runs([pa.table({"x": [1, 2, 3]})], 2)
        >>> [cache.to_torch(b)["x"].tolist() for run in runs for b in run.batches()]
        [[1, 2], [3]]
    """

    def __init__(self, dtypes: Any) -> None:
        check_dtypes(dtypes)
        self.dtypes = dtypes
        self._parent: pa.Table | None = None
        self._columns: dict[str, Any] = {}
        self._all_tensors = False

    def _convert_parent(self, parent: pa.Table, fresh: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in parent.column_names:
            col = parent.column(name)
            dtype = _dtype_for(self.dtypes, name)
            view = _zero_copy_numpy(col) if fresh else None
            if view is not None:
                t = torch.from_numpy(view)
                out[name] = t.to(dtype) if dtype is not None and t.dtype != dtype else t
                continue
            arr = column_to_numpy(col)
            if arr.dtype.kind in _NUMERIC_KINDS:
                out[name] = numpy_to_torch_value(arr, dtype, copy=not fresh)
            else:
                out[name] = arr  # sliced per batch, then converted to a list
        return out

    def _enter(self, parent: pa.Table, fresh: bool) -> None:
        if parent is not self._parent:
            self._columns = self._convert_parent(parent, fresh)
            self._parent = parent
            self._all_tensors = bool(self._columns) and all(isinstance(v, torch.Tensor) for v in self._columns.values())

    def convert_run(self, run: BatchRun) -> Iterable[dict[str, Any]]:
        """All batches of ``run``, converted; when every column is numeric they are made as they are
        iterated (see the class invariant).

        Example:
            >>> import pyarrow as pa
            >>> from torchray_loader.iteration import BatchRun
            >>> run = BatchRun(pa.table({"x": [1, 2, 3, 4]}), True, 0, 2, 2)
            >>> [b["x"].tolist() for b in ParentCache(dtypes=None).convert_run(run)]
            [[1, 2], [3, 4]]
        """
        self._enter(run.parent, run.fresh)
        if not self._all_tensors:
            return [self.to_torch(bt) for bt in run.batches()]
        return RunBatches(self._columns, run)

    def to_torch(self, batch: BatchTable) -> dict[str, Any]:
        self._enter(batch.parent, batch.fresh)
        start, stop = batch.offset, batch.offset + batch.num_rows
        result: dict[str, Any] = {}
        for name, value in self._columns.items():
            if isinstance(value, torch.Tensor):
                result[name] = value[start:stop]
            else:
                result[name] = numpy_to_torch_value(value[start:stop], _dtype_for(self.dtypes, name), copy=True)
        return result
