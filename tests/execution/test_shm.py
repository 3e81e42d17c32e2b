"""Zero-copy transfer through shared-memory files (``execution/shm.py``)."""

from __future__ import annotations

import gc
import mmap
import os
import pickle
import stat
import sys
import time

import numpy as np
import pyarrow as pa
import pytest
import torch

from torchray_loader.blocks import buffers
from torchray_loader.blocks.tensors import PythonObjectType, column_from_values
from torchray_loader.execution import shm

pytestmark = pytest.mark.timeout(60)


def _base_chain_ends_in_mmap(arr: np.ndarray) -> bool:
    obj = arr
    while True:
        if isinstance(obj, np.ndarray):
            obj = obj.base
        elif isinstance(obj, memoryview):
            obj = obj.obj
        else:
            return isinstance(obj, mmap.mmap)


def _mapped_ranges(path: str) -> list[tuple[int, int]]:
    """Address ranges of this process's mappings of ``path`` (unlinked: listed as '(deleted)')."""
    ranges = []
    with open("/proc/self/maps") as f:
        for line in f:
            if path in line:
                lo, hi = line.split()[0].split("-")
                ranges.append((int(lo, 16), int(hi, 16)))
    return ranges


def _in_ranges(address: int, ranges: list[tuple[int, int]]) -> bool:
    return any(lo <= address < hi for lo, hi in ranges)


def test_small_objects_travel_inline():
    ref = shm.dumps_to_shm({"a": np.arange(10), "b": "x"})
    assert ref.path is None and ref.nbytes < shm.INLINE_THRESHOLD
    out = shm.loads_from_shm(ref)
    assert out["b"] == "x" and out["a"].tolist() == list(range(10))
    assert out["a"].flags.writeable  # inline buffers are bytearrays: writable arrays, as in a worker
    assert pickle.loads(pickle.dumps(ref)) == ref  # the ref itself is picklable


def test_numpy_round_trip_is_zero_copy_and_copy_on_write():
    arr = np.arange(1 << 20, dtype=np.int64)
    ref = shm.dumps_to_shm(arr)
    assert ref.path is not None and os.path.basename(ref.path).startswith(f"torchray_{os.getpid()}_")
    st = os.stat(ref.path)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert len(pickle.dumps(ref)) < 1024  # the handle is small whatever the payload
    fd = os.open(ref.path, os.O_RDONLY)  # keep a way to read the file after it is unlinked
    try:
        out = shm.loads_from_shm(ref)
        assert not os.path.exists(ref.path)  # unlinked as soon as mapped
        assert np.array_equal(out, arr)
        assert _base_chain_ends_in_mmap(out)
        assert out.flags.writeable and out.ctypes.data % 64 == 0
        out[:10] = -1  # copy-on-write: the file keeps the original bytes
        first = np.frombuffer(os.pread(fd, 80, 0 + _payload_end(ref)), dtype=np.int64)
        assert first.tolist() == list(range(10))
    finally:
        os.close(fd)


def _payload_end(ref: shm.ShmRef) -> int:
    return ref.spans[1][0]  # spans[0] is the pickle stream, spans[1] the array's buffer


def test_arrow_table_with_extension_types_round_trips_zero_copy():
    n = 2000
    table = pa.table(
        {
            "id": pa.array(np.arange(n)),
            "text": pa.array([f"row {i}" for i in range(n)]),
            "image": column_from_values(
                np.random.default_rng(0).integers(0, 255, (n, 8, 8, 3), dtype=np.uint8)
            ),
            "ragged": column_from_values([np.ones(i % 5 + 1, dtype=np.float32) for i in range(n)]),
            "obj": column_from_values([{"k": i} if i % 2 else {1, 2} for i in range(n)]),
        }
    )
    assert isinstance(table.schema.field("image").type, pa.FixedShapeTensorType)
    assert isinstance(table.schema.field("obj").type, PythonObjectType)
    ref = shm.dumps_to_shm(table)
    assert ref.path is not None
    path = ref.path
    out = shm.loads_from_shm(ref)
    assert out.equals(table)
    assert out.schema == table.schema
    ranges = _mapped_ranges(path)
    assert ranges, "the file should be mapped"
    for col in ("id", "image"):
        data = out.column(col).chunk(0)
        storage = data.storage if isinstance(data, pa.ExtensionArray) else data
        buf = storage.buffers()[-1]
        assert _in_ranges(buf.address, ranges), f"column {col} was copied"
    del out, data, storage, buf
    assert not _mapped_ranges(path)  # last reference gone: unmapped, memory returned


