"""``read_binary_files``: one row per file, its bytes in column ``bytes``.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "a.bin").write_bytes(b"\\x00\\x01")
    >>> [t.column("bytes").to_pylist() for task in plan_binary(str(d)) for t in task()]
    [[b'\\x00\\x01']]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from .errors import ReadErrorPolicy
from .paths import FileReadOptions, ReadUnit, _is_plain_local_fs, plan_read
from .read_task import ReadTask

__all__ = ["plan_binary", "read_binary_unit", "read_file_bytes"]

_MAX_BINARY = 2**31 - 1


def read_file_bytes(fs: Any, path: str) -> bytes:
    """All bytes of one file (no decompression: binary files are read as they are stored).

    Example:
        >>> from fsspec.implementations.local import LocalFileSystem
        >>> len(read_file_bytes(LocalFileSystem(), __file__)) > 0
        True
    """
    if _is_plain_local_fs(fs):
        # fsspec's local cat_file costs ~0.1 ms per call (path normalising, a file wrapper): a
        # per-image cost that matters when a decode takes a few tenths of a millisecond.
        with open(path, "rb", buffering=0) as f:  # unbuffered: one read of the whole file
            return f.readall()
    return fs.cat_file(path)


def read_binary_unit(
    fs: Any, unit: ReadUnit, shown: str, policy: ReadErrorPolicy, options: FileReadOptions
) -> Iterator[pa.Table]:
    """Reader for one file: a one-row table ``{"bytes": <file contents>}``.

    Example:
        >>> import tempfile, pathlib
        >>> from fsspec.implementations.local import LocalFileSystem
        >>> from torchray_loader.io.paths import FileInfo
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bin"; _ = p.write_bytes(b"hi")
        >>> unit = ReadUnit(FileInfo(str(p)))
        >>> [t.to_pydict() for t in read_binary_unit(LocalFileSystem(), unit, str(p), ReadErrorPolicy(), FileReadOptions())]
        [{'bytes': [b'hi']}]
    """
    data = read_file_bytes(fs, unit.file.path)
    typ = pa.binary() if len(data) <= _MAX_BINARY else pa.large_binary()
    yield pa.table({"bytes": pa.array([data], type=typ)})


def plan_binary(paths: Any, **kwargs: Any) -> list[ReadTask]:
    """Read tasks for ``read_binary_files`` (``kwargs``: the common file options of :func:`plan_read`).

    Example:
        >>> plan_binary.__name__
        'plan_binary'
    """
    return plan_read(paths, read_binary_unit, **kwargs)
