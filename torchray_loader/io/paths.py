"""Paths -> files -> read tasks, over fsspec.

Three steps, all in the consumer when ``read_*`` is called:

1. :func:`resolve_filesystem` turns a path into ``(fsspec filesystem, path on it)``: plain local paths,
   ``file://`` and ``local://`` (Ray's prefix for the local disk) go to the local file system;
   ``s3://anonymous@bucket/key`` is anonymous S3 (``s3fs.S3FileSystem(anon=True)``), ``s3://bucket/key``
   authenticated S3; the S3 endpoint comes from ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` when set;
   other URLs (``memory://``, ``gs://``...) go through :func:`fsspec.core.url_to_fs`. ``filesystem=``
   may be an fsspec or a pyarrow file system.
2. :func:`expand_paths` lists the files: a file, a directory (recursively; names starting with ``.``
   or ``_`` are skipped, as Ray does, which also hides the writers' temporary files), a glob or a list
   of those. Order is deterministic: each directory or glob is sorted, the user's list order is kept;
   ``shuffle="files"`` (or :class:`FileShuffleConfig`) permutes the files, reproducibly with a seed.
   Hive-style ``key=value`` directories become partition values.
3. :func:`plan_file_tasks` groups the files into :class:`ReadTask` s (several small files per task,
   never depending on the worker count) whose body, :func:`read_files_task`, runs the format's
   reader on each unit under the :class:`ReadErrorPolicy`, adds the ``path`` and partition columns,
   and coalesces small tables into blocks of bounded size.

``memory://`` paths live in the memory of the process that wrote them: reading them works inline and
with forked workers (the default on Linux), not with spawned ones.
"""

from __future__ import annotations

import functools
import glob as _glob
import io
import math
import os
import posixpath
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from ..blocks.block import first_rows, warm_up_arrow
from ..errors import ReadError
from .errors import MissingPathError, ReadErrorPolicy
from .read_task import ReadTask

__all__ = [
    "FileShuffleConfig",
    "Partitioning",
    "PathPartitionFilter",
    "FileInfo",
    "ReadUnit",
    "ReadUnits",
    "FileReadOptions",
    "resolve_filesystem",
    "expand_paths",
    "parse_partitions",
    "plan_file_tasks",
    "read_files_task",
    "plan_read",
    "plan_units",
    "file_units",
    "display_path",
    "read_input_bytes",
    "open_input",
    "STREAM_MIN_BYTES",
    "STREAM_CHUNK_BYTES",
    "MIN_READ_TASKS",
    "MAX_FILES_PER_TASK",
    "RAMP_UP_TASKS",
]

#: A read makes at least this many tasks when there are that many files (parallelism to exploit);
#: like block boundaries elsewhere, it never depends on ``num_workers``.
MIN_READ_TASKS = 8
#: Small files are grouped into one task, at most this many per task.
MAX_FILES_PER_TASK = 64
#: The first this many tasks of a read get half the bytes and files of the others: they run side
#: by side on the first workers, so the first block (and batch) is ready in about half the time.
RAMP_UP_TASKS = 2


@dataclass(frozen=True)
class FileShuffleConfig:
    """``shuffle=FileShuffleConfig(seed=...)``: permute the input files before reading.

    ``seed=None`` draws a fresh permutation at each ``read_*`` call; a seed makes it reproducible.

    Example:
        >>> FileShuffleConfig(seed=0).seed
        0
    """

    seed: int | None = None


@dataclass(frozen=True)
class Partitioning:
    """How directory names become columns.

    ``"hive"``: every ``key=value`` directory component of a file's path (below ``base_dir`` when
    given; exactly one ``=``, as in Ray) adds column ``key`` with the (URL-decoded) string ``value``;
    with ``field_names``, a file's keys must be those, in that order (a file with none is
    unpartitioned), or listing raises a ``ValueError`` naming it. ``"dir"``: the directory
    components below ``base_dir`` are the values of ``field_names``, in order. ``field_types``
    (as in Ray) maps a key to ``int``, ``float``, ``bool`` or ``str``: its column has that type.

    Example:
        >>> Partitioning("hive", field_types={"year": int}).field_types
        (('year', <class 'int'>),)
    """

    style: Literal["hive", "dir"] = "hive"
    base_dir: str | None = None
    field_names: tuple[str, ...] | None = None
    field_types: Any = None  # given as a dict; kept as sorted (key, type) pairs (hashable)

    def __post_init__(self) -> None:
        style = str(getattr(self.style, "value", self.style))  # Ray's PartitionStyle is a str enum
        object.__setattr__(self, "style", style)
        if style not in ("hive", "dir"):
            raise ValueError(f"partitioning style must be 'hive' or 'dir', got {self.style!r}")
        if style == "dir" and (not self.field_names or self.base_dir is None):
            raise ValueError("partitioning style 'dir' needs base_dir and field_names")
        if self.field_names is not None:
            object.__setattr__(self, "field_names", tuple(self.field_names))
        if self.field_types is not None:
            types = dict(self.field_types)
            bad = {k: t for k, t in types.items() if t not in _PARTITION_TYPES}
            if bad:
                raise TypeError(f"field_types values must be int, float, bool or str, got {bad}")
            object.__setattr__(self, "field_types", tuple(sorted(types.items())))

    def typed(self, key: str, value: str) -> Any:
        """``value`` as the type ``field_types`` gives ``key`` (a ``ValueError`` naming both if it is not one)."""
        t = dict(self.field_types or ()).get(key, str)
        try:
            return _PARTITION_TYPES[t](value)
        except ValueError:
            raise ValueError(f"partition {key}={value!r} is not a {t.__name__} (field_types)") from None