def test_torch_tensors_go_out_of_band():
    t = torch.arange(1 << 18, dtype=torch.float32).reshape(512, 512)
    bf = torch.ones(1 << 16, dtype=torch.bfloat16)
    nc = t.t()  # non-contiguous
    ref = shm.dumps_to_shm({"t": t, "bf": bf, "nc": nc, "grad": torch.ones(3, requires_grad=True)})
    assert ref.path is not None and len(pickle.dumps(ref)) < 1024
    out = shm.loads_from_shm(ref)
    assert torch.equal(out["t"], t) and out["t"].dtype == torch.float32
    assert out["bf"].dtype == torch.bfloat16 and torch.equal(out["bf"], bf)
    assert torch.equal(out["nc"], nc)
    assert out["grad"].requires_grad  # handled by torch's own reduction
    assert _in_ranges(out["t"].data_ptr(), _mapped_ranges(ref.path))
    out["t"][0, 0] = 42.0  # writable, no warning about non-writable numpy arrays


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tensor_layouts_that_cost_no_extra_bytes_are_kept(dtype):
    """As DataLoader keeps them: channels_last and transposed tensors keep their strides, an expanded
    one its stride 0 (sent as its one row); a sparse slice goes contiguous (its span would cost more)."""
    x = torch.arange(8 * 3 * 64 * 64, dtype=torch.float32).reshape(8, 3, 64, 64).to(dtype)
    cl = x.to(memory_format=torch.channels_last)
    mask = torch.arange(6, dtype=torch.float32).to(dtype).expand(1_000_000, 6)
    sliced = x[:, :, ::2]
    ref = shm.dumps_to_shm({"cl": cl, "t": x[0, 0].t(), "mask": mask, "sliced": sliced})
    assert ref.path is not None
    sent = os.path.getsize(ref.path)
    out = shm.loads_from_shm(ref)
    assert out["cl"].is_contiguous(memory_format=torch.channels_last) and torch.equal(out["cl"], cl)
    assert out["t"].stride() == x[0, 0].t().stride() and torch.equal(out["t"], x[0, 0].t())
    assert out["mask"].stride() == (0, 1) and torch.equal(out["mask"], mask)
    assert out["sliced"].is_contiguous() and torch.equal(out["sliced"], sliced)
    assert all(out[k].dtype == dtype for k in out)
    assert sent < cl.nbytes + x[0, 0].nbytes + sliced.nbytes + 64 * 1024  # the mask went as one row


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
@pytest.mark.parametrize("dtype", ["float8_e4m3fn", "float8_e5m2", "complex32", "uint16"])
def test_tensors_of_dtypes_numpy_lacks_cross_as_their_bits(dtype):
    if not hasattr(torch, dtype):
        pytest.skip(f"this torch has no {dtype}")
    t = torch.arange(64, dtype=torch.float32).reshape(8, 8).to(getattr(torch, dtype))
    out = shm.loads_from_shm(shm.dumps_to_shm({"t": t, "scalar": t[1, 2]}))
    assert out["t"].dtype == t.dtype and out["t"].view(torch.uint8).tolist() == t.view(torch.uint8).tolist()
    scalar = out["scalar"]
    assert scalar.shape == () and scalar.dtype == t.dtype
    assert scalar.reshape(1).view(torch.uint8).tolist() == t[1, 2].reshape(1).view(torch.uint8).tolist()


MAIN_SCRIPT = """
import collections, sys
import torch
from torch.utils.data import Dataset
from torchray_loader import RayStyleLoader

Point = collections.namedtuple("Point", "x y")

class Marker:
    pass

class BadSample(Exception):
    pass

class Points(Dataset):
    def __len__(self):
        return 6
    def __getitem__(self, i):
        if i == 5:
            raise BadSample(i)
        return Point(torch.tensor(i), Marker())

if __name__ == "__main__":
    loader = RayStyleLoader(Points(), batch_size=2, num_workers=2, collate_fn=list, multiprocessing_context=sys.argv[1])
    it = iter(loader)
    batch = next(it)
    assert type(batch[0]) is Point and isinstance(batch[0].y, Marker), type(batch[0])
    try:
        list(it)
    except BadSample:
        print("ok")
"""


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_script_classes_sent_back_by_workers_are_the_scripts_own(tmp_path, start_method):
    """A worker names ``__main__`` classes by reference: ``isinstance`` and ``except`` work."""
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text(MAIN_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), start_method], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_main_classes_go_by_value_from_the_consumer(monkeypatch):
    """Towards workers (which may not have the script's ``__main__``) classes still go by value."""
    import types

    main = types.ModuleType("__main__")
    exec("class Local:\n    pass\n", main.__dict__)
    main.Local.__module__ = "__main__"
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert b"main_object" not in shm.dumps(main.Local)
    monkeypatch.setattr(shm, "_MAIN_BY_REFERENCE", True)
    data = shm.dumps(main.Local)
    assert b"main_object" in data and pickle.loads(data) is main.Local


