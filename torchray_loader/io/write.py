"""Sinks: ``write_parquet`` / ``write_numpy`` / ``write_csv`` / ``write_json`` through one function,
:func:`write_blocks`.

File names
----------
One file per non-empty block, named ``part-{i:06d}.{ext}`` where ``i`` counts the written blocks in
dataset order (``part-000000.parquet``, ``part-000001.parquet``...), so reading the directory back
(sorted) gives the rows in their original order. Empty blocks are not written; a dataset with no
rows writes one empty ``part-000000`` file (parquet and CSV keep the columns).

A directory that already holds files is handled by ``mode``, as in Ray (``SaveMode``):

* ``"append"`` (the default): the new files are added; numbering goes on after the highest
  ``part-`` index already there, so no file is replaced and a read gives the old rows, then the new;
* ``"overwrite"``: everything in the directory is removed first;
* ``"error"`` (or ``"create"``): ``FileExistsError``;
* ``"ignore"``: nothing is written (the dataset is not executed).

Atomic files
------------
Each file is written to a hidden temporary name in the target directory
(``.part-000000.parquet.<random>.tmp``) and renamed to its final name only once complete; on error
the temporary file is removed. Readers skip names starting with ``.``, so a failed or interrupted
write never leaves a partial file that a later read picks up. (On S3 the rename is a server-side
copy; the final object still appears only complete.)

What can be written
-------------------
Columns of pickled Python objects are refused by every writer (promise 8: files never carry pickles).
Parquet keeps tensor columns (fixed- and variable-shape) as extension types, so they round-trip.
``.npy`` files hold one column (``column=``) of numbers or strings; ragged tensors cannot be one
``.npy`` array. JSON Lines writes tensors as nested lists; CSV holds only flat columns. A column that
cannot be written raises ``TypeError`` naming the file and the column before the file is created.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import io
import json
import math
import posixpath
import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ..blocks import column_to_numpy
from ..blocks.tensors import PYTHON_OBJECT_NAME, VariableShapeTensorType
from .paths import display_path, resolve_filesystem

__all__ = ["write_blocks", "WRITE_FORMATS", "WRITE_MODES", "block_file_name"]

#: Format -> file extension.
WRITE_FORMATS: dict[str, str] = {"parquet": "parquet", "numpy": "npy", "csv": "csv", "json": "json"}


def block_file_name(index: int, fmt: str) -> str:
    """The file name of the ``index``-th written block.

    Example:
        >>> block_file_name(3, "parquet")
        'part-000003.parquet'
    """
    return f"part-{index:06d}.{WRITE_FORMATS[fmt]}"


# ----------------------------------------------------------------------------------------------
# what each format accepts


def _type_has(t: pa.DataType, found: Callable[[pa.DataType], bool]) -> bool:
    """Whether ``found`` holds for ``t``, an extension type's storage, or any nested child type."""
    if found(t):
        return True
    if isinstance(t, pa.BaseExtensionType):
        return _type_has(t.storage_type, found)
    return any(_type_has(t.field(i).type, found) for i in range(t.num_fields)) if t.num_fields else False


def _has_pickle(t: pa.DataType) -> bool:
    return _type_has(t, lambda x: isinstance(x, pa.BaseExtensionType) and x.extension_name == PYTHON_OBJECT_NAME)


