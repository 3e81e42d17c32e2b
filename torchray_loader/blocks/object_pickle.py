"""Pickling of object-column values: the C pickler for data, cloudpickle for code.

An object column stores each value as its own pickle, so the cost per value is the cost per row of
``from_torch`` and of any UDF returning objects. Two choices keep it small:

* plain CPU tensors and numpy arrays of numeric dtype are written as their raw bytes plus dtype and
  shape (about 4 us for an MNIST sample, against 80 us for torch's ``torch.save``-based reduction and
  14 us for numpy's);
* values go through the C pickler first; only values it cannot pickle faithfully (lambdas, local or
  ``__main__`` functions and classes, which cloudpickle pickles by value) take cloudpickle.

Invariant: each value's piece of ``dumps_objects`` loads with plain ``pickle.loads`` and equals the
value in type, value, dtype and shape. A tensor or array comes back in a fresh buffer, writable
unless it was a read-only array (as with numpy's own pickle); non-contiguous ones keep their default
reduction; views of one storage inside one value come back as separate tensors.
"""

from __future__ import annotations

import functools
import io
import pickle
import types
from collections.abc import Sequence
from typing import Any

import cloudpickle
import numpy as np

__all__ = ["dumps_objects"]

#: numpy dtype kinds written as raw bytes (bool, ints, floats, complex).
_RAW_KINDS = frozenset("biufc")
#: Names of the torch dtypes numpy has.
_NUMPY_TORCH_DTYPES = frozenset(
    "float16 float32 float64 complex64 complex128 int8 int16 int32 int64 uint8 bool".split()
)


def dumps_objects(values: Sequence[Any]) -> tuple[bytes, np.ndarray]:
    """Object-column values as pickles in one byte string: value ``i`` is
    ``data[offsets[i]:offsets[i + 1]]``, which plain ``pickle.loads`` reads. One pickler serves all
    values (its memo cleared between them, so each piece loads on its own): a pickler and a buffer
    per value cost more than a small value's pickle.

    Example:
        >>> import numpy as np, pickle
        >>> data, offsets = dumps_objects([{"x": np.arange(3)}, lambda x: x + 1])
        >>> pickle.loads(data[offsets[0]:offsets[1]])
        {'x': array([0, 1, 2])}
        >>> pickle.loads(data[offsets[1]:offsets[2]])(1)
        2
    """
    buf = io.BytesIO()
    pickler = _DataPickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    for i, value in enumerate(values):
        start = buf.tell()
        try:
            pickler.dump(value)
        except Exception:  # noqa: BLE001 - cloudpickle either handles it or raises its own error
            buf.seek(start)
            buf.truncate()
            _CodePickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
        pickler.clear_memo()
        offsets[i + 1] = buf.tell()
    return buf.getvalue(), offsets


def _array_from_bytes(data: bytearray, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _tensor_from_bytes(data: bytearray, dtype: str, shape: tuple[int, ...]) -> Any:
    import torch

    return torch.from_numpy(_array_from_bytes(data, dtype, shape))


@functools.cache
def _torch_raw_dtypes() -> tuple[Any, frozenset[Any]]:
    """torch, and the torch dtypes numpy has (a tensor of another dtype keeps torch's own reduction)."""
    import torch

    return torch, frozenset(getattr(torch, name) for name in _NUMPY_TORCH_DTYPES)


def _raw_reduction(obj: Any) -> tuple[Any, tuple[Any, ...]] | None:
    """``(rebuild, args)`` writing ``obj``'s bytes once, or None where the default reduction applies."""
    cls = type(obj)
    if cls is np.ndarray:
        if obj.dtype.kind in _RAW_KINDS and obj.flags.c_contiguous:
            return _array_from_bytes, (pickle.PickleBuffer(obj), obj.dtype.str, obj.shape)
        return None
    if cls.__name__ == "Tensor" and cls.__module__ == "torch":
        torch, raw_dtypes = _torch_raw_dtypes()
        if (
            obj.is_cpu and obj.layout is torch.strided and not obj.requires_grad and obj.dtype in raw_dtypes
            and not obj.is_conj() and not obj.is_neg()
        ):
            array = obj.numpy()
            if array.flags.c_contiguous:
                return _tensor_from_bytes, (pickle.PickleBuffer(array), array.dtype.str, array.shape)
            return torch.from_numpy, (array,)
    return None


class _NeedsCloudpickle(Exception):
    """Raised by the data pickler for code that cloudpickle pickles by value."""


class KeepsReductions:
    """Pickler mixin holding the reductions given to ``_keep`` until ``clear_memo`` (or the pickler's
    end). Invariant: the ``tensor.numpy()`` array a reduction views outlives the dump. Freed mid-dump
    (it is referenced by that reduction only), a garbage collection during the same dump crashed the
    process (SIGSEGV in about half of the runs of ``from_torch`` over ``torch.from_numpy`` samples)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kept: list[Any] = []

    def _keep(self, reduced: Any) -> Any:
        if reduced is not None:
            self._kept.append(reduced)
        return reduced

    def clear_memo(self) -> None:
        super().clear_memo()  # type: ignore[misc]
        self._kept.clear()


class _DataPickler(KeepsReductions, pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (types.FunctionType, type)) and (
            obj.__module__ == "__main__" or "<locals>" in obj.__qualname__
        ):
            raise _NeedsCloudpickle(obj)
        return self._keep(_raw_reduction(obj)) or NotImplemented


class _CodePickler(KeepsReductions, cloudpickle.CloudPickler):
    def reducer_override(self, obj: Any) -> Any:
        return self._keep(_raw_reduction(obj)) or super().reducer_override(obj)
