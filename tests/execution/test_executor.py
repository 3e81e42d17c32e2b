"""The executor's task bodies (``execution/executor.py``): blocks as they leave a task."""

from __future__ import annotations

import functools
import os

import numpy as np
import pyarrow as pa
import pytest

import torchray_loader as rd
from torchray_loader.blocks import column_from_values, column_to_numpy
from torchray_loader.execution import shm
from torchray_loader.execution.executor import _tensors_in_transfer_file, execute

pytestmark = pytest.mark.timeout(60)


def _per_row_images(n: int = 8, shape: tuple[int, ...] = (256, 256, 3)) -> pa.Table:
    """A read task's block: one chunk per image (each file made a one-row table)."""
    rng = np.random.default_rng(0)
    rows = [pa.table({"image": column_from_values(rng.integers(0, 256, (1, *shape), dtype=np.uint8)),
                      "path": [f"{i}.jpg"]}) for i in range(n)]
    return pa.concat_tables(rows)


def test_chunked_tensor_column_becomes_one_chunk_inside_the_transfer_file():
    block = _per_row_images()
    assert block.column("image").num_chunks == 8
    with shm.task_arena() as arena:
        out = _tensors_in_transfer_file(block)
        assert out.column("image").num_chunks == 1 and out.column("path").equals(block.column("path"))
        assert out.schema == block.schema
        np.testing.assert_array_equal(column_to_numpy(out.column("image")), column_to_numpy(block.column("image")))
        values = out.column("image").chunk(0).storage.values.buffers()[1]
        assert arena.span_of(memoryview(values)) is not None  # built in place: the transfer copies nothing
        ref = shm.dumps_to_shm(out, arena=arena)
    back = shm.loads_from_shm(ref)
    assert back.equals(block)


def test_unchanged_without_a_transfer_file_or_when_small_or_null():
    block = _per_row_images()
    assert _tensors_in_transfer_file(block) is block  # inline task: no arena
    small = _per_row_images(shape=(4, 4))
    with_nulls = pa.concat_tables([block, pa.table({
        "image": pa.nulls(1, block.schema.field("image").type), "path": ["x.jpg"]
    })])
    with shm.task_arena():
        assert _tensors_in_transfer_file(small) is small
        assert _tensors_in_transfer_file(with_nulls) is with_nulls


# ------------------------------------------------------------------------- Read.shared objects

#: Times a CountedPickles was pickled in this (the consumer) process.
PICKLES = []


class CountedPickles:
    """A stand-in for a user's large dataset: counts how often it is pickled."""

    def __init__(self, values):
        self.values = values

    def __reduce__(self):
        PICKLES.append(1)
        return (CountedPickles, (self.values,))


def _read_slice(ref, start, stop):
    yield pa.table({"v": ref.get().values[start:stop]})


def _shared_read(n_tasks: int = 12):
    from torchray_loader.execution.pool import SharedRef
    from torchray_loader.io.read_task import ReadTask
    from torchray_loader.plan import Read

    obj = CountedPickles(list(range(10 * n_tasks)))
    ref = SharedRef("counted-doc", obj)
    tasks = tuple(ReadTask(functools.partial(_read_slice, ref, 10 * i, 10 * i + 10), num_rows=10) for i in range(n_tasks))
    return Read(tasks, "ReadCounted", shared={ref.key: obj})


@pytest.mark.parametrize("nw", [0, 2])
def test_shared_objects_reach_each_worker_once_not_with_every_task(nw, fresh_data_context):
    fresh_data_context.num_workers = nw
    PICKLES.clear()
    plan = _shared_read()
    rows = [v for block in execute(plan, fresh_data_context) for v in block.column("v").to_pylist()]
    assert rows == list(range(120))
    assert len(PICKLES) <= nw  # 12 tasks; at most once per worker (inline: never)


def test_shared_objects_survive_plan_rewrites(fresh_data_context):
    """Block-order shuffles and shards rebuild the Read: its shared objects go along."""
    fresh_data_context.num_workers = 2
    ds = rd.Dataset(_shared_read())
    assert sorted(r["v"] for r in ds.randomize_block_order(seed=3).iter_rows()) == list(range(120))
    shards = ds.split(2)
    assert sorted(r["v"] for shard in shards for r in shard.iter_rows()) == list(range(120))


def _pid_rows(batch):
    return {"pid": [os.getpid()] * len(batch["id"])}


