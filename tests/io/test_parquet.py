"""read_parquet / write_parquet: round trips (tensors included), options, bad files, atomic writes."""

from __future__ import annotations

import io
import os
import pathlib
import pickle
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from hypothesis import given, settings
from hypothesis import strategies as st

import torchray_loader as rd
from torchray_loader.blocks import column_from_values, column_to_numpy
from torchray_loader.errors import ErrorBudgetExceeded, ReadError
from torchray_loader.io import write as write_mod
from torchray_loader.io.errors import read_skips
from torchray_loader.io.parquet import plan_parquet
from torchray_loader.io.write import write_blocks


class Point:
    """A Python object Arrow has no type for: it becomes a pickled object column."""

    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x


def sample_block(start: int, n: int) -> pa.Table:
    ids = np.arange(start, start + n)
    rng = np.random.default_rng(start)
    return pa.table(
        {
            "id": ids,
            "name": [f"row{i}" for i in ids],
            "image": column_from_values(rng.integers(0, 255, (n, 4, 5, 3), dtype=np.uint8)),
            "ragged": column_from_values([np.full((i % 3 + 1, 2), i, dtype=np.float32) for i in ids]),
        }
    )


def read_all(path: str, **kw) -> pa.Table:
    tables = [t for task in plan_parquet(path, **kw) for t in task()]
    return pa.concat_tables(tables)


def assert_same_rows(a: pa.Table, b: pa.Table) -> None:
    assert a.schema.equals(b.schema), (a.schema, b.schema)
    for name in a.column_names:
        left, right = column_to_numpy(a.column(name)), column_to_numpy(b.column(name))
        if left.dtype == object:
            assert len(left) == len(right) and all(
                np.array_equal(x, y) for x, y in zip(left, right, strict=True)
            )
        else:
            np.testing.assert_array_equal(left, right)


def test_write_blocks_then_read_round_trips_tensors(tmp_path):
    blocks = [sample_block(0, 5), sample_block(5, 3)]
    files = write_blocks(blocks, "parquet", str(tmp_path))
    assert [os.path.basename(f) for f in files] == ["part-000000.parquet", "part-000001.parquet"]
    assert sorted(os.listdir(tmp_path)) == [
        "part-000000.parquet",
        "part-000001.parquet",
    ]  # no temp files left
    got = read_all(str(tmp_path))
    assert_same_rows(got, pa.concat_tables(blocks))
    assert isinstance(got.schema.field("image").type, pa.FixedShapeTensorType)
    assert type(got.schema.field("ragged").type).__name__ == "VariableShapeTensorType"


def test_dataset_round_trip_and_schema(tmp_path):
    ds = rd.from_items(
        [{"x": i, "t": np.full((2, 2), i, dtype=np.float32)} for i in range(10)], override_num_blocks=3
    )
    ds.write_parquet(f"local://{tmp_path}")
    back = rd.read_parquet(f"local://{tmp_path}")
    assert str(back.schema()) == str(ds.schema())
    rows = back.take_all()
    assert [r["x"] for r in rows] == list(range(10))
    np.testing.assert_array_equal(rows[7]["t"], np.full((2, 2), 7, dtype=np.float32))


def test_write_is_deterministic_and_overwrite_replaces_everything(tmp_path):
    write_blocks([sample_block(0, 2), sample_block(2, 4)], "parquet", str(tmp_path))
    first = (tmp_path / "part-000000.parquet").read_bytes()
    write_blocks([sample_block(0, 2)], "parquet", str(tmp_path), mode="overwrite")
    assert (tmp_path / "part-000000.parquet").read_bytes() == first
    assert sorted(os.listdir(tmp_path)) == ["part-000000.parquet"]  # the longer write's file is gone


