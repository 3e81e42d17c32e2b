"""Zero-copy transfer of Python objects between processes through shared-memory files.

The producer (a worker) pickles with protocol 5: the pickle stream holds only the small structure of the
object, while every large contiguous buffer (numpy arrays, Arrow buffers, CPU torch tensors, converted
to numpy) goes *out of band* into one file in ``/dev/shm``. The consumer maps that file copy-on-write,
unlinks it at once (or keeps it for the next write, see recycling) and unpickles with buffers that
point into the mapping, so arrays and Arrow tables come back without a copy::

    worker:    ref = dumps_to_shm(table)      # one memcpy into /dev/shm, ref is a few hundred bytes
    consumer:  table = loads_from_shm(ref)    # mmap + unlink; O(1) in the data size

Invariants:

* A file exists only between ``dumps_to_shm`` and the first ``loads_from_shm`` (or ``discard``) of its
  ref. After the consumer opened it, the file has no name; its memory lives exactly as long as the
  arrays/buffers that reference the mapping, so nothing can leak once it is loaded. (A recycled
  file, below, keeps a name until its pool's ``sweep``.)
* Mappings are ``MAP_PRIVATE``: loaded arrays are writable, and writes never reach the file.
* Recycling (``loads_from_shm(ref, recycle=True)``, used by the process pool): a file of at least
  ``RECYCLE_MIN_BYTES`` keeps its name while loaded. When the loading process has dropped every
  array on the mapping, the file is renamed ``torchray_<owner>_<tag>_free_<random>`` and the next
  large write of the same owner and tag reuses it: its pages are already allocated, which makes the
  write two to three times faster than into fresh tmpfs pages. A file is renamed free only after
  its mapping is dead in the process that loaded it (never from a forked copy), at most
  ``RECYCLE_MAX_FILES`` free files are kept per owner and tag, and ``sweep(owner, tag)`` removes
  them and stops further recycling for that tag (``stop_recycling()``: for all, at exit).
* A writer keeps its writable mapping of an arena file it handed over (at most ``MAPPINGS_KEPT``,
  each with the file's descriptor). When it claims the same file again, it writes through that
  mapping instead of mapping the file anew: mapping and unmapping a 10 MB file costs about 1 ms,
  against a few microseconds for the check. (A new mapping would show the writer the same pages:
  the file is shared either way.) A kept mapping is used only over bytes the file holds (its size
  and allocated blocks are checked, else the range is allocated again), and it is dropped once its
  file has no name any more (checked at each hand-over, and about once a second by an idle worker),
  so a removed file's memory is not held past the writer's next task or a second of idleness.
* Every file is named ``torchray_<owner-pid>_<tag>_<creator-pid>_<n>_<random>`` and created
  ``O_EXCL`` with mode 0600, so ``sweep(owner_pid)`` can remove the leftovers of a process (or of one
  pool, by ``tag``) after a crash, and nobody else can read or replace them.
* Small objects (less than ``INLINE_THRESHOLD`` bytes in all) travel inline in the ref: a file costs
  a few syscalls, more than copying a few KiB. Larger ones put their pickle stream into the file too,
  so a ref is always small.
* A producer that knows a large result's size can build it in place, in the file that will carry it
  (:func:`task_arena`, then :func:`~torchray_loader.blocks.buffers.transfer_buffer`): ``dumps_to_shm``
  then writes only what lies outside the arena, and the result crosses with no copy at all. Arena space is reserved with
  ``posix_fallocate``, so a full ``/dev/shm`` is an error at allocation (the caller falls back to
  private memory), never a ``SIGBUS`` at first touch.
"""

from __future__ import annotations

import errno
import glob
import io
import itertools
import mmap
import os
import pickle
import secrets
import stat
import sys
import tempfile
import threading
import types
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import cloudpickle
import numpy as np

from ..blocks import buffers, columnless_table
from ..blocks.object_pickle import KeepsReductions

