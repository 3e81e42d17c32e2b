"""Block helpers: row gathers equal Arrow's take, whatever the chunking."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from torchray_loader.blocks import (
    block_from_batch,
    block_to_batch,
    column_from_values,
    column_to_numpy,
    concat_blocks,
    take_rows,
)


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


def temporal_table() -> pa.Table:
    import datetime

    return pa.table({
        "ns": pa.array([1_700_000_000_123_456_789], pa.timestamp("ns")),
        "ns_utc": pa.array([1_700_000_000_123_456_789], pa.timestamp("ns", tz="UTC")),
        "us": pa.array([1_700_000_000_123_456], pa.timestamp("us")),
        "us_utc": pa.array([1_700_000_000_123_456], pa.timestamp("us", tz="UTC")),
        "date": pa.array([datetime.date(2024, 1, 2)], pa.date32()),
        "dur_ns": pa.array([123_456_789], pa.duration("ns")),
        "dur_us": pa.array([123_456], pa.duration("us")),
    })


def describe_row(row: dict) -> dict:
    """``map`` UDF: each value's type and value, as the UDF sees them."""
    return {k: repr((type(v).__name__, v)) for k, v in row.items()}


def same_row(row: dict) -> dict:
    return row


def test_temporal_rows_hold_arrows_python_values_as_rays_do():
    """Ray's rows (``take``, ``iter_rows``, the row ``map`` gets) hold Arrow's ``as_py`` values:
    ``pd.Timestamp``/``pd.Timedelta`` for nanoseconds, ``datetime``/``date``/``timedelta`` otherwise,
    time zones kept; numpy's ``tolist`` would make a ``timestamp[ns]`` an int and drop zones."""
    import torchray_loader as rd

    t = temporal_table()
    want = t.to_pylist()
    assert want[0]["ns"].nanosecond == 789 and type(want[0]["ns"]).__name__ == "Timestamp"
    assert want[0]["us_utc"].tzinfo is not None and type(want[0]["dur_ns"]).__name__ == "Timedelta"
    ds = rd.from_arrow(t)
    assert ds.take(1) == want and list(ds.iter_rows()) == want
    assert [type(v) for v in ds.take(1)[0].values()] == [type(v) for v in want[0].values()]
    assert ds.map(describe_row).take(1) == [describe_row(want[0])]


def test_temporal_values_returned_by_map_keep_unit_and_zone():
    import torchray_loader as rd

    t = temporal_table()
    back = rd.from_arrow(t).map(same_row)
    assert back.take(1) == t.to_pylist()
    types = dict(zip(back.schema().names, back.schema().types, strict=True))
    assert types["ns"] == pa.timestamp("ns") and types["ns_utc"] == pa.timestamp("ns", tz="UTC")
    assert types["us_utc"] == pa.timestamp("us", tz="UTC") and types["dur_ns"] == pa.duration("ns")


def test_pandas_batches_keep_a_timestamps_zone_and_a_dates_type():
    import datetime

    import pandas as pd

    stamp = pd.Timestamp("2024-01-02 12:04:05", tz="Asia/Tokyo")
    table = pa.table({
        "t": pa.array([stamp.to_pydatetime()], pa.timestamp("us", tz="Asia/Tokyo")),
        "d": pa.array([datetime.date(2024, 1, 2)], pa.date32()),
    })
    df = block_to_batch(table, "pandas")
    assert df["t"][0] == stamp and str(df["t"][0].tz) == "Asia/Tokyo"
    assert df["d"][0] == datetime.date(2024, 1, 2)
    assert block_from_batch(df).schema == table.schema  # an identity map_batches keeps the types


STAMP_NS = 1_704_164_645_123_456_789  # 2024-01-02 03:04:05.123456789 UTC


def stamp_in_zone_by_block(row: dict) -> dict:
    """``map`` UDF: the same instant in UTC for rows 0-1, in Tokyo for rows 2-3 (other blocks)."""
    import pandas as pd

    return {"v": pd.Timestamp(STAMP_NS + row["id"], tz="UTC" if row["id"] < 2 else "Asia/Tokyo")}


def stamp_zoned_then_naive(row: dict) -> dict:
    import pandas as pd

    stamp = pd.Timestamp(STAMP_NS + row["id"])
    return {"v": stamp.tz_localize("UTC") if row["id"] < 2 else stamp}


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("num_blocks", [1, 2])
@pytest.mark.parametrize("udf", [stamp_in_zone_by_block, stamp_zoned_then_naive])
def test_map_timestamps_of_several_zones_merge_as_naive_utc_instants_as_rays(udf, num_blocks, num_workers):
    """Ray's row ``map`` makes zoned ``pd.Timestamp``s naive UTC ``timestamp[ns]``; here a zone is
    kept while one zone is all there is, and where zones differ (in one block, or between blocks that
    a batch or ``to_pandas`` merges) the values become Ray's naive UTC instants."""
    import pandas as pd

    import torchray_loader as rd

    rd.DataContext.get_current().num_workers = num_workers
    ds = rd.range(4, override_num_blocks=num_blocks).map(udf)
    want = [pd.Timestamp(STAMP_NS + i) for i in range(4)]
    [batch] = ds.iter_batches(batch_size=4, batch_format="pyarrow")
    assert batch.schema.field("v").type == pa.timestamp("ns") and batch.column("v").to_pylist() == want
    [batch] = ds.iter_batches(batch_size=4)
    assert batch["v"].tolist() == [t.value for t in want]  # datetime64[ns] as ints
    assert ds.to_pandas()["v"].tolist() == want
    assert [r["v"].value for r in ds.take_all()] == [t.value for t in want]  # each row's instant


def test_concat_blocks_unifies_zones_and_ragged_tensors_and_names_what_it_cannot():
    zoned = pa.table({"v": pa.array([STAMP_NS], pa.timestamp("ns", tz="Asia/Tokyo"))})
    naive_us = pa.table({"v": pa.array([STAMP_NS // 1000], pa.timestamp("us"))})
    merged = concat_blocks([zoned, naive_us])
    assert merged.schema.field("v").type == pa.timestamp("ns")
    assert merged.column("v").cast(pa.int64()).to_pylist() == [STAMP_NS, STAMP_NS // 1000 * 1000]
    ragged = block_from_batch({"t": [np.zeros(1), np.zeros(2)]})
    fixed = block_from_batch({"t": np.ones((1, 3))})
    assert [a.shape for a in column_to_numpy(concat_blocks([ragged, fixed]).column("t"))] == [(1,), (2,), (3,)]
    with pytest.raises(ValueError, match=r"Field v .*timestamp\[ns, tz=Asia/Tokyo\] vs string"):
        concat_blocks([zoned, pa.table({"v": ["x"]})])
