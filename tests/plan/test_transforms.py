"""run_chain: a read's ObjectBlocks reach row and batch UDFs as the objects themselves; every other
transform, and the chain's output, sees Arrow tables."""

from __future__ import annotations

import pyarrow as pa
import pytest

from torchray_loader.blocks import ObjectBlock
from torchray_loader.plan.transforms import Filter, MapBatches, MapRows, SelectColumns, run_chain

SEEN: list = []


def record_batch(batch):
    SEEN.append(batch)
    return {"n": [len(x) for x in batch["item"]]}


def record_row(row):
    SEEN.append(row["item"])
    return {"n": len(row["item"])}


def keep_all(row):
    return True


def _block():
    return ObjectBlock("item", [[1], [1, 2], [1, 2, 3]])


def test_batch_udf_gets_the_objects_and_the_output_is_arrow():
    SEEN.clear()
    block = _block()
    out = list(run_chain((MapBatches(record_batch, batch_size=2),), [block]))
    assert all(isinstance(t, pa.Table) for t in out)
    assert [n for t in out for n in t.column("n").to_pylist()] == [1, 2, 3]
    assert [len(b["item"]) for b in SEEN] == [2, 1]  # batch_size slices the block
    assert SEEN[0]["item"][1] is block.values[1]


def test_row_udf_gets_the_objects():
    SEEN.clear()
    block = _block()
    out = list(run_chain((MapRows(record_row),), [block]))
    assert out[0].column("n").to_pylist() == [1, 2, 3]
    assert all(a is b for a, b in zip(SEEN, block.values, strict=True))


def test_other_transforms_and_the_output_get_tables():
    out = list(run_chain((Filter(keep_all), SelectColumns(("item",))), [_block()]))
    assert len(out) == 1 and isinstance(out[0], pa.Table) and out[0].num_rows == 3
    passthrough = list(run_chain((), [_block()]))
    assert isinstance(passthrough[0], pa.Table) and passthrough[0].column_names == ["item"]


def _sizes(batch):
    return {"n": [len(batch["x"])] * len(batch["x"]), "x": batch["x"]}


def test_map_batches_cuts_exact_batches_across_a_tasks_blocks():
    blocks = [pa.table({"x": list(range(a, b))}) for a, b in [(0, 2), (2, 3), (3, 10), (10, 10), (10, 11)]]
    out = pa.concat_tables(run_chain([MapBatches(_sizes, batch_size=4)], blocks))
    assert out.column("x").to_pylist() == list(range(11))  # every row once, in order
    assert out.column("n").to_pylist() == [4] * 8 + [3] * 3


def test_blocks_whose_schemas_do_not_concatenate_are_batched_on_their_own():
    blocks = [pa.table({"x": [1]}), pa.table({"x": ["a", "b"]})]
    out = list(run_chain([MapBatches(_sizes, batch_size=4)], blocks))
    assert [b.column("n").to_pylist() for b in out] == [[1], [2, 2]]


def test_an_empty_input_still_reaches_the_function_once():
    empty = pa.table({"x": pa.array([], pa.int64())})
    out = list(run_chain([MapBatches(_sizes, batch_size=4)], [empty]))
    assert [b.num_rows for b in out] == [0] and out[0].column_names == ["n", "x"]


def _with_z(row):
    return {**row, "z": 1}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_column_operations_after_a_row_map_of_an_empty_file(tmp_path, num_workers):
    import pyarrow.parquet as pq

    import torchray_loader as rd

    rd.DataContext.get_current().num_workers = num_workers
    pq.write_table(pa.table({"id": pa.array([], pa.int64())}), tmp_path / "a.parquet")  # sorts first: no rows
    pq.write_table(pa.table({"id": [1, 2]}), tmp_path / "b.parquet")
    mapped = rd.read_parquet(str(tmp_path)).map(_with_z)
    assert mapped.drop_columns(["z"]).take_all() == [{"id": 1}, {"id": 2}]
    assert mapped.select_columns(["z"]).take_all() == [{"z": 1}, {"z": 1}]
    assert mapped.rename_columns({"z": "w"}).take_all() == [{"id": 1, "w": 1}, {"id": 2, "w": 1}]
    with pytest.raises(ValueError, match="no column") as info:  # a real missing column names its operator
        mapped.drop_columns(["nope"]).take_all()
    assert "DropColumns" in str(info.value.__cause__)
