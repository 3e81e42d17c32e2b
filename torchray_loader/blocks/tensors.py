"""Arrow column types for tensors and Python objects, and conversion from/to numpy.

Three column kinds go beyond Arrow's primitives:

* fixed-shape tensors: Arrow's canonical ``fixed_shape_tensor`` extension (zero-copy to numpy);
* variable-shape (ragged) tensors: :class:`VariableShapeTensorType`, storage
  ``struct<data: large_list<value>, shape: list<int64>>``;
* Python objects: :class:`PythonObjectType`, pickled values. Such columns live in memory and in
  worker transfer only: writers refuse them and readers refuse files carrying them unless
  ``allow_pickle`` (promise 8).
"""

from __future__ import annotations

import functools
import json
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .object_pickle import dumps_objects
from .uniform_pickle import dumps_uniform, loads_uniform

__all__ = [
    "VariableShapeTensorType",
    "PythonObjectType",
    "column_from_values",
    "column_to_numpy",
    "is_tensor_type",
    "type_display_name",
    "uniform_object_column",
    "without_time_zone",
]

VARIABLE_SHAPE_TENSOR_NAME = "torchray.variable_shape_tensor"
PYTHON_OBJECT_NAME = "torchray.python_object"


class VariableShapeTensorType(pa.ExtensionType):
    """A column whose rows are ndarrays of one dtype and ndim but different shapes."""

    def __init__(self, value_type: pa.DataType, ndim: int) -> None:
        self.ndim = ndim
        storage = pa.struct([("data", pa.large_list(value_type)), ("shape", pa.list_(pa.int64()))])
        super().__init__(storage, VARIABLE_SHAPE_TENSOR_NAME)

    @property
    def value_type(self) -> pa.DataType:
        return self.storage_type.field("data").type.value_type

    def __arrow_ext_serialize__(self) -> bytes:
        return json.dumps({"ndim": self.ndim}).encode()

    @classmethod
    def __arrow_ext_deserialize__(cls, storage_type: pa.DataType, serialized: bytes) -> VariableShapeTensorType:
        ndim = json.loads(serialized.decode())["ndim"]
        return cls(storage_type.field("data").type.value_type, ndim)

    def __reduce__(self):
        return (VariableShapeTensorType, (self.value_type, self.ndim))


class PythonObjectType(pa.ExtensionType):
    """A column of arbitrary Python objects, pickled. Never written to files."""

    def __init__(self) -> None:
        super().__init__(pa.large_binary(), PYTHON_OBJECT_NAME)

    def __arrow_ext_serialize__(self) -> bytes:
        return b""

    @classmethod
    def __arrow_ext_deserialize__(cls, storage_type: pa.DataType, serialized: bytes) -> PythonObjectType:
        return cls()

    def __reduce__(self):
        return (PythonObjectType, ())


for _ext in (VariableShapeTensorType(pa.uint8(), 1), PythonObjectType()):
    try:
        pa.register_extension_type(_ext)
    except pa.ArrowKeyError:  # module reloaded
        pass


def is_tensor_type(t: pa.DataType) -> bool:
    """True for fixed- and variable-shape tensor columns."""
    return isinstance(t, (pa.FixedShapeTensorType, VariableShapeTensorType))


_VALUE_TYPE_NAMES = {"float": "float", "halffloat": "halffloat", "double": "double"}


def type_display_name(t: pa.DataType) -> str:
    """How ``Schema`` prints a column type (the Ray Data format).

    Example:
        >>> import pyarrow as pa
        >>> type_display_name(pa.fixed_shape_tensor(pa.uint8(), (32, 32, 3)))
        'numpy.ndarray(shape=(32, 32, 3), dtype=uint8)'
    """
    if isinstance(t, pa.FixedShapeTensorType):
        return f"numpy.ndarray(shape={tuple(t.shape)}, dtype={t.value_type})"
    if isinstance(t, VariableShapeTensorType):
        return f"numpy.ndarray(ndim={t.ndim}, dtype={t.value_type})"
    if isinstance(t, PythonObjectType):
        return "<class 'object'>"
    return str(t)


