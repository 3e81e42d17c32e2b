"""Block helpers: row gathers equal Arrow's take, whatever the chunking."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from torchray_loader.blocks import column_from_values, take_rows


def _chunked_table(sizes):
    start, pieces = 0, []
    for n in sizes:
        images = np.arange(start * 6, (start + n) * 6, dtype=np.float32).reshape(n, 2, 3)
        pieces.append(pa.table({"image": column_from_values(images) if n else column_from_values(np.zeros((0, 2, 3), np.float32)),
                                "id": np.arange(start, start + n)}))
        start += n
    return pa.concat_tables(pieces)


@pytest.mark.parametrize("sizes", [[10], [4, 0, 7, 9], [1] * 12])
@pytest.mark.parametrize("fraction", [0.1, 0.4, 1.0])
def test_take_rows_equals_arrow_take(sizes, fraction):
    table = _chunked_table(sizes)
    indices = np.random.default_rng(0).permutation(table.num_rows)[: max(1, int(table.num_rows * fraction))]
    got = take_rows(table, indices)
    want = table.take(indices)
    assert got.schema == want.schema
    assert got.column("id").to_pylist() == want.column("id").to_pylist()
    assert np.array_equal(got.column("image").combine_chunks().to_numpy_ndarray(),
                          want.column("image").combine_chunks().to_numpy_ndarray())


# ------------------------------------------------------------------ nulls and lists, as Ray gives them


def _pandas_dtypes(df):
    import pandas as pd

    return pd.DataFrame({k: [str(v)] for k, v in df.dtypes.items()})


def test_pandas_columns_with_nulls_round_trip_as_nulls():
    import pandas as pd

    import torchray_loader as rd

    df = pd.DataFrame({"i": pd.array([1, None], dtype="Int64"), "s": pd.Series(["x", None], dtype="str"), "n": [1, 2]})
    assert rd.from_pandas(df).take_all() == [{"i": 1, "s": "x", "n": 1}, {"i": None, "s": None, "n": 2}]
    rows = [{"i": 1, "s": "a"}, {"i": None, "s": None}]
    ds = rd.from_items(rows, override_num_blocks=1)
    assert ds.map_batches(lambda df: df, batch_format="pandas").take_all() == rows
    dtypes = ds.map_batches(_pandas_dtypes, batch_format="pandas").take_all()[0]
    assert dtypes == {"i": "int64[pyarrow]", "s": "string[pyarrow]"}  # Ray's dtypes for columns with nulls


def test_rows_hold_python_lists_and_none():
    from torchray_loader.blocks.block import block_to_rows

    t = pa.table({"l": [[1, 2], [3]], "f": [1.5, None], "t": column_from_values([np.zeros(2), np.ones(2)])})
    rows = list(block_to_rows(t))
    assert rows[0]["l"] == [1, 2] and type(rows[0]["l"]) is list and rows[1]["f"] is None
    assert isinstance(rows[1]["t"], np.ndarray) and rows[1]["t"].tolist() == [1.0, 1.0]  # tensors stay arrays


def test_rows_hold_python_scalars_of_every_column_kind():
    import datetime
    import types

    from torchray_loader.blocks.block import block_from_rows, block_to_rows

    objects = column_from_values([np.float32(1.5), {"k": 1}])  # a Python-object column
    t = pa.table({
        "i": pa.array([1, 2], pa.int32()), "b": [True, False], "s": ["x", "y"],
        "d": pa.array([datetime.date(2020, 1, 2)] * 2), "o": objects,
        "v": column_from_values([np.zeros(1), np.ones(2)]),
    })
    rows = list(block_to_rows(t))
    assert [type(rows[0][k]) for k in "ibsd"] == [int, bool, str, datetime.date]
    assert rows[0]["o"] == 1.5 and type(rows[0]["o"]) is float and rows[1]["o"] == {"k": 1}
    assert [r["v"].shape for r in rows] == [(1,), (2,)]
    assert list(block_to_rows(pa.table({"a": [1, 2]}).drop_columns(["a"]))) == [{}, {}]
    # Rows in any key order, or Mappings that are not dicts, make one block.
    mixed = [{"a": 1, "b": 2}, {"b": 3, "a": 4}, types.MappingProxyType({"a": 5, "b": 6})]
    assert block_from_rows(mixed).to_pylist() == [{"a": 1, "b": 2}, {"a": 4, "b": 3}, {"a": 5, "b": 6}]
    with pytest.raises(TypeError, match="dict per row, got list"):
        block_from_rows([{"a": 1}, [1]])
    arrays = block_from_rows([{"x": np.zeros(2)}, {"x": 1.0}])  # mixed arrays and scalars: objects
    assert [r["x"] for r in block_to_rows(arrays)][1] == 1.0
