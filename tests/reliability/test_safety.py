"""Safety: reading never runs code from a data file; nothing the package creates can be read or
replaced by other users; data never chooses where files are written.

Invariants (DESIGN.md promise 8 and the module docstrings of ``execution/shm.py``,
``execution/block_store.py``, ``io/errors.py``, ``io/write.py``):

* no reader calls the unpickler on a file's bytes: object columns are never written to files, and a
  file that declares pickled objects (this package's ``torchray.python_object`` or Ray Data's
  ``ray.data.arrow_pickled_object`` extension type, an object ``.npy``/``.npz``) is refused with a
  ``ReadError`` naming it, unless ``DataContext.allow_pickle = True``;
* shared-memory transfer files, spill files and read-error ledgers are created owner-only (0600,
  directories 0700) whatever the umask, with names nobody can predict or pre-create (``O_EXCL``
  plus random tokens);
* written file names are ``part-NNNNNN.<ext>`` in the output directory; no value from the data
  becomes a path component, and a failed write leaves neither a partial nor a temporary file.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import stat
import sys
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import torchray_loader as rd
from torchray_loader.blocks.tensors import PythonObjectType
from torchray_loader.errors import ReadError
from torchray_loader.execution import shm
from torchray_loader.execution.block_store import BlockStore
from torchray_loader.io import write as write_mod
from torchray_loader.io.errors import ReadErrorPolicy

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def inline(fresh_data_context):
    fresh_data_context.num_workers = 0
    return fresh_data_context


def touch(path: str) -> str:
    open(path, "w").close()
    return path


class Tripwire:
    """Unpickling this creates ``path``: proof that someone unpickled a file's bytes."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (touch, (self.path,))


class Opaque:
    """A Python object Arrow has no type for: it makes an object column."""


def object_column_parquet(path, marker) -> None:
    payload = pickle.dumps(Tripwire(str(marker)))
    storage = pa.array([payload, payload], type=pa.large_binary())
    column = pa.ExtensionArray.from_storage(PythonObjectType(), storage)
    pq.write_table(pa.table({"id": [0, 1], "obj": column}), path)


def ray_object_column_parquet(path, marker) -> None:
    """What Ray Data writes for a column of Python objects: the extension's name in the field metadata."""
    payload = pickle.dumps(Tripwire(str(marker)))
    field = pa.field("obj", pa.large_binary(), metadata={b"ARROW:extension:name": b"ray.data.arrow_pickled_object"})
    schema = pa.schema([pa.field("id", pa.int64()), field])
    pq.write_table(pa.table({"id": [0], "obj": pa.array([payload], pa.large_binary())}, schema=schema), path)


class FakeRayObjectType(pa.ExtensionType):
    """Stands in for Ray's registered type when ``ray.data`` is not imported in this process."""

    def __init__(self) -> None:
        super().__init__(pa.large_binary(), "ray.data.arrow_pickled_object")

    def __arrow_ext_serialize__(self) -> bytes:
        return b""

    @classmethod
    def __arrow_ext_deserialize__(cls, storage_type, serialized):
        return cls()


@contextmanager
def registered_ray_object_type():
    try:
        pa.register_extension_type(FakeRayObjectType())
        mine = True
    except pa.ArrowKeyError:  # ray.data is imported: its real type is registered
        mine = False
    try:
        yield
    finally:
        if mine:
            pa.unregister_extension_type("ray.data.arrow_pickled_object")


# ----------------------------------------------------------------------------- pickles in files


