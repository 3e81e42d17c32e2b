"""Arrow batches -> tensors: a run of batches converts to the same values as batch by batch."""

from __future__ import annotations

import gc

import numpy as np
import pyarrow as pa
import pytest
import torch

import torchray_loader as rd
from torchray_loader.blocks.tensors import column_from_values
from torchray_loader.iteration import BatchRun, iter_batch_runs
from torchray_loader.pytorch.convert import VIEWS_AT_ONCE, ParentCache


def _table(n: int) -> pa.Table:
    images = np.arange(n * 6, dtype=np.float32).reshape(n, 2, 3)
    return pa.table({"id": np.arange(n), "image": column_from_values(images), "name": [f"r{i}" for i in range(n)]})


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype
        else:
            assert a[k] == b[k]


@pytest.mark.parametrize("columns", [["id"], ["id", "image"], ["id", "image", "name"]])
@pytest.mark.parametrize("shuffle", [None, 16])
def test_convert_run_equals_per_batch_conversion(columns, shuffle):
    blocks = [_table(n).select(columns) for n in (10, 7, 30)]
    runs = list(iter_batch_runs(blocks, 4, shuffle_buffer_size=shuffle, seed=0, skip_batches=1))
    by_run = [out for run in runs for out in ParentCache(dtypes=None).convert_run(run)]
    cache = ParentCache(dtypes=None)
    by_batch = [cache.to_torch(bt) for run in runs for bt in run.batches()]
    assert len(by_run) == len(by_batch) == sum(r.count for r in runs)
    for a, b in zip(by_run, by_batch, strict=True):
        _same(a, b)


def test_convert_run_at_any_offset_and_batch_size_of_one_parent():
    table = _table(20).select(["id", "image"])
    cache = ParentCache(dtypes={"id": torch.float64})
    first = list(cache.convert_run(BatchRun(table, False, 1, 3, 2)))
    off_grid = list(cache.convert_run(BatchRun(table, False, 2, 3, 2)))
    other_size = list(cache.convert_run(BatchRun(table, False, 10, 4, 2)))
    assert [b["id"].tolist() for b in first] == [[1, 2, 3], [4, 5, 6]]
    assert [b["id"].tolist() for b in off_grid] == [[2, 3, 4], [5, 6, 7]]
    assert [b["id"].tolist() for b in other_size] == [[10, 11, 12, 13], [14, 15, 16, 17]]
    assert all(b["id"].dtype == torch.float64 for b in first + off_grid + other_size)
    assert torch.equal(other_size[1]["image"], torch.from_numpy(np.arange(84, 108, dtype=np.float32).reshape(4, 2, 3)))


def test_convert_run_of_a_cached_parent_copies_and_a_fresh_one_does_not():
    table = _table(8).select(["id"])
    kept = list(ParentCache(dtypes=None).convert_run(BatchRun(table, False, 0, 4, 2)))
    kept[0]["id"][0] = 100
    assert table.column("id")[0].as_py() == 0
    fresh = table.take(np.arange(8))  # new memory, as a shuffle window's
    view = list(ParentCache(dtypes=None).convert_run(BatchRun(fresh, True, 0, 4, 2)))
    view[1]["id"][0] = 100
    assert fresh.column("id")[4].as_py() == 100


def _live_tensors() -> int:
    return sum(isinstance(o, torch.Tensor) for o in gc.get_objects())


@pytest.mark.parametrize("columns", [1, 3, 2 * VIEWS_AT_ONCE])
def test_a_runs_views_are_made_a_few_at_a_time_when_iterated(columns):
    # Views made ahead for a whole block outlive young collections and trigger full ones (W2: ~0.2 s
    # each, every 1-2 epochs), so a run makes about VIEWS_AT_ONCE views (at least a batch) at a time.
    at_once = max(1, VIEWS_AT_ONCE // columns)
    count = 3 * at_once + 1
    table = pa.table({f"c{i}": np.arange(10 * count) for i in range(columns)})
    before = _live_tensors()
    batches = ParentCache(dtypes=None).convert_run(BatchRun(table, True, 0, 10, count))
    assert _live_tensors() - before <= columns  # the parent's columns
    it = iter(batches)
    first = next(it)
    assert _live_tensors() - before <= columns + at_once * columns
    rest = list(it)
    assert len(batches) == count == 1 + len(rest)
    assert [b["c0"].tolist() for b in [first, *rest]] == [list(range(10 * k, 10 * k + 10)) for k in range(count)]


def _ragged_tokens(row):
    return {"id": row["id"], "tok": np.arange(1 + row["id"] // 2)}


def test_a_batch_of_equal_shape_rows_is_a_tensor_whatever_the_block_holds():
    """A variable-shape column: a batch whose rows agree is stacked (as Ray does), one whose rows
    differ is a list of tensors; the block layout around the batch does not matter."""
    ds = rd.range(6, override_num_blocks=3).map(_ragged_tokens)
    for source in (ds, ds.repartition(1)):
        batches = list(source.iter_torch_batches(batch_size=2))
        assert [tuple(b["tok"].shape) for b in batches] == [(2, 1), (2, 2), (2, 3)]
    mixed = next(iter(ds.repartition(1).iter_torch_batches(batch_size=4)))["tok"]
    assert isinstance(mixed, list) and [t.tolist() for t in mixed] == [[0], [0], [0, 1], [0, 1]]