def _as_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered not in ("true", "false", "1", "0"):
        raise ValueError(text)
    return lowered in ("true", "1")


_PARTITION_TYPES: dict[type, Callable[[str], Any]] = {str: str, int: int, float: float, bool: _as_bool}


@dataclass(frozen=True)
class FileInfo:
    """One input file: its path on the file system, size when listed, partition values.

    Example:
        >>> FileInfo("/data/year=2024/a.csv", 10, (("year", "2024"),)).partitions
        (('year', '2024'),)
    """

    path: str
    size: int | None = None
    partitions: tuple[tuple[str, Any], ...] = ()  # values are str unless Partitioning.field_types says


@dataclass(frozen=True)
class ReadUnit:
    """What one reader call reads: a file, or a part of it (``part``, e.g. parquet row groups).

    Example:
        >>> ReadUnit(FileInfo("a.parquet"), part=(0, 1)).part
        (0, 1)
    """

    file: FileInfo
    part: Any = None


class ReadUnits(tuple):  # type: ignore[type-arg]
    """One read task's units (a tuple of :class:`ReadUnit`) that pickles as four flat tuples.

    A task crosses to its worker pickled; unit by unit that is three objects each through the
    transfer pickler's per-object hooks (about 3 us a unit: 0.2 ms for a 64-image task), flat tuples
    of strings and ints take its C fast path.

    Example:
        >>> import pickle
        >>> units = ReadUnits([ReadUnit(FileInfo("a.csv", 3)), ReadUnit(FileInfo("b.parquet", 9, (("k", "v"),)), (0, 1))])
        >>> pickle.loads(pickle.dumps(units)) == units
        True
    """

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        # Every field of ReadUnit and FileInfo, as one tuple each (a test pins the field lists).
        files = [u.file for u in self]
        return (
            _unpack_units,
            (
                tuple(f.path for f in files),
                tuple(f.size for f in files),
                tuple(f.partitions for f in files),
                tuple(u.part for u in self),
            ),
        )


def _unpack_units(
    paths: tuple[str, ...], sizes: tuple[int | None, ...], partitions: tuple[Any, ...], parts: tuple[Any, ...]
) -> ReadUnits:
    return ReadUnits(
        ReadUnit(FileInfo(path, size, parts_of_path), part)
        for path, size, parts_of_path, part in zip(paths, sizes, partitions, parts, strict=True)
    )


#: Files at least this large (as listed) are read as a stream by the formats that can cut a file into
#: rows as it arrives (``read_text``; ``read_csv`` under the raise policy): a task holds about its output rather
#: than the file's bytes as well, and a row limit (``take``, ``limit``) stops the read early. Smaller
#: files are one whole-object read (on S3 one GET).
STREAM_MIN_BYTES = 64 << 20
#: Decompressed bytes a streamed read parses at a time.
STREAM_CHUNK_BYTES = 16 << 20


@dataclass(frozen=True)
class FileReadOptions:
    """Options every file reader shares, captured in the consumer at ``read_*`` time.

    Example:
        >>> FileReadOptions(include_paths=True).allow_pickle
        False
    """

    include_paths: bool = False
    #: Target size of the blocks a task yields (``DataContext.target_max_block_size`` at read time).
    target_block_bytes: int = 128 * 1024 * 1024
    allow_pickle: bool = False
    #: Files listed at least this large are read as a stream where the format can ...
    stream_min_bytes: int = STREAM_MIN_BYTES
    #: ... this many decompressed bytes at a time.
    stream_chunk_bytes: int = STREAM_CHUNK_BYTES

    def streams(self, file: FileInfo) -> bool:
        """Whether ``file`` is read a chunk at a time rather than in one whole-object read.

        Example:
            >>> FileReadOptions(stream_min_bytes=10).streams(FileInfo("a.csv", 10))
            True
        """
        return file.size is not None and file.size >= self.stream_min_bytes


# ----------------------------------------------------------------------------------------------
# 1. file systems


_S3_PROTOCOLS = ("s3://", "s3a://", "s3n://")


def _s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _s3_filesystem(anon: bool) -> Any:
    try:
        import s3fs
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("reading s3:// paths needs s3fs: pip install 'torchray_loader[s3]'") from exc
    kwargs: dict[str, Any] = {"anon": anon}
    endpoint = _s3_endpoint()
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    return s3fs.S3FileSystem(**kwargs)


def _wrap_filesystem(filesystem: Any) -> Any:
    """An fsspec file system for ``filesystem`` (fsspec as it is; pyarrow wrapped)."""
    import fsspec

    if isinstance(filesystem, fsspec.AbstractFileSystem):
        return filesystem
    try:
        import pyarrow.fs as pafs
    except ImportError:  # pragma: no cover
        pafs = None
    if pafs is not None and isinstance(filesystem, pafs.FileSystem):
        from fsspec.implementations.arrow import ArrowFSWrapper

        return ArrowFSWrapper(filesystem)
    raise TypeError(
        f"filesystem must be an fsspec AbstractFileSystem or a pyarrow.fs.FileSystem, got {type(filesystem).__name__}"
    )


