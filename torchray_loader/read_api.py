"""Sources: ``range``, ``from_*`` (in memory) and ``read_*`` (files) -> :class:`Dataset`."""

from __future__ import annotations

import builtins
import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from .blocks import block_from_batch, block_from_rows, column_from_values
from .context import DataContext
from .dataset import Dataset
from .io.read_task import ReadTask
from .plan import InputBlocks, Read

__all__ = [
    "range",
    "range_tensor",
    "from_items",
    "from_numpy",
    "from_pandas",
    "from_arrow",
]

#: In-memory sources make at least this many blocks (when there are that many rows), so there is
#: parallelism to exploit. It never depends on num_workers: block boundaries fix the order.
MIN_BLOCKS = 8


def _block_bounds(
    n: int, override_num_blocks: int | None, *, rows_per_block: int | None = None
) -> list[tuple[int, int]]:
    if override_num_blocks is not None:
        if not isinstance(override_num_blocks, int) or override_num_blocks < 1:
            raise ValueError(f"override_num_blocks must be a positive int, got {override_num_blocks!r}")
        k = override_num_blocks
    else:
        rows_per_block = rows_per_block or DataContext.get_current().target_rows_per_block
        k = max(math.ceil(n / rows_per_block), min(n, MIN_BLOCKS))
    k = max(1, min(k, n)) if n else 1
    edges = np.linspace(0, n, k + 1).astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _range_block(start: int, stop: int, shape: tuple[int, ...] | None) -> list[pa.Table]:
    ids = np.arange(start, stop, dtype=np.int64)
    if shape is None:
        return [pa.table({"id": ids})]
    data = np.broadcast_to(ids.reshape((-1,) + (1,) * len(shape)), (len(ids), *shape))
    return [block_from_batch({"data": np.ascontiguousarray(data)})]


def _check_count(n: Any, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"{name} must be a non-negative int, got {n!r}")
    return int(n)


def range(n: int, *, override_num_blocks: int | None = None) -> Dataset:  # noqa: A001
    """Rows ``{"id": 0}`` ... ``{"id": n-1}``, generated in parallel read tasks.

    Example:
        >>> import torchray_loader as rd
        >>> rd.range(3).take_all()
        [{'id': 0}, {'id': 1}, {'id': 2}]
    """
    n = _check_count(n)
    tasks = tuple(
        ReadTask(functools.partial(_range_block, a, b, None), num_rows=b - a, size_bytes=8 * (b - a))
        for a, b in _block_bounds(n, override_num_blocks)
    )
    return Dataset(Read(tasks, "ReadRange", pa.schema([("id", pa.int64())]), fresh_output=True))


def range_tensor(n: int, *, shape: tuple[int, ...] = (1,), override_num_blocks: int | None = None) -> Dataset:
    """Rows ``{"data": np.full(shape, i)}`` for ``i`` in ``range(n)``.

    Example:
        >>> import torchray_loader as rd
        >>> rd.range_tensor(2, shape=(2, 2)).take(1)[0]["data"].tolist()
        [[0, 0], [0, 0]]
    """
    n = _check_count(n)
    shape = tuple(int(s) for s in shape)
    tasks = tuple(
        ReadTask(functools.partial(_range_block, a, b, shape), num_rows=b - a)
        for a, b in _block_bounds(n, override_num_blocks)
    )
    schema = pa.schema([("data", pa.fixed_shape_tensor(pa.int64(), shape))])
    return Dataset(Read(tasks, "ReadRangeTensor", schema, fresh_output=True))


def from_items(items: Sequence[Any], *, override_num_blocks: int | None = None) -> Dataset:
    """A Dataset from a list of rows. Dict items become rows; anything else goes in column ``item``.

    Example:
        >>> import torchray_loader as rd
        >>> rd.from_items([{"a": 1}, {"a": 2}]).count()
        2
    """
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
        raise TypeError(f"items must be a list, got {type(items).__name__}")
    blocks = []
    for a, b in _block_bounds(len(items), override_num_blocks):
        chunk = items[a:b]
        if chunk and all(isinstance(x, dict) for x in chunk):
            blocks.append(block_from_rows(chunk, producer="from_items"))
        elif any(isinstance(x, dict) for x in chunk):
            raise TypeError("from_items: items must be all dicts or all non-dicts")
        else:
            blocks.append(pa.table({"item": column_from_values(list(chunk))}) if chunk else pa.table({}))
    return Dataset(InputBlocks(blocks, "FromItems"))


