"""ObjectBlock: a read's Python objects handed to a row or batch UDF without a pickle round trip,
and the same Arrow block as before for everything else."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from torchray_loader.blocks import ObjectBlock, as_table, as_tables, block_to_batch, block_to_rows
from torchray_loader.blocks.tensors import _object_column, column_to_numpy


def _values():
    return [(np.arange(3) + i, i) for i in range(5)]  # tuples: each must stay one element


def test_numpy_batch_holds_the_objects_themselves():
    values = _values()
    batch = block_to_batch(ObjectBlock("item", values), "numpy", writable=True)
    assert list(batch) == ["item"]
    arr = batch["item"]
    assert arr.dtype == object and arr.shape == (5,)
    assert all(a is v for a, v in zip(arr, values, strict=True))
    assert block_to_batch(ObjectBlock("item", values), "default")["item"][2] is values[2]


def test_rows_hold_the_objects_themselves():
    values = _values()
    rows = list(block_to_rows(ObjectBlock("item", values), writable=True))
    assert [r["item"] for r in rows] == values and rows[1]["item"] is values[1]


@pytest.mark.parametrize("fmt", ["pyarrow", "pandas"])
def test_other_formats_see_the_arrow_block(fmt):
    values = _values()
    via_block = block_to_batch(ObjectBlock("item", values), fmt)
    via_table = block_to_batch(pa.table({"item": _object_column(values)}), fmt)
    if fmt == "pyarrow":  # the same schema and values (samples of one layout are pickled in bulk)
        assert via_block.schema.equals(via_table.schema)
        decoded = [column_to_numpy(t.column("item")) for t in (via_block, via_table)]
        assert [[(a.tolist(), b) for a, b in items] for items in decoded] == [[(a.tolist(), b) for a, b in values]] * 2
    else:
        assert [(a.tolist(), b) for a, b in via_block["item"]] == [(a.tolist(), b) for a, b in via_table["item"]]


def test_table_equals_a_pickled_object_column_and_slices_agree():
    values = _values()
    block = ObjectBlock("item", values)
    table = as_table(block)
    assert table.schema.equals(pa.table({"item": _object_column(values)}).schema)
    back = column_to_numpy(table.column("item"))
    assert [(a.tolist(), b) for a, b in back] == [(a.tolist(), b) for a, b in values]
    assert block.num_rows == 5 and block.num_columns == 1
    assert block.slice(1, 2).values == values[1:3] and block.slice(3).values == values[3:]
    plain = pa.table({"a": [1]})
    assert as_table(plain) is plain
    assert [t.num_rows for t in as_tables([block, plain])] == [5, 1]