__all__ = [
    "INLINE_THRESHOLD",
    "TransferArena",
    "task_arena",
    "PREFIX",
    "ShmRef",
    "discard",
    "dumps",
    "dumps_to_shm",
    "forget_removed_mappings",
    "loads_from_shm",
    "shm_dirs",
    "stop_recycling",
    "send_main_by_reference",
    "sweep",
    "sweep_dead_owners",
]

#: Size (pickle stream plus out-of-band buffers) below which an object travels inline, with no file.
INLINE_THRESHOLD = 64 * 1024
#: Every file this module creates starts with this.
PREFIX = "torchray_"
#: Smallest transfer file worth recycling: below it a fresh file costs little more than the search.
RECYCLE_MIN_BYTES = 1 << 20
#: Most free (recyclable) files kept per owner and tag; a file released beyond that is removed.
RECYCLE_MAX_FILES = 2
#: Most writable arena mappings a process keeps for the files it may claim again (see TransferArena).
MAPPINGS_KEPT = 8
_FREE = "free"
_ALIGN = 64  # Arrow's preferred alignment; the mapping itself is page-aligned.
_MAX_WRITE = 1 << 30  # Linux writes at most ~2 GiB per call; stay well under.


def _default_dirs() -> tuple[str, ...]:
    dirs = []
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK):
        dirs.append("/dev/shm")
    tmp = tempfile.gettempdir()
    if tmp not in dirs:
        dirs.append(tmp)
    return tuple(dirs)


# First entry: where files go; later entries: fallbacks when it is missing or full (a container's
# /dev/shm is often 64 MiB). ``sweep`` looks in all of them.
_DIRS: tuple[str, ...] = _default_dirs()
_counter = itertools.count()


def shm_dirs() -> tuple[str, ...]:
    """Directories where transfer files may live, preferred first.

    Example:
        >>> len(shm_dirs()) >= 1
        True
    """
    return _DIRS


@dataclass(frozen=True)
class ShmRef:
    """A handle to one pickled object, small enough to send through a pipe.

    Either everything is inline (``path is None``: the pickle stream in ``payload``, its out-of-band
    buffers in ``inline``), or ``path`` names a file holding the pickle stream at ``spans[0]`` and the
    buffers at ``spans[1:]`` (``(offset, length)`` pairs, 64-byte aligned). So a ref is always smaller
    than about ``INLINE_THRESHOLD`` bytes, which keeps pipe messages bounded (a blocking send can then
    never deadlock against a blocking send from the other side).

    Example:
        >>> ref = dumps_to_shm([1, 2, 3])
        >>> ref.path is None, loads_from_shm(ref)
        (True, [1, 2, 3])
    """

    payload: bytes = b""
    path: str | None = None
    spans: tuple[tuple[int, int], ...] = ()
    file_size: int = 0
    inline: tuple[bytearray, ...] = ()

    @property
    def nbytes(self) -> int:
        """Bytes this object occupies in transit (pickle stream plus buffers)."""
        if self.path is not None:
            return self.file_size
        return len(self.payload) + sum(len(b) for b in self.inline)


# ----------------------------------------------------------------------------- pickling


def _tensor_from_numpy(arr: Any, dtype_name: str | None, strided: tuple[Any, Any] | None = None) -> Any:
    import torch  # present: the producer had it imported, so the consumer unpickles a torch object

    t = torch.from_numpy(arr)
    if dtype_name is not None:
        t = t.view(getattr(torch, dtype_name))
    if strided is not None:  # the storage span sent, viewed with the tensor's own sizes and strides
        t = t.as_strided(*strided)
    return t


#: Set in worker processes (:func:`send_main_by_reference`). Invariant: what a worker sends back
#: names a class or function of its ``__main__`` by reference, so the consumer gets its own object
#: (``isinstance`` and ``except`` work as with DataLoader), not a by-value copy made anew.
_MAIN_BY_REFERENCE = False
_MAIN_MODULES = ("__main__", "__mp_main__")  # the script, as run or as a spawn worker re-ran it


def send_main_by_reference() -> None:
    """Make this (worker) process pickle its ``__main__`` classes and functions by reference."""
    global _MAIN_BY_REFERENCE
    _MAIN_BY_REFERENCE = True