def _local_path(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def resolve_filesystem(path: str | os.PathLike, filesystem: Any = None) -> tuple[Any, str]:
    """The fsspec file system serving ``path`` and the path as that file system names it.

    Example:
        >>> fs, p = resolve_filesystem("local:///tmp/data")
        >>> type(fs).__name__, p
        ('LocalFileSystem', '/tmp/data')
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"paths must be str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if not path:
        raise ValueError("paths must not be empty strings")
    lower = path.lower()
    if filesystem is not None:
        fs = _wrap_filesystem(filesystem)
        if lower.startswith(("local://", "file://")):
            return fs, _local_path(path.split("://", 1)[1])
        if lower.startswith(_S3_PROTOCOLS):
            path = path.split("://", 1)[1]
            if path.startswith("anonymous@"):
                path = path[len("anonymous@") :]
            return fs, path.rstrip("/")
        if "://" in path:
            return fs, fs._strip_protocol(path).rstrip("/") or "/"
        if _is_local_fs(fs):
            return fs, _local_path(path)
        return fs, path.rstrip("/")
    if lower.startswith(("local://", "file://")) or "://" not in path:
        from fsspec.implementations.local import LocalFileSystem

        rest = path.split("://", 1)[1] if "://" in path else path
        return LocalFileSystem(), _local_path(rest)
    if lower.startswith(_S3_PROTOCOLS):
        rest = path.split("://", 1)[1]
        anon = rest.startswith("anonymous@")
        if anon:
            rest = rest[len("anonymous@") :]
        if not rest.strip("/"):
            raise ValueError(f"{path!r} names no bucket")
        return _s3_filesystem(anon), rest.rstrip("/")
    from fsspec.core import url_to_fs

    fs, stripped = url_to_fs(path)
    return fs, stripped.rstrip("/") or stripped


def _is_local_fs(fs: Any) -> bool:
    """True for fsspec's local file system and for a pyarrow ``LocalFileSystem`` wrapped by fsspec."""
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        return True
    inner = getattr(fs, "fs", None)
    return getattr(inner, "type_name", None) == "local"


def _is_plain_local_fs(fs: Any) -> bool:
    """True where reading a path with the OS directly is what ``fs`` would do: fsspec's own local
    file system, or pyarrow's wrapped by fsspec, not a subclass (a user's subclass may check, count
    or redirect its reads: it is always called)."""
    from fsspec.implementations.arrow import ArrowFSWrapper
    from fsspec.implementations.local import LocalFileSystem

    if type(fs) is LocalFileSystem:
        return True
    return type(fs) is ArrowFSWrapper and getattr(fs.fs, "type_name", None) == "local"


def display_path(fs: Any, path: str) -> str:
    """``path`` as a user would write it: plain for local files, with the protocol otherwise.

    Example:
        >>> from fsspec.implementations.local import LocalFileSystem
        >>> display_path(LocalFileSystem(), "/tmp/a.csv")
        '/tmp/a.csv'
    """
    if _is_local_fs(fs):
        return path
    try:
        return fs.unstrip_protocol(path)
    except Exception:  # pragma: no cover - exotic file systems
        return path


# ----------------------------------------------------------------------------------------------
# 2. listing files


def _hidden(rel: str) -> bool:
    return any(part.startswith((".", "_")) for part in rel.split("/") if part)


def _has_ext(path: str, exts: Sequence[str] | None) -> bool:
    if exts is None:
        return True
    name = path.lower()
    return any(name.endswith("." + e.lower().lstrip(".")) for e in exts)


def _info_or_none(fs: Any, path: str) -> dict[str, Any] | None:
    """``fs.info(path)``; None where the path does not exist. A path that cannot be looked at (an
    S3 object private to an anonymous reader: s3fs raises ``PermissionError``, pyarrow an ``OSError``)
    is listed as a file of unknown size: its read task meets the same refusal and the read's error
    policy names or skips it, as for any unreadable file."""
    try:
        return fs.info(path)
    except FileNotFoundError:
        return None
    except OSError:
        return {"name": path, "type": "file", "size": None}


def _list_one(fs: Any, path: str, shown: str) -> list[tuple[str, int | None]] | None:
    """Files under one user path, sorted; ``None`` when the path does not exist.

    A path that exists as written is that file or directory, even if it contains ``*?[``
    (``img[1]/``, as Ray reads it); only a path that does not is expanded as a glob."""
    info = _info_or_none(fs, path)
    if info is None and _glob.has_magic(path):
        matches = sorted(fs.glob(path, detail=True).items())
        if not matches:
            return None
        out: list[tuple[str, int | None]] = []
        for p, info in matches:
            if _hidden(posixpath.basename(p.rstrip("/"))):
                continue
            if info.get("type") == "directory":
                out.extend(_list_dir(fs, p))
            else:
                out.append((p, info.get("size")))
        return out
    if info is None:
        return None
    if info.get("type") == "directory":
        files = _list_dir(fs, path)
        if not files:
            raise ReadError(shown, "directory contains no files to read")
        return files
    return [(path, info.get("size"))]


def _list_dir(fs: Any, path: str) -> list[tuple[str, int | None]]:
    from fsspec.implementations.local import LocalFileSystem

    base = path.rstrip("/")
    try:
        if isinstance(fs, LocalFileSystem):
            found = _find_local(base)
        else:
            found = [(p, info.get("size")) for p, info in fs.find(base, withdirs=False, detail=True).items()
                     if info.get("type", "file") != "directory"]
    except PermissionError as exc:
        # Whatever the policy: the files a directory holds cannot be skipped one by one unlisted.
        where = display_path(fs, exc.filename) if isinstance(exc.filename, str) else display_path(fs, base)
        raise ReadError(where, f"cannot list this directory: {exc.strerror or exc}") from exc
    out = []
    for p, size in found:
        rel = p[len(base) :].lstrip("/") if p.startswith(base) else posixpath.basename(p)
        if not _hidden(rel):
            out.append((p, size))
    out.sort()
    return out


def _find_local(base: str) -> list[tuple[str, int | None]]:
    """Files under a local directory with their sizes, from ``os.scandir`` entries (a tenth of the
    time of ``LocalFileSystem.find``, which calls ``info`` once per file).

    Symbolic links are followed, as ``os.walk(followlinks=True)`` does: a linked file has its
    target's size, a dangling link size 0 (as fsspec lists it), and a linked directory is listed
    like any other (fsspec would list it as a file that cannot be read); a link back to a directory
    on the current path is not followed, so a cycle ends.
    """
    out: list[tuple[str, int | None]] = []

    def walk(path: str, ancestors: frozenset[tuple[int, int]]) -> None:
        try:
            entries = list(os.scandir(path))
        except FileNotFoundError:  # removed while listing
            return
        for entry in entries:
            try:
                st = entry.stat()
            except FileNotFoundError:  # a dangling link
                out.append((entry.path, 0))
                continue
            if not entry.is_dir():
                out.append((entry.path, st.st_size))
            elif (st.st_dev, st.st_ino) not in ancestors:
                walk(entry.path, ancestors | {(st.st_dev, st.st_ino)})

    root = os.stat(base)
    walk(base, frozenset({(root.st_dev, root.st_ino)}))
    return out


#: A hive directory holds exactly one ``=`` (as Ray parses it): ``k=a=b`` is an ordinary directory,
#: not partition ``k`` (a writer URL-encodes a value's ``=`` as ``%3D``).
_HIVE_RE = re.compile(r"^([^=/]+)=([^=/]*)$")


def _hive_pairs(path: str, parts: Sequence[str], partitioning: Partitioning) -> tuple[tuple[str, Any], ...]:
    """The ``key=value`` pairs of the directory components ``parts`` of ``path``, checked against
    ``field_names`` (when given, and the path has any): the same keys in the same order, as Ray
    checks them; a ``ValueError`` naming ``path`` otherwise."""
    matches = [m for m in map(_HIVE_RE.match, parts) if m]
    keys = [urllib.parse.unquote(m.group(1)) for m in matches]
    names = partitioning.field_names
    if names and keys and keys != list(names):
        raise ValueError(f"{path}: hive partitioning expects the keys {list(names)} (field_names), found {keys}")
    return tuple(
        (key, partitioning.typed(key, urllib.parse.unquote(m.group(2)))) for key, m in zip(keys, matches, strict=True)
    )


def parse_partitions(path: str, partitioning: Partitioning | None) -> tuple[tuple[str, Any], ...]:
    """Partition values encoded in the directories of ``path``.

    Example:
        >>> parse_partitions("/data/year=2024/month=05/part.parquet", Partitioning("hive"))
        (('year', '2024'), ('month', '05'))
    """
    if partitioning is None:
        return ()
    dirname = posixpath.dirname(path)
    if partitioning.base_dir is not None:
        # Compared without a scheme or leading "/": file systems list "bkt/key" (S3) or "/bkt/key"
        # (memory://) for a base_dir written "scheme://bkt".
        base = partitioning.base_dir.split("://", 1)[-1].strip("/")
        dirname = dirname.lstrip("/")
        if base and dirname != base and not dirname.startswith(base + "/"):
            return ()
        dirname = dirname[len(base) :]
    parts = [p for p in dirname.split("/") if p]
    if partitioning.style == "hive":
        return _hive_pairs(path, parts, partitioning)
    names = partitioning.field_names or ()
    if len(parts) != len(names):
        raise ValueError(
            f"{path}: partitioning expects {len(names)} directories {list(names)} below "
            f"{partitioning.base_dir!r}, found {len(parts)}"
        )
    return tuple((k, partitioning.typed(k, urllib.parse.unquote(p))) for k, p in zip(names, parts, strict=True))


@dataclass(frozen=True)
class PathPartitionFilter:
    """``partition_filter=``: read only the files whose partition values ``filter_fn`` accepts.

    ``filter_fn`` gets a file's partition keys and values as a dict (strings unless the
    partitioning's ``field_types`` types them, as in Ray; ``{}`` for a file outside the
    partitioning), and returns whether to read the file. Called with
    a list of paths, the filter returns those it keeps, as Ray's ``PathPartitionFilter`` does (so a
    Ray one is accepted too).

    Example:
        >>> keep_2024 = PathPartitionFilter.of(lambda d: d.get("year") == "2024")
        >>> keep_2024(["/d/year=2024/a.csv", "/d/year=2023/b.csv", "/d/c.csv"])
        ['/d/year=2024/a.csv']
    """

    partitioning: Partitioning
    filter_fn: Callable[[dict[str, str]], bool]

    @staticmethod
    def of(
        filter_fn: Callable[[dict[str, str]], bool],
        style: str = "hive",
        base_dir: str | None = None,
        field_names: Sequence[str] | None = None,
        field_types: Any = None,
        filesystem: Any = None,
    ) -> PathPartitionFilter:
        """A filter from Ray's flattened arguments: values reach ``filter_fn`` as strings, or as the
        types ``field_types`` gives them, as in Ray. ``filesystem`` is accepted for Ray's signature.

        Example:
            >>> PathPartitionFilter.of(bool, style="dir", base_dir="/d", field_names=["c"])(["/d/x/a", "/d/b"])
            ['/d/x/a']
        """
        fields = None if field_names is None else tuple(field_names)
        return PathPartitionFilter(Partitioning(style, base_dir, fields, field_types), filter_fn)  # type: ignore[arg-type]

    def __call__(self, paths: Sequence[str]) -> list[str]:
        return [p for p in paths if self.filter_fn(self._values(p))]

    def _values(self, path: str) -> dict[str, str]:
        part = self.partitioning
        if part.style == "dir" and part.base_dir is not None:
            base = part.base_dir.split("://", 1)[-1].strip("/")
            if posixpath.dirname(path).strip("/") == base:  # directly in base_dir: unpartitioned, as in Ray
                return {}
        return dict(parse_partitions(path, part))


def _filter_partitions(files: list[FileInfo], partition_filter: Any) -> list[FileInfo]:
    """``files`` that ``partition_filter`` (paths -> kept paths) keeps, in their order."""
    if not callable(partition_filter):
        raise TypeError(f"partition_filter must be a PathPartitionFilter, got {partition_filter!r}")
    kept = partition_filter([f.path for f in files])
    if not isinstance(kept, (list, tuple)) or not all(isinstance(p, str) for p in kept):
        raise TypeError(f"partition_filter must return the list of paths to read, got {type(kept).__name__}")
    wanted = set(kept)
    return [f for f in files if f.path in wanted]


def _as_partitioning(partitioning: Any) -> Partitioning | None:
    if partitioning is None or isinstance(partitioning, Partitioning):
        return partitioning
    if isinstance(partitioning, str) and partitioning == "hive":
        return Partitioning("hive")
    if all(hasattr(partitioning, a) for a in ("style", "base_dir", "field_names")):  # ray.data's Partitioning
        return Partitioning(
            partitioning.style, partitioning.base_dir or None, partitioning.field_names,
            getattr(partitioning, "field_types", None) or None,
        )
    raise TypeError(f"partitioning must be None, 'hive' or a Partitioning, got {partitioning!r}")


def _shuffle_order(n: int, shuffle: Any) -> np.ndarray | None:
    if shuffle is None or shuffle is False:
        return None
    if shuffle == "files":
        seed = None
    elif isinstance(shuffle, FileShuffleConfig):
        seed = shuffle.seed
    else:
        raise ValueError(f"shuffle must be None, 'files' or a FileShuffleConfig, got {shuffle!r}")
    return np.random.default_rng(seed).permutation(n)


def expand_paths(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    filesystem: Any = None,
    file_extensions: Sequence[str] | None = None,
    ignore_missing_paths: bool = False,
    partitioning: Any = None,
    shuffle: Any = None,
    partition_filter: Any = None,
) -> tuple[Any, list[FileInfo]]:
    """List the files ``paths`` names, in a deterministic order, those ``partition_filter`` keeps.

    Raises :class:`MissingPathError` for a path that does not exist (unless
    ``ignore_missing_paths``), :class:`ReadError` for an empty directory or when nothing is left
    to read.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "b.txt").write_text("x"); _ = (d / "a.txt").write_text("y")
        >>> fs, files = expand_paths(str(d))
        >>> [pathlib.Path(f.path).name for f in files]
        ['a.txt', 'b.txt']
    """
    if isinstance(paths, (str, os.PathLike)):
        path_list = [paths]
    elif isinstance(paths, Sequence) and not isinstance(paths, (bytes, bytearray)):
        path_list = list(paths)
    else:
        raise TypeError(f"paths must be a str or a list of str, got {type(paths).__name__}")
    if not path_list:
        raise ValueError("paths must name at least one file or directory")
    if file_extensions is not None:
        if isinstance(file_extensions, str):
            raise TypeError("file_extensions must be a list of extensions, e.g. ['csv']")
        file_extensions = [str(e) for e in file_extensions]
    part = _as_partitioning(partitioning)
    if filesystem is not None:
        filesystem = _wrap_filesystem(filesystem)  # once, so every path shares one instance
    fs0 = None
    files: list[FileInfo] = []
    for raw in path_list:
        fs, p = resolve_filesystem(raw, filesystem)
        if fs0 is None:
            fs0 = fs
        elif fs is not fs0:
            raise ValueError(f"all paths must be on one file system; {raw!r} is not on {type(fs0).__name__}")
        shown = os.fspath(raw)
        try:
            fs.invalidate_cache(p)  # a listing must see files written since the last one
        except Exception:  # pragma: no cover - file systems without a cache
            pass
        listed = _list_one(fs, p, shown)
        if listed is None:
            if ignore_missing_paths:
                continue
            raise MissingPathError(shown, "no such file or directory")
        for fp, size in listed:
            if _has_ext(fp, file_extensions):
                files.append(FileInfo(fp, size, parse_partitions(fp, part)))
    shown_paths = ", ".join(os.fspath(p) for p in path_list)
    if not files:
        what = f" with extensions {list(file_extensions)}" if file_extensions is not None else ""
        raise ReadError(shown_paths, f"no input files found to read{what}")
    if partition_filter is not None:
        files = _filter_partitions(files, partition_filter)
        if not files:
            raise ReadError(shown_paths, "no input files left to read: partition_filter rejected them all")
    order = _shuffle_order(len(files), shuffle)
    if order is not None:
        files = [files[i] for i in order]
    return fs0, files


# ----------------------------------------------------------------------------------------------
# 3. read tasks


#: Compressions pyarrow decompresses itself (fsspec's need the ``zstandard``/``lz4`` packages).
_ARROW_CODECS = {"zst": "zstd", "zstd": "zstd", "lz4": "lz4"}


def _codec_of(path: str, compression: str | None) -> tuple[str, str] | None:
    """``(library, codec)`` that decompresses ``path`` (``"infer"``: by its extension): fsspec's
    codecs, else pyarrow's for zstd and lz4; ``None``: not compressed."""
    from fsspec.compression import compr

    if compression == "infer":
        from fsspec.utils import infer_compression

        compression = infer_compression(path)
        if compression is None:
            _, dot, ext = posixpath.basename(path).rpartition(".")
            codec = _ARROW_CODECS.get(ext.lower()) if dot else None
            return None if codec is None else ("arrow", codec)
    if not compression:
        return None
    if compression in compr:
        return "fsspec", compression
    if compression in _ARROW_CODECS:
        return "arrow", _ARROW_CODECS[compression]
    raise ValueError(f"unknown compression {compression!r}; known: {sorted({*compr, *_ARROW_CODECS} - {None})}")


def open_input(fs: Any, path: str, *, compression: str | None = "infer") -> Any:
    """``path`` opened for reading as a binary stream, decompressed as :func:`read_input_bytes` does.

    Example:
        >>> import gzip, tempfile, os
        >>> from fsspec.implementations.local import LocalFileSystem
        >>> p = os.path.join(tempfile.mkdtemp(), "a.txt.gz")
        >>> with gzip.open(p, "wb") as f: _ = f.write(b"hi")
        >>> with open_input(LocalFileSystem(), p) as f: f.read()
        b'hi'
    """
    codec = _codec_of(path, compression)
    if codec is None or codec[0] == "fsspec":
        return fs.open(path, "rb", compression=None if codec is None else codec[1])
    return pa.CompressedInputStream(fs.open(path, "rb"), codec[1])


def read_input_bytes(fs: Any, path: str, *, compression: str | None = "infer") -> bytes:
    """All bytes of ``path``, decompressed by extension (``.gz``, ``.bz2``, ``.zst``...) when
    ``compression="infer"``.

    One whole-object read (``cat_file``): on S3 a single GET, no HEAD request first.

    Example:
        >>> import gzip, tempfile, os
        >>> from fsspec.implementations.local import LocalFileSystem
        >>> p = os.path.join(tempfile.mkdtemp(), "a.txt.gz")
        >>> with gzip.open(p, "wb") as f: _ = f.write(b"hi")
        >>> read_input_bytes(LocalFileSystem(), p)
        b'hi'
    """
    codec = _codec_of(path, compression)
    data = fs.cat_file(path)
    if codec is None:
        return data
    if codec[0] == "arrow":
        return pa.input_stream(pa.py_buffer(data), compression=codec[1]).read()
    from fsspec.compression import compr

    with compr[codec[1]](io.BytesIO(data), mode="rb") as f:
        return f.read()


def _constant_column(value: Any, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.string() if isinstance(value, str) else None), n)


