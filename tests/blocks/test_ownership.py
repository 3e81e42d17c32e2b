"""blocks.ownership: a UDF's return value is fresh only when nothing else can reach its memory."""

from __future__ import annotations

import gc

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchray_loader.blocks.ownership import collecting_fresh, mark_fresh, ref_counts, sole_owner


def fresh_batch() -> dict:
    return {"x": np.arange(6, dtype=np.float32).reshape(3, 2), "label": ["a", "b", "c"], "n": [1, 2, 3]}


def check(udf) -> bool:
    """``sole_owner`` of what ``udf()`` returns, called as ``MapBatches`` calls it."""
    result = udf()
    counts = ref_counts(result)
    return sole_owner(result, counts)


def test_a_returned_dict_of_new_arrays_is_fresh():
    assert check(fresh_batch)  # its "x" is a reshape: a view of an array only it references
    assert check(lambda: {"x": np.stack([np.zeros(2), np.ones(2)])})
    assert check(lambda: {"s": np.array(["a", "b"]), "b": np.array([True, False])})


def test_a_dict_or_array_the_function_keeps_is_not():
    kept = fresh_batch()
    assert not check(lambda: kept)
    array = np.arange(3)
    assert not check(lambda: {"x": array})

    def tensor_over_the_array() -> dict:
        batch = fresh_batch()
        tensor_over_the_array.kept = torch.from_numpy(batch["x"])  # holds a reference to the array
        return batch

    assert not check(tensor_over_the_array)


def test_views_tensors_object_arrays_and_other_formats_are_not():
    base = np.arange(10)
    assert not check(lambda: {"x": base[2:]})  # a view of an array held elsewhere
    assert not check(lambda: {"x": base.reshape(2, 5)})
    assert not check(lambda: {"x": torch.arange(3)})
    assert not check(lambda: {"x": np.array([np.arange(2), np.arange(3)], dtype=object)})
    assert not check(lambda: {"x": [np.arange(2)]})  # a list's arrays may be used as they are
    assert not check(lambda: pd.DataFrame({"x": [1, 2]}))
    assert not check(lambda: pa.table({"x": [1, 2]}))


def test_marks_are_collected_per_task_and_only_there():
    outside = pa.table({"x": [1, 2]})
    mark_fresh(outside)  # no task is collecting: nothing is recorded anywhere
    with collecting_fresh() as fresh:
        block = pa.table({"x": [1, 2]})
        mark_fresh(block)
        with collecting_fresh() as inner:  # a nested task collects its own
            assert len(inner) == 0
    assert fresh.get(id(block)) is block and fresh.get(id(outside)) is None
    with collecting_fresh() as later:
        pass
    assert len(later) == 0  # a block marked by an earlier task is not fresh in a later one
    del block
    gc.collect()
    assert len(fresh) == 0  # a mark lives no longer than its block


class ReturnsInWays:
    """A ``map_batches`` function returning ``batch["id"]`` in a planned way per call, keeping a
    snapshot of everything it holds on to."""

    def __init__(self, ways: list[str]) -> None:
        self.ways = ways
        self.calls = 0
        self.held: list[tuple[object, np.ndarray]] = []  # (what it keeps, the values it must keep)

    def __call__(self, batch: dict) -> dict:
        way = self.ways[self.calls % len(self.ways)]
        self.calls += 1
        ids = batch["id"].copy()
        if way == "fresh":
            return {"id": ids}
        if way == "reshaped":
            return {"id": ids.reshape(-1, 1).reshape(-1)}  # views of a temporary only they reference
        if way == "kept_array":
            self.held.append((ids, ids.copy()))
            return {"id": ids}
        if way == "view_of_kept":
            whole = np.concatenate([ids, [0]])
            self.held.append((whole, whole.copy()))
            return {"id": whole[:-1]}
        kept = {"id": ids}  # "kept_dict"
        self.held.append((kept["id"], ids.copy()))
        return kept


WAYS = ["fresh", "reshaped", "kept_array", "view_of_kept", "kept_dict"]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(WAYS), min_size=1, max_size=6))
def test_a_training_loop_writing_its_batches_never_changes_what_the_function_keeps(ways):
    import torchray_loader as rd

    ctx = rd.DataContext.get_current()
    old, ctx.num_workers = ctx.num_workers, 0
    try:
        fn = ReturnsInWays(ways)
        ds = rd.range(60, override_num_blocks=3).map_batches(fn, batch_size=10)
        seen = []
        for batch in ds.iter_torch_batches(batch_size=10):
            seen.extend(batch["id"].tolist())
            batch["id"].fill_(-1)
    finally:
        ctx.num_workers = old
    assert seen == list(range(60))
    for held, values in fn.held:
        np.testing.assert_array_equal(held, values)