def main_object(qualname: str) -> Any:
    """``qualname`` looked up in this process's ``__main__`` (AttributeError where it is missing)."""
    obj: Any = sys.modules["__main__"]
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def main_qualname(obj: Any) -> str | None:
    """The name under which ``obj``, a class or function of the script (``__main__``), is found in
    it; None for anything else (a lambda, a class made in a function, one rebuilt by value)."""
    if not isinstance(obj, (type, types.FunctionType)) or getattr(obj, "__module__", None) not in _MAIN_MODULES:
        return None
    qualname = getattr(obj, "__qualname__", "")
    try:
        return qualname if main_object(qualname) is obj else None
    except AttributeError:
        return None


def _main_reference(obj: Any) -> tuple[Any, ...] | None:
    qualname = main_qualname(obj)
    return (main_object, (qualname,)) if qualname is not None else None


class _Pickler(KeepsReductions, cloudpickle.Pickler):
    """cloudpickle (lambdas, closures, ``__main__`` classes by value; by reference from a worker), plus:

    * CPU torch tensors as numpy arrays, so their data goes out of band like any array;
    * sliced Arrow tables/record batches as an Arrow IPC stream: pyarrow pickles the *whole* buffers
      under a slice (a 10-row slice of a 100 MB block would send 100 MB), IPC only the sliced part.
    """

    def reducer_override(self, obj: Any) -> Any:
        t = type(obj)
        torch = sys.modules.get("torch")  # never import torch just for this
        if torch is not None and t is torch.Tensor:
            reduced = self._keep(_reduce_tensor(torch, obj))  # its numpy() array outlives the dump
            if reduced is not None:
                return reduced
        pa = sys.modules.get("pyarrow")
        if pa is not None and (t is pa.Table or t is pa.RecordBatch):
            if obj.num_columns == 0:  # pyarrow's own pickle loses the row count of a table without columns
                return (_rows_without_columns, (obj.num_rows, t is pa.RecordBatch))
            reduced = _reduce_sliced_arrow(pa, obj)
            if reduced is not None:
                return reduced
        if _MAIN_BY_REFERENCE:
            reduced = _main_reference(obj)
            if reduced is not None:
                return reduced
        return super().reducer_override(obj)


_SLICE_SLACK = 64 * 1024  # referenced-but-unused bytes tolerated before a slice is compacted


def _reduce_sliced_arrow(pa: Any, obj: Any) -> tuple[Any, ...] | None:
    try:
        wasted = obj.get_total_buffer_size() - obj.nbytes
    except Exception:  # pragma: no cover - exotic types: pickle as usual
        return None
    if wasted <= max(_SLICE_SLACK, obj.nbytes):
        return None
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, obj.schema) as writer:
        writer.write(obj)
    # The IPC buffer is itself pickled out of band; the reader wraps it without copying.
    return (_arrow_from_ipc, (sink.getvalue(), type(obj) is pa.RecordBatch))


def _rows_without_columns(num_rows: int, is_batch: bool) -> Any:
    import pyarrow as pa

    table = columnless_table(num_rows)
    if not is_batch:
        return table
    return table.to_batches()[0] if num_rows else pa.record_batch([])


def _arrow_from_ipc(buf: Any, is_batch: bool) -> Any:
    import pyarrow as pa  # already loaded: the pickle holds a pyarrow Buffer

    reader = pa.ipc.open_stream(buf)
    if is_batch:
        return reader.read_next_batch()
    return reader.read_all()


