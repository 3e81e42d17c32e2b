"""Arrow batches -> tensors: a run of batches converts to the same values as batch by batch."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from torchray_loader.blocks.tensors import column_from_values
from torchray_loader.iteration import BatchRun, iter_batch_runs
from torchray_loader.pytorch.convert import ParentCache


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


def test_convert_run_off_the_parents_grid_and_pieces():
    table = _table(20).select(["id", "image"])
    cache = ParentCache(dtypes={"id": torch.float64})
    first = cache.convert_run(BatchRun(table, False, 1, 3, 2))  # grid starts at row 1, step 3
    off_grid = cache.convert_run(BatchRun(table, False, 2, 3, 2))
    other_size = cache.convert_run(BatchRun(table, False, 10, 4, 2))
    assert [b["id"].tolist() for b in first] == [[1, 2, 3], [4, 5, 6]]
    assert [b["id"].tolist() for b in off_grid] == [[2, 3, 4], [5, 6, 7]]
    assert [b["id"].tolist() for b in other_size] == [[10, 11, 12, 13], [14, 15, 16, 17]]
    assert all(b["id"].dtype == torch.float64 for b in first + off_grid + other_size)
    assert torch.equal(other_size[1]["image"], torch.from_numpy(np.arange(84, 108, dtype=np.float32).reshape(4, 2, 3)))


def test_convert_run_of_a_cached_parent_copies_and_a_fresh_one_does_not():
    table = _table(8).select(["id"])
    kept = ParentCache(dtypes=None).convert_run(BatchRun(table, False, 0, 4, 2))
    kept[0]["id"][0] = 100
    assert table.column("id")[0].as_py() == 0
    fresh = table.take(np.arange(8))  # new memory, as a shuffle window's
    view = ParentCache(dtypes=None).convert_run(BatchRun(fresh, True, 0, 4, 2))
    view[1]["id"][0] = 100
    assert fresh.column("id")[4].as_py() == 100