def test_torch_is_not_imported_for_transfers():
    code = (
        "import sys, numpy as np\n"
        "from torchray_loader.execution import shm\n"
        "x = shm.loads_from_shm(shm.dumps_to_shm(np.zeros(1 << 20)))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(float(x.sum()))\n"
    )
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0.0"


def test_large_table_transfers_much_faster_than_copy_pickle():
    table = pa.table({"x": np.random.default_rng(0).random(100 * 1024 * 1024 // 8)})  # 100 MB

    def best(fn, repeat=3):
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    def via_shm():
        out = shm.loads_from_shm(shm.dumps_to_shm(table))
        assert out.num_rows == table.num_rows

    def via_pickle():
        out = pickle.loads(pickle.dumps(table, protocol=5))
        assert out.num_rows == table.num_rows

    blob = shm.dumps_to_shm(table)
    t0 = time.perf_counter()
    loaded = shm.loads_from_shm(blob)
    load_s = time.perf_counter() - t0
    data = pickle.dumps(table, protocol=5)
    copy_load_s = best(lambda: pickle.loads(data))
    del loaded
    data = None
    # Receiving is O(1) in the data size (map, no copy); pickle copies 100 MB.
    assert load_s < 0.02 and load_s < copy_load_s / 5, (load_s, copy_load_s)
    # The whole trip (one memcpy into /dev/shm) beats pickling's two copies.
    shm_s, pickle_s = best(via_shm), best(via_pickle)
    assert shm_s < pickle_s * 0.8, (shm_s, pickle_s)


def test_discard_and_sweep(tmp_path):
    big = np.zeros(1 << 18)
    a = shm.dumps_to_shm(big, tag="t1")
    b = shm.dumps_to_shm(big, tag="t1")
    c = shm.dumps_to_shm(big, tag="t2")
    shm.discard(a)
    shm.discard(a)  # idempotent
    assert not os.path.exists(a.path)
    assert shm.sweep(os.getpid(), "t1") == 1 and not os.path.exists(b.path)
    assert os.path.exists(c.path)
    assert shm.sweep(os.getpid()) == 1 and not os.path.exists(c.path)
    with pytest.raises(ValueError):
        shm.dumps_to_shm(big, tag="a_b")  # '_' would make sweep patterns ambiguous


def test_sweep_dead_owners_removes_only_files_of_exited_owners():
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # exited and reaped: nobody will ever remove its files
    big = np.zeros(1 << 18)
    orphan = shm.dumps_to_shm(big, owner_pid=dead_pid, tag="dead")
    mine = shm.dumps_to_shm(big, tag="live")
    try:
        assert shm.sweep_dead_owners() >= 1
        assert not os.path.exists(orphan.path)
        assert os.path.exists(mine.path)
    finally:
        shm.discard(orphan)
        shm.discard(mine)


def test_loaded_data_survives_file_removal_and_sweep():
    ref = shm.dumps_to_shm(np.arange(1 << 18))
    out = shm.loads_from_shm(ref)
    shm.sweep(os.getpid())
    assert int(out[-1]) == (1 << 18) - 1
    with pytest.raises(FileNotFoundError):
        shm.loads_from_shm(ref)  # a ref is loaded at most once


def test_full_shm_falls_back_to_next_directory(tmp_path, monkeypatch):
    full = tmp_path / "full"
    full.mkdir()
    real_write = shm._write_all
    calls = []

    def write_all(fd, view, offset):
        path = os.readlink(f"/proc/self/fd/{fd}")
        calls.append(path)
        if path.startswith(str(full)):
            raise OSError(28, "No space left on device")
        return real_write(fd, view, offset)

    monkeypatch.setattr(shm, "_DIRS", (str(full), str(tmp_path)))
    monkeypatch.setattr(shm, "_write_all", write_all)
    ref = shm.dumps_to_shm(np.ones(1 << 16))
    assert os.path.dirname(ref.path) == str(tmp_path)
    assert os.listdir(full) == []  # the failed file was removed
    assert float(shm.loads_from_shm(ref).sum()) == float(1 << 16)


def test_lambdas_and_closures_pickle():
    k = 3
    ref = shm.dumps_to_shm([lambda x: x + k] * 2)
    assert shm.loads_from_shm(ref)[0](1) == 4


def test_sliced_tables_send_only_the_slice():
    n = 1_000_000
    table = pa.table(
        {
            "id": pa.array(np.arange(n)),
            "s": pa.array([str(i) for i in range(1000)] * (n // 1000)),
            "img": column_from_values(np.zeros((n, 2, 2), dtype=np.uint8)),
        }
    )
    for part in (table.slice(10, 10), table.to_batches()[0].slice(5, 3), table.slice(100, n // 3)):
        ref = shm.dumps_to_shm(part)
        assert ref.nbytes < 2 * part.nbytes + 64 * 1024, "the whole parent buffers were sent"
        out = shm.loads_from_shm(ref)
        assert type(out) is type(part) and out.equals(part) and out.schema == part.schema
    whole = shm.dumps_to_shm(table)  # unsliced tables keep the plain (zero-copy) pickling
    assert shm.loads_from_shm(whole).equals(table)


# ----------------------------------------------------------------------------- arenas (results built in place)


def test_arena_result_crosses_without_writing_its_buffer(monkeypatch):
    written = []
    real_write = shm._write_all
    monkeypatch.setattr(shm, "_write_all", lambda fd, view, off: (written.append(view.nbytes), real_write(fd, view, off)))
    with shm.task_arena() as arena:
        big = torch.frombuffer(buffers.transfer_buffer(4 << 20), dtype=torch.float32).view(1024, 1024)
        big.fill_(2.0)
        small = np.arange(100_000)  # outside the arena: written after it
        ref = shm.dumps_to_shm({"big": big, "small": small}, arena=arena)
    assert ref.path is not None and os.path.exists(ref.path)  # handed over: task_arena's exit keeps it
    assert max(written) < 4 << 20, "the arena buffer was copied"
    out = shm.loads_from_shm(ref)
    assert not os.path.exists(ref.path)
    assert out["big"].shape == (1024, 1024) and float(out["big"].sum()) == 2.0 * (1 << 20)
    assert out["small"].tolist() == list(range(100_000))
    out["big"][0, 0] = 5.0  # private, writable, as every loaded result
    assert float(out["big"][0, 0]) == 5.0


def test_arena_not_handed_over_is_removed():
    with pytest.raises(RuntimeError), shm.task_arena() as arena:
        buf = buffers.transfer_buffer(1 << 20)
        path = arena.path
        assert buf is not None and os.path.exists(path)
        raise RuntimeError("the task failed after allocating")
    assert not os.path.exists(path)
    with shm.task_arena() as arena:  # a result without arena buffers: an ordinary file, arena removed
        buf = buffers.transfer_buffer(1 << 20)
        path = arena.path
        ref = shm.dumps_to_shm(np.ones(1 << 18))
    assert ref.path != path and not os.path.exists(path)
    assert float(shm.loads_from_shm(ref).sum()) == float(1 << 18)
    assert buffers.transfer_buffer(10) is None  # no arena outside a task


def test_arena_on_a_full_directory_gives_no_buffer(monkeypatch):
    def full(fd, offset, length):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with shm.task_arena() as arena:
        assert buffers.transfer_buffer(1 << 20) is None  # the caller falls back to private memory
        path = arena.path
    assert path is None or not os.path.exists(path)


# ----------------------------------------------------------------------------- recycling

_BIG = 1 << 18  # int64 elements: a 2 MiB transfer file, above RECYCLE_MIN_BYTES


def _free_files(tag):
    return shm._free_files(shm.shm_dirs()[0], os.getpid(), tag)


def _inode(path):
    return os.stat(path).st_ino


def test_released_file_is_reused_by_the_next_large_write():
    tag = "recycle1"
    try:
        ref = shm.dumps_to_shm(np.arange(_BIG), tag=tag)
        held = shm.loads_from_shm(ref, recycle=True)
        assert os.path.exists(ref.path) and not _free_files(tag)  # in use: keeps its name
        first = _inode(ref.path)
        other = shm.dumps_to_shm(np.full(_BIG, 5), tag=tag)
        assert _inode(other.path) != first  # never a file whose mapping is alive
        assert int(shm.loads_from_shm(other).sum()) == 5 * _BIG
        assert int(held[-1]) == _BIG - 1
        del held
        gc.collect()
        (free,) = _free_files(tag)
        assert _inode(free) == first and not os.path.exists(ref.path)
        again = shm.dumps_to_shm(np.full(_BIG, 3), tag=tag)
        assert _inode(again.path) == first and not _free_files(tag)
        assert shm.loads_from_shm(again).tolist() == [3] * _BIG
    finally:
        shm.sweep(os.getpid(), tag)


def test_small_files_and_plain_loads_are_removed_at_once():
    tag = "recycle2"
    try:
        small = shm.dumps_to_shm(np.arange(20_000), tag=tag)  # above inline, below RECYCLE_MIN_BYTES
        assert small.path is not None and small.file_size < shm.RECYCLE_MIN_BYTES
        shm.loads_from_shm(small, recycle=True)
        plain = shm.dumps_to_shm(np.arange(_BIG), tag=tag)
        shm.loads_from_shm(plain)
        gc.collect()
        assert not os.path.exists(small.path) and not os.path.exists(plain.path) and not _free_files(tag)
    finally:
        shm.sweep(os.getpid(), tag)


def test_at_most_max_files_are_kept_free():
    tag = "recycle3"
    try:
        refs = [shm.dumps_to_shm(np.arange(_BIG), tag=tag) for _ in range(shm.RECYCLE_MAX_FILES + 2)]
        loaded = [shm.loads_from_shm(r, recycle=True) for r in refs]
        del loaded
        gc.collect()
        assert len(_free_files(tag)) == shm.RECYCLE_MAX_FILES
        assert not any(os.path.exists(r.path) for r in refs)
    finally:
        shm.sweep(os.getpid(), tag)
    assert not _free_files(tag)


def test_a_swept_tag_is_never_recycled_again():
    tag = "recycle4"
    ref = shm.dumps_to_shm(np.arange(_BIG), tag=tag)
    held = shm.loads_from_shm(ref, recycle=True)
    shm.sweep(os.getpid(), tag)  # the pool closed while a result is still in use
    assert int(held[-1]) == _BIG - 1
    del held
    gc.collect()
    assert not _free_files(tag)


def test_after_stop_recycling_released_files_are_removed(monkeypatch):
    monkeypatch.setattr(shm, "_recycling", True)
    tag = "recycle5"
    ref = shm.dumps_to_shm(np.arange(_BIG), tag=tag)
    held = shm.loads_from_shm(ref, recycle=True)
    shm.stop_recycling()
    del held
    gc.collect()
    assert not _free_files(tag) and not os.path.exists(ref.path)


def test_a_forked_child_dropping_its_copy_does_not_release_the_parents_file():
    tag = "recycle6"
    try:
        ref = shm.dumps_to_shm(np.arange(_BIG), tag=tag)
        held = shm.loads_from_shm(ref, recycle=True)
        pid = os.fork()
        if pid == 0:  # child: drop the inherited mapping and leave without any cleanup of its own
            del held
            gc.collect()
            os._exit(0)
        os.waitpid(pid, 0)
        assert os.path.exists(ref.path) and not _free_files(tag)
        assert int(held[-1]) == _BIG - 1
        del held
        gc.collect()
        assert len(_free_files(tag)) == 1
    finally:
        shm.sweep(os.getpid(), tag)


def test_an_arena_claims_a_free_file():
    tag = "recycle7"
    try:
        ref = shm.dumps_to_shm(np.arange(_BIG), tag=tag)
        shm.loads_from_shm(ref, recycle=True)
        gc.collect()
        (free,) = _free_files(tag)
        first = _inode(free)
        with shm.task_arena(tag=tag) as arena:
            out = np.frombuffer(buffers.transfer_buffer(8 * _BIG), dtype=np.int64)
            out[:] = 9
            result = shm.dumps_to_shm(out, tag=tag, arena=arena)
        del out
        assert _inode(result.path) == first
        assert shm.loads_from_shm(result).tolist() == [9] * _BIG
    finally:
        shm.sweep(os.getpid(), tag)


def test_a_planted_link_with_a_free_name_is_never_written_through(tmp_path):
    tag = "recycle8"
    target = tmp_path / "precious"
    target.write_bytes(b"keep me")
    planted = os.path.join(shm.shm_dirs()[0], f"{shm.PREFIX}{os.getpid()}_{tag}_free_planted")
    os.symlink(target, planted)
    try:
        ref = shm.dumps_to_shm(np.arange(_BIG), tag=tag)
        assert target.read_bytes() == b"keep me"
        assert not os.path.islink(ref.path) and not os.path.lexists(planted)
        assert int(shm.loads_from_shm(ref)[-1]) == _BIG - 1
    finally:
        if os.path.lexists(planted):
            os.unlink(planted)
        shm.sweep(os.getpid(), tag)


# ----------------------------------------------------------------------------- kept mappings


def _arena_write(tag: str, n: int, value: int) -> tuple[shm.ShmRef, int]:
    """One task's write of ``n`` int64 ``value``s built in its arena; the ref and the array's address."""
    with shm.task_arena(tag=tag) as arena:
        out = np.frombuffer(buffers.transfer_buffer(8 * n), dtype=np.int64)
        out[:] = value
        address = out.ctypes.data
        ref = shm.dumps_to_shm(out, tag=tag, arena=arena)
    return ref, address


def _load_and_release(ref: shm.ShmRef) -> list[int]:
    values = shm.loads_from_shm(ref, recycle=True).tolist()  # the array dies here: the file is free
    gc.collect()
    return values


@pytest.fixture
def counted_fallocate(monkeypatch):
    calls: list[int] = []
    real = os.posix_fallocate

    def fallocate(fd, offset, length):
        calls.append(length)
        return real(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", fallocate)
    return calls


@pytest.fixture
def kept_tag(request):
    """A tag of its own for the test's files; they and this process's kept mappings of them go after."""
    tag = "keep" + "".join(c for c in request.node.name if c.isalnum())[-20:]
    yield tag
    shm.sweep(os.getpid(), tag)
    shm.forget_removed_mappings()


def test_a_writer_maps_a_file_it_claims_again_only_once(kept_tag, counted_fallocate):
    addresses = []
    for value in range(3):
        ref, address = _arena_write(kept_tag, _BIG, value)
        addresses.append(address)
        assert _load_and_release(ref) == [value] * _BIG
    # The same file each time, written through the same mapping, allocated once.
    assert len(set(addresses)) == 1 and len(counted_fallocate) == 1


def test_a_kept_mapping_is_written_only_over_bytes_the_file_holds(kept_tag, counted_fallocate):
    ref, first = _arena_write(kept_tag, _BIG, 1)
    assert _load_and_release(ref) == [1] * _BIG
    # A plain write claims the free file and cuts it to its own, smaller size.
    small = shm.dumps_to_shm(np.arange(_BIG // 2 + 1000), tag=kept_tag)
    assert small.file_size < 8 * _BIG
    assert _load_and_release(small) == list(range(_BIG // 2 + 1000))
    # The arena claims it again: the kept mapping is reused, the missing bytes allocated again
    # first (a write past the end of the file would be a SIGBUS).
    ref, again = _arena_write(kept_tag, _BIG, 2)
    assert again == first and len(counted_fallocate) == 2
    assert _load_and_release(ref) == [2] * _BIG
    # A write larger than the kept mapping gets a mapping of its own.
    ref, _ = _arena_write(kept_tag, 2 * _BIG, 3)
    assert _load_and_release(ref) == [3] * (2 * _BIG)


def test_the_mapping_of_a_removed_file_is_dropped_after_the_next_task(kept_tag):
    ref, _ = _arena_write(kept_tag, _BIG, 1)
    path = ref.path
    assert shm.loads_from_shm(ref).tolist() == [1] * _BIG  # a plain load removes the file
    gc.collect()
    assert not os.path.exists(path)
    assert _mapped_ranges(path), "kept until this process's next task"
    ref, _ = _arena_write(kept_tag, _BIG, 2)
    assert not _mapped_ranges(path), "a kept mapping of a removed file pins its memory"
    assert _load_and_release(ref) == [2] * _BIG


def test_a_forked_child_does_not_inherit_kept_mappings(kept_tag):
    ref, _ = _arena_write(kept_tag, _BIG, 1)
    assert shm._kept
    pid = os.fork()
    if pid == 0:
        os._exit(0 if not shm._kept else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _load_and_release(ref) == [1] * _BIG
