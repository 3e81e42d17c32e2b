"""Tensor and object columns, schema printing, batch formats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from torchray_loader.blocks import (
    PythonObjectType,
    Schema,
    VariableShapeTensorType,
    block_from_batch,
    block_from_rows,
    block_to_batch,
    column_from_values,
    column_to_numpy,
    concat_blocks,
)


def test_fixed_shape_tensor_roundtrip_zero_copy():
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    col = column_from_values(arr)
    assert isinstance(col.type, pa.FixedShapeTensorType)
    back = column_to_numpy(col)
    assert back.shape == (2, 3, 4) and back.dtype == np.float32 and (back == arr).all()


def test_torch_tensor_becomes_numpy_column():
    col = column_from_values(torch.ones(3, 2, dtype=torch.float64))
    assert column_to_numpy(col).dtype == np.float64


def test_ragged_becomes_variable_shape():
    col = column_from_values([np.zeros((2, 3)), np.ones((1, 3))])
    assert isinstance(col.type, VariableShapeTensorType) and col.type.ndim == 2
    back = column_to_numpy(col)
    assert back[0].shape == (2, 3) and back[1].shape == (1, 3) and back[1].sum() == 3


def test_objects_and_strings():
    class Thing:
        def __eq__(self, other):
            return isinstance(other, Thing)

    col = column_from_values([Thing(), 1, "a"])
    assert isinstance(col.type, PythonObjectType)
    assert list(column_to_numpy(col)) == [Thing(), 1, "a"]
    assert column_from_values(["a", "b"]).type == pa.string()


def test_object_columns_carry_tensors_of_every_kind():
    samples = [
        (torch.rand(1, 4, 4), 5),  # a torchvision-style sample: written as a numpy array
        torch.arange(6).reshape(2, 3).T,  # non-contiguous
        torch.rand(2, requires_grad=True),  # these keep torch's own reduction:
        torch.ones(2, dtype=torch.bfloat16),
        torch.tensor([1 + 2j]).conj(),
        {"nested": [torch.tensor(3)], "fn": abs},
    ]
    back = list(column_to_numpy(column_from_values(samples)))
    assert torch.equal(back[0][0], samples[0][0]) and back[0][1] == 5
    assert torch.equal(back[1], samples[1])
    assert back[2].requires_grad and torch.equal(back[2].detach(), samples[2].detach())
    assert back[3].dtype == torch.bfloat16 and torch.equal(back[4].resolve_conj(), samples[4].resolve_conj())
    assert torch.equal(back[5]["nested"][0], torch.tensor(3)) and back[5]["fn"] is abs
    assert all(type(t) is torch.Tensor for t in (back[0][0], back[1], back[2], back[3]))


def test_schema_prints_like_ray():
    block = block_from_batch(
        {
            "image": np.zeros((2, 32, 32, 3), dtype=np.uint8),
            "f": np.zeros((2, 3, 10, 10), dtype=np.float32),
            "d": np.zeros((2, 2), dtype=np.float64),
            "r": [np.zeros(2, np.int32), np.zeros(3, np.int32)],
            "o": [object(), object()],
            "id": np.arange(2),
        }
    )
    assert str(Schema(block.schema)) == (
        "Column  Type\n"
        "------  ----\n"
        "image   numpy.ndarray(shape=(32, 32, 3), dtype=uint8)\n"
        "f       numpy.ndarray(shape=(3, 10, 10), dtype=float)\n"
        "d       numpy.ndarray(shape=(2,), dtype=double)\n"
        "r       numpy.ndarray(ndim=1, dtype=int32)\n"
        "o       <class 'object'>\n"
        "id      int64"
    )


def test_batch_formats_roundtrip():
    block = block_from_batch({"t": np.ones((3, 2), np.float32), "x": np.arange(3)})
    df = block_to_batch(block, "pandas")
    assert isinstance(df, pd.DataFrame) and len(df) == 3
    assert block_from_batch(df).schema == block.schema
    assert block_to_batch(block, "pyarrow") is block
    with pytest.raises(ValueError, match="batch_format"):
        block_to_batch(block, "arrow")


def test_block_from_rows_errors():
    with pytest.raises(TypeError, match="dict"):
        block_from_rows([1, 2])
    # Keys some rows lack are nulls there, as in Ray.
    assert block_from_rows([{"a": 1}, {"b": 2}]).to_pylist() == [{"a": 1, "b": None}, {"a": None, "b": 2}]
    with pytest.raises(ValueError, match="unequal"):
        block_from_batch({"a": [1], "b": [1, 2]})
    with pytest.raises(TypeError, match="dict of columns"):
        block_from_batch([1, 2])


def test_concat_unifies_tensor_shapes():
    a = block_from_batch({"t": np.zeros((1, 2))})
    b = block_from_batch({"t": np.zeros((1, 3))})
    out = concat_blocks([a, b])
    assert isinstance(out.schema.field("t").type, VariableShapeTensorType)
    assert [v.shape for v in column_to_numpy(out.column("t"))] == [(2,), (3,)]


def test_tensors_numpy_cannot_hold_become_object_columns():
    rows = [torch.full((2,), float(i), dtype=torch.bfloat16) for i in range(3)]
    for values in (rows, torch.stack(rows)):  # a list of tensors, or one batch tensor
        column = column_from_values(values)
        back = column_to_numpy(column)
        assert len(back) == 3 and all(t.dtype == torch.bfloat16 and torch.equal(t, r) for t, r in zip(back, rows, strict=True))


# ------------------------------------------------------------------ bool tensors, as Ray's tensor columns


def test_bool_arrays_and_tensors_become_bool_tensor_columns():
    """Ray makes bool arrays a bool tensor column (``ArrowTensorTypeV2(shape=..., dtype=bool)``);
    Arrow packs the values into bits, so they come back as a copy, exactly."""
    masks = np.random.default_rng(0).random((7, 2, 3)) > 0.5
    for values in (masks, torch.from_numpy(masks), list(masks), [torch.from_numpy(m) for m in masks]):
        column = column_from_values(values)
        assert isinstance(column.type, pa.FixedShapeTensorType)
        back = column_to_numpy(column)
        assert back.dtype == np.bool_ and back.shape == (7, 2, 3) and np.array_equal(back, masks)
        assert np.array_equal(column_to_numpy(column.slice(3, 3)), masks[3:6])  # not byte-aligned
    ragged = column_to_numpy(column_from_values([np.ones(2, bool), np.zeros(3, bool)]))
    assert [(r.dtype, r.tolist()) for r in ragged] == [(np.bool_, [True, True]), (np.bool_, [False] * 3)]
    assert column_from_values([torch.tensor(True), torch.tensor(False)]).to_pylist() == [True, False]
    assert str(Schema(block_from_batch({"m": masks}).schema)).endswith("m       numpy.ndarray(shape=(2, 3), dtype=bool)")


class BoolSamples(torch.utils.data.Dataset):
    """A segmentation-style dataset: ``(image, mask)`` samples, the mask a bool tensor."""

    def __len__(self):
        return 6

    def __getitem__(self, i):
        return torch.full((2,), float(i)), bool_mask(i)


def bool_mask(i: int) -> torch.Tensor:
    return torch.tensor([[i % 2 == 0, True, False], [i % 3 == 0, False, True]])


def mask_of_sample(row: dict) -> dict:
    return {"mask": row["item"][1]}


def masks_of_batch(batch: dict) -> dict:
    return {"mask": torch.stack([bool_mask(int(i)) for i in batch["id"]])}


def mask_array_of_row(row: dict) -> dict:
    return {"mask": bool_mask(row["id"]).numpy()}


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("pipeline", ["from_torch_map", "map_batches", "map"])
def test_bool_tensor_columns_round_trip_in_every_consumer(pipeline, num_workers, tmp_path):
    import torchray_loader as rd

    rd.DataContext.get_current().num_workers = num_workers
    if pipeline == "from_torch_map":
        ds = rd.from_torch(BoolSamples(), override_num_blocks=2).map(mask_of_sample)
    elif pipeline == "map_batches":
        ds = rd.range(6, override_num_blocks=2).map_batches(masks_of_batch, batch_size=2)
    else:
        ds = rd.range(6, override_num_blocks=2).map(mask_array_of_row)
    want = torch.stack([bool_mask(i) for i in range(6)])
    assert str(ds.schema()).endswith("mask    numpy.ndarray(shape=(2, 3), dtype=bool)")
    [batch] = ds.iter_batches(batch_size=6)
    assert batch["mask"].dtype == np.bool_ and np.array_equal(batch["mask"], want.numpy())
    [tensors] = ds.iter_torch_batches(batch_size=6)
    assert tensors["mask"].dtype == torch.bool and torch.equal(tensors["mask"], want)
    rows = ds.take_all()
    assert all(r["mask"].dtype == np.bool_ and np.array_equal(r["mask"], m) for r, m in zip(rows, want.numpy(), strict=True))
    cells = ds.to_pandas()["mask"]
    assert all(c.dtype == np.bool_ and np.array_equal(c, m) for c, m in zip(cells, want.numpy(), strict=True))
    ds.write_parquet(str(tmp_path))
    [back] = rd.read_parquet(str(tmp_path)).iter_batches(batch_size=6)
    assert back["mask"].dtype == np.bool_ and np.array_equal(np.sort(back["mask"], axis=0), np.sort(want.numpy(), axis=0))