def _decorate(table: pa.Table, file: FileInfo, shown_path: str, include_paths: bool) -> pa.Table:
    """Add partition columns and (``include_paths``) the ``path`` column; file columns win."""
    n = table.num_rows
    for key, value in file.partitions:
        if key not in table.column_names:
            table = table.append_column(key, _constant_column(value, n))
    if include_paths and "path" not in table.column_names:
        table = table.append_column("path", _constant_column(shown_path, n))
    return table


def decorate_rows(table: pa.Table, files: Sequence[FileInfo], shown_paths: Sequence[str], include_paths: bool) -> pa.Table:
    """:func:`_decorate` for a table whose row ``i`` comes from ``files[i]`` (one row per file).

    Partition keys are taken in the order the files first name them; a file without a key gets
    null there. File columns win, as in :func:`_decorate`.

    Example:
        >>> t = pa.table({"x": [1, 2]})
        >>> files = [FileInfo("k=a/1", partitions=(("k", "a"),)), FileInfo("k=b/2", partitions=(("k", "b"),))]
        >>> decorate_rows(t, files, ["k=a/1", "k=b/2"], True).to_pydict()
        {'x': [1, 2], 'k': ['a', 'b'], 'path': ['k=a/1', 'k=b/2']}
    """
    keys = list(dict.fromkeys(k for f in files for k, _ in f.partitions))
    for key in keys:
        if key not in table.column_names:
            values = [dict(f.partitions).get(key) for f in files]
            typed = any(v is not None and not isinstance(v, str) for v in values)
            table = table.append_column(key, pa.array(values, None if typed else pa.string()))
    if include_paths and "path" not in table.column_names:
        table = table.append_column("path", pa.array(list(shown_paths), pa.string()))
    return table