def test_appending_adds_files_after_the_existing_ones(tmp_path):
    """Ray's default: a second write into the directory adds its rows, replacing nothing."""
    rd.range(3, override_num_blocks=3).write_parquet(str(tmp_path))
    rd.from_items([{"id": 100}, {"id": 101}]).write_parquet(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [f"part-{i:06d}.parquet" for i in range(5)]
    assert [r["id"] for r in rd.read_parquet(str(tmp_path)).take_all()] == [0, 1, 2, 100, 101]


def _boom(row):
    raise AssertionError("the dataset was executed")


def test_error_and_ignore_modes_leave_an_existing_directory_alone(tmp_path):
    rd.range(2).write_parquet(str(tmp_path))
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(FileExistsError, match="mode='error'"):
        rd.range(2).write_parquet(str(tmp_path), mode="error")
    rd.range(2).map(_boom).write_parquet(str(tmp_path), mode="ignore")
    assert sorted(os.listdir(tmp_path)) == before
    rd.range(2).write_csv(str(tmp_path / "new"), mode="error")  # a new directory is fine
    with pytest.raises(ValueError, match="mode must be one of"):
        rd.range(2).write_json(str(tmp_path), mode="upsert")


def test_empty_blocks_are_not_written_but_an_empty_dataset_keeps_its_schema(tmp_path):
    b = sample_block(0, 3)
    files = write_blocks([b.slice(0, 0), b, b.slice(0, 0)], "parquet", str(tmp_path / "a"))
    assert [os.path.basename(f) for f in files] == ["part-000000.parquet"]
    files = write_blocks([b.slice(0, 0)], "parquet", str(tmp_path / "b"))
    assert len(files) == 1
    back = read_all(str(tmp_path / "b"))
    assert back.num_rows == 0 and back.schema.names == b.schema.names


def test_columns_and_filter(tmp_path):
    write_blocks([sample_block(0, 10)], "parquet", str(tmp_path))
    got = read_all(str(tmp_path), columns=["id", "name"], filter=[("id", ">=", 7)])
    assert got.to_pydict() == {"id": [7, 8, 9], "name": ["row7", "row8", "row9"]}
    import pyarrow.compute as pc

    ds = rd.read_parquet(str(tmp_path), columns=["id"], filter=pc.field("id") < 2)
    assert ds.take_all() == [{"id": 0}, {"id": 1}]
    with pytest.raises(TypeError, match="columns"):
        rd.read_parquet(str(tmp_path), columns="id")


@pytest.mark.parametrize(
    "filter_",
    [[("id", ">=", 7)], [[("id", ">=", 7)], [("id", "<", 1)]], "expression"],
    ids=["dnf", "dnf-or", "expression"],
)
def test_filter_on_a_column_that_is_not_selected(tmp_path, filter_):
    import pyarrow.compute as pc

    write_blocks([sample_block(0, 10)], "parquet", str(tmp_path))
    want = ["row7", "row8", "row9"] if filter_ == [("id", ">=", 7)] else ["row0", "row7", "row8", "row9"]
    if filter_ == "expression":
        filter_ = (pc.field("id") >= 7) | (pc.field("id") < 1)
    got = read_all(str(tmp_path), columns=["name"], filter=filter_)
    assert got.to_pydict() == {"name": want}


def test_big_file_is_split_into_row_group_tasks(tmp_path):
    table = pa.table({"x": np.arange(10_000), "y": np.random.default_rng(0).random(10_000)})
    pq.write_table(table, tmp_path / "big.parquet", row_group_size=1000)
    rd.DataContext.get_current().target_max_block_size = 30_000
    tasks = plan_parquet(str(tmp_path))
    assert len(tasks) > 1
    blocks = [b for t in tasks for b in t()]
    assert pa.concat_tables(blocks).equals(table)


def test_hive_partitions_and_include_paths(tmp_path):
    for part in ("a", "b"):
        write_blocks([pa.table({"v": [1, 2]})], "parquet", str(tmp_path / f"split={part}"))
    rows = rd.read_parquet(str(tmp_path), include_paths=True).take_all()
    assert [(r["v"], r["split"]) for r in rows] == [(1, "a"), (2, "a"), (1, "b"), (2, "b")]
    assert rows[0]["path"] == f"{tmp_path}/split=a/part-000000.parquet"


def test_truncated_file_names_the_file_and_can_be_skipped(tmp_path):
    write_blocks([sample_block(0, 4), sample_block(4, 4)], "parquet", str(tmp_path))
    bad = tmp_path / "part-000001.parquet"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(ReadError, match="part-000001.parquet"):
        rd.read_parquet(str(tmp_path)).take_all()
    ds = rd.read_parquet(str(tmp_path), on_read_error="skip", read_error_budget=1)
    assert [r["id"] for r in ds.take_all()] == [0, 1, 2, 3]
    assert [os.path.basename(s.path) for s in read_skips(ds)] == ["part-000001.parquet"]
    with pytest.raises(ErrorBudgetExceeded):
        rd.read_parquet(str(tmp_path), on_read_error="skip", read_error_budget=0).take_all()


def test_pickled_columns_are_refused_on_write_and_read(tmp_path):
    ds = rd.from_items([{"obj": Point(1)}, {"obj": Point(2)}])
    with pytest.raises(TypeError, match=r"part-000000.parquet: column 'obj'.*pickled Python objects"):
        ds.write_parquet(str(tmp_path / "w"))
    assert not (tmp_path / "w").exists() or os.listdir(tmp_path / "w") == []
    # A file carrying the python-object extension type (as a hostile writer could make one):
    table = pa.table({"obj": column_from_values([Point(1), Point(2)])})
    pq.write_table(table, tmp_path / "evil.parquet")
    with pytest.raises(ReadError, match=r"evil.parquet: column\(s\) \['obj'\] hold pickled"):
        rd.read_parquet(str(tmp_path / "evil.parquet")).take_all()
    rd.DataContext.get_current().allow_pickle = True
    assert rd.read_parquet(str(tmp_path / "evil.parquet")).take_all() == [
        {"obj": Point(1)},
        {"obj": Point(2)},
    ]


def test_failed_write_leaves_no_file_a_later_read_picks_up(tmp_path, monkeypatch):
    write_blocks([sample_block(0, 2)], "parquet", str(tmp_path))
    real = write_mod._SERIALIZERS["parquet"]

    def explode_midway(block, f, column, options):
        f.write(b"PAR1 partial bytes")
        raise OSError("disk full")

    monkeypatch.setitem(write_mod._SERIALIZERS, "parquet", explode_midway)
    with pytest.raises(OSError, match="disk full"):
        write_blocks([sample_block(0, 2), sample_block(2, 2)], "parquet", str(tmp_path))
    monkeypatch.setitem(write_mod._SERIALIZERS, "parquet", real)
    assert os.listdir(tmp_path) == ["part-000000.parquet"]  # the old complete file; no temp, no partial
    assert read_all(str(tmp_path)).num_rows == 2


def test_hidden_temp_files_are_never_read(tmp_path):
    write_blocks([sample_block(0, 2)], "parquet", str(tmp_path))
    (tmp_path / ".part-000001.parquet.abc.tmp").write_bytes(b"partial")
    assert read_all(str(tmp_path)).num_rows == 2


def test_bad_write_arguments(tmp_path):
    with pytest.raises(ValueError, match="fmt"):
        write_blocks([], "xml", str(tmp_path))
    with pytest.raises(TypeError, match="column="):
        write_blocks([], "parquet", str(tmp_path), column="x")
    with pytest.raises(TypeError, match="bogus"):
        write_blocks([sample_block(0, 1)], "parquet", str(tmp_path / "o"), bogus=1)
    assert os.listdir(tmp_path / "o") == []


def test_memory_filesystem_round_trip():
    rd.DataContext.get_current().num_workers = 0
    url = "memory://trl-parquet-test/out"
    files = write_blocks([sample_block(0, 3)], "parquet", url)
    assert len(files) == 1 and files[0].startswith("memory://")
    assert files[0].endswith("trl-parquet-test/out/part-000000.parquet")
    assert_same_rows(read_all(url), sample_block(0, 3))
    import fsspec

    fsspec.filesystem("memory").rm("/trl-parquet-test", recursive=True)


def test_directory_listing_sees_files_written_after_a_first_read(tmp_path):
    write_blocks([sample_block(0, 1)], "parquet", str(tmp_path))
    assert rd.read_parquet(str(tmp_path)).count() == 1
    pq.write_table(sample_block(1, 1), pathlib.Path(tmp_path) / "part-000001.parquet")
    assert rd.read_parquet(str(tmp_path)).count() == 2


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 6), min_size=1, max_size=4),
    shape=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dtype=st.sampled_from(["uint8", "int32", "float32", "float64"]),
)
def test_round_trip_property(sizes, shape, dtype):
    rng = np.random.default_rng(sum(sizes))
    blocks = []
    for n in sizes:
        # (blocks/ cannot build a fixed-shape column from an empty ndarray; slice a 1-row one instead)
        data = (rng.random((max(n, 1), *shape)) * 100).astype(dtype)
        block = pa.table({"i": np.arange(max(n, 1), dtype=np.int64), "t": column_from_values(data)})
        blocks.append(block.slice(0, n))
    with tempfile.TemporaryDirectory() as d:
        files = write_blocks(blocks, "parquet", d)
        assert len(files) == max(1, sum(1 for n in sizes if n))
        back = read_all(d)
    want = [b for b in blocks if b.num_rows] or blocks[:1]
    assert_same_rows(back, pa.concat_tables(want))