def from_numpy(ndarrays: np.ndarray | Sequence[np.ndarray]) -> Dataset:
    """A Dataset with column ``data`` from an ndarray (or a list: one block each). The first axis is rows.

    Example:
        >>> import numpy as np, torchray_loader as rd
        >>> rd.from_numpy(np.ones((2, 3))).schema().names
        ['data']
    """
    arrays = [ndarrays] if isinstance(ndarrays, np.ndarray) else list(ndarrays)
    for a in arrays:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"from_numpy expects ndarrays, got {type(a).__name__}")
        if a.ndim == 0:
            raise ValueError("from_numpy: arrays need at least one dimension (rows)")
    return Dataset(InputBlocks([block_from_batch({"data": a}) for a in arrays], "FromNumpy"))


def from_pandas(dfs: Any) -> Dataset:
    """A Dataset from a pandas DataFrame or a list of them (one block each).

    Example:
        >>> import pandas as pd, torchray_loader as rd
        >>> rd.from_pandas(pd.DataFrame({"a": [1, 2]})).count()
        2
    """
    dfs = dfs if isinstance(dfs, (list, tuple)) else [dfs]
    blocks = []
    for df in dfs:
        if not (type(df).__module__.startswith("pandas") and type(df).__name__ == "DataFrame"):
            raise TypeError(f"from_pandas expects DataFrames, got {type(df).__name__}")
        blocks.append(block_from_batch(df))
    return Dataset(InputBlocks(blocks, "FromPandas"))


def from_arrow(tables: pa.Table | Sequence[pa.Table]) -> Dataset:
    """A Dataset from a pyarrow Table or a list of them (one block each).

    Example:
        >>> import pyarrow as pa, torchray_loader as rd
        >>> rd.from_arrow(pa.table({"a": [1, 2]})).count()
        2
    """
    tables = [tables] if isinstance(tables, (pa.Table, pa.RecordBatch)) else list(tables)
    blocks = []
    for t in tables:
        if isinstance(t, pa.RecordBatch):
            t = pa.Table.from_batches([t])
        if not isinstance(t, pa.Table):
            raise TypeError(f"from_arrow expects pyarrow Tables, got {type(t).__name__}")
        blocks.append(t)
    return Dataset(InputBlocks(blocks, "FromArrow"))


_ = builtins  # `range` is shadowed above; use builtins.range in this module.

# ---------------------------------------------------------------------------------------------
# File sources (read_*) follow below this line; see torchray_loader/io/ for the readers.

from .io import binary as _binary  # noqa: E402 - file sources live below the marker
from .io import csv as _csv  # noqa: E402
from .io import images as _images  # noqa: E402
from .io import json as _json  # noqa: E402
from .io import numpy as _numpy  # noqa: E402
from .io import parquet as _parquet  # noqa: E402
from .io import text as _text  # noqa: E402
from .io.paths import FileShuffleConfig, Partitioning, PathPartitionFilter  # noqa: E402

__all__ += [
    "FileShuffleConfig",
    "Partitioning",
    "PathPartitionFilter",
    "read_binary_files",
    "read_csv",
    "read_images",
    "read_json",
    "read_numpy",
    "read_parquet",
    "read_text",
]

#: Ray arguments that mean nothing on one machine; accepted and ignored so Ray code runs unchanged.
_RAY_ONLY_ARGS = frozenset({"ray_remote_args", "concurrency", "meta_provider", "num_cpus", "num_gpus", "memory"})


def _file_source(
    name: str,
    plan: Any,
    paths: Any,
    common: dict[str, Any],
    format_kwargs: dict[str, Any],
    extra: dict[str, Any],
) -> Dataset:
    """Build a file source: validate Ray-only arguments, plan the read tasks, wrap them in a Dataset."""
    extra = dict(extra)
    parallelism = extra.pop("parallelism", -1)
    for key in list(extra):
        if key in _RAY_ONLY_ARGS:
            extra.pop(key)
    if extra:
        raise TypeError(f"{name}() got unexpected keyword arguments: {sorted(extra)}")
    if common.get("override_num_blocks") is None and isinstance(parallelism, int) and parallelism > 0:
        common["override_num_blocks"] = parallelism
    tasks = plan(paths, **format_kwargs, **common)
    # File readers decode into new memory (bytes they were handed are immutable, and Arrow buffers
    # over them are never given out without a copy).
    return Dataset(Read(tuple(tasks), name, fresh_output=True))


