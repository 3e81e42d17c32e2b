"""``read_parquet``: parquet files, one unit per file, or per group of row groups for big files.

Tensor columns round-trip: Arrow's canonical ``fixed_shape_tensor`` and this package's
``torchray.variable_shape_tensor`` are extension types stored in the file's Arrow schema and come
back as they were written. A file whose schema carries pickled Python objects is refused unless
``DataContext.allow_pickle`` (promise 8). A truncated or corrupt file is a :class:`ReadError`
naming it, and so is a file whose schema conflicts with its siblings'. When the read is planned the
footers of its first ``SCHEMA_SAMPLE_FILES`` files are read (in the consumer) and unified into the
read's schema, as Ray does (with ``columns``, only theirs must unify); a column the read yields
that the sample lacks (asked for in ``columns``) or has all null (or empty lists) is typed from
the footers after it that have it, up to ``SCHEMA_SCAN_MAX_FILES`` of them. Every file is checked
against the read's schema as it is read and comes out in it: a column the file lacks is all nulls,
a column the read's schema lacks comes after the read's (Ray leaves it out: that would lose
data), types are cast to the read's. A column whose type cannot be unified (``int64`` here,
``string`` there; tensors of two dtypes) is an error, or a skipped file under the skip policy.
``columns`` orders the output columns, partition keys among them; a partition value stands in for
a file column of its key's name (as in Ray).

Files larger than ``DataContext.target_max_block_size`` have their footer read when the read is
planned (in the consumer) and are cut into units of whole row groups of about that size, so one
big file is read by several tasks in parallel. Each row group becomes (at least) one block.

Only the bytes a read needs are read: local files are opened by pyarrow itself (it reads the
footer and then just the column chunks it decodes); a remote file is fetched whole in one request
when all its columns are read and it is small, and read by ranges otherwise (a ``columns``
projection fetches only those columns' chunks). ``Dataset.count()`` of a read without ``filter``
reads no data at all: each task's ``count_rows`` sums its files' (or row groups') ``num_rows``
from their footers (:func:`count_parquet_rows`).

Example:
    >>> import tempfile, pathlib, pyarrow as pa, pyarrow.parquet as pq
    >>> d = pathlib.Path(tempfile.mkdtemp()); pq.write_table(pa.table({"x": [1, 2]}), d / "a.parquet")
    >>> [t.to_pydict() for task in plan_parquet(str(d)) for t in task()]
    [{'x': [1, 2]}]
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import math
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .. import blocks as _blocks  # noqa: F401 - registers the tensor extension types before reading
from ..blocks.tensors import is_tensor_type, type_display_name
from ..errors import ReadError
from .errors import ReadErrorPolicy, refuse_pickled
from .paths import (
    MIN_READ_TASKS,
    FileInfo,
    FileReadOptions,
    Partitioning,
    ReadUnit,
    ReadUnits,
    _as_partitioning,
    _constant_column,
    _is_plain_local_fs,
    display_path,
    parse_partitions,
    plan_read,
)
from .read_task import ReadTask

__all__ = ["plan_parquet", "read_parquet_unit", "count_parquet_rows", "PARQUET_EXTENSIONS"]

PARQUET_EXTENSIONS = ["parquet", "parq", "pq"]

#: In-memory bytes per file byte, for sizing read tasks (compressed, encoded columns).
PARQUET_SIZE_RATIO = 3.0

#: A file of a read of few files is cut into runs of row groups down to about this many bytes
#: (smaller runs would cost more in task overhead than they gain in parallelism).
MIN_PART_BYTES = 1 << 20

#: The read's schema unifies the footers of (at most) this many of its first files, as Ray's does.
SCHEMA_SAMPLE_FILES = 16
#: At most this many files after the sample have their footers read to type a column the sample
#: leaves untyped (a bound on planning time: on S3 each footer is a request).
SCHEMA_SCAN_MAX_FILES = 64


def _as_expression(filter: Any) -> Any:
    if filter is None:
        return None
    import pyarrow.compute as pc

    if isinstance(filter, pc.Expression):
        return filter
    return pq.filters_to_expression(filter)


def _dnf_columns(filter: Any) -> set[str] | None:
    """Column names a DNF filter (``[("x", ">", 1)]`` or a list of such lists) refers to; ``None``
    for an expression (pyarrow exposes no field list for it)."""
    if filter is None or not isinstance(filter, (list, tuple)):
        return None
    terms = [t for group in filter for t in group] if filter and isinstance(filter[0], list) else list(filter)
    return {str(t[0]) for t in terms}


def _columns_to_read(schema: pa.Schema, cols: list[str] | None, filter: Any, expr: Any) -> list[str] | None:
    """``cols`` plus what ``filter`` needs, in file order (``None``: all columns).

    A filter may test columns that are not selected: they are read, filtered on, then dropped."""
    if cols is None or expr is None:
        return cols
    named = _dnf_columns(filter)
    if named is not None:
        wanted = set(cols) | (named & set(schema.names))
        return [n for n in schema.names if n in wanted]
    try:  # an expression over the selected columns only binds on their (empty) projection
        pa.Table.from_batches([], schema=pa.schema([schema.field(c) for c in cols])).filter(expr)
        return cols
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None


def _open_ranged(fs: Any, path: str) -> Any:
    """``path`` opened for reading only the byte ranges pyarrow asks for (footer, column chunks).

    Local files are pyarrow's own (``pa.OSFile``: ``pread`` of each range, no Python file object in
    between); remote ones are fsspec files without read-ahead (s3fs reads 50 MB ahead by default,
    which is all of a small file: a projection would fetch every column anyway)."""
    if _is_plain_local_fs(fs):
        return pa.OSFile(path)
    try:
        return fs.open(path, "rb", cache_type="none")
    except TypeError:  # pragma: no cover - a file system whose open takes no cache options
        return fs.open(path, "rb")


def _open_unit(fs: Any, unit: ReadUnit, options: FileReadOptions, projected: bool) -> Any:
    """The source ``read_parquet_unit`` reads ``unit`` from.

    A small remote file of which every column is read is fetched whole: one GET on S3 where ranged
    reads would take one request per column chunk. Anything else reads just the ranges it needs."""
    small = unit.file.size is not None and unit.file.size <= options.target_block_bytes
    if small and not projected and not _is_plain_local_fs(fs):
        return pa.BufferReader(fs.cat_file(unit.file.path))
    return _open_ranged(fs, unit.file.path)


def _checked_columns(
    schema: pa.Schema,
    shown: str,
    columns: Sequence[str] | None,
    reference: tuple[str, pa.Schema] | None,
    allow_pickle: bool,
) -> list[str] | None:
    """The checks every file of a read passes before any of its rows count (pickled objects refused,
    schema unifies with the first file's); returns the asked ``columns`` the file has."""
    refuse_pickled(schema, shown, allow_pickle)
    cols = None if columns is None else [c for c in columns if c in schema.names]
    if reference is not None:
        _check_schema(schema, reference, cols, shown)
    return cols


def read_parquet_unit(
    fs: Any,
    unit: ReadUnit,
    shown: str,
    policy: ReadErrorPolicy,
    options: FileReadOptions,
    *,
    columns: Sequence[str] | None = None,
    filter: Any = None,
    reference: tuple[str, pa.Schema] | None = None,
    filter_partitioning: Partitioning | None = None,
) -> Iterator[pa.Table]:
    """Reader for one parquet file or one run of its row groups (``unit.part``).

    ``reference``: ``(display path of its first file, Arrow schema)`` of the read (``None``: this
    file's own); a conflicting schema is a :class:`ReadError` naming both files, and tables come
    out in the read's schema (:func:`_conformed`). With ``columns`` only those columns' chunks (and
    the footer) are read from storage; the output has them in that order (partition keys included).
    ``filter_partitioning``: the read's, where ``columns`` leave out partition keys (``unit.file``
    holds only those among them) that ``filter`` may test: their values come from the path.

    Example:
        >>> import tempfile, pathlib
        >>> from fsspec.implementations.local import LocalFileSystem
        >>> from torchray_loader.io.paths import FileInfo
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.parquet"; pq.write_table(pa.table({"x": [1]}), p)
        >>> unit = ReadUnit(FileInfo(str(p)))
        >>> [t.to_pydict() for t in read_parquet_unit(LocalFileSystem(), unit, str(p), ReadErrorPolicy(), FileReadOptions())]
        [{'x': [1]}]
    """
    expr = _as_expression(filter)
    with _open_unit(fs, unit, options, projected=columns is not None) as f:
        pf = pq.ParquetFile(f)
        schema = pf.schema_arrow
        cols = _checked_columns(schema, shown, columns, reference, options.allow_pickle)
        groups = unit.part if unit.part is not None else range(pf.num_row_groups)
        read_cols = _columns_to_read(schema, cols, filter, expr)
        read_schema = None if reference is None else reference[1]
        partitions = dict(unit.file.partitions)
        tested = partitions if filter_partitioning is None else dict(parse_partitions(unit.file.path, filter_partitioning))
        conform = functools.partial(
            _conformed,
            read_schema=read_schema,
            columns=columns,
            partitions=partitions,
            shown=shown,
            include_paths=options.include_paths,
        )
        testable = functools.partial(_with_filter_columns, read_schema=read_schema, partitions=tested, shown=shown)
        produced = False
        for rg in groups:
            table = pf.read_row_group(rg, columns=read_cols)
            if expr is not None:
                names = table.column_names if cols is None else cols
                table = testable(table).filter(expr).select(names)
            produced = True
            yield conform(table)
        if not produced:  # an empty file still tells its schema
            empty = schema.empty_table()
            yield conform(empty if cols is None else empty.select(cols))


def _with_filter_columns(
    table: pa.Table, *, read_schema: pa.Schema | None, partitions: Mapping[str, Any], shown: str
) -> pa.Table:
    """``table`` with what a filter may test: its partition keys (their values, in place of a file
    column of that name) and the read's columns the file lacks (nulls), so a filter sees every file
    as the read yields it."""
    for key, value in partitions.items():
        column = _partition_column(table, key, value, read_schema, shown)
        index = table.schema.get_field_index(key)
        table = table.append_column(key, column) if index < 0 else table.set_column(index, key, column)
    for field in read_schema if read_schema is not None else ():
        if field.name not in table.column_names:
            table = table.append_column(field.name, pa.nulls(table.num_rows, field.type))
    return table


def _read_field(read_schema: pa.Schema | None, name: str) -> pa.Field | None:
    index = -1 if read_schema is None else read_schema.get_field_index(name)
    return None if read_schema is None or index < 0 else read_schema.field(index)


def _partition_column(
    table: pa.Table, key: str, value: Any, read_schema: pa.Schema | None, shown: str
) -> pa.ChunkedArray:
    """Partition ``key``'s ``value`` for every row of ``table``, typed as the read's column ``key``
    (files that hold the key as a column), else as ``table``'s own column of that name."""
    field = _read_field(read_schema, key) or _read_field(table.schema, key)
    return _cast_to_read_type(pa.chunked_array([_constant_column(value, table.num_rows)]), field, shown)


def _output_columns(
    table: pa.Table, read_schema: pa.Schema | None, columns: Sequence[str] | None, partitions: Mapping[str, Any]
) -> list[str]:
    """Names of the columns a file's ``table`` becomes, in order: ``columns`` (those the file, its
    partition keys or the read's schema have), else the read's schema (the file's own columns in a
    read of one file). Partition keys not asked for are added after them (``paths._decorate``)."""
    if columns is not None:
        known = set(table.column_names) | set(partitions) | set(read_schema.names if read_schema is not None else ())
        return [c for c in columns if c in known]
    if read_schema is None:
        return table.column_names
    # A column of a file beyond the sampled ones is kept, after the read's (Ray drops it: data loss).
    return read_schema.names + [c for c in table.column_names if read_schema.get_field_index(c) < 0]


def _conformed(
    table: pa.Table,
    *,
    read_schema: pa.Schema | None,
    columns: Sequence[str] | None,
    partitions: Mapping[str, Any],
    shown: str,
    include_paths: bool = False,
) -> pa.Table:
    """``table`` (a file's columns) as every file of the read yields it: the columns of
    :func:`_output_columns`, a column the file lacks all nulls of the read's type, a file column
    cast to the read's type, file columns the read's schema lacks kept after its own (Ray leaves
    them out, which loses data). A partition value (cast to the read's type) stands in for a
    column of its key, the file's own too (as in Ray and pyarrow); the file's path does for a
    ``path`` column the file lacks under ``include_paths``. Field and schema metadata are the file's."""
    shadowed = not partitions.keys().isdisjoint(table.column_names)
    if columns is None and not shadowed and (read_schema is None or table.schema.equals(read_schema)):
        return table  # the common case: every file alike
    fields: list[pa.Field] = []
    arrays: list[pa.Array | pa.ChunkedArray] = []
    for name in _output_columns(table, read_schema, columns, partitions):
        read_field = _read_field(read_schema, name)
        own = _read_field(table.schema, name)
        column: pa.Array | pa.ChunkedArray
        if name in partitions:
            column = _partition_column(table, name, partitions[name], read_schema, shown)
        elif own is not None:
            column = _cast_to_read_type(table.column(name), read_field, shown)
        elif name == "path" and include_paths:  # where other files hold a column "path": this file's
            column = _constant_column(shown, table.num_rows)
        else:
            assert read_field is not None  # _output_columns names nothing else
            column = pa.nulls(table.num_rows, read_field.type)
        fields.append((own or pa.field(name, column.type)).with_type(column.type))
        arrays.append(column)
    if not fields:
        return table.select([])  # keeps the row count
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=table.schema.metadata))


