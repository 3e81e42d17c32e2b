"""read_numpy / write_numpy: tensor round trip, .npz, pickled arrays refused."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest
import torch

import torchray_loader as rd
from torchray_loader.blocks import column_from_values
from torchray_loader.errors import ReadError
from torchray_loader.io.write import write_blocks


def test_tensor_round_trip(tmp_path):
    data = np.random.default_rng(0).random((10, 3, 4)).astype(np.float32)
    ds = rd.from_numpy([data[:6], data[6:]])
    ds.write_numpy(f"local://{tmp_path}", column="data")
    assert sorted(os.listdir(tmp_path)) == ["part-000000.npy", "part-000001.npy"]
    np.testing.assert_array_equal(np.load(tmp_path / "part-000001.npy"), data[6:])
    back = rd.read_numpy(str(tmp_path))
    assert (
        str(back.schema()) == "Column  Type\n------  ----\ndata    numpy.ndarray(shape=(3, 4), dtype=float)"
    )
    np.testing.assert_array_equal(np.stack([r["data"] for r in back.take_all()]), data)


def test_guide_torch_tensor_example(tmp_path):
    tensor = torch.Tensor(1)
    ds = rd.from_items([{"tensor": tensor}])
    ds.write_numpy(f"local://{tmp_path}", column="tensor")
    np.testing.assert_array_equal(np.load(tmp_path / "part-000000.npy"), tensor.numpy()[None])


def test_scalars_and_strings(tmp_path):
    write_blocks(
        [pa.table({"x": [1, 2, 3], "s": ["a", "bb", "c"]})], "numpy", str(tmp_path / "x"), column="x"
    )
    write_blocks(
        [pa.table({"x": [1, 2, 3], "s": ["a", "bb", "c"]})], "numpy", str(tmp_path / "s"), column="s"
    )
    assert rd.read_numpy(str(tmp_path / "x")).take_all() == [{"data": 1}, {"data": 2}, {"data": 3}]
    assert [r["data"] for r in rd.read_numpy(str(tmp_path / "s")).take_all()] == ["a", "bb", "c"]


def test_npz_gives_one_column_per_array(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.arange(3), y=np.ones((3, 2)))
    rows = rd.read_numpy(str(tmp_path)).take_all()
    assert [r["x"] for r in rows] == [0, 1, 2] and rows[0]["y"].tolist() == [1.0, 1.0]
    np.savez(tmp_path / "bad.npz", x=np.arange(3), y=np.ones(2))
    with pytest.raises(ReadError, match=r"bad\.npz: arrays in the \.npz have different lengths"):
        rd.read_numpy(str(tmp_path / "bad.npz")).take_all()


def test_pickled_object_arrays_are_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ReadError, match=r"obj\.npy: holds pickled Python objects"):
        rd.read_numpy(str(tmp_path)).take_all()
    rd.DataContext.get_current().allow_pickle = True
    assert rd.read_numpy(str(tmp_path)).take_all()[0]["data"] == {"a": 1}


def test_unwritable_columns(tmp_path):
    ragged = pa.table({"r": column_from_values([np.zeros((1, 2)), np.zeros((2, 2))])})
    with pytest.raises(TypeError, match=r"part-000000\.npy: column 'r'.*ragged"):
        write_blocks([ragged], "numpy", str(tmp_path), column="r")
    with pytest.raises(ValueError, match=r"column='nope' is not a column"):
        write_blocks([ragged], "numpy", str(tmp_path), column="nope")
    with pytest.raises(TypeError, match="column="):
        write_blocks([ragged], "numpy", str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_corrupt_file_names_the_file(tmp_path):
    (tmp_path / "a.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ReadError, match=r"a\.npy"):
        rd.read_numpy(str(tmp_path)).take_all()