def _common(
    filesystem: Any,
    file_extensions: Sequence[str] | None,
    partitioning: Any,
    include_paths: bool,
    ignore_missing_paths: bool,
    shuffle: Any,
    override_num_blocks: int | None,
    on_read_error: str | None,
    read_error_budget: int | None,
    partition_filter: Any,
) -> dict[str, Any]:
    return {
        "partition_filter": partition_filter,
        "filesystem": filesystem,
        "file_extensions": file_extensions,
        "partitioning": partitioning,
        "include_paths": include_paths,
        "ignore_missing_paths": ignore_missing_paths,
        "shuffle": shuffle,
        "override_num_blocks": override_num_blocks,
        "on_read_error": on_read_error,
        "read_error_budget": read_error_budget,
    }


def read_parquet(
    paths: str | Sequence[str],
    *,
    filesystem: Any = None,
    columns: Sequence[str] | None = None,
    filter: Any = None,
    partitioning: Any = "hive",
    partition_filter: Any = None,
    include_paths: bool = False,
    file_extensions: Sequence[str] | None = tuple(_parquet.PARQUET_EXTENSIONS),
    ignore_missing_paths: bool = False,
    shuffle: Any = None,
    override_num_blocks: int | None = None,
    on_read_error: str | None = None,
    read_error_budget: int | None = None,
    **ray_args: Any,
) -> Dataset:
    """Parquet files (a file, a directory, a glob or a list) as a Dataset; tensor columns round-trip.

    ``columns`` selects columns, file columns or partition keys, in the order listed (each named
    once); ``filter`` is a ``pyarrow.compute`` expression or DNF filters. Every file's rows have the
    read's columns (those of its first files' footers, unified): a column a file lacks is ``None``.
    Hive-style ``key=value`` directories become string columns; ``partition_filter`` (a
    :class:`PathPartitionFilter`, as every ``read_*`` takes) reads only the partitions it keeps. ``on_read_error``/
    ``read_error_budget`` override ``DataContext`` for this read (see :mod:`torchray_loader.io.errors`).

    Example:
        >>> import tempfile, torchray_loader as rd
        >>> d = tempfile.mkdtemp(); rd.range(3).write_parquet(d)
        >>> rd.read_parquet(d).take_all()
        [{'id': 0}, {'id': 1}, {'id': 2}]
    """
    common = _common(filesystem, file_extensions, partitioning, include_paths, ignore_missing_paths, shuffle,
                     override_num_blocks, on_read_error, read_error_budget, partition_filter)
    return _file_source("ReadParquet", _parquet.plan_parquet, paths, common,
                        {"columns": columns, "filter": filter}, ray_args)


def read_csv(
    paths: str | Sequence[str],
    *,
    filesystem: Any = None,
    read_options: Any = None,
    parse_options: Any = None,
    convert_options: Any = None,
    partitioning: Any = "hive",
    partition_filter: Any = None,
    include_paths: bool = False,
    file_extensions: Sequence[str] | None = None,
    ignore_missing_paths: bool = False,
    shuffle: Any = None,
    override_num_blocks: int | None = None,
    on_read_error: str | None = None,
    read_error_budget: int | None = None,
    **ray_args: Any,
) -> Dataset:
    """CSV files as a Dataset, parsed by ``pyarrow.csv`` (its ``read_options``/``parse_options``/
    ``convert_options`` pass through). A ragged row raises a ``ReadError`` naming file and line.
    As in Ray, every file found is read whatever its name (``file_extensions=["csv"]`` to filter);
    ``.gz``/``.bz2``/``.zst``/``.lz4`` names are decompressed. Under the default ``on_read_error="raise"``
    a file of 64 MiB or more is parsed as it is read, as Ray parses every file: column types then
    come from its first 16 MiB (or ``read_options.block_size``; give others in
    ``convert_options=pyarrow.csv.ConvertOptions(column_types=...)``), and ``take``/``limit`` stop early.

    Example:
        >>> import tempfile, pathlib, torchray_loader as rd
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.csv"; _ = p.write_text("x,y\\n1,2\\n")
        >>> rd.read_csv(str(p)).take_all()
        [{'x': 1, 'y': 2}]
    """
    common = _common(filesystem, file_extensions, partitioning, include_paths, ignore_missing_paths, shuffle,
                     override_num_blocks, on_read_error, read_error_budget, partition_filter)
    fmt = {"read_options": read_options, "parse_options": parse_options, "convert_options": convert_options}
    return _file_source("ReadCSV", _csv.plan_csv, paths, common, fmt, ray_args)