def test_columns_leave_out_partition_keys_not_asked_for(tmp_path):
    (tmp_path / "year=2024").mkdir()
    pq.write_table(pa.table({"y": ["a", "b"], "z": [1, 2]}), tmp_path / "year=2024" / "f.parquet")
    assert rd.read_parquet(str(tmp_path), columns=["y"]).take_all() == [{"y": "a"}, {"y": "b"}]
    assert rd.read_parquet(str(tmp_path), columns=["y", "year"]).take_all()[0] == {"y": "a", "year": "2024"}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_no_columns_still_count_the_rows(tmp_path, num_workers):
    rd.DataContext.get_current().num_workers = num_workers
    pq.write_table(pa.table({"y": [1, 2, 3]}), tmp_path / "f.parquet")
    assert rd.read_parquet(str(tmp_path), columns=[]).count() == 3  # a table without columns crosses with its rows


# ---------------------------------------------------------------------------------- count() from footers


def corrupt_pages(path: pathlib.Path) -> None:
    """Overwrite every byte between the leading magic and the footer (all the column chunks) while
    the footer stays valid: a read fails, the footer still tells every row group's rows."""
    data = bytearray(path.read_bytes())
    footer_len = int.from_bytes(data[-8:-4], "little")
    end = len(data) - 8 - footer_len
    data[4:end] = b"\xff" * (end - 4)
    path.write_bytes(bytes(data))


