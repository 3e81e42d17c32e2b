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
import math
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


def _check_array_size(f: Any, size: int, shown: str, member: str = "") -> None:
    """Refuse an array whose header promises more data than the file (or ``.npz`` member, ``size``
    bytes) holds. numpy allocates what the header claims before reading: a 100-byte file claiming
    a shape of terabytes would otherwise end in ``MemoryError`` (or a huge allocation) instead of an
    error naming the file. Headers numpy cannot parse are left to ``np.load`` to report."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read_header(f)
        start = f.tell()
    except Exception:
        return
    if dtype.hasobject:  # pickled: refused (or, with allow_pickle, sized by its pickle)
        return
    need = math.prod(shape) * dtype.itemsize
    if need > size - start:
        where = f"{member}: " if member else ""
        raise ReadError(
            shown,
            f"{where}truncated: its header promises {need} bytes of {dtype} data of shape {shape}, "
            f"the file holds {max(0, size - start)}",
        )


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
    if not data.startswith(b"PK"):  # .npy (an .npz is a zip file)
        _check_array_size(io.BytesIO(data), len(data), shown)
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
            archive = loaded.zip
            assert archive is not None  # np.load opened it
            for info in archive.infolist():
                if info.filename.endswith(".npy"):
                    with archive.open(info) as member:
                        _check_array_size(member, info.file_size, shown, info.filename)
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
