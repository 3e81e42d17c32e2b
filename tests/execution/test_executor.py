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