def _csv_ok(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _csv_ok(t.value_type)
    return not (
        isinstance(t, pa.BaseExtensionType)
        or pa.types.is_nested(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    )


def _json_ok(t: pa.DataType) -> bool:
    if isinstance(t, pa.FixedShapeTensorType | VariableShapeTensorType):
        return True
    if isinstance(t, pa.BaseExtensionType):
        return False
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return False
    return all(_json_ok(t.field(i).type) for i in range(t.num_fields)) if t.num_fields else True


def _refuse(target: str, name: str, t: pa.DataType, fmt: str, why: str) -> None:
    raise TypeError(f"{target}: column {name!r} of type {t} cannot be written to {fmt}: {why}")


def _check_schema(schema: pa.Schema, fmt: str, target: str, column: str | None) -> None:
    if fmt == "numpy":
        assert column is not None
        if column not in schema.names:
            raise ValueError(f"column={column!r} is not a column of the dataset; columns: {schema.names}")
        fields = [schema.field(column)]
    else:
        fields = list(schema)
    for f in fields:
        if _has_pickle(f.type):
            _refuse(
                target,
                f.name,
                f.type,
                fmt,
                "it holds pickled Python objects, which files never carry; "
                "convert the values to numbers, strings or arrays first",
            )
        if fmt == "csv" and not _csv_ok(f.type):
            _refuse(
                target,
                f.name,
                f.type,
                fmt,
                "CSV holds flat values only; use write_parquet for tensors, lists and bytes",
            )
        if fmt == "json" and not _json_ok(f.type):
            _refuse(target, f.name, f.type, fmt, "JSON has no bytes type; use write_parquet")
        if fmt == "numpy" and isinstance(f.type, VariableShapeTensorType):
            _refuse(
                target, f.name, f.type, fmt, "ragged tensors do not form one .npy array; use write_parquet"
            )
        if fmt == "numpy" and (pa.types.is_nested(f.type) or pa.types.is_binary(f.type)):
            _refuse(target, f.name, f.type, fmt, "a .npy file holds numbers or strings only")


# ----------------------------------------------------------------------------------------------
# serializers: (block, binary file, options) -> None


def _write_parquet(block: pa.Table, f: Any, column: str | None, options: dict[str, Any]) -> None:
    pq.write_table(block, f, **options)


def _write_csv(block: pa.Table, f: Any, column: str | None, options: dict[str, Any]) -> None:
    write_options = options.pop("write_options", None)
    if options:
        write_options = pacsv.WriteOptions(**options)
    pacsv.write_csv(block, f, write_options=write_options)


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _finite_or_none(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind != "f":
        return a
    out = a.astype(object)
    out[~np.isfinite(a)] = None
    return out


def _nested_finite(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, list):
        return [_nested_finite(x) for x in v]
    if isinstance(v, dict):
        return {k: _nested_finite(x) for k, x in v.items()}
    return v


def _write_json(block: pa.Table, f: Any, column: str | None, options: dict[str, Any]) -> None:
    lines = options.pop("lines", True)
    options.pop("orient", None)  # Ray's pandas-style argument: records is the only orientation here
    if options:
        raise TypeError(f"write_json got unexpected options: {sorted(options)}")
    names = block.column_names
    values = []
    for name in names:
        col = block.column(name)
        if isinstance(col.type, pa.FixedShapeTensorType | VariableShapeTensorType):
            values.append([None if a is None else _finite_or_none(a).tolist() for a in column_to_numpy(col)])
        elif pa.types.is_floating(col.type):
            values.append(pc.if_else(pc.is_finite(col), col, None).to_pylist())
        elif _type_has(col.type, pa.types.is_floating):
            values.append([_nested_finite(v) for v in col.to_pylist()])
        else:
            values.append(col.to_pylist())
    rows = (
        [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]
        if names
        else [{} for _ in range(block.num_rows)]
    )
    out = io.TextIOWrapper(f, encoding="utf-8", newline="\n")
    try:
        # Compact, as Ray (pandas) writes it; NaN and infinities were made null above (JSON has none).
        if lines:
            for row in rows:
                out.write(json.dumps(row, default=_json_default, separators=(",", ":")))
                out.write("\n")
        else:
            json.dump(rows, out, default=_json_default, separators=(",", ":"))
        out.flush()
    finally:
        out.detach()


def _write_numpy(block: pa.Table, f: Any, column: str | None, options: dict[str, Any]) -> None:
    if options:
        raise TypeError(f"write_numpy got unexpected options: {sorted(options)}")
    assert column is not None
    arr = column_to_numpy(block.column(column))
    if arr.dtype == object:
        if any(v is None for v in arr):
            raise TypeError(f"column {column!r} has nulls, which a .npy array cannot hold")
        arr = arr.astype(str)
    np.save(f, arr, allow_pickle=False)


_SERIALIZERS = {"parquet": _write_parquet, "csv": _write_csv, "json": _write_json, "numpy": _write_numpy}


# ----------------------------------------------------------------------------------------------


def _write_one(
    fs: Any,
    directory: str,
    index: int,
    block: pa.Table,
    fmt: str,
    column: str | None,
    options: dict[str, Any],
) -> str:
    """Write one block atomically (temporary name, then rename) and return its final path."""
    final = posixpath.join(directory, block_file_name(index, fmt))
    shown = display_path(fs, final)
    _check_schema(block.schema, fmt, shown, column)
    tmp = posixpath.join(directory, f".{block_file_name(index, fmt)}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with fs.open(tmp, "wb") as f:
            _SERIALIZERS[fmt](block, f, column, dict(options))
        fs.mv(tmp, final)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            if fs.exists(tmp):
                fs.rm(tmp)
        if isinstance(exc, (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)):
            raise TypeError(f"{shown}: cannot write block {index} as {fmt}: {exc}") from exc
        raise
    return shown


#: ``mode`` values (Ray's ``SaveMode``; ``"upsert"`` needs keys this file-per-block writer lacks).
WRITE_MODES = ("append", "overwrite", "error", "create", "ignore")

_PART_INDEX = re.compile(r"^part-(\d+)\.")


def _existing_entries(fs: Any, directory: str) -> list[str]:
    """Paths in ``directory`` other than hidden ones (a failed write's temporary files), or ``[]``
    when it does not exist."""
    try:
        entries = fs.ls(directory, detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [e for e in entries if not posixpath.basename(e.rstrip("/")).startswith(".")]


def _first_free_index(entries: list[str]) -> int:
    found = [_PART_INDEX.match(posixpath.basename(e.rstrip("/"))) for e in entries]
    return max((int(m.group(1)) + 1 for m in found if m is not None), default=0)


def write_blocks(
    blocks: Iterable[pa.Table],
    fmt: str,
    path: str,
    *,
    filesystem: Any = None,
    column: str | None = None,
    try_create_dir: bool = True,
    mode: str = "append",
    **options: Any,
) -> list[str]:
    """Write ``blocks`` (in order) as files ``part-000000.<ext>``... under directory ``path``.

    ``fmt`` is ``"parquet"``, ``"numpy"`` (needs ``column``), ``"csv"`` or ``"json"``. ``path`` may
    be a local path, ``local://``/``file://``, ``s3://`` or any fsspec URL; ``filesystem`` an fsspec
    or pyarrow file system. ``options`` go to the format (``pyarrow.parquet.write_table`` keywords,
    ``pyarrow.csv.WriteOptions`` fields or ``write_options=``, ``lines=False`` for one JSON array per
    file). ``mode`` says what to do when the directory already holds files (see the module docstring).
    Returns the written files.

    Example:
        >>> import tempfile, pyarrow as pa, os
        >>> d = tempfile.mkdtemp()
        >>> files = write_blocks([pa.table({"x": [1]}), pa.table({"x": [2]})], "parquet", d)
        >>> [os.path.basename(p) for p in files]
        ['part-000000.parquet', 'part-000001.parquet']
    """
    if fmt not in _SERIALIZERS:
        raise ValueError(f"fmt must be one of {sorted(_SERIALIZERS)}, got {fmt!r}")
    if fmt == "numpy" and not isinstance(column, str):
        raise TypeError(f"write_numpy needs column= naming one column, got {column!r}")
    if fmt != "numpy" and column is not None:
        raise TypeError(f"column= applies to write_numpy only, not write_{fmt}")
    mode = str(getattr(mode, "value", mode))  # Ray's SaveMode members are str enums
    if mode not in WRITE_MODES:
        raise ValueError(f"mode must be one of {list(WRITE_MODES)}, got {mode!r}")
    fs, directory = resolve_filesystem(path, filesystem)
    existing = _existing_entries(fs, directory)
    start = 0
    if existing:
        if mode in ("error", "create"):
            raise FileExistsError(f"{display_path(fs, directory)} already holds {len(existing)} file(s) (mode={mode!r})")
        if mode == "ignore":
            return []
        if mode == "overwrite":
            for entry in existing:
                fs.rm(entry, recursive=True)
        else:
            start = _first_free_index(existing)
    if try_create_dir:
        fs.makedirs(directory, exist_ok=True)
    written: list[str] = []
    first_empty: pa.Table | None = None
    for block in blocks:
        if block.num_rows == 0:
            if first_empty is None and block.num_columns > 0:
                first_empty = block
            continue
        written.append(_write_one(fs, directory, start + len(written), block, fmt, column, options))
    if not written and first_empty is not None:
        written.append(_write_one(fs, directory, start, first_empty, fmt, column, options))
    with contextlib.suppress(Exception):
        fs.invalidate_cache(directory)
    return written