def read_json(
    paths: str | Sequence[str],
    *,
    filesystem: Any = None,
    read_options: Any = None,
    parse_options: Any = None,
    partitioning: Any = "hive",
    partition_filter: Any = None,
    include_paths: bool = False,
    file_extensions: Sequence[str] | None = tuple(_json.JSON_EXTENSIONS),
    ignore_missing_paths: bool = False,
    shuffle: Any = None,
    override_num_blocks: int | None = None,
    on_read_error: str | None = None,
    read_error_budget: int | None = None,
    lines: bool | None = None,
    **ray_args: Any,
) -> Dataset:
    """JSON Lines files, or files holding one JSON array of objects, as a Dataset. The format is
    recognised per file, so Ray's ``lines=`` is accepted and not needed.

    Example:
        >>> import tempfile, pathlib, torchray_loader as rd
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.json"; _ = p.write_text('[{"x": 1}, {"x": 2}]')
        >>> rd.read_json(str(p)).take_all()
        [{'x': 1}, {'x': 2}]
    """
    common = _common(filesystem, file_extensions, partitioning, include_paths, ignore_missing_paths, shuffle,
                     override_num_blocks, on_read_error, read_error_budget, partition_filter)
    if lines is not None and not isinstance(lines, bool):
        raise TypeError(f"lines must be a bool or None, got {lines!r}")
    fmt = {"read_options": read_options, "parse_options": parse_options}
    return _file_source("ReadJSON", _json.plan_json, paths, common, fmt, ray_args)


def read_text(
    paths: str | Sequence[str],
    *,
    encoding: str = "utf-8",
    drop_empty_lines: bool = True,
    filesystem: Any = None,
    partitioning: Any = None,
    partition_filter: Any = None,
    include_paths: bool = False,
    file_extensions: Sequence[str] | None = None,
    ignore_missing_paths: bool = False,
    shuffle: Any = None,
    override_num_blocks: int | None = None,
    on_read_error: str | None = None,
    read_error_budget: int | None = None,
    **ray_args: Any,
) -> Dataset:
    """Text files as a Dataset with one row per line in column ``text`` (blank lines dropped). A file
    of 64 MiB or more is read and cut into lines a chunk at a time (UTF-8, ASCII, Latin-1, cp1252).

    Example:
        >>> import tempfile, pathlib, torchray_loader as rd
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"; _ = p.write_text("hi\\nthere\\n")
        >>> rd.read_text(str(p)).take_all()
        [{'text': 'hi'}, {'text': 'there'}]
    """
    common = _common(filesystem, file_extensions, partitioning, include_paths, ignore_missing_paths, shuffle,
                     override_num_blocks, on_read_error, read_error_budget, partition_filter)
    fmt = {"encoding": encoding, "drop_empty_lines": drop_empty_lines}
    return _file_source("ReadText", _text.plan_text, paths, common, fmt, ray_args)


