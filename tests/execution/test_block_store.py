"""``BlockStore``: in memory up to a budget, spilled to memory-mapped Arrow IPC files beyond it."""

from __future__ import annotations

import gc
import os
import pickle
import stat

import numpy as np
import pyarrow as pa
import pytest

from torchray_loader.blocks.tensors import column_from_values
from torchray_loader.context import DataContext
from torchray_loader.execution import execute
from torchray_loader.execution.block_store import BlockStore
from torchray_loader.execution.process_pool import ProcessPool
from torchray_loader.plan import InputBlocks, MapStage
from torchray_loader.plan.transforms import MapBatches

pytestmark = pytest.mark.timeout(60)


def _block(i: int, rows: int = 10_000) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(np.arange(i * rows, (i + 1) * rows)),
            "img": column_from_values(np.full((rows, 2, 2), i, dtype=np.uint8)),
        }
    )


def _mapped(path: str) -> list[tuple[int, int]]:
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            if path in line:
                lo, hi = line.split()[0].split("-")
                out.append((int(lo, 16), int(hi, 16)))
    return out


def test_keeps_blocks_in_memory_within_budget(tmp_path):
    blocks = [_block(i) for i in range(4)]
    store = BlockStore(blocks, budget_bytes=10 << 20, spill_dir=str(tmp_path))
    assert len(store) == 4 and store.num_spilled == 0
    assert all(store[i] is blocks[i] for i in range(4))
    assert store.num_rows == 40_000
    assert store.size_bytes == sum(b.get_total_buffer_size() for b in blocks) == store.memory_bytes
    assert os.listdir(tmp_path) == []  # nothing written


def test_spills_beyond_budget_and_maps_back_zero_copy(tmp_path):
    blocks = [_block(i) for i in range(5)]
    one = blocks[0].get_total_buffer_size()
    store = BlockStore(budget_bytes=2 * one, spill_dir=str(tmp_path))
    for b in blocks:
        store.append(b)
    assert store.num_spilled == 3 and store.memory_bytes == 2 * one
    (spill_dir,) = os.listdir(tmp_path)
    spill_dir = os.path.join(tmp_path, spill_dir)
    assert stat.S_IMODE(os.stat(spill_dir).st_mode) == 0o700
    files = sorted(os.listdir(spill_dir))
    assert len(files) == 3
    for name in files:
        assert stat.S_IMODE(os.stat(os.path.join(spill_dir, name)).st_mode) == 0o600
    assert [store[i].equals(blocks[i]) for i in range(5)] == [True] * 5
    assert store[3].schema == blocks[3].schema  # extension types survive
    assert store.size_bytes == 5 * one and store.num_rows == 50_000
    # Zero copy: the data of a spilled block lives in the file's mapping.
    table = store[4]
    address = table.column("id").chunk(0).buffers()[1].address
    ranges = [r for n in files for r in _mapped(os.path.join(spill_dir, n))]
    assert any(lo <= address < hi for lo, hi in ranges), "spilled block was read into the heap"


def test_directory_removed_on_gc_and_read_tables_stay_valid(tmp_path):
    store = BlockStore([_block(i) for i in range(3)], budget_bytes=0, spill_dir=str(tmp_path))
    kept = store[1]
    assert len(os.listdir(tmp_path)) == 1
    del store
    gc.collect()
    assert os.listdir(tmp_path) == []
    assert kept.equals(_block(1))  # still mapped: an unlinked file stays readable


def test_close_removes_files(tmp_path):
    store = BlockStore([_block(0)], budget_bytes=0, spill_dir=str(tmp_path))
    store.close()
    store.close()
    assert os.listdir(tmp_path) == [] and len(store) == 0


def test_default_budget_comes_from_context(tmp_path):
    ctx = DataContext(memory_budget_bytes=0)
    store = BlockStore([_block(0)], ctx=ctx, spill_dir=str(tmp_path))
    assert store.budget_bytes == 0 and store.num_spilled == 1


def test_pickling_sends_paths_not_bytes(tmp_path):
    blocks = [_block(i, rows=100_000) for i in range(3)]
    store = BlockStore(blocks, budget_bytes=0, spill_dir=str(tmp_path))
    data = pickle.dumps(store)
    assert len(data) < 4096, f"{len(data)} bytes: spilled blocks should travel as paths"
    copy = pickle.loads(data)
    assert len(copy) == 3 and all(copy[i].equals(blocks[i]) for i in range(3))
    del copy
    gc.collect()
    assert len(os.listdir(tmp_path)) == 1  # a copy never deletes the original's files
    assert store[2].equals(blocks[2])


def test_rejects_non_tables(tmp_path):
    store = BlockStore(budget_bytes=0, spill_dir=str(tmp_path))
    with pytest.raises(TypeError, match="pyarrow.Table"):
        store.append({"a": [1]})
    with pytest.raises(ValueError, match="budget_bytes"):
        BlockStore(budget_bytes=-1)


def _double(batch):
    return {"id": batch["id"] * 2}


def test_store_as_plan_input_through_worker_processes(tmp_path):
    blocks = [_block(i, rows=1000) for i in range(6)]
    store = BlockStore(blocks, budget_bytes=blocks[0].get_total_buffer_size() * 2, spill_dir=str(tmp_path))
    plan = MapStage(InputBlocks(store), (MapBatches(_double, batch_size=None),))
    ctx = DataContext(num_workers=2, start_method="fork")
    out = list(execute(plan, ctx))
    assert np.concatenate([b["id"].to_numpy() for b in out]).tolist() == [2 * i for i in range(6000)]
    # the store itself can be shipped to workers, which read spilled blocks from the same files
    with ProcessPool(2, ctx) as pool:
        rows = list(pool.imap(lambda i: store[i].num_rows, range(len(store))))
    assert rows == [1000] * 6
