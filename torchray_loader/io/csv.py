"""``read_csv``: CSV files through ``pyarrow.csv`` (``read_options``/``parse_options``/
``convert_options`` pass through), one table per file, cut into blocks of bounded size.

A ragged row (a row with the wrong number of fields) is an error naming the file and the row's line
number (the header is line 1), or, under the skip policy, a skipped row. Line numbers need
pyarrow's single-threaded parser, which is what a task uses unless the caller passes
``read_options`` (parallelism comes from reading several files at once).

Under the ``raise`` policy, a file of ``STREAM_MIN_BYTES`` or more (:mod:`.paths`) is parsed as it is
read (``open_csv``, as Ray does), a table per ``STREAM_CHUNK_BYTES`` chunk (or the caller's
``read_options.block_size``); its column types then come from its first chunk, where a smaller
file's come from all of it. (The ``skip`` policy holds a file's rows until it is read to the end
anyway, so streaming would save nothing there, and one late value would skip the whole file.)

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "a.csv").write_text("x,y\\n1,2\\n3,4\\n")
    >>> [t.to_pydict() for task in plan_csv(str(d)) for t in task()]
    [{'x': [1, 3], 'y': [2, 4]}]
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ..errors import ErrorBudgetExceeded, ReadError
from .errors import ReadErrorPolicy
from .paths import FileReadOptions, ReadUnit, open_input, plan_read, read_input_bytes
from .read_task import ReadTask

__all__ = ["plan_csv", "read_csv_unit", "CSV_EXTENSIONS"]

CSV_EXTENSIONS = ["csv", "csv.gz", "csv.bz2", "csv.zst", "csv.lz4", "tsv", "tsv.gz"]


class _RowHandler:
    """pyarrow's ``invalid_row_handler`` for one file: hands ragged rows to the policy.

    pyarrow swallows exceptions raised inside the handler, so an error (``raise`` mode, or the
    budget running out) is stored here, ``"error"`` tells pyarrow to stop, and the caller re-raises.
    """

    def __init__(
        self, policy: ReadErrorPolicy, shown: str, load: Callable[[], bytes], encoding: str = "utf8"
    ) -> None:
        self.policy = policy
        self.shown = shown
        self.error: BaseException | None = None
        self._load = load  # the file's bytes, loaded at the first bad row (a streamed file: read again)
        self._data: bytes | None = None
        self._encoding = encoding
        self._line_starts: Any = None
        self._last_line = 0

    def __call__(self, row: Any) -> str:
        number = row.number if row.number is not None and row.number >= 0 else None
        if number is not None:
            number = self._line_of(number, row.text)
        reason = f"expected {row.expected_columns} columns, got {row.actual_columns}: {row.text!r:.200}"
        try:
            self.policy.bad_row(self.shown, number, reason)
        except (ReadError, ErrorBudgetExceeded) as exc:
            self.error = exc
            return "error"
        return "skip"

    def _line_of(self, record: int, text: str) -> int:
        """The line (1-based) where bad record ``record`` starts. pyarrow numbers records, which
        skip blank lines and span the line breaks of quoted values, so a record starts on line
        ``record`` or later; bad records come in file order, so after the previous one too. The
        first such line holding exactly the record's text is its line (``record`` if none does)."""
        if self._data is None:
            try:
                self._data = self._load()
            except Exception:  # noqa: BLE001 - the stream's own read reports what is wrong with the file
                return record
        data = self._data
        if self._line_starts is None:
            breaks = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1
            self._line_starts = np.concatenate([[0], breaks])
        starts = self._line_starts
        first = max(record, self._last_line + 1)
        if first > len(starts):
            return record
        needle = text.encode(self._encoding, errors="replace")
        pos = int(starts[first - 1])
        while (hit := data.find(needle, pos)) >= 0:
            line = int(np.searchsorted(starts, hit, side="right"))
            end = hit + len(needle)
            if starts[line - 1] == hit and data[end : end + 1] in (b"", b"\n", b"\r"):
                self._last_line = line
                return line
            pos = hit + 1
        return record


def _with_handler(parse_options: pacsv.ParseOptions | None, handler: _RowHandler) -> pacsv.ParseOptions:
    po = parse_options or pacsv.ParseOptions()
    if po.invalid_row_handler is not None:  # the caller's own handler wins
        return po
    return pacsv.ParseOptions(
        delimiter=po.delimiter,
        quote_char=po.quote_char,
        double_quote=po.double_quote,
        escape_char=po.escape_char,
        newlines_in_values=po.newlines_in_values,
        ignore_empty_lines=po.ignore_empty_lines,
        invalid_row_handler=handler,
    )