def _slices(table: pa.Table, target_bytes: int) -> Iterator[pa.Table]:
    """``table`` cut (zero-copy) into slices of about ``target_bytes``."""
    if table.nbytes <= target_bytes or table.num_rows <= 1:
        yield table
        return
    rows = max(1, int(table.num_rows * target_bytes / table.nbytes))
    for start in range(0, table.num_rows, rows):
        yield table.slice(start, rows)


#: Merges consecutive tables of one task into one block (a module-level function; picklable).
Combine = Callable[[list[pa.Table]], pa.Table]


def _coalesce(
    tables: Iterable[pa.Table], target_bytes: int, combine: Combine | None = None
) -> Iterator[pa.Table]:
    """Merge consecutive small tables into blocks of about ``target_bytes`` and cut big ones.

    Without ``combine``, tables whose schemas differ are never merged (``pa.concat_tables``); a
    format that can reconcile them (images of different sizes -> a variable-shape column) passes
    ``combine``. Row order is kept.
    """
    pending: list[pa.Table] = []
    size = 0

    def flush() -> Iterator[pa.Table]:
        if len(pending) == 1:
            yield pending[0]
        elif pending:
            yield combine(pending) if combine is not None else pa.concat_tables(pending)
        pending.clear()

    for table in tables:
        for t in _slices(table, target_bytes):
            if pending and combine is None and not t.schema.equals(pending[0].schema, check_metadata=False):
                yield from flush()
                size = 0
            pending.append(t)
            size += t.nbytes
            if size >= target_bytes:
                yield from flush()
                size = 0
    yield from flush()