@pytest.mark.parametrize("writer", [object_column_parquet, ray_object_column_parquet])
def test_a_parquet_file_with_pickled_objects_is_refused_unless_allowed(tmp_path, inline, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "objects.parquet"
    writer(path, marker)
    for registered in (False, True):
        with registered_ray_object_type() if registered else contextlib.nullcontext():
            with pytest.raises(ReadError, match=r"objects\.parquet: column\(s\) \['obj'\] hold pickled Python objects"):
                rd.read_parquet(str(path)).take_all()
            with pytest.raises(ReadError):
                rd.read_parquet(str(path), columns=["id", "obj"]).take_all()
    assert not marker.exists()
    if writer is object_column_parquet:  # opting in works (and is what the refusal prevented)
        inline.allow_pickle = True
        rows = rd.read_parquet(str(path)).take_all()
        assert [r["id"] for r in rows] == [0, 1]
        assert marker.exists()


def test_object_npy_and_npz_files_are_refused_unless_allowed(tmp_path, inline):
    marker = tmp_path / "pwned"
    objects = np.array([Tripwire(str(marker))], dtype=object)
    np.save(tmp_path / "objects.npy", objects, allow_pickle=True)
    np.savez(tmp_path / "objects.npz", a=objects)
    for name in ("objects.npy", "objects.npz"):
        with pytest.raises(ReadError, match=re.escape(name)):
            rd.read_numpy(str(tmp_path / name)).take_all()
    assert not marker.exists()
    inline.allow_pickle = True
    rd.read_numpy(str(tmp_path / "objects.npy")).take_all()
    assert marker.exists()


def test_object_columns_are_never_written_to_files(tmp_path):
    ds = rd.from_items([{"id": 0, "obj": Opaque()}, {"id": 1, "obj": Opaque()}])
    assert str(ds.schema()).splitlines()[-1].split() == ["obj", "<class", "'object'>"]
    for fmt in ("parquet", "csv", "json"):
        out = tmp_path / fmt
        with pytest.raises(TypeError, match="column 'obj'.*pickled Python objects"):
            getattr(ds, f"write_{fmt}")(str(out))
        assert list(out.iterdir()) == []  # no file, no temporary file
    with pytest.raises(TypeError, match="column 'obj'.*pickled Python objects"):
        ds.write_numpy(str(tmp_path / "npy"), column="obj")


def test_reading_every_format_never_calls_the_unpickler(tmp_path, monkeypatch):
    """A tripwire on the unpickler while every reader reads a typical file of its format."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    tensors = rd.from_items([{"id": i, "t": np.full((2, 3), i, np.float32), "r": np.zeros(i + 1)} for i in range(3)])
    tensors.write_parquet(str(tmp_path / "pq"))
    (tmp_path / "a.csv").write_text("x,y\n1,a\n")
    (tmp_path / "a.json").write_text('{"x": [1, 2], "y": {"z": 1}}\n')
    np.save(tmp_path / "a.npy", np.arange(6).reshape(3, 2))
    np.savez(tmp_path / "a.npz", x=np.arange(3), y=np.ones(3))
    (tmp_path / "a.txt").write_text("hello\n")

    def tripped(*args, **kwargs):
        raise AssertionError("a reader called the unpickler")

    checks = [
        (rd.read_images, [tmp_path / "a.png", tmp_path / "a.jpg"], 2),
        (rd.read_parquet, [tmp_path / "pq"], 3),
        (rd.read_csv, [tmp_path / "a.csv"], 1),
        (rd.read_json, [tmp_path / "a.json"], 1),
        (rd.read_numpy, [tmp_path / "a.npy", tmp_path / "a.npz"], None),
        (rd.read_text, [tmp_path / "a.txt"], 1),
        (rd.read_binary_files, [tmp_path / "a.npz"], 1),
    ]
    for read, paths, _ in checks:  # warm-up: lazy imports (torchvision...) happen outside the tripwire
        read(str(paths[0])).take_all()
    import cloudpickle

    for mod, name in ((pickle, "loads"), (pickle, "load"), (cloudpickle, "loads"), (cloudpickle, "load")):
        monkeypatch.setattr(mod, name, tripped)
    for read, paths, rows in checks:
        for path in paths:
            batches = list(read(str(path)).iter_batches(batch_size=None))
            if rows is not None and read is not rd.read_images:
                assert sum(len(next(iter(b.values()))) for b in batches) == rows, read.__name__
    assert "pickle" in sys.modules


# ----------------------------------------------------------------------------- files we create


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_shared_memory_files_are_owner_only_with_unpredictable_unique_names():
    with umask(0):
        refs = [shm.dumps_to_shm(np.ones(1 << 16), tag="safety") for _ in range(2)]
    try:
        paths = [r.path for r in refs]
        assert len(set(paths)) == 2
        for p in paths:
            st = os.stat(p)
            assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid(), p
            assert re.fullmatch(rf"{shm.PREFIX}{os.getpid()}_safety_{os.getpid()}_\d+_[0-9a-f]{{8}}", os.path.basename(p))
    finally:
        for r in refs:
            shm.discard(r)
    # O_EXCL: a name that already exists (say, planted by someone else) is never opened
    planted = os.path.join(shm.shm_dirs()[0], f"{shm.PREFIX}{os.getpid()}_plant_0_0_00000000")
    open(planted, "w").close()
    try:
        with pytest.raises(FileExistsError):
            os.open(planted, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    finally:
        os.unlink(planted)


def test_spill_files_and_read_error_ledgers_are_owner_only(tmp_path):
    with umask(0):
        store = BlockStore(budget_bytes=0)
        store.append(pa.table({"x": [1, 2, 3]}))
        spill_dir = store._dir
        (spilled,) = os.listdir(spill_dir)
        assert mode(spill_dir) == 0o700 and mode(os.path.join(spill_dir, spilled)) == 0o600
        store.close()
        assert not os.path.exists(spill_dir)

        policy = ReadErrorPolicy("skip", budget=5)
        policy.bad_row("a.csv", 2, "ragged")
        assert mode(policy.ledger) == 0o600
        assert re.search(r"torchray-read-skips-[0-9a-f]{32}\.jsonl$", policy.ledger)
        ledger = policy.ledger
        del policy
        assert not os.path.exists(ledger)


# ----------------------------------------------------------------------------- where files are written


HOSTILE = ["../../escaped", "/tmp/absolute", "a/b", "..", "%2e%2e%2fx", "x\x00y", "~root"]


def test_data_never_chooses_a_written_path(tmp_path):
    out = tmp_path / "out"
    ds = rd.from_items([{"k": k, "v": i} for i, k in enumerate(HOSTILE)])
    before = sorted(p.name for p in tmp_path.iterdir())
    for fmt in ("parquet", "csv", "json"):
        getattr(ds, f"write_{fmt}")(str(out / fmt))
    ds.write_numpy(str(out / "npy"), column="v")
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert all(re.fullmatch(r"(parquet|csv|json|npy)/part-\d{6}\.(parquet|csv|json|npy)", w) for w in written), written
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "out"])
    assert sorted(r["k"] for r in rd.read_parquet(str(out / "parquet")).take_all()) == sorted(HOSTILE)


def test_partition_values_cannot_escape_the_output_directory(tmp_path):
    """``partition_cols`` (hive-style directories named after values) is where data would become
    a path. Today the writers refuse it; should they ever accept it, every file must still land
    under the output directory, with the values encoded."""
    out = tmp_path / "deep" / "out"
    ds = rd.from_items([{"k": k, "v": i} for i, k in enumerate(HOSTILE)])
    try:
        ds.write_parquet(str(out), partition_cols=["k"])
    except TypeError as exc:
        assert "partition_cols" in str(exc)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(out in p.parents for p in files), files
    assert not (tmp_path / "escaped").exists() and not os.path.exists("/tmp/absolute")


def test_hive_partition_values_read_from_paths_are_only_data(tmp_path):
    d = tmp_path / "k=..%2F..%2Fetc"
    d.mkdir()
    pq.write_table(pa.table({"v": [1]}), d / "part.parquet")
    assert rd.read_parquet(str(tmp_path)).take_all() == [{"v": 1, "k": "../../etc"}]


def test_a_failed_write_leaves_no_partial_or_temporary_file(tmp_path, monkeypatch):
    def half_then_fail(block, f, column, options):
        f.write(b'{"partial": ')
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(write_mod._SERIALIZERS, "json", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        rd.range(10).write_json(str(tmp_path / "out"))
    assert [p.name for p in (tmp_path / "out").iterdir()] == []


def test_refusals_are_reported_in_json_safe_terms(tmp_path):
    """A refusal's message is plain text (it is logged and may land in a skip ledger)."""
    path = tmp_path / "objects.parquet"
    object_column_parquet(path, tmp_path / "pwned")
    ds = rd.read_parquet(str(tmp_path), on_read_error="skip", read_error_budget=1)
    assert ds.take_all() == []
    from torchray_loader.io.errors import read_skips

    (skip,) = read_skips(ds)
    assert json.loads(json.dumps(skip.reason)) == skip.reason and "pickled" in skip.reason
    assert not (tmp_path / "pwned").exists()