def read_csv_unit(
    fs: Any,
    unit: ReadUnit,
    shown: str,
    policy: ReadErrorPolicy,
    options: FileReadOptions,
    *,
    read_options: pacsv.ReadOptions | None = None,
    parse_options: pacsv.ParseOptions | None = None,
    convert_options: pacsv.ConvertOptions | None = None,
    compression: str | None = "infer",
) -> Iterator[pa.Table]:
    """Reader for one CSV file: one table, or (a file ``options`` streams) a table per parsed chunk.

    Example:
        >>> import tempfile, pathlib
        >>> from fsspec.implementations.local import LocalFileSystem
        >>> from torchray_loader.io.paths import FileInfo
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.csv"; _ = p.write_text("x\\n1\\n")
        >>> unit = ReadUnit(FileInfo(str(p)))
        >>> [t.to_pydict() for t in read_csv_unit(LocalFileSystem(), unit, str(p), ReadErrorPolicy(), FileReadOptions())]
        [{'x': [1]}]
    """
    path = unit.file.path
    if policy.mode == "raise" and options.streams(unit.file):
        ro = read_options or pacsv.ReadOptions(use_threads=False, block_size=options.stream_chunk_bytes)
        handler = _RowHandler(policy, shown, lambda: read_input_bytes(fs, path, compression=compression), ro.encoding)
        with open_input(fs, path, compression=compression) as stream:
            with _parse_errors(shown, handler, streamed=(ro.block_size, convert_options)):
                reader = pacsv.open_csv(
                    stream,
                    read_options=ro,
                    parse_options=_with_handler(parse_options, handler),
                    convert_options=convert_options,
                )
                _check_header(reader.schema, shown)
                tables = 0
                for batch in reader:
                    tables += 1
                    yield pa.Table.from_batches([batch])
                if not tables:
                    yield reader.schema.empty_table()
        return
    ro = read_options if read_options is not None else pacsv.ReadOptions(use_threads=False)
    data = read_input_bytes(fs, path, compression=compression)
    handler = _RowHandler(policy, shown, lambda: data, ro.encoding)
    with _parse_errors(shown, handler):
        table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=ro,
            parse_options=_with_handler(parse_options, handler),
            convert_options=convert_options,
        )
    _check_header(table.schema, shown)
    yield table


@contextlib.contextmanager
def _parse_errors(
    shown: str, handler: _RowHandler, streamed: tuple[int, pacsv.ConvertOptions | None] | None = None
) -> Iterator[None]:
    """pyarrow's parse errors as a :class:`ReadError` naming the file (or the row handler's own
    error); ``streamed``: a streamed file's ``(block_size, convert_options)``, for what to do about
    an error that streaming causes."""
    try:
        yield
    except pa.ArrowInvalid as exc:
        if handler.error is not None:
            raise handler.error from exc
        reason = str(exc).removeprefix("CSV parse error: ")
        raise ReadError(shown, reason + _streaming_hint(reason, streamed)) from exc
    if handler.error is not None:  # pragma: no cover - pyarrow always raises after "error"
        raise handler.error


def _streaming_hint(reason: str, streamed: tuple[int, pacsv.ConvertOptions | None] | None) -> str:
    """What a streamed read's error owes to streaming, and what the caller can do ("" if nothing)."""
    if streamed is None:
        return ""
    block_size, convert_options = streamed
    if "conversion error" in reason and not (convert_options is not None and convert_options.column_types):
        return (
            f" (a large file is parsed as it is read: column types come from its first {block_size} bytes;"
            " give the column's type in convert_options=pyarrow.csv.ConvertOptions(column_types=...))"
        )
    if "straddl" in reason or "Empty CSV file or block" in reason:
        return (
            f" (a large file is parsed in blocks of {block_size} bytes, and a row or the header must fit in one:"
            " give a larger read_options=pyarrow.csv.ReadOptions(block_size=...))"
        )
    return ""


def _check_header(schema: pa.Schema, shown: str) -> None:
    try:
        _ = schema.names  # pyarrow keeps a header that is not UTF-8; any later use would fail
    except UnicodeDecodeError as exc:
        raise ReadError(shown, f"row 1: column names are not {exc.encoding}: {exc.reason}") from exc


def plan_csv(
    paths: Any,
    *,
    read_options: pacsv.ReadOptions | None = None,
    parse_options: pacsv.ParseOptions | None = None,
    convert_options: pacsv.ConvertOptions | None = None,
    compression: str | None = "infer",
    **kwargs: Any,
) -> list[ReadTask]:
    """Read tasks for ``read_csv`` (``kwargs``: the common file options of :func:`~.paths.plan_read`).

    Example:
        >>> plan_csv.__name__
        'plan_csv'
    """
    for name, value, typ in (
        ("read_options", read_options, pacsv.ReadOptions),
        ("parse_options", parse_options, pacsv.ParseOptions),
        ("convert_options", convert_options, pacsv.ConvertOptions),
    ):
        if value is not None and not isinstance(value, typ):
            raise TypeError(f"{name} must be a pyarrow.csv.{typ.__name__}, got {type(value).__name__}")
    reader_kwargs = {
        "read_options": read_options,
        "parse_options": parse_options,
        "convert_options": convert_options,
        "compression": compression,
    }
    return plan_read(paths, read_csv_unit, reader_kwargs, **kwargs)