@pytest.fixture
def pages_corrupt_dir(tmp_path):
    """Hive-partitioned small files and one big file cut into row-group tasks, every data page corrupt:
    ``(directory, rows)``. Only a count that never reads data pages gets ``rows``."""
    rd.DataContext.get_current().target_max_block_size = 64 * 1024
    rows = 0
    for i, (part, n) in enumerate([("a", 3), ("a", 5), ("b", 0), ("b", 7)]):
        (tmp_path / f"split={part}").mkdir(exist_ok=True)
        pq.write_table(pa.table({"x": np.arange(n), "y": np.ones(n)}), tmp_path / f"split={part}" / f"{i}.parquet")
        rows += n
    big = pa.table({"x": np.arange(40_000), "y": np.random.default_rng(0).random(40_000)})
    (tmp_path / "split=c").mkdir()
    pq.write_table(big, tmp_path / "split=c" / "big.parquet", row_group_size=3000)
    rows += big.num_rows
    for f in tmp_path.rglob("*.parquet"):
        corrupt_pages(f)
    return tmp_path, rows


@pytest.mark.parametrize("num_workers", [0, 2])
def test_count_reads_only_footers(pages_corrupt_dir, num_workers):
    rd.DataContext.get_current().num_workers = num_workers
    d, rows = pages_corrupt_dir
    assert any(t.paths and len(t.paths) > 1 for t in plan_parquet(str(d), override_num_blocks=1))
    assert sum(1 for t in plan_parquet(str(d)) if "big.parquet" in t.paths[0]) > 1  # row-group tasks
    with pytest.raises(ReadError):
        rd.read_parquet(str(d)).take_all()  # the data pages cannot be read...
    # ...and every count below reads none of them.
    assert rd.read_parquet(str(d)).count() == rows
    assert rd.read_parquet(str(d), override_num_blocks=1).count() == rows  # one task of all the files
    assert rd.read_parquet(str(d), columns=["y"], include_paths=True).count() == rows
    assert rd.read_parquet(str(d), columns=[]).count() == rows
    assert rd.read_parquet(str(d), shuffle="files").count() == rows
    assert rd.read_parquet(str(d), partitioning=None).count() == rows
    assert rd.read_parquet(str(d / "split=a")).count() == 8
    assert rd.read_parquet([str(d / "split=a"), str(d / "nope")], ignore_missing_paths=True).count() == 8
    keep_b = rd.PathPartitionFilter.of(lambda values: values.get("split") == "b")
    assert rd.read_parquet(str(d), partition_filter=keep_b).count() == 7
    # Under the skip policy a count is what a read yields: these files' pages are corrupt, so none.
    assert rd.read_parquet(str(d), on_read_error="skip", read_error_budget=-1).count() == 0
    chain = (
        rd.read_parquet(str(d))
        .map(lambda r: r)
        .add_column("z", lambda b: b["x"])
        .select_columns(["x", "z"])
        .rename_columns({"z": "w"})
        .drop_columns(["w"])
    )
    assert chain.count() == rows
    assert rd.read_parquet(str(d)).union(rd.read_parquet(str(d / "split=a"))).count() == rows + 8
    assert rd.read_parquet(str(d)).limit(10).count() == 10


def test_count_rows_is_set_unless_a_filter_changes_the_count(tmp_path):
    pq.write_table(pa.table({"x": np.arange(10)}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"x": np.arange(10, 15)}), tmp_path / "b.parquet")
    tasks = plan_parquet(str(tmp_path))
    assert [t.count_rows() for t in tasks] == [10, 5]  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(tasks[0])).count_rows() == 10  # it travels with its task
    filtered = plan_parquet(str(tmp_path), filter=[("x", ">=", 12)])
    assert all(t.count_rows is None for t in filtered)
    assert rd.read_parquet(str(tmp_path), filter=[("x", ">=", 12)]).count() == 3
    assert rd.read_parquet(str(tmp_path)).filter(lambda r: r["x"] % 2 == 0).count() == 8  # executes


