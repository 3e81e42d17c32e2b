"""``read_text``: one row per line of each file, in column ``text``.

Lines are split as ``str.splitlines`` splits them (``\\n``, ``\\r\\n``, a lone ``\\r``...), as in Ray;
blank lines are dropped unless ``drop_empty_lines=False``, as in Ray. A UTF-8 byte order mark at the
start of a file is not part of its first line (Ray keeps it). Compressed files (``.gz``, ``.bz2``,
...) are decompressed by extension. A line that does not decode in ``encoding`` is an error naming
the file and the line (or, under the skip policy, a skipped row).

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "a.txt").write_text("hello\\n\\nworld\\n")
    >>> [t.column("text").to_pylist() for task in plan_text(str(d)) for t in task()]
    [['hello', 'world']]
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from .errors import ReadErrorPolicy
from .paths import FileReadOptions, ReadUnit, plan_read, read_input_bytes
from .read_task import ReadTask

__all__ = ["plan_text", "read_text_unit", "split_lines"]


def split_lines(text: str, drop_empty_lines: bool) -> list[str]:
    """``text`` cut into lines as ``str.splitlines`` cuts it (as Ray does: ``\\n``, ``\\r\\n``, a lone
    ``\\r`` and the other Unicode line boundaries), without line ends; no last empty line for a final
    newline.

    Example:
        >>> split_lines("a\\r\\n\\nb\\rc\\n", drop_empty_lines=False)
        ['a', '', 'b', 'c']
    """
    lines = text.splitlines()
    if drop_empty_lines:
        lines = [line for line in lines if line.strip() != ""]
    return lines


def _decode_lines(
    data: bytes, encoding: str, drop_empty_lines: bool, shown: str, policy: ReadErrorPolicy
) -> list[str]:
    try:
        return split_lines(data.decode(encoding), drop_empty_lines)
    except UnicodeDecodeError as exc:
        first_bad = data.count(b"\n", 0, exc.start) + 1
        if policy.mode == "raise":
            policy.bad_row(shown, first_bad, f"cannot decode as {encoding}: {exc.reason}")
    # Skip mode: decode line by line, dropping (and counting) only the lines that fail.
    out: list[str] = []
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    for lineno, raw in enumerate(raw_lines, start=1):
        try:
            out.extend(split_lines(raw.decode(encoding) + "\n", drop_empty_lines))
        except UnicodeDecodeError as exc:
            policy.bad_row(shown, lineno, f"cannot decode as {encoding}: {exc.reason}")
    return out


def read_text_unit(
    fs: Any,
    unit: ReadUnit,
    shown: str,
    policy: ReadErrorPolicy,
    options: FileReadOptions,
    *,
    encoding: str = "utf-8",
    drop_empty_lines: bool = True,
    compression: str | None = "infer",
) -> Iterator[pa.Table]:
    """Reader for one file: a table with one string row per line.

    Example:
        >>> import tempfile, pathlib
        >>> from fsspec.implementations.local import LocalFileSystem
        >>> from torchray_loader.io.paths import FileInfo
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"; _ = p.write_text("x\\n\\ny\\n")
        >>> unit = ReadUnit(FileInfo(str(p)))
        >>> [t.to_pydict() for t in read_text_unit(LocalFileSystem(), unit, str(p), ReadErrorPolicy(), FileReadOptions())]
        [{'text': ['x', 'y']}]
    """
    data = read_input_bytes(fs, unit.file.path, compression=compression)
    if encoding.lower().replace("-", "").replace("_", "") in ("utf8", "utf8sig") and data.startswith(
        codecs.BOM_UTF8
    ):
        data = data[len(codecs.BOM_UTF8) :]
    lines = _decode_lines(data, encoding, drop_empty_lines, shown, policy)
    typ = pa.string() if len(data) < 2**31 - 1 else pa.large_string()
    yield pa.table({"text": pa.array(lines, type=typ)})


def plan_text(
    paths: Any,
    *,
    encoding: str = "utf-8",
    drop_empty_lines: bool = True,
    compression: str | None = "infer",
    **kwargs: Any,
) -> list[ReadTask]:
    """Read tasks for ``read_text`` (``kwargs``: the common file options of :func:`~.paths.plan_read`).

    Example:
        >>> plan_text.__name__
        'plan_text'
    """
    codecs.lookup(encoding)  # a bad encoding name fails here, in the caller, not in every task
    return plan_read(
        paths,
        read_text_unit,
        {"encoding": encoding, "drop_empty_lines": bool(drop_empty_lines), "compression": compression},
        **kwargs,
    )
