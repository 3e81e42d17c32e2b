"""blocks.ownership: a UDF's return value is fresh only when nothing else can reach its memory."""

from __future__ import annotations

import gc

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

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