#: A format reader: ``(fs, unit, shown_path, policy, options, **format_options) -> tables``.
UnitReader = Callable[..., Iterable[pa.Table]]


def read_files_task(
    units: tuple[ReadUnit, ...],
    fs: Any,
    reader: UnitReader,
    reader_kwargs: dict[str, Any],
    *,
    options: FileReadOptions,
    policy: ReadErrorPolicy,
    combine: Combine | None = None,
    row_limit: int | None = None,
) -> Iterator[pa.Table]:
    """Body of one file read task (runs in a worker): read each unit under ``policy``, decorate, coalesce.

    Invariant: tables come out in unit order, rows in file order; a unit the policy skips
    contributes no rows at all. With ``row_limit``, reading stops once that many rows are read.

    Example:
        >>> import tempfile, pathlib
        >>> from fsspec.implementations.local import LocalFileSystem
        >>> from torchray_loader.io.binary import read_binary_unit
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bin"; _ = p.write_bytes(b"hi")
        >>> units = (ReadUnit(FileInfo(str(p))), ReadUnit(FileInfo(str(p))))
        >>> blocks = read_files_task(units, LocalFileSystem(), read_binary_unit, {},
        ...                          options=FileReadOptions(), policy=ReadErrorPolicy())
        >>> [b.num_rows for b in blocks]
        [2]
    """

    def produce() -> Iterator[pa.Table]:
        for unit in units:
            shown = display_path(fs, unit.file.path)
            for table in policy.run_unit(
                shown, functools.partial(_read_unit, reader, fs, unit, shown, policy, options, reader_kwargs)
            ):
                yield _decorate(table, unit.file, shown, options.include_paths)

    tables = produce() if row_limit is None else first_rows(produce(), row_limit)  # closes produce() then
    yield from _coalesce(tables, options.target_block_bytes, combine)