# ----------------------------------------------------------------------------- numpy/torch -> Arrow


#: What ``Tensor.numpy()`` raises for a tensor numpy has no type or layout for (bfloat16, sparse, meta).
_NOT_NUMPY_ERRORS = (TypeError, RuntimeError, NotImplementedError)


def _as_numpy(value: Any) -> Any:
    """torch tensors -> numpy (CPU, detached); everything else unchanged."""
    mod = type(value).__module__
    if mod.startswith("torch") and hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return value


@functools.lru_cache(maxsize=512)
def _fixed_tensor_type(dtype: np.dtype, shape: tuple[int, ...]) -> pa.DataType:
    return pa.fixed_shape_tensor(pa.from_numpy_dtype(dtype), shape)


def _fixed_tensor_column(arr: np.ndarray) -> pa.Array:
    """A row-major fixed-shape tensor column over ``arr``'s memory (no copy when C-contiguous, except
    for bool, whose values Arrow packs into bits as Ray's bool tensor columns hold them).

    Built from its storage directly: a fraction of ``FixedShapeTensorArray.from_numpy_ndarray``'s
    cost, which matters for the one-row tables a per-file reader makes."""
    arr = np.ascontiguousarray(arr)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"unsupported tensor dtype {arr.dtype}")
    tensor_type = _fixed_tensor_type(arr.dtype, arr.shape[1:])
    row_size = int(np.prod(arr.shape[1:]))
    if row_size == 0:  # zero-size rows: flat values cannot tell the row count
        storage = pa.array([[]] * len(arr), type=tensor_type.storage_type)
    else:
        storage = pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1), type=tensor_type.value_type), row_size)
    return pa.ExtensionArray.from_storage(tensor_type, storage)


def _variable_tensor_column(arrays: Sequence[np.ndarray]) -> pa.Array:
    dtypes = {a.dtype for a in arrays}
    ndims = {a.ndim for a in arrays}
    if len(ndims) != 1:
        raise TypeError("ragged tensors of different ndim")
    dtype = np.result_type(*dtypes) if len(dtypes) > 1 else dtypes.pop()
    value_type = pa.from_numpy_dtype(dtype)
    sizes = np.array([a.size for a in arrays], dtype=np.int64)
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    flat = np.concatenate([np.ascontiguousarray(a, dtype=dtype).reshape(-1) for a in arrays]) if arrays else np.zeros(0, dtype)
    data = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat, type=value_type))
    shape = pa.array([list(a.shape) for a in arrays], type=pa.list_(pa.int64()))
    storage = pa.StructArray.from_arrays([data, shape], names=["data", "shape"])
    return pa.ExtensionArray.from_storage(VariableShapeTensorType(value_type, ndims.pop()), storage)


def _object_array(data: Any, offsets: np.ndarray) -> pa.Array:
    storage = pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    return pa.ExtensionArray.from_storage(PythonObjectType(), storage)


def _object_column(values: Sequence[Any]) -> pa.Array:
    return _object_array(*dumps_objects(values))


def uniform_object_column(values: Sequence[Any]) -> pa.Array | None:
    """An object column of ``values`` written in bulk where they share one layout (tuples, lists,
    dicts of equal-shape tensors, ints, floats: :mod:`.uniform_pickle`), else None. It equals
    ``_object_column(values)`` as read by :func:`column_to_numpy`.

    Example:
        >>> column_to_numpy(uniform_object_column([(1, 2.5), (3, 4.0)])).tolist()
        [(1, 2.5), (3, 4.0)]
    """
    encoded = dumps_uniform(values)
    return None if encoded is None else _object_array(*encoded)


def _is_arraylike_type(t: type) -> bool:
    return issubclass(t, np.ndarray) or (t.__module__.startswith("torch") and hasattr(t, "detach"))


def _is_pandas_temporal_type(t: type) -> bool:
    return t.__module__.startswith("pandas") and t.__name__ in ("Timestamp", "Timedelta")


