"""``read_numpy``: ``.npy`` files (rows along the first axis) in column ``data``; ``.npz`` files give
one column per array.

Files are loaded with ``allow_pickle=False`` (promise 8: reading never unpickles a file's bytes)
unless ``DataContext.allow_pickle`` was set when ``read_numpy`` was called.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> d = pathlib.Path(tempfile.mkdtemp()); np.save(d / "a.npy", np.arange(6).reshape(3, 2))
    >>> [t.num_rows for task in plan_numpy(str(d)) for t in task()]
    [3]
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from ..blocks import column_from_values
from ..errors import ReadError
from .errors import ReadErrorPolicy
from .paths import FileReadOptions, ReadUnit, plan_read, read_input_bytes
from .read_task import ReadTask

__all__ = ["plan_numpy", "read_numpy_unit", "NUMPY_EXTENSIONS"]

NUMPY_EXTENSIONS = ["npy", "npz"]


def _column(arr: np.ndarray, shown: str) -> pa.Array:
    if arr.ndim == 0:
        arr = arr.reshape(1)
    return column_from_values(arr)


def read_numpy_unit(
    fs: Any, unit: ReadUnit, shown: str, policy: ReadErrorPolicy, options: FileReadOptions
) -> Iterator[pa.Table]:
    """Reader for one ``.npy``/``.npz`` file.

    Example:
        >>> import tempfile, pathlib
        >>> from fsspec.implementations.local import LocalFileSystem
        >>> from torchray_loader.io.paths import FileInfo
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.npy"; np.save(p, np.arange(3))
        >>> unit = ReadUnit(FileInfo(str(p)))
        >>> [t.to_pydict() for t in read_numpy_unit(LocalFileSystem(), unit, str(p), ReadErrorPolicy(), FileReadOptions())]
        [{'data': [0, 1, 2]}]
    """
    data = read_input_bytes(fs, unit.file.path)
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=options.allow_pickle)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise ReadError(
                shown,
                "holds pickled Python objects; refusing to unpickle data from a file "
                "(set DataContext.get_current().allow_pickle = True if you trust it)",
            ) from exc
        raise
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            columns = {name: _column(loaded[name], shown) for name in loaded.files}
        lengths = {name: len(col) for name, col in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ReadError(shown, f"arrays in the .npz have different lengths: {lengths}")
        yield pa.table(columns)
        return
    yield pa.table({"data": _column(loaded, shown)})


def plan_numpy(paths: Any, **kwargs: Any) -> list[ReadTask]:
    """Read tasks for ``read_numpy`` (``kwargs``: the common file options of :func:`~.paths.plan_read`).

    Example:
        >>> plan_numpy.__name__
        'plan_numpy'
    """
    return plan_read(paths, read_numpy_unit, **kwargs)