def _read_unit(
    reader: UnitReader,
    fs: Any,
    unit: ReadUnit,
    shown: str,
    policy: ReadErrorPolicy,
    options: FileReadOptions,
    reader_kwargs: dict[str, Any],
) -> Iterator[pa.Table]:
    return iter(reader(fs, unit, shown, policy, options, **reader_kwargs))


def _groups(
    units: Sequence[ReadUnit], override_num_blocks: int | None, size_ratio: float = 1.0
) -> list[list[ReadUnit]]:
    """Cut ``units`` (in order) into contiguous task groups.

    ``override_num_blocks``: that many groups of (nearly) equal unit counts. Otherwise groups are
    filled greedily up to a budget of in-memory bytes (file size x ``size_ratio``, the format's
    decoded/encoded ratio), at most ``target_max_block_size`` and small enough that there are about
    ``MIN_READ_TASKS`` groups, and at most ``MAX_FILES_PER_TASK`` units each (the first
    ``RAMP_UP_TASKS`` groups: half of both). A unit that is part of
    a file (parquet row groups) was already cut to the target size: it is a task of its own. The
    result depends on the files only, never on ``num_workers``.
    """
    n = len(units)
    if n == 0:
        return []
    if override_num_blocks is not None:
        if (
            isinstance(override_num_blocks, bool)
            or not isinstance(override_num_blocks, int)
            or override_num_blocks < 1
        ):
            raise ValueError(f"override_num_blocks must be a positive int, got {override_num_blocks!r}")
        k = min(override_num_blocks, n)
        edges = np.linspace(0, n, k + 1).astype(np.int64)
        return [list(units[a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
    from ..context import DataContext

    target = max(1, DataContext.get_current().target_max_block_size)
    est = [target if u.part is not None else int((u.file.size or 0) * size_ratio) for u in units]
    total = sum(est)
    if total == 0:  # sizes unknown: split by count
        k = min(n, max(MIN_READ_TASKS, math.ceil(n / MAX_FILES_PER_TASK)))
        edges = np.linspace(0, n, k + 1).astype(np.int64)
        return [list(units[a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
    full_budget = max(1, min(target, math.ceil(total / min(n, MIN_READ_TASKS))))
    groups: list[list[ReadUnit]] = []
    current: list[ReadUnit] = []
    size = 0
    for unit, e in zip(units, est, strict=True):
        ramp = 2 if len(groups) < RAMP_UP_TASKS else 1
        budget, max_files = max(1, full_budget // ramp), max(1, MAX_FILES_PER_TASK // ramp)
        if current and (size + e > budget or len(current) >= max_files or unit.part is not None):
            groups.append(current)
            current, size = [], 0
        current.append(unit)
        size += e
        if unit.part is not None:
            groups.append(current)
            current, size = [], 0
    if current:
        groups.append(current)
    return groups


#: The body of one file read task: ``(units, fs, reader, reader_kwargs, *, options, policy, combine,
#: row_limit) -> blocks``; :func:`read_files_task` unless a format reads a whole task its own way.
#: It stops reading once it has produced ``row_limit`` rows (``None``: no limit).
TaskBody = Callable[..., Iterator[pa.Table]]

#: ``(fs, a task's units) -> a zero-argument row counter`` (picklable) that reads no rows: a
#: format's :attr:`ReadTask.count_rows` (parquet: its footers).
RowCounter = Callable[[Any, "ReadUnits"], Callable[[], int]]


def plan_file_tasks(
    fs: Any,
    units: Sequence[ReadUnit],
    reader: UnitReader,
    reader_kwargs: dict[str, Any] | None = None,
    *,
    include_paths: bool = False,
    override_num_blocks: int | None = None,
    on_read_error: str | None = None,
    read_error_budget: int | None = None,
    policy: ReadErrorPolicy | None = None,
    combine: Combine | None = None,
    size_ratio: float = 1.0,
    task_body: TaskBody = read_files_task,
    count_rows: RowCounter | None = None,
    releases_gil: bool = False,
) -> list[ReadTask]:
    """Group ``units`` into read tasks running ``reader`` (a module-level function) in workers.

    The ``DataContext`` is read here, in the consumer, and captured into each task. ``size_ratio``
    estimates in-memory bytes per file byte (decoded JPEGs are ~10x their files), so a task's
    output stays near ``target_max_block_size``. ``count_rows(fs, units)`` gives each task its
    ``ReadTask.count_rows``, under the ``raise`` policy only (under ``skip`` a count must be what a
    read yields, which only reading tells); ``releases_gil`` marks every task so.

    Example:
        >>> from fsspec.implementations.local import LocalFileSystem
        >>> plan_file_tasks(LocalFileSystem(), [], print)
        []
    """
    from ..context import DataContext

    ctx = DataContext.get_current()
    if policy is None:
        policy = ReadErrorPolicy.from_context(on_read_error, read_error_budget)
    options = FileReadOptions(
        include_paths=bool(include_paths),
        target_block_bytes=ctx.target_max_block_size,
        allow_pickle=ctx.allow_pickle,
        stream_min_bytes=STREAM_MIN_BYTES,
        stream_chunk_bytes=STREAM_CHUNK_BYTES,
    )
    tasks = []
    for group in _groups(units, override_num_blocks, size_ratio):
        sizes = [u.file.size for u in group if u.file.size is not None and u.part is None]
        size = sum(sizes) if len(sizes) == len(group) else None
        fn = functools.partial(
            task_body,
            ReadUnits(group),
            fs,
            reader,
            dict(reader_kwargs or {}),
            options=options,
            policy=policy,
            combine=combine,
        )
        tasks.append(
            ReadTask(
                fn,
                num_rows=None,
                size_bytes=size,
                paths=tuple(display_path(fs, u.file.path) for u in group),
                accepts_row_limit=True,  # every task body takes row_limit=
                count_rows=count_rows(fs, ReadUnits(group)) if count_rows and policy.mode == "raise" else None,
                releases_gil=releases_gil,
            )
        )
    return tasks


def file_units(files: Sequence[FileInfo]) -> list[ReadUnit]:
    """One whole-file unit per file.

    Example:
        >>> [u.file.path for u in file_units([FileInfo("a"), FileInfo("b")])]
        ['a', 'b']
    """
    return [ReadUnit(f) for f in files]


def plan_units(
    paths: Any,
    *,
    make_units: Callable[[Any, list[FileInfo]], list[ReadUnit]] | None = None,
    **listing: Any,
) -> tuple[Any, list[ReadUnit]]:
    """The filesystem and the read units of ``paths``, in read order (``listing``: the options of
    :func:`expand_paths`, ``shuffle`` among them).

    ``make_units(fs, files)`` may split files into parts (parquet row groups); by default one unit
    per file.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "a.bin").write_bytes(b"xy")
        >>> [pathlib.Path(u.file.path).name for u in plan_units(str(d))[1]]
        ['a.bin']
    """
    warm_up_arrow()  # before workers fork, so they inherit pyarrow's lazy imports
    fs, files = expand_paths(paths, **listing)
    return fs, make_units(fs, files) if make_units is not None else file_units(files)


def plan_read(
    paths: Any,
    reader: UnitReader,
    reader_kwargs: dict[str, Any] | None = None,
    *,
    filesystem: Any = None,
    file_extensions: Sequence[str] | None = None,
    ignore_missing_paths: bool = False,
    partitioning: Any = None,
    shuffle: Any = None,
    partition_filter: Any = None,
    include_paths: bool = False,
    override_num_blocks: int | None = None,
    on_read_error: str | None = None,
    read_error_budget: int | None = None,
    combine: Combine | None = None,
    make_units: Callable[[Any, list[FileInfo]], list[ReadUnit]] | None = None,
    size_ratio: float = 1.0,
    task_body: TaskBody = read_files_task,
    count_rows: RowCounter | None = None,
    releases_gil: bool = False,
) -> list[ReadTask]:
    """The whole planning of a file read: list files, cut them into units (:func:`plan_units`),
    group units into tasks (:func:`plan_file_tasks`). Every ``read_*`` function is this call with
    its format's reader and defaults.

    Example:
        >>> import tempfile, pathlib
        >>> from torchray_loader.io.binary import read_binary_unit
        >>> d = pathlib.Path(tempfile.mkdtemp()); _ = (d / "a.bin").write_bytes(b"xy")
        >>> [b.column("bytes").to_pylist() for t in plan_read(str(d), read_binary_unit) for b in t()]
        [[b'xy']]
    """
    policy = ReadErrorPolicy.from_context(on_read_error, read_error_budget)
    fs, units = plan_units(
        paths,
        filesystem=filesystem,
        file_extensions=file_extensions,
        ignore_missing_paths=ignore_missing_paths,
        partitioning=partitioning,
        shuffle=shuffle,
        partition_filter=partition_filter,
        make_units=make_units,
    )
    return plan_file_tasks(
        fs,
        units,
        reader,
        reader_kwargs,
        include_paths=include_paths,
        override_num_blocks=override_num_blocks,
        policy=policy,
        combine=combine,
        size_ratio=size_ratio,
        task_body=task_body,
        count_rows=count_rows,
        releases_gil=releases_gil,
    )