def _pandas_temporal_column(values: list[Any], types: set[type]) -> pa.Array | None:
    """``pd.Timestamp``/``pd.Timedelta`` values (``None`` among them) as a column in their own unit
    (nanoseconds, where pyarrow's inference would cut them to microseconds), time zone kept;
    timestamps of several zones (or zoned and naive ones) as naive UTC instants, as Ray's row ``map``
    gives them (:func:`without_time_zone`). ``None`` when pandas cannot make one typed column of
    them (other values among them)."""
    import pandas as pd

    series = pd.Series(values)
    try:
        if series.dtype != object:
            return pa.array(series)
        if types <= {pd.Timestamp, type(pd.NaT), type(None)}:
            return without_time_zone(pa.array(pd.to_datetime(series, utc=True)))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, ValueError, OverflowError):
        pass
    return None


def without_time_zone(col: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A timestamp column as naive timestamps of the same unit holding the same UTC instants (a
    zone-less column is returned as is). What Ray's row ``map`` makes of zoned ``pd.Timestamp``s,
    and how columns whose zones differ between blocks are merged.

    Example:
        >>> import pyarrow as pa
        >>> col = pa.array([0], pa.timestamp("ns", tz="Asia/Tokyo"))
        >>> without_time_zone(col).type, without_time_zone(col)[0].value
        (TimestampType(timestamp[ns]), 0)
    """
    t = col.type
    return col if t.tz is None else col.cast(pa.timestamp(t.unit))


def column_from_values(values: Any) -> pa.Array | pa.ChunkedArray:
    """Build one Arrow column from what a UDF returned for it.

    ndarrays/tensors of ndim 1 become primitive columns, of ndim > 1 fixed-shape tensor columns; a list
    of equal-shape arrays becomes a fixed-shape tensor column, of unequal shapes a variable-shape one
    (bool ones too, as Ray's bool tensor columns); scalars, strings, bytes and nested lists become
    native Arrow types; anything else an object column.

    Example:
        >>> import numpy as np
        >>> column_from_values(np.zeros((2, 3), dtype=np.uint8)).type
        FixedShapeTensorType(extension<arrow.fixed_shape_tensor[value_type=uint8, shape=[3]]>)
    """
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    try:
        values = _as_numpy(values)
    except _NOT_NUMPY_ERRORS:  # a tensor numpy cannot hold (bfloat16, sparse): its rows as objects
        return _object_column(list(values))
    if isinstance(values, np.ndarray):
        if values.dtype != object:
            if values.ndim == 0:
                raise ValueError("a column must have one value per row, got a 0-d array")
            if values.ndim == 1:
                return pa.array(values)
            if values.dtype.kind in "biuf":
                return _fixed_tensor_column(values)
            return _object_column(list(values))
        values = list(values)
    elif not isinstance(values, list):
        values = list(values)
    types = set(map(type, values))
    arraylike = [_is_arraylike_type(t) for t in types]  # per type, not per value
    if any(map(_is_pandas_temporal_type, types)):
        temporal = _pandas_temporal_column(values, types)
        if temporal is not None:
            return temporal
    if arraylike and all(arraylike):
        try:
            arrays = [np.asarray(_as_numpy(v)) for v in values]
        except _NOT_NUMPY_ERRORS:
            return _object_column(values)
        if all(a.dtype.kind in "biuf" for a in arrays):
            shapes = {a.shape for a in arrays}
            dtypes = {a.dtype for a in arrays}
            if len(shapes) == 1 and len(dtypes) == 1:
                stacked = arrays[0][np.newaxis] if len(arrays) == 1 else np.stack(arrays)
                return pa.array(stacked) if arrays[0].ndim == 0 else _fixed_tensor_column(stacked)
            if len({a.ndim for a in arrays}) == 1:
                return _variable_tensor_column(arrays)
        return _object_column(values)
    if any(arraylike):
        return _object_column(values)
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError, OverflowError):
        return _object_column(values)


# ----------------------------------------------------------------------------- Arrow -> numpy


def _combine(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        if col.num_chunks == 1:
            return col.chunk(0)
        return col.combine_chunks()
    return col


def _unpickle_objects(arr: pa.Array) -> np.ndarray:
    storage = arr.storage
    out = np.empty(len(arr), dtype=object)
    if storage.null_count:
        for i, b in enumerate(storage.to_pylist()):
            out[i] = None if b is None else pickle.loads(b)
        return out
    # Each value is loaded straight from the data buffer (no bytes object per value).
    _, offset_buf, data_buf = storage.buffers()
    offset_array = np.frombuffer(offset_buf, dtype=np.int64, count=len(storage) + 1, offset=storage.offset * 8)
    data = memoryview(data_buf) if data_buf is not None else memoryview(b"")
    uniform = loads_uniform(data, offset_array)
    if uniform is not None:
        for i, value in enumerate(uniform):  # element-wise, as below
            out[i] = value
        return out
    offsets = offset_array.tolist()
    loads = pickle.loads
    # Element by element: a slice assignment would let numpy look into the values (tensors, lists).
    for i, (a, b) in enumerate(zip(offsets[:-1], offsets[1:], strict=True)):
        out[i] = loads(data[a:b])
    return out


def _bool_tensor_to_numpy(arr: pa.Array) -> np.ndarray:
    """A fixed-shape tensor column of bools as an ``(n, *shape)`` bool array, unpacked from Arrow's
    bits (a copy; Arrow's own tensor conversion refuses bools). Null values read as their bits."""
    t = arr.type
    storage = arr.storage
    row_size = int(np.prod(t.shape))
    start = storage.values.offset + storage.offset * row_size
    count = len(storage) * row_size
    bits = np.frombuffer(storage.values.buffers()[1], dtype=np.uint8)[start // 8 :]
    flat = np.unpackbits(bits, count=start % 8 + count, bitorder="little")[start % 8 :]
    return flat.view(np.bool_).reshape(len(arr), *t.shape)


def _variable_to_numpy(arr: pa.Array) -> np.ndarray:
    storage = arr.storage
    data = storage.field("data")
    shapes = storage.field("shape").to_pylist()
    flat = data.values.to_numpy(zero_copy_only=False)
    offsets = data.offsets.to_numpy()
    out = np.empty(len(arr), dtype=object)
    for i, shape in enumerate(shapes):
        out[i] = flat[offsets[i] : offsets[i + 1]].reshape(shape)
    return out


def column_to_numpy(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """One Arrow column as a numpy array (zero-copy for fixed-width columns without nulls, except
    bool tensors, whose values Arrow packs into bits).

    Fixed-shape tensors come back as an ``(n, *shape)`` array; ragged tensors, strings, lists and
    objects as 1-d object arrays.

    Example:
        >>> import pyarrow as pa
        >>> column_to_numpy(pa.array([1, 2, 3])).tolist()
        [1, 2, 3]
    """
    arr = _combine(col)
    t = arr.type
    if isinstance(t, pa.FixedShapeTensorType):
        try:
            return arr.to_numpy_ndarray()
        except pa.ArrowTypeError:
            if not pa.types.is_boolean(t.value_type):
                raise
            return _bool_tensor_to_numpy(arr)
    if isinstance(t, VariableShapeTensorType):
        return _variable_to_numpy(arr)
    if isinstance(t, PythonObjectType):
        return _unpickle_objects(arr)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        inner = arr.to_pylist()
        vt = t.value_type
        # Lists of strings or bytes stay object arrays, as Ray gives them (not fixed-width "<U" arrays).
        as_objects = pa.types.is_string(vt) or pa.types.is_large_string(vt) or pa.types.is_binary(vt) or pa.types.is_large_binary(vt)
        out = np.empty(len(inner), dtype=object)
        for i, v in enumerate(inner):
            out[i] = None if v is None else (np.array(v, dtype=object) if as_objects else np.asarray(v))
        return out
    if pa.types.is_struct(t) or pa.types.is_map(t):
        out = np.empty(len(arr), dtype=object)
        for i, v in enumerate(arr.to_pylist()):
            out[i] = v
        return out
    if pa.types.is_dictionary(t):
        arr = arr.dictionary_decode()
    return arr.to_numpy(zero_copy_only=False)