def test_count_executes_the_read_when_a_footer_cannot_be_read(tmp_path):
    for i in range(3):
        pq.write_table(pa.table({"x": np.arange(4)}), tmp_path / f"{i}.parquet")
    bad = tmp_path / "1.parquet"
    bad.write_bytes(bad.read_bytes()[:20])
    with pytest.raises(ReadError, match="1.parquet"):
        rd.read_parquet(str(tmp_path)).count()
    ds = rd.read_parquet(str(tmp_path), on_read_error="skip", read_error_budget=1)
    assert ds.count() == 8  # the unreadable file skipped, exactly as a read skips it
    assert [os.path.basename(s.path) for s in read_skips(ds)] == ["1.parquet"]
    with pytest.raises(ErrorBudgetExceeded):
        rd.read_parquet(str(tmp_path), on_read_error="skip", read_error_budget=0).count()


def test_count_reports_what_a_read_reports(tmp_path):
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"x": ["a", "b", "c"]}), tmp_path / "b.parquet")  # conflicts with a's schema
    with pytest.raises(ReadError, match="b.parquet: schema conflicts"):
        rd.read_parquet(str(tmp_path)).take_all()
    with pytest.raises(ReadError, match="b.parquet: schema conflicts"):
        rd.read_parquet(str(tmp_path)).count()
    assert rd.read_parquet(str(tmp_path), on_read_error="skip", read_error_budget=1).count() == 2
    evil = tmp_path / "evil"
    evil.mkdir()
    pq.write_table(pa.table({"obj": column_from_values([Point(1), Point(2)])}), evil / "e.parquet")
    with pytest.raises(ReadError, match="hold pickled"):
        rd.read_parquet(str(evil)).count()


# ---------------------------------------------------------------------------------- column projection


def wide_file(path: pathlib.Path, n: int = 50_000, ncols: int = 20) -> pa.Table:
    rng = np.random.default_rng(0)
    table = pa.table({f"c{k}": rng.random(n) for k in range(ncols)})
    pq.write_table(table, path)
    return table


def process_bytes_read() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux's per-process I/O counters")
def test_local_column_projection_reads_only_those_columns(tmp_path):
    rd.DataContext.get_current().num_workers = 0
    table = wide_file(tmp_path / "w.parquet")
    size = (tmp_path / "w.parquet").stat().st_size
    ds = rd.read_parquet(str(tmp_path), columns=["c3"])
    before = process_bytes_read()
    got = pa.concat_tables(list(ds.iter_internal_blocks()))
    read = process_bytes_read() - before
    assert got.column("c3").equals(table.column("c3"))
    assert read < size / 5, (read, size)  # one column of 20 (and the footer), not the whole file


class CountingMemoryFS(MemoryFileSystem):
    """The memory file system, counting the bytes its files hand out (an object store's transfer)."""

    transferred: list[int] = []

    def cat_file(self, path, start=None, end=None, **kwargs):
        data = super().cat_file(path, start=start, end=end, **kwargs)
        self.transferred.append(len(data))
        return data

    def _open(self, path, mode="rb", **kwargs):
        f = super()._open(path, mode, **kwargs)
        if "r" not in mode:
            return f
        outer = self

        class Counting(io.BytesIO):
            def read(self, n=-1):
                data = super().read(n)
                outer.transferred.append(len(data))
                return data

            def readinto(self, b):
                n = super().readinto(b)
                outer.transferred.append(n)
                return n

        return Counting(f.getvalue())


def test_remote_column_projection_fetches_only_those_columns():
    rd.DataContext.get_current().num_workers = 0
    import fsspec

    url = "memory://trl-parquet-projection/d"
    mem = fsspec.filesystem("memory")
    buf = io.BytesIO()
    table = pa.table({f"c{k}": np.random.default_rng(k).random(20_000) for k in range(20)})
    pq.write_table(table, buf)
    mem.pipe_file("/trl-parquet-projection/d/a.parquet", buf.getvalue())
    size = len(buf.getvalue())
    fs = CountingMemoryFS()
    try:
        fs.transferred.clear()
        got = pa.concat_tables(list(rd.read_parquet(url, filesystem=fs, columns=["c7"]).iter_internal_blocks()))
        assert got.column("c7").equals(table.column("c7"))
        assert 0 < sum(fs.transferred) < size / 5, (sum(fs.transferred), size)
        fs.transferred.clear()
        assert rd.read_parquet(url, filesystem=fs).count() == 20_000
        assert 0 < sum(fs.transferred) < size / 5  # the footer alone
        fs.transferred.clear()
        whole = pa.concat_tables(list(rd.read_parquet(url, filesystem=fs).iter_internal_blocks()))
        # Every column: one whole fetch (after the planner read the footer: a read of few files
        # may cut them into runs of row groups).
        assert whole.equals(table) and fs.transferred[-1] == size and sum(fs.transferred[:-1]) < size / 5
    finally:
        mem.rm("/trl-parquet-projection", recursive=True)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_read_of_few_files_cuts_them_into_runs_of_row_groups(tmp_path, num_workers):
    rd.DataContext.get_current().num_workers = num_workers
    values = np.random.default_rng(0).random(500_000)  # ~4 MB in 10 row groups
    pq.write_table(pa.table({"v": values}), tmp_path / "a.parquet", row_group_size=50_000)
    tasks = plan_parquet(str(tmp_path))
    assert len(tasks) > 1 and sum(t.count_rows() for t in tasks) == 500_000  # several tasks, for several workers
    np.testing.assert_array_equal(rd.read_parquet(str(tmp_path)).to_pandas()["v"].to_numpy(), values)
    # Eight files or more: parallelism comes from the files; each stays whole.
    for i in range(1, 8):
        pq.write_table(pa.table({"v": values[:1000]}), tmp_path / f"b{i}.parquet", row_group_size=100)
    assert sum(len(t.paths) for t in plan_parquet(str(tmp_path))) == 8  # one unit (path) per file