def test_task_workers_start_as_tasks_wait_for_them(fresh_data_context):
    """A read of one task starts one worker of two; a read of many uses both."""
    from torchray_loader.execution.executor import _Execution
    from torchray_loader.execution.stats import ExecutionStats

    fresh_data_context.num_workers = 2
    one = _Execution(fresh_data_context, ExecutionStats(), {})
    try:
        pool = one.task_pool()
        assert list(pool.imap(abs, [-3])) == [3]
        started = [w for w in pool._workers if w is not None] + pool._retired  # retired: idle since
        assert len(started) == 1
    finally:
        for p in one.pools:
            p.close()
    pids = rd.range(64, override_num_blocks=16).map_batches(_pid_rows, batch_size=None).to_pandas()["pid"]
    assert pids.nunique() == 2


def test_a_ref_without_its_object_names_it():
    import pickle

    from torchray_loader.errors import TorchRayError
    from torchray_loader.execution.pool import SharedRef

    ref = pickle.loads(pickle.dumps(SharedRef("nowhere-doc", object())))
    with pytest.raises(TorchRayError, match="nowhere-doc"):
        ref.get()


def _batch_size_column(batch):
    return {"item": batch["item"], "n": np.full(len(batch["item"]), len(batch["item"]))}


class _BatchSizeModel:
    def __call__(self, batch):
        return _batch_size_column(batch)


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("actors", [False, True])
def test_small_blocks_are_bundled_into_full_batches(num_workers, actors):
    """As in Ray: map_batches(batch_size=n) over blocks smaller than n still sees n-row batches."""
    rd.DataContext.get_current().num_workers = num_workers
    ds = rd.from_items(list(range(10)), override_num_blocks=10)
    fn = _BatchSizeModel if actors else _batch_size_column
    kw = {"concurrency": 2} if actors else {}
    rows = ds.map_batches(fn, batch_size=3, **kw).take_all()
    assert [r["item"] for r in rows] == list(range(10))
    assert [r["n"] for r in rows] == [3] * 9 + [1]


# ------------------------------------------------------------------------- limit pushed into reads


def _fails_past_first_group(row):
    """A row map that fails on every row past the first row group (ids 0-9): a ``take`` that needs
    only those rows must never reach the others."""
    if row["id"] >= 10:
        raise AssertionError(f"row {row['id']} was read and mapped: the limit did not reach the read")
    return {"id": row["id"], "twice": row["id"] * 2}


def _even(row):
    return row["id"] % 2 == 0


@pytest.fixture(name="row_groups")
def row_groups_fixture(tmp_path):
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": np.arange(50)}), tmp_path / "a.parquet", row_group_size=10)
    pq.write_table(pa.table({"id": np.arange(50, 60)}), tmp_path / "b.parquet")
    return tmp_path


@pytest.mark.parametrize("num_workers", [0, 2])
def test_take_after_row_maps_reads_only_the_rows_it_needs(row_groups, num_workers):
    rd.DataContext.get_current().num_workers = num_workers  # the test's own context (conftest)
    ds = rd.read_parquet(str(row_groups)).map(_fails_past_first_group).select_columns(["twice"])
    assert ds.take(3) == [{"twice": 0}, {"twice": 2}, {"twice": 4}]
    assert [r["twice"] for r in ds.limit(10).take_all()] == list(range(0, 20, 2))
    with pytest.raises(AssertionError, match="did not reach"):  # an 11th row is read and mapped
        ds.limit(11).take_all()


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("n", [0, 1, 9, 10, 11, 49, 50, 51, 60, 100])
def test_limited_reads_give_the_first_rows_of_the_full_read(row_groups, num_workers, n):
    rd.DataContext.get_current().num_workers = num_workers
    ds = rd.read_parquet(str(row_groups), override_num_blocks=2)
    ids = [r["id"] for r in ds.take_all()]
    assert [r["id"] for r in ds.limit(n).take_all()] == ids[:n]
    assert ds.limit(n).count() == min(n, 60)
    assert [r["id"] for r in ds.limit(n).limit(n + 5).take_all()] == ids[:n]
    assert [r["id"] for r in ds.union(ds).limit(n).take_all()] == (ids * 2)[:n]
    # Not one for one: the limit stays above a filter (its rows come from anywhere in the file).
    assert [r["id"] for r in ds.filter(_even).limit(n).take_all()] == [i for i in ids if i % 2 == 0][:n]