def _reduce_tensor(torch: Any, t: Any) -> tuple[Any, ...] | None:
    if (
        t.device.type != "cpu"
        or t.layout != torch.strided
        or t.requires_grad
        or t.is_quantized
        or t.is_conj()
        or t.is_neg()
    ):
        return None  # torch's own reduction handles these
    # Layout kept where it costs no extra bytes, as DataLoader keeps it: a dense tensor in another
    # memory order (channels_last, a transpose) or an expanded one (stride 0) goes as the storage span
    # it covers (at most its own size) plus its sizes and strides; other views go contiguous.
    strided = None
    flat = t
    if not t.is_contiguous() and t.numel() > 0:
        span = 1 + sum((n - 1) * st for n, st in zip(t.shape, t.stride(), strict=True))
        if span <= t.numel():
            flat = t.as_strided((span,), (1,), t.storage_offset())
            strided = (tuple(t.shape), tuple(t.stride()))
    dtype_name = None
    try:
        arr = flat.contiguous().numpy()
    except (TypeError, RuntimeError):  # dtypes numpy lacks (bfloat16, float8...): their bits as ints
        same_size = _INT_OF_SIZE.get(t.element_size())
        if same_size is None:
            return None
        dtype_name = str(t.dtype).removeprefix("torch.")
        arr = flat.contiguous().view(getattr(torch, same_size)).numpy()
    return (_tensor_from_numpy, (arr, dtype_name, strided))


_INT_OF_SIZE = {1: "uint8", 2: "int16", 4: "int32", 8: "int64"}


def dumps(obj: Any, buffer_callback: Any = None) -> bytes:
    """Pickle ``obj`` with the transfer pickler (protocol 5; lambdas and tensors supported).

    Example:
        >>> pickle.loads(dumps(lambda x: x + 1))(1)
        2
    """
    f = io.BytesIO()
    _Pickler(f, protocol=5, buffer_callback=buffer_callback).dump(obj)
    return f.getvalue()


def _new_file(owner: int, tag: str, dirs: tuple[str, ...], nbytes: int = 0) -> tuple[int, str]:
    """A new transfer file, open for writing: a free one of ``owner`` and ``tag`` renamed to a fresh
    name when ``nbytes`` is worth it (its old contents are overwritten or truncated by the caller),
    else an empty one."""
    name = f"{PREFIX}{owner}_{tag}_{os.getpid()}_{next(_counter)}_{secrets.token_hex(4)}"
    path = os.path.join(dirs[0], name)
    if nbytes >= RECYCLE_MIN_BYTES:
        for free in _free_files(dirs[0], owner, tag):
            try:
                os.rename(free, path)  # atomic: of several claimants, one gets it
            except OSError:
                continue
            fd = _open_own_file(path)
            if fd is not None:
                return fd, path
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600), path


def _open_own_file(path: str) -> int | None:
    """``path`` opened for writing if it is a plain file of this user with no other name, else None
    (and the name removed). The shm directory is shared: a name that looks like one of ours may be
    another user's link or file, which root could otherwise rename and write through."""
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        _unlink_quietly(path)
        return None
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and st.st_nlink == 1:
        return fd
    os.close(fd)
    _unlink_quietly(path)
    return None


def _free_files(directory: str, owner: int | str, tag: str) -> list[str]:
    prefix = f"{PREFIX}{owner}_{tag}_{_FREE}_"
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return [os.path.join(directory, n) for n in names if n.startswith(prefix)]


def _write_all(fd: int, view: memoryview, offset: int) -> None:
    view = view.cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done : done + _MAX_WRITE], offset + done)


def _full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _write_file(raws: list[memoryview], spans: list[tuple[int, int]], size: int, owner: int, tag: str) -> str:
    """Write ``raws`` at ``spans`` into a new file; a full directory (a container's 64 MiB /dev/shm)
    falls back to the next one (disk-backed, still mmap-able). Never leaves a partial file."""
    dirs = _DIRS
    while True:
        try:
            fd, path = _new_file(owner, tag, dirs, size)
        except OSError as exc:
            if _full(exc) and len(dirs) > 1:
                dirs = dirs[1:]
                continue
            raise
        try:
            try:
                os.ftruncate(fd, size)
                for raw, (off, _) in zip(raws, spans, strict=True):
                    _write_all(fd, raw, off)
                return path
            finally:
                os.close(fd)
        except OSError as exc:
            _unlink_quietly(path)
            if _full(exc) and len(dirs) > 1:
                dirs = dirs[1:]
                continue
            raise
        except BaseException:
            _unlink_quietly(path)
            raise


_MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


class TransferArena:
    """Space in a future transfer file, handed out as writable buffers (page-aligned regions).

    Arrays built in these buffers and then pickled by ``dumps_to_shm(obj, arena=arena)`` are not
    copied: their spans point into the regions. The file is created at the first :meth:`buffer`;
    until it is handed over, :meth:`close` removes it.

    Example:
        >>> import numpy as np
        >>> arena = TransferArena()
        >>> arr = np.frombuffer(arena.buffer(8 * 100_000), dtype=np.float64)
        >>> arr[:] = 1.0
        >>> ref = dumps_to_shm(arr, arena=arena)
        >>> float(loads_from_shm(ref).sum())
        100000.0
    """

    def __init__(self, owner_pid: int | None = None, tag: str = "x") -> None:
        self.owner_pid = owner_pid if owner_pid is not None else os.getpid()
        self.tag = tag
        self.path: str | None = None
        self.size = 0  # bytes of the file handed out as regions (a multiple of the page size)
        self._fd: int | None = None
        self._regions: list[tuple[int, int, int]] = []  # (address, nbytes, file offset)
        self._first: mmap.mmap | None = None  # the mapping of the region at offset 0
        self._key: tuple[int, int] | None = None  # the file's (st_dev, st_ino), for the kept mappings

    def buffer(self, nbytes: int) -> memoryview | None:
        """A writable buffer of ``nbytes`` in the file, or None when the shm directory is full."""
        if self._fd is None:
            try:
                self._fd, self.path = _new_file(self.owner_pid, self.tag, _DIRS[:1], nbytes)
            except OSError:
                return None
        offset = self.size
        length = max(nbytes, 1)
        mm, allocated = None, False
        if offset == 0:
            st = os.fstat(self._fd)
            self._key = (st.st_dev, st.st_ino)
            mm = _take_kept_mapping(self._key, length)
            allocated = mm is not None and _allocated(st, length)
        if not allocated:
            try:
                os.posix_fallocate(self._fd, offset, length)
            except OSError:  # full (or a file system without fallocate): the caller uses private memory
                if mm is not None:
                    _unmap(mm)
                return None
        if mm is None:
            # MAP_POPULATE maps the (already allocated) pages in one call: the caller writes all of
            # them, and a page fault each costs more.
            mm = mmap.mmap(self._fd, length, flags=mmap.MAP_SHARED | _MAP_POPULATE, prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=offset)
        if offset == 0:
            self._first = mm
        self.size = offset + (length + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
        view = memoryview(mm)[:nbytes]
        self._regions.append((_address(view) if nbytes else 0, nbytes, offset))
        return view

    def span_of(self, raw: memoryview) -> tuple[int, int] | None:
        """``(file offset, length)`` of ``raw`` when it lies inside one of the regions."""
        n = raw.nbytes
        if not n or not self._regions:
            return None
        addr = _address(raw)
        for start, length, offset in self._regions:
            if start <= addr and addr + n <= start + length:
                return offset + addr - start, n
        return None

    def handed_over(self) -> None:
        """The file now belongs to a ref: keep it, and keep its first region's mapping for when
        this process claims the file again."""
        self.path = None
        if self._first is not None and self._fd is not None and self._key is not None:
            _keep_mapping(self._key, self._fd, self._first)
            self._fd = self._first = None
        forget_removed_mappings()
        self.close()

    def close(self) -> None:
        """Close the file; remove it unless it was handed over. Idempotent. Regions still
        referenced stay valid memory (each is its own mapping)."""
        self._first = self._key = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.path is not None:
            _unlink_quietly(self.path)
            self.path = None
        self._regions = []


#: Kept mappings by file identity ``(st_dev, st_ino)``, least recently kept first, each with its
#: file's descriptor: it keeps the inode, and so the key, this file's while the entry exists.
_kept: dict[tuple[int, int], tuple[int, mmap.mmap]] = {}
_kept_lock = threading.Lock()


def _take_kept_mapping(key: tuple[int, int], length: int) -> mmap.mmap | None:
    """This process's kept mapping of the file ``key``, if it covers ``length`` bytes; it leaves the
    cache (the arena keeps it again when it hands the file over)."""
    with _kept_lock:
        entry = _kept.pop(key, None)
    if entry is None:
        return None
    kept_fd, mm = entry
    os.close(kept_fd)
    if len(mm) < length:
        _unmap(mm)
        return None
    return mm


def _keep_mapping(key: tuple[int, int], fd: int, mm: mmap.mmap) -> None:
    """Keep ``mm``, a mapping of the file ``key`` open as ``fd`` (the cache owns ``fd`` from now on)."""
    with _kept_lock:
        evicted = [_kept.pop(key)] if key in _kept else []
        _kept[key] = (fd, mm)
        while len(_kept) > MAPPINGS_KEPT:
            evicted.append(_kept.pop(next(iter(_kept))))
    _release_kept(evicted)


def _release_kept(entries: Iterable[tuple[int, mmap.mmap]]) -> None:
    """Close the descriptors of entries taken out of ``_kept`` and unmap their mappings."""
    for fd, mm in entries:
        os.close(fd)
        _unmap(mm)


def forget_removed_mappings() -> None:
    """Forget this process's kept mappings of files that were removed since: they would hold the
    files' memory. Runs at each hand-over; an idle worker calls it from time to time.

    Example:
        >>> forget_removed_mappings()
    """
    with _kept_lock:
        gone = [key for key, (fd, _) in _kept.items() if os.fstat(fd).st_nlink == 0]
        dropped = [_kept.pop(key) for key in gone]
    _release_kept(dropped)


def _unmap(mm: mmap.mmap) -> None:
    try:
        mm.close()
    except BufferError:  # arrays on it are alive: it is unmapped with the last of them
        pass


def _allocated(st: os.stat_result, length: int) -> bool:
    """Whether the file (``st``: its status) holds ``length`` bytes, all allocated (a recycled file
    may have been cut shorter by its last writer; a hole or a write past the end would be a SIGBUS on
    a full device)."""
    return st.st_size >= length and st.st_blocks * 512 >= st.st_size


def _drop_kept_mappings_after_fork() -> None:
    # A forked child must not write through its parent's mappings; its copies are its own to drop.
    global _kept_lock
    _kept_lock = threading.Lock()
    entries = list(_kept.values())
    _kept.clear()
    _release_kept(entries)


os.register_at_fork(after_in_child=_drop_kept_mappings_after_fork)


def _address(raw: memoryview) -> int:
    return int(np.frombuffer(raw.cast("B") if raw.ndim != 1 or raw.format != "B" else raw, np.uint8).ctypes.data)


@contextmanager
def task_arena(owner_pid: int | None = None, tag: str = "x") -> Iterator[TransferArena]:
    """Make an arena the target of :func:`~torchray_loader.blocks.buffers.transfer_buffer` for the
    duration of one task.

    The producer passes the yielded arena to ``dumps_to_shm``; whatever it did not hand over is
    removed on exit.

    Example:
        >>> with task_arena() as arena:
        ...     buf = buffers.transfer_buffer(1 << 20)
        ...     ref = dumps_to_shm(np.frombuffer(buf, np.uint8), arena=arena)
        >>> loads_from_shm(ref).nbytes
        1048576
    """
    arena = TransferArena(owner_pid, tag)
    try:
        with buffers.allocating_in(arena.buffer):
            yield arena
    finally:
        arena.close()


def dumps_to_shm(
    obj: Any,
    *,
    owner_pid: int | None = None,
    tag: str = "x",
    threshold: int = INLINE_THRESHOLD,
    arena: TransferArena | None = None,
) -> ShmRef:
    """Pickle ``obj`` for another process; large buffers go into one shared-memory file.

    ``owner_pid`` is the process responsible for cleaning up (default: this one); ``tag`` groups
    files (e.g. per pool) for :func:`sweep`. The returned ref must reach exactly one
    :func:`loads_from_shm` or :func:`discard`.

    Example:
        >>> import numpy as np
        >>> ref = dumps_to_shm(np.zeros(1 << 20))
        >>> ref.path is not None
        True
        >>> float(loads_from_shm(ref).sum())
        0.0
    """
    if not tag.isalnum():
        raise ValueError(f"tag must be alphanumeric, got {tag!r}")
    buffers: list[pickle.PickleBuffer] = []
    payload = dumps(obj, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    if arena is not None and arena.path is not None:
        ref = _dumps_into_arena(payload, raws, arena)
        if ref is not None:
            for b in buffers:
                b.release()
            return ref
    total = len(payload) + sum(r.nbytes for r in raws)
    if total < threshold:
        return ShmRef(payload, inline=tuple(bytearray(r) for r in raws))
    raws.insert(0, memoryview(payload))
    spans: list[tuple[int, int]] = []
    offset = 0
    for r in raws:
        offset = (offset + _ALIGN - 1) // _ALIGN * _ALIGN
        spans.append((offset, r.nbytes))
        offset += r.nbytes
    path = _write_file(raws, spans, max(offset, 1), owner_pid if owner_pid is not None else os.getpid(), tag)
    for b in buffers:
        b.release()
    return ShmRef(b"", path, tuple(spans), max(offset, 1))


def _dumps_into_arena(payload: bytes, raws: list[memoryview], arena: TransferArena) -> ShmRef | None:
    """The ref of an object some of whose buffers were built in ``arena``: only the pickle stream
    and the other buffers are written, after the arena's regions. None when no buffer lies in the
    arena or the write fails (the caller then writes a fresh file as usual)."""
    located = [arena.span_of(r) for r in raws]
    if not any(located):
        return None
    assert arena._fd is not None and arena.path is not None
    writes: list[tuple[memoryview, int]] = []
    offset = arena.size
    spans: list[tuple[int, int]] = []
    for raw, span in zip([memoryview(payload), *raws], [None, *located], strict=True):
        if span is None:
            offset = (offset + _ALIGN - 1) // _ALIGN * _ALIGN
            span = (offset, raw.nbytes)
            writes.append((raw, offset))
            offset += raw.nbytes
        spans.append(span)
    try:
        os.ftruncate(arena._fd, max(offset, arena.size))
        for raw, off in writes:
            _write_all(arena._fd, raw, off)
    except OSError:
        return None
    ref = ShmRef(b"", arena.path, tuple(spans), max(offset, arena.size, 1))
    arena.handed_over()
    return ref


class _Mapping(mmap.mmap):
    """An ``mmap`` that can carry a finalizer (the built-in type has no weak references)."""


def loads_from_shm(ref: ShmRef, *, recycle: bool = False) -> Any:
    """Rebuild the object of ``ref``; its buffers are a private (copy-on-write) mapping of the file,
    which is unlinked before this returns, or with ``recycle``, handed to the next writer of the
    same owner and tag once nothing in this process uses the mapping any more.

    Example:
        >>> import numpy as np
        >>> arr = loads_from_shm(dumps_to_shm(np.arange(100_000)))
        >>> arr.flags.writeable, int(arr[-1])
        (True, 99999)
    """
    if ref.path is None:
        return pickle.loads(ref.payload, buffers=ref.inline)
    fd = os.open(ref.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    recycle = recycle and ref.file_size >= RECYCLE_MIN_BYTES
    if not recycle:
        try:
            os.unlink(ref.path)  # from here on the mapping is the only owner of the memory
        except FileNotFoundError:
            pass
    try:
        mm = _Mapping(fd, ref.file_size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    if recycle:
        # Runs when ``mm`` is freed, i.e. after the last array or buffer on it: the file's pages
        # can then be overwritten without any live object seeing it.
        weakref.finalize(mm, _release_file, ref.path, os.getpid()).atexit = False
    view = memoryview(mm)
    (p_off, p_len), *spans = ref.spans
    # Each buffer holds a reference to ``view`` -> ``mm``: the mapping is unmapped when the last array
    # or Arrow buffer built on it is freed (at once when there is none).
    return pickle.loads(view[p_off : p_off + p_len], buffers=[view[off : off + n] for off, n in spans])


# Reentrant: a mapping may die (and release its file) in a garbage collection that runs while this
# thread holds the lock in ``sweep``.
_recycle_lock = threading.RLock()
_swept_tags: set[tuple[str, str]] = set()  # (owner, tag) swept: never recycle again
_recycling = True


def _new_recycle_lock() -> None:
    global _recycle_lock
    _recycle_lock = threading.RLock()  # a thread of the parent may have held it at fork


os.register_at_fork(after_in_child=_new_recycle_lock)


def _release_file(path: str, loader_pid: int) -> None:
    """A loaded file's mapping died: make the file free for reuse, or remove it (its tag was swept,
    or enough files are free already)."""
    if os.getpid() != loader_pid:
        return  # a forked child's copy of the mapping died; the parent's may still be in use
    directory, name = os.path.split(path)
    owner, tag = name[len(PREFIX) :].split("_", 2)[:2]
    with _recycle_lock:
        keep = _recycling and (owner, tag) not in _swept_tags
        if keep and len(_free_files(directory, owner, tag)) < RECYCLE_MAX_FILES:
            free = os.path.join(directory, f"{PREFIX}{owner}_{tag}_{_FREE}_{secrets.token_hex(6)}")
            try:
                os.rename(path, free)
                return
            except OSError:
                pass  # swept already (or another process's sweep is racing us): nothing to keep
        _unlink_quietly(path)


def discard(ref: ShmRef) -> None:
    """Forget ``ref`` without loading it: remove its file, if any. Idempotent.

    Example:
        >>> discard(dumps_to_shm(b"x" * 100_000))
    """
    if ref.path is not None:
        _unlink_quietly(ref.path)


def sweep(owner_pid: int, tag: str | None = None, creator_pid: int | None = None) -> int:
    """Remove leftover files of ``owner_pid`` (only those of ``tag`` / ``creator_pid`` when given).

    Returns how many were removed. Used when a pool closes, a worker dies, and at exit.

    Example:
        >>> sweep(os.getpid(), "doc")
        0
    """
    if creator_pid is not None and tag is None:
        raise ValueError("creator_pid needs tag")
    pattern = f"{PREFIX}{owner_pid}_"
    if tag is not None:
        pattern += f"{tag}_"
        if creator_pid is not None:
            pattern += f"{creator_pid}_"
    # Held across the removal: a mapping released meanwhile in this process either was freed before
    # (and its file is removed here) or sees the tag swept and removes its file itself.
    with _recycle_lock:
        if tag is not None and creator_pid is None:  # the whole pool: its free files go too
            _swept_tags.add((str(owner_pid), tag))
        return _remove_files(pattern)


def stop_recycling() -> None:
    """From now on a released file is removed, never kept for reuse (at exit, or when the owner of
    this worker's files is gone), so a later ``sweep`` leaves nothing behind.

    Example:
        >>> callable(stop_recycling)
        True
    """
    global _recycling
    with _recycle_lock:
        _recycling = False


def _remove_files(prefix: str, owner_is_dead: bool = False) -> int:
    """Unlink the files named ``prefix*`` in every shm directory (only those whose owner pid has
    exited, with ``owner_is_dead``); how many were removed."""
    removed = 0
    for d in _DIRS:
        for path in glob.glob(os.path.join(glob.escape(d), glob.escape(prefix) + "*")):
            if owner_is_dead:
                owner = os.path.basename(path)[len(PREFIX) :].split("_", 1)[0]
                if not owner.isdigit() or _pid_alive(int(owner)):
                    continue
            try:
                os.unlink(path)
                removed += 1
            except OSError:
                pass
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_dead_owners() -> int:
    """Remove the files of owners that no longer exist (a consumer killed together with its workers
    leaves files nobody else would remove). A live owner's files are never touched.

    Returns how many were removed.

    Example:
        >>> sweep_dead_owners() >= 0
        True
    """
    return _remove_files(PREFIX, owner_is_dead=True)