# ---------------------------------------------------------------------------------- columns and schemas (as Ray)


def test_columns_naming_a_column_twice_are_refused(tmp_path):
    pq.write_table(pa.table({"x": [1]}), tmp_path / "a.parquet")
    with pytest.raises(ValueError, match=r"repeated: \['x'\]"):  # Ray: "duplicate column names"
        rd.read_parquet(str(tmp_path), columns=["x", "y", "x"])


def test_columns_order_the_output_partition_keys_included(tmp_path):
    """Ray's order: ``columns`` as given; without ``columns``, file columns, then partition keys,
    then ``path``."""
    for k in ("a", "b"):
        (tmp_path / f"k={k}").mkdir()
        pq.write_table(pa.table({"x": [1], "y": ["p"]}), tmp_path / f"k={k}" / "f.parquet")
    d = str(tmp_path)
    assert list(rd.read_parquet(d, columns=["k", "x"]).take(1)[0]) == ["k", "x"]
    assert list(rd.read_parquet(d, columns=["y", "k", "x"]).take(1)[0]) == ["y", "k", "x"]
    assert rd.read_parquet(d, columns=["y", "k", "x"]).columns() == ["y", "k", "x"]
    assert list(rd.read_parquet(d, columns=["k", "x"], include_paths=True).take(1)[0]) == ["k", "x", "path"]
    assert list(rd.read_parquet(d, include_paths=True).take(1)[0]) == ["x", "y", "k", "path"]
    assert rd.read_parquet(d, columns=["k", "nowhere"]).take_all() == [{"k": "a"}, {"k": "b"}]


@pytest.mark.parametrize("lacking", ["first", "second"])
def test_a_file_lacking_a_column_of_the_read_has_none_there(tmp_path, lacking):
    """Ray unifies the footers of a read's first files into its schema: every row has every column
    of it (``None`` where its file lacks the column), in separate blocks too."""
    full, short = pa.table({"x": [1], "y": ["p"]}), pa.table({"x": [2]})
    first, second = (short, full) if lacking == "first" else (full, short)
    pq.write_table(first, tmp_path / "a.parquet")
    pq.write_table(second, tmp_path / "b.parquet")
    y = [None, "p"] if lacking == "first" else ["p", None]
    for columns in (None, ["x", "y"]):
        ds = rd.read_parquet(str(tmp_path), columns=columns, override_num_blocks=2)
        assert [r["y"] for r in ds.take_all()] == y
        assert ds.schema().names == ["x", "y"] and ds.schema().types == [pa.int64(), pa.string()]
    assert rd.read_parquet(str(tmp_path), columns=["y", "x"]).take_all()[0] == {"y": y[0], "x": (1 if lacking == "second" else 2)}


def test_files_come_out_in_the_reads_unified_schema(tmp_path):
    pq.write_table(pa.table({"x": pa.array([1], pa.int32()), "y": ["p"]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"z": [3.0], "y": ["q"], "x": pa.array([2], pa.int64())}), tmp_path / "b.parquet")
    blocks = list(rd.read_parquet(str(tmp_path), override_num_blocks=2).iter_internal_blocks())
    want = pa.schema([("x", pa.int64()), ("y", pa.string()), ("z", pa.float64())])
    assert [b.schema for b in blocks] == [want, want]  # promoted, reordered, filled
    assert pa.concat_tables(blocks).to_pylist() == [{"x": 1, "y": "p", "z": None}, {"x": 2, "y": "q", "z": 3.0}]


