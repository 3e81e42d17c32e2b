"""``read_json``: JSON Lines (one object per line) and files holding one top-level JSON array of
objects (or one object), through ``pyarrow.json`` for the fast path.

When pyarrow cannot parse a file, the reader falls back to Python's ``json`` to find out why: a
file that is one (pretty-printed) object is one row; otherwise each non-blank line is parsed on its
own, and a bad line is an error naming the file and the line (or, under the skip policy, a skipped
row).

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "a.jsonl").write_text('{"x": 1}\\n{"x": 2}\\n')
    >>> [t.to_pydict() for task in plan_json(str(d)) for t in task()]
    [{'x': [1, 2]}]
"""

from __future__ import annotations

import codecs
import io
import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.json as pajson

from ..errors import ReadError
from .errors import ReadErrorPolicy
from .paths import FileReadOptions, ReadUnit, plan_read, read_input_bytes
from .read_task import ReadTask

__all__ = ["plan_json", "read_json_unit", "JSON_EXTENSIONS"]

JSON_EXTENSIONS = ["json", "jsonl", "ndjson", "json.gz", "jsonl.gz", "ndjson.gz", "json.bz2", "jsonl.bz2"]


def _table_from_rows(rows: list[Any], shown: str) -> pa.Table:
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ReadError(shown, f"row {i + 1}: expected a JSON object, got {type(row).__name__}")
    if not rows:
        return pa.table({})
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ReadError(shown, f"values of one field have incompatible types: {exc}") from exc


def _parse_lines(data: bytes, shown: str, policy: ReadErrorPolicy) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for lineno, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            policy.bad_row(shown, lineno, f"invalid JSON: {getattr(exc, 'msg', exc)}")
            continue
        if not isinstance(obj, dict):
            policy.bad_row(shown, lineno, f"expected a JSON object, got {type(obj).__name__}")
            continue
        rows.append(obj)
    return rows


def read_json_unit(
    fs: Any,
    unit: ReadUnit,
    shown: str,
    policy: ReadErrorPolicy,
    options: FileReadOptions,
    *,
    read_options: pajson.ReadOptions | None = None,
    parse_options: pajson.ParseOptions | None = None,
    compression: str | None = "infer",
) -> Iterator[pa.Table]:
    """Reader for one JSON / JSON Lines file.

    Example:
        >>> import tempfile, pathlib
        >>> from fsspec.implementations.local import LocalFileSystem
        >>> from torchray_loader.io.paths import FileInfo
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"; _ = p.write_text('[{"x": 1}]')
        >>> unit = ReadUnit(FileInfo(str(p)))
        >>> [t.to_pydict() for t in read_json_unit(LocalFileSystem(), unit, str(p), ReadErrorPolicy(), FileReadOptions())]
        [{'x': [1]}]
    """
    data = read_input_bytes(fs, unit.file.path, compression=compression)
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    head = data.lstrip()[:1]
    if head == b"[":  # one top-level array of objects
        try:
            rows = json.loads(data)
        except ValueError as exc:
            line = getattr(exc, "lineno", None)
            raise ReadError(
                shown, f"{f'line {line}: ' if line else ''}invalid JSON: {getattr(exc, 'msg', exc)}"
            ) from exc
        yield _table_from_rows(rows, shown)
        return
    if not head:
        return
    try:
        table = pajson.read_json(io.BytesIO(data), read_options=read_options, parse_options=parse_options)
        # pyarrow's JSON parser does not check that strings are UTF-8; an invalid one would only
        # fail later, far from this file, when the column is converted. Python finds the line.
        table.validate(full=True)
    except pa.ArrowInvalid:
        pass  # find out why below, in Python
    else:
        yield table
        return
    try:
        whole = json.loads(data)
    except ValueError:
        whole = None
    if isinstance(whole, dict):  # one (pretty-printed) object: one row
        yield _table_from_rows([whole], shown)
        return
    yield _table_from_rows(_parse_lines(data, shown, policy), shown)


def plan_json(
    paths: Any,
    *,
    read_options: pajson.ReadOptions | None = None,
    parse_options: pajson.ParseOptions | None = None,
    compression: str | None = "infer",
    **kwargs: Any,
) -> list[ReadTask]:
    """Read tasks for ``read_json`` (``kwargs``: the common file options of :func:`~.paths.plan_read`).

    Example:
        >>> plan_json.__name__
        'plan_json'
    """
    reader_kwargs = {"read_options": read_options, "parse_options": parse_options, "compression": compression}
    return plan_read(paths, read_json_unit, reader_kwargs, **kwargs)