def _cast_to_read_type(column: pa.ChunkedArray, field: pa.Field | None, shown: str) -> pa.ChunkedArray:
    """``column`` as the read's type for it. Tensor columns keep theirs (blocks unify shapes), and
    so does a column all null in every footer the plan read (its type is or nests ``null``)."""
    if field is None or column.type == field.type or _holds_null_type(field.type):
        return column
    if is_tensor_type(column.type) or is_tensor_type(field.type):
        return column
    try:
        return column.cast(field.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ReadError(shown, f"column {field.name!r} ({column.type}) does not cast to the read's {field.type}: {exc}") from exc


def count_parquet_rows(
    fs: Any,
    units: Sequence[ReadUnit],
    columns: Sequence[str] | None = None,
    reference: tuple[str, pa.Schema] | None = None,
    allow_pickle: bool = False,
) -> int:
    """Rows that reading ``units`` (without a ``filter``) yields, from their files' footers alone.

    A whole-file unit counts the file's ``num_rows``, a run of row groups (``unit.part``) those row
    groups' rows; each file's footer is read once. Every file passes the checks a read makes before
    yielding rows (pickled objects, schema against ``reference``); any failure raises, so that the
    caller (``Dataset.count()``) executes the read instead and its error policy reports or skips
    the file exactly as for a read. Data pages are never read: a file whose footer is sound but
    whose pages are corrupt counts its footer's rows.

    Example:
        >>> import tempfile, pathlib
        >>> from fsspec.implementations.local import LocalFileSystem
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.parquet"; pq.write_table(pa.table({"x": [1, 2]}), p)
        >>> count_parquet_rows(LocalFileSystem(), [ReadUnit(FileInfo(str(p))), ReadUnit(FileInfo(str(p)), (0,))])
        4
    """
    footers: dict[str, pq.FileMetaData] = {}
    total = 0
    for unit in units:
        path = unit.file.path
        meta = footers.get(path)
        if meta is None:
            with _open_ranged(fs, path) as f:
                pf = pq.ParquetFile(f)
                meta = footers[path] = pf.metadata
                _checked_columns(pf.schema_arrow, display_path(fs, path), columns, reference, allow_pickle)
        if unit.part is None:
            total += meta.num_rows
        else:
            total += sum(meta.row_group(i).num_rows for i in unit.part)
    return total


def _check_schema(schema: pa.Schema, reference: tuple[str, pa.Schema], cols: list[str] | None, shown: str) -> None:
    """Raise a :class:`ReadError` naming ``shown`` and both types where a column of ``cols`` (all:
    ``None``) does not unify with the read's. Tensor columns of different shapes are fine (blocks
    unify them into a variable-shape column); of different dtypes they are not (as in Ray)."""
    ref_path, ref = reference
    tensors = {f.name for f in ref if is_tensor_type(f.type)} & {f.name for f in schema if is_tensor_type(f.type)}
    for name in sorted(tensors & set(schema.names if cols is None else cols)):
        ours, theirs = schema.field(name).type, ref.field(name).type
        if ours.value_type != theirs.value_type:
            raise ReadError(
                shown,
                f"tensor column {name!r} is {type_display_name(ours)}, the read's (of {ref_path} and the files "
                f"after it) {type_display_name(theirs)}: a column's tensors must have one dtype",
            )

    def kept(s: pa.Schema) -> pa.Schema:
        return pa.schema([f for f in s if f.name not in tensors and (cols is None or f.name in cols)])

    schema, ref = kept(schema), kept(ref)
    try:
        pa.unify_schemas([ref, schema], promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ReadError(shown, f"schema conflicts with the read's (of {ref_path} and the files after it): {exc}") from exc


def _footer_schema(fs: Any, path: str) -> pa.Schema | None:
    """The Arrow schema in ``path``'s footer; ``None`` if it does not read (its task reports it)."""
    try:
        with _open_ranged(fs, path) as f:
            return pq.ParquetFile(f).schema_arrow
    except Exception:
        return None


def _footer_schemas(fs: Any, files: Sequence[FileInfo]) -> list[pa.Schema | None]:
    """:func:`_footer_schema` of each of ``files``; remote footers are read in parallel (one
    request's latency each)."""
    paths = [f.path for f in files]
    if _is_plain_local_fs(fs) or len(paths) <= 1:
        return [_footer_schema(fs, p) for p in paths]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(paths)) as pool:
        return list(pool.map(functools.partial(_footer_schema, fs), paths))


def _unified(schema: pa.Schema, other: pa.Schema, columns: Sequence[str] | None = None) -> pa.Schema | None:
    """``schema`` widened by ``other`` (new columns after its own, types promoted); ``None`` when
    a column of ``columns`` (all: ``None``) conflicts. A column not among ``columns`` that conflicts
    keeps ``schema``'s type (only a filter sees it). A tensor column keeps ``schema``'s type: blocks
    unify tensor shapes, and each file's task checks its dtype (:func:`_check_schema`)."""
    tensors = {f.name for f in schema if is_tensor_type(f.type)}
    other = pa.schema([f for f in other if f.name not in tensors or not is_tensor_type(f.type)])
    tries = [other]
    if columns is not None:
        tries.append(pa.schema([f for f in other if f.name in columns or schema.get_field_index(f.name) < 0]))
    for candidate in tries:
        try:
            return pa.unify_schemas([schema, candidate], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            continue
    return None


def _untyped(schema: pa.Schema, columns: Sequence[str] | None, known: Collection[str]) -> set[str]:
    """Columns the read yields (``columns``, else ``schema``'s) whose type ``schema`` does not
    tell: absent from it (and not ``known``: partition keys, ``path``), or all null (type ``null``)."""
    fields = {name: _read_field(schema, name) for name in (schema.names if columns is None else columns)}
    return {name for name, field in fields.items() if name not in known and (field is None or _holds_null_type(field.type))}


def _holds_null_type(t: pa.DataType) -> bool:
    """Whether ``t`` is ``null`` or nests it (``list<null>``, ``struct<a: null>``...): the type of
    values that were all null or empty, which tells nothing of the column's type."""
    if pa.types.is_null(t):
        return True
    return any(_holds_null_type(t.field(i).type) for i in range(t.num_fields))


def _read_schema(
    fs: Any, files: list[FileInfo], columns: Sequence[str] | None = None, known: Collection[str] = ()
) -> tuple[str, pa.Schema] | None:
    """``(display path of the first readable file, unified schema)`` of the footers of the first
    ``SCHEMA_SAMPLE_FILES`` files, as Ray infers a read's schema; ``None`` if no footer reads.

    A file whose footer does not read, or whose schema conflicts with the files before it in
    ``columns`` (all: ``None``), is left out: its own task reports it. A column of the read that the
    sample does not type (:func:`_untyped`: asked for in ``columns`` but absent, or all null) takes
    its type from the footers of the files after it that have one, read ``SCHEMA_SAMPLE_FILES`` at
    a time until every such column has one (so each column of a read has one type in all its
    blocks) or ``SCHEMA_SCAN_MAX_FILES`` more were read."""
    read: tuple[str, pa.Schema] | None = None
    scanned = min(len(files), SCHEMA_SAMPLE_FILES + SCHEMA_SCAN_MAX_FILES)
    for start in range(0, scanned, SCHEMA_SAMPLE_FILES):
        pending = None if read is None or start == 0 else _untyped(read[1], columns, known)
        if start > 0 and not pending:
            break
        chunk = files[start : start + SCHEMA_SAMPLE_FILES]
        for file, schema in zip(chunk, _footer_schemas(fs, chunk), strict=True):
            if schema is None:
                continue
            if read is None:
                read = display_path(fs, file.path), schema
                continue
            if pending is not None:
                schema = pa.schema([f for f in schema if f.name in pending])
            widened = _unified(read[1], schema, columns)
            if widened is not None:
                read = read[0], widened
    return read


def _plan_units(
    target_bytes: int, reader_kwargs: dict[str, Any], include_paths: bool, fs: Any, files: list[FileInfo]
) -> list[ReadUnit]:
    """``make_units`` for :func:`plan_read`: row-group units, and the reference schema, which goes
    into ``reader_kwargs`` before the tasks are built from them. With ``columns``, partition values
    of keys not among them are dropped, so they do not become columns (as in Ray)."""
    columns = reader_kwargs.get("columns")
    if columns is not None:
        files = [dataclasses.replace(f, partitions=tuple(kv for kv in f.partitions if kv[0] in columns)) for f in files]
    if len(files) > 1:
        known = {k for f in files for k, _ in f.partitions} | ({"path"} if include_paths else set())
        reader_kwargs["reference"] = _read_schema(fs, files, columns, known)
    return _row_group_units(target_bytes, fs, files)


def _row_group_units(target_bytes: int, fs: Any, files: list[FileInfo]) -> list[ReadUnit]:
    """Whole-file units, except files worth cutting into runs of row groups.

    A file bigger than ``target_bytes`` is cut, so no task holds much more than a block. In a read
    of fewer than ``MIN_READ_TASKS`` files, so is any file bigger than an even share of
    ``MIN_READ_TASKS`` units (but at least ``MIN_PART_BYTES``): a read of one or a few files then
    runs on several workers, and its first block is ready after part of a file, not all of it.
    Units depend on the files alone (sizes and footers), never on ``num_workers``.
    """
    sizes = [f.size for f in files if f.size is not None]
    unit_bytes = target_bytes
    if len(files) < MIN_READ_TASKS and sizes:
        unit_bytes = min(target_bytes, max(MIN_PART_BYTES, math.ceil(sum(sizes) / MIN_READ_TASKS)))
    units: list[ReadUnit] = []
    for file in files:
        if file.size is None or file.size <= unit_bytes:
            units.append(ReadUnit(file))
            continue
        try:
            with _open_ranged(fs, file.path) as f:
                meta = pq.ParquetFile(f).metadata
        except Exception:  # unreadable footer: let the task report it under the error policy
            units.append(ReadUnit(file))
            continue
        groups = [meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)]
        # Decoded bytes per run: the file's share per unit_bytes of its size, at most a block.
        share = min(target_bytes, sum(groups) / math.ceil(file.size / unit_bytes))
        first = len(units)
        run: list[int] = []
        size = 0
        for i, group_bytes in enumerate(groups):
            run.append(i)
            size += group_bytes
            if size >= share:
                units.append(ReadUnit(file, tuple(run)))
                run, size = [], 0
        if run or len(units) == first:  # the rest, or an empty file's one (empty) unit
            units.append(ReadUnit(file, tuple(run)))
    return units


def _footer_counter(
    reader_kwargs: dict[str, Any], allow_pickle: bool, fs: Any, units: ReadUnits
) -> Callable[[], int]:
    """``RowCounter`` of :func:`~.paths.plan_file_tasks`: :func:`count_parquet_rows` over a task's
    units, with the read's columns and reference schema (set by ``_plan_units`` before tasks are made)."""
    return functools.partial(
        count_parquet_rows, fs, units, reader_kwargs["columns"], reader_kwargs.get("reference"), allow_pickle
    )


def plan_parquet(
    paths: Any,
    *,
    columns: Sequence[str] | None = None,
    filter: Any = None,
    **kwargs: Any,
) -> list[ReadTask]:
    """Read tasks for ``read_parquet`` (``kwargs``: the common file options of :func:`~.paths.plan_read`).

    ``columns`` selects file columns; ``filter`` is a ``pyarrow.compute`` expression or DNF filters
    (``[("x", ">", 1)]``), applied to each row group as it is read. Without ``filter`` each task can
    count its rows from footers (``ReadTask.count_rows``); a filter's count needs the data.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()); pq.write_table(pa.table({"x": [1, 2]}), d / "a.parquet")
        >>> [task.count_rows() for task in plan_parquet(str(d))]
        [2]
    """
    from ..context import DataContext

    if columns is not None and (isinstance(columns, str) or not all(isinstance(c, str) for c in columns)):
        raise TypeError(f"columns must be a list of column names, got {columns!r}")
    repeated = sorted(name for name, n in collections.Counter(columns or ()).items() if n > 1)
    if repeated:
        raise ValueError(f"columns must name each column once; repeated: {repeated} in {list(columns or ())}")
    _as_expression(filter)  # a malformed filter fails here, in the caller
    ctx = DataContext.get_current()
    reader_kwargs = {"columns": None if columns is None else list(columns), "filter": filter}
    if filter is not None and columns is not None:
        reader_kwargs["filter_partitioning"] = _as_partitioning(kwargs.get("partitioning"))
    return plan_read(
        paths,
        read_parquet_unit,
        reader_kwargs,
        make_units=functools.partial(
            _plan_units, ctx.target_max_block_size, reader_kwargs, bool(kwargs.get("include_paths"))
        ),
        size_ratio=PARQUET_SIZE_RATIO,
        # A filter's count depends on the rows' values: only reading tells it.
        count_rows=None if filter is not None else functools.partial(_footer_counter, reader_kwargs, ctx.allow_pickle),
        releases_gil=True,  # Arrow reads and decodes
        **kwargs,
    )