def test_a_column_beyond_the_schema_sample_is_kept(tmp_path, monkeypatch):
    """The read's schema is that of its first files' footers (as in Ray), but a later file's extra
    column is kept in that file's rows (Ray leaves it out: its values would be lost)."""
    from torchray_loader.io import parquet as parquet_mod

    monkeypatch.setattr(parquet_mod, "SCHEMA_SAMPLE_FILES", 2)
    for i in range(2):
        pq.write_table(pa.table({"x": [i]}), tmp_path / f"{i}.parquet")
    pq.write_table(pa.table({"x": [2], "late": ["l"]}), tmp_path / "2.parquet")
    assert rd.read_parquet(str(tmp_path)).take_all() == [{"x": 0}, {"x": 1}, {"x": 2, "late": "l"}]


def test_include_paths_fills_path_for_files_without_a_path_column(tmp_path):
    pq.write_table(pa.table({"a": [1]}), tmp_path / "f0.parquet")
    pq.write_table(pa.table({"a": [5], "path": ["own"]}), tmp_path / "f1.parquet")
    rows = rd.read_parquet(str(tmp_path), include_paths=True).take_all()
    assert rows == [{"a": 1, "path": str(tmp_path / "f0.parquet")}, {"a": 5, "path": "own"}]  # file columns win


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_partition_value_stands_in_for_a_file_column_of_its_key(tmp_path, fresh_data_context, num_workers):
    """As in Ray and pyarrow: the path's x=9 wins over the file's column x (1), typed as that column."""
    fresh_data_context.num_workers = num_workers
    for key, table in (("9", pa.table({"x": [1]})), ("8", pa.table({"y": [2]}))):
        (tmp_path / f"x={key}").mkdir()
        pq.write_table(table, tmp_path / f"x={key}" / "p.parquet")
    ds = rd.read_parquet(str(tmp_path), partitioning="hive")
    assert sorted(ds.to_pandas()["x"].tolist()) == [8, 9]  # one type: int64
    assert sorted((r["x"], r["y"]) for r in ds.take_all()) == [(8, 2), (9, None)]
    assert rd.read_parquet(str(tmp_path), partitioning="hive", filter=pc.field("x") == 9).take_all() == [{"x": 9, "y": None}]
    one = rd.read_parquet(str(tmp_path / "x=9"), partitioning=rd.Partitioning("hive", base_dir=str(tmp_path)))
    assert one.take_all() == [{"x": 9}]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_filter_sees_a_missing_column_as_nulls_and_hive_keys_as_columns(tmp_path, fresh_data_context, num_workers):
    fresh_data_context.num_workers = num_workers
    for year, table in (("2023", pa.table({"a": [1, 2], "b": [4, 9]})), ("2024", pa.table({"a": [3]}))):
        (tmp_path / f"year={year}").mkdir()
        pq.write_table(table, tmp_path / f"year={year}" / "p.parquet")

    def read(filter, **kw):
        return sorted(r["a"] for r in rd.read_parquet(str(tmp_path), partitioning="hive", filter=filter, **kw).take_all())

    assert read(pc.field("b") > 5) == [2]  # the file without b: all null, so no row passes
    assert read(pc.field("b").is_null()) == [3]
    assert read([("b", ">", 5)]) == [2]
    assert read(pc.field("year") == "2024") == [3]
    assert read(pc.field("year") == "2023", columns=["a", "year"]) == [1, 2]


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("filter_", ["expression", "dnf"])
def test_a_filter_on_a_hive_key_left_out_of_columns(tmp_path, fresh_data_context, num_workers, filter_):
    fresh_data_context.num_workers = num_workers
    for year in (2023, 2024):
        (tmp_path / f"year={year}").mkdir()
        pq.write_table(pa.table({"x": [year, year + 1]}), tmp_path / f"year={year}" / "p.parquet")
    test = pc.field("year") == "2024" if filter_ == "expression" else [("year", "=", "2024")]
    ds = rd.read_parquet(str(tmp_path), partitioning="hive", columns=["x"], filter=test)
    assert ds.take_all() == [{"x": 2024}, {"x": 2025}]  # filtered on the key, which is not a column


def files_with_a_late_column(path: pathlib.Path, late: pa.Table) -> None:
    """Files 0 and 1 with a column x (and y all null); file 2 (past a sample of 2) ``late``."""
    for i in range(2):
        pq.write_table(pa.table({"x": [i], "y": pa.nulls(1)}), path / f"{i}.parquet")
    pq.write_table(late, path / "2.parquet")