def read_images(
    paths: str | Sequence[str],
    *,
    filesystem: Any = None,
    size: tuple[int, int] | None = None,
    mode: str | None = None,
    include_paths: bool = False,
    file_extensions: Sequence[str] | None = tuple(_images.IMAGE_EXTENSIONS),
    partitioning: Any = None,
    partition_filter: Any = None,
    ignore_missing_paths: bool = False,
    shuffle: Any = None,
    override_num_blocks: int | None = None,
    on_read_error: str | None = None,
    read_error_budget: int | None = None,
    decode_on_device: bool = False,
    **ray_args: Any,
) -> Dataset:
    """Image files as a Dataset with a ``uint8`` HWC column ``image`` (``path`` with ``include_paths``).

    ``size=(height, width)`` resizes, ``mode`` (``"RGB"``, ``"L"``, ``"RGBA"``...) converts. JPEGs decode
    with libjpeg-turbo (simplejpeg or torchvision) or at reduced scale (PIL draft) when ``size`` shrinks them.

    ``decode_on_device=True`` (JPEG files, ``mode`` ``"RGB"`` or ``"L"``): ``iter_torch_batches`` with an
    explicit ``device`` has the workers only read the files; each batch is decoded on that device
    (nvjpeg through ``torchvision.io.decode_jpeg`` on CUDA, batched; libjpeg-turbo on ``"cpu"``) and
    resized there (antialiased bilinear), on the side stream that copies the batch. The batches hold
    the same rows; pixels may differ from the workers' decode by a few levels on photographs, and by
    tens at sharp colour edges (nvjpeg upsamples chroma without libjpeg-turbo's smoothing). This holds for the
    dataset itself, after ``randomize_block_order`` or ``limit``, and in ``RayStyleLoader(ds, device=...)``;
    every other use (``iter_batches``, ``map``..., ``iter_torch_batches`` without ``device``) decodes in
    the workers as usual.

    Example:
        >>> import tempfile, pathlib, numpy as np, torchray_loader as rd
        >>> from PIL import Image
        >>> d = pathlib.Path(tempfile.mkdtemp()); Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(d / "0.png")
        >>> print(rd.read_images(str(d)).schema())
        Column  Type
        ------  ----
        image   numpy.ndarray(shape=(32, 32, 3), dtype=uint8)
    """
    common = _common(filesystem, file_extensions, partitioning, include_paths, ignore_missing_paths, shuffle,
                     override_num_blocks, on_read_error, read_error_budget, partition_filter)
    if not isinstance(decode_on_device, bool):
        raise TypeError(f"decode_on_device must be a bool, got {decode_on_device!r}")
    if not decode_on_device:
        return _file_source("ReadImage", _images.plan_images, paths, common, {"size": size, "mode": mode}, ray_args)
    on_device: list[_images.DeviceDecode] = []

    def plan(paths: Any, **kwargs: Any) -> list[ReadTask]:
        tasks, decode = _images.plan_images_on_device(paths, **kwargs)
        on_device.append(decode)
        return tasks

    read = _file_source("ReadImage", plan, paths, common, {"size": size, "mode": mode}, ray_args)._plan
    assert isinstance(read, Read)
    return Dataset(dataclasses.replace(read, on_device=on_device[0]))


def read_numpy(
    paths: str | Sequence[str],
    *,
    filesystem: Any = None,
    partitioning: Any = None,
    partition_filter: Any = None,
    include_paths: bool = False,
    file_extensions: Sequence[str] | None = tuple(_numpy.NUMPY_EXTENSIONS),
    ignore_missing_paths: bool = False,
    shuffle: Any = None,
    override_num_blocks: int | None = None,
    on_read_error: str | None = None,
    read_error_budget: int | None = None,
    **ray_args: Any,
) -> Dataset:
    """``.npy`` files as a Dataset with column ``data`` (rows along the first axis); ``.npz`` files
    give one column per array. Pickled object arrays are refused unless ``DataContext.allow_pickle``.

    Example:
        >>> import tempfile, pathlib, numpy as np, torchray_loader as rd
        >>> d = pathlib.Path(tempfile.mkdtemp()); np.save(d / "a.npy", np.arange(3))
        >>> rd.read_numpy(str(d)).take_all()
        [{'data': 0}, {'data': 1}, {'data': 2}]
    """
    common = _common(filesystem, file_extensions, partitioning, include_paths, ignore_missing_paths, shuffle,
                     override_num_blocks, on_read_error, read_error_budget, partition_filter)
    return _file_source("ReadNumpy", _numpy.plan_numpy, paths, common, {}, ray_args)


def read_binary_files(
    paths: str | Sequence[str],
    *,
    filesystem: Any = None,
    include_paths: bool = False,
    partitioning: Any = None,
    partition_filter: Any = None,
    file_extensions: Sequence[str] | None = None,
    ignore_missing_paths: bool = False,
    shuffle: Any = None,
    override_num_blocks: int | None = None,
    on_read_error: str | None = None,
    read_error_budget: int | None = None,
    **ray_args: Any,
) -> Dataset:
    """Files as a Dataset with one row per file: its contents in column ``bytes``.

    Example:
        >>> import tempfile, pathlib, torchray_loader as rd
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bin"; _ = p.write_bytes(b"\\x00\\x01")
        >>> rd.read_binary_files(str(p), include_paths=True).take_all()[0]["bytes"]
        b'\\x00\\x01'
    """
    common = _common(filesystem, file_extensions, partitioning, include_paths, ignore_missing_paths, shuffle,
                     override_num_blocks, on_read_error, read_error_budget, partition_filter)
    return _file_source("ReadBinary", _binary.plan_binary, paths, common, {}, ray_args)