def test_a_column_asked_for_that_only_files_past_the_sample_have_is_in_every_block(tmp_path, monkeypatch):
    from torchray_loader.io import parquet as parquet_mod

    monkeypatch.setattr(parquet_mod, "SCHEMA_SAMPLE_FILES", 2)
    files_with_a_late_column(tmp_path, pa.table({"x": [2], "late": ["l"]}))
    ds = rd.read_parquet(str(tmp_path), columns=["late", "x"], override_num_blocks=3)
    want = pa.schema([("late", pa.string()), ("x", pa.int64())])
    assert [b.schema for b in ds.iter_internal_blocks()] == [want] * 3
    assert ds.schema().names == ["late", "x"]
    assert ds.select_columns(["late"]).take_all() == [{"late": None}, {"late": None}, {"late": "l"}]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_column_all_null_in_the_sample_takes_a_later_files_type(tmp_path, monkeypatch, fresh_data_context, num_workers):
    from torchray_loader.io import parquet as parquet_mod

    fresh_data_context.num_workers = num_workers
    monkeypatch.setattr(parquet_mod, "SCHEMA_SAMPLE_FILES", 2)
    files_with_a_late_column(tmp_path, pa.table({"x": [2], "y": [5]}))
    ds = rd.read_parquet(str(tmp_path), override_num_blocks=3)
    assert {b.schema.field("y").type for b in ds.iter_internal_blocks()} == {pa.int64()}
    ds.write_parquet(str(tmp_path / "out"))
    assert pq.read_table(tmp_path / "out").column("y").to_pylist() == [None, None, 5]


def test_tensor_columns_of_two_dtypes_are_an_error_naming_the_file(tmp_path):
    """Ray refuses them too ("Can't unify tensor types with divergent scalar types")."""
    rd.from_items([{"t": np.ones((2, 2), np.float32)}]).write_parquet(str(tmp_path / "a"))
    rd.from_items([{"t": np.ones((2, 2), np.float64)}]).write_parquet(str(tmp_path / "b"))
    paths = [str(tmp_path / "a"), str(tmp_path / "b")]
    with pytest.raises(ReadError, match=r"b/part-000000.parquet: tensor column 't' .*dtype=double.*dtype=float\)"):
        rd.read_parquet(paths).to_pandas()
    ds = rd.read_parquet(paths, on_read_error="skip", read_error_budget=1)
    assert ds.to_pandas().shape == (1, 1)


def test_only_the_selected_columns_of_files_must_unify(tmp_path):
    pq.write_table(pa.table({"a": [1], "b": [1]}), tmp_path / "f0.parquet")
    pq.write_table(pa.table({"a": ["s"], "b": [1.5]}), tmp_path / "f1.parquet")  # a: string here
    ds = rd.read_parquet(str(tmp_path), columns=["b"])
    assert ds.take_all() == [{"b": 1.0}, {"b": 1.5}]
    with pytest.raises(ReadError, match="f1.parquet: schema conflicts"):
        rd.read_parquet(str(tmp_path)).take_all()


def test_the_scan_for_a_columns_type_reads_a_bounded_number_of_footers(tmp_path, monkeypatch):
    """A column null in every file would otherwise have every footer read at planning time."""
    from torchray_loader.io import parquet as parquet_mod

    monkeypatch.setattr(parquet_mod, "SCHEMA_SAMPLE_FILES", 2)
    monkeypatch.setattr(parquet_mod, "SCHEMA_SCAN_MAX_FILES", 4)
    for i in range(10):
        pq.write_table(pa.table({"x": [i], "y": pa.nulls(1)}), tmp_path / f"{i}.parquet")
    read = []
    footer_schema = parquet_mod._footer_schema
    monkeypatch.setattr(parquet_mod, "_footer_schema", lambda fs, path: read.append(path) or footer_schema(fs, path))
    ds = rd.read_parquet(str(tmp_path))
    assert len(read) == 2 + 4
    assert ds.count() == 10 and ds.schema().types[1] == pa.null()


def test_a_list_or_struct_column_empty_in_the_sample_takes_a_later_files_type(tmp_path, monkeypatch):
    from torchray_loader.io import parquet as parquet_mod

    monkeypatch.setattr(parquet_mod, "SCHEMA_SAMPLE_FILES", 2)
    for i in range(2):
        empty = pa.table({"l": pa.array([[]], pa.list_(pa.null())), "s": pa.array([{"a": None}], pa.struct([("a", pa.null())]))})
        pq.write_table(empty, tmp_path / f"{i}.parquet")
    pq.write_table(pa.table({"l": [[1, 2]], "s": [{"a": 5}]}), tmp_path / "2.parquet")
    ds = rd.read_parquet(str(tmp_path), override_num_blocks=3)
    assert [r["l"] for r in ds.take_all()] == [[], [], [1, 2]]
    assert {b.schema.field("s").type for b in ds.iter_internal_blocks()} == {pa.struct([("a", pa.int64())])}
