"""Object-column pickling: the C pickler with raw-bytes arrays and tensors, cloudpickle for code."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from torchray_loader.blocks.object_pickle import dumps_objects
from torchray_loader.blocks.tensors import column_from_values, column_to_numpy


def _dumps(value):
    data, offsets = dumps_objects([value])
    assert offsets.tolist() == [0, len(data)]
    return data


def _roundtrip(value):
    return pickle.loads(_dumps(value))


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.arange(6, dtype=">i4"),  # big-endian keeps its byte order
    np.array(3.5),  # 0-d
    np.zeros((0, 5), dtype=np.uint8),
    np.array([True, False]),
    np.array([1 + 2j], dtype=np.complex64),
])
def test_numeric_arrays_come_back_equal_and_writable(array):
    back = _roundtrip(array)
    assert type(back) is np.ndarray and back.dtype == array.dtype and back.shape == array.shape
    assert np.array_equal(back, array) and back.flags.writeable
    back[...] = 0  # a fresh buffer: the original is untouched
    assert array.size == 0 or not np.array_equal(back, array) or not array.any()


@pytest.mark.parametrize("array", [
    np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    np.arange(10)[::2],
    np.array(["a", "bc"]),
    np.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
    np.array([{"x": 1}, None], dtype=object),
])
def test_other_arrays_keep_numpys_reduction(array):
    back = _roundtrip(array)
    assert back.dtype == array.dtype and back.shape == array.shape and back.tolist() == array.tolist()
    assert back.flags.f_contiguous == pickle.loads(pickle.dumps(array, 5)).flags.f_contiguous


def test_read_only_array_comes_back_read_only_as_with_numpys_pickle():
    array = np.arange(4)
    array.flags.writeable = False
    back = _roundtrip(array)
    assert np.array_equal(back, array) and not back.flags.writeable
    assert not pickle.loads(pickle.dumps(array, 5)).flags.writeable


def test_tensor_view_writes_only_its_own_bytes():
    big = torch.rand(1000, 784)
    row = big[7]
    payload = _dumps((row, 3))
    assert len(payload) < 2 * 784 * 4  # not the 3 MB storage the view points into
    back, label = pickle.loads(payload)
    assert type(back) is torch.Tensor and torch.equal(back, row) and label == 3
    back.add_(1)  # writable, and not the dataset's memory
    assert not torch.equal(back, row)


def test_code_goes_through_cloudpickle():
    offset = 5

    class Local:
        def __init__(self, v):
            self.v = v

    back = _roundtrip({"fn": lambda x: x + offset, "obj": Local(2), "cls": Local, "builtin": abs})
    assert back["fn"](1) == 6 and back["obj"].v == 2 and back["cls"].__name__ == "Local" and back["builtin"] is abs


def test_unpicklable_value_raises():
    import threading

    with pytest.raises(TypeError, match="lock"):
        dumps_objects([{"lock": threading.Lock()}])


def add_one(x):
    return x + 1


def test_many_values_share_one_stream_and_load_one_by_one():
    big = np.arange(300_000, dtype=np.float64)  # larger than a pickle frame: written straight through
    values = [
        (torch.ones(2, 3), 4),
        (big, lambda x: x * 2),  # the C pickler fails after writing the array: the piece is redone
        "text",
        {"f": add_one, "t": torch.arange(3)},
        None,
    ]
    data, offsets = dumps_objects(values)
    assert offsets[0] == 0 and offsets[-1] == len(data) and len(offsets) == len(values) + 1
    back = [pickle.loads(data[a:b]) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    assert torch.equal(back[0][0], values[0][0]) and back[0][1] == 4
    assert np.array_equal(back[1][0], big) and back[1][1](3) == 6
    assert back[2] == "text" and back[3]["f"] is add_one and torch.equal(back[3]["t"], torch.arange(3))
    assert back[4] is None


def test_object_column_slices_and_concatenations_load_their_own_values():
    import pyarrow as pa

    col = column_from_values([(torch.full((2,), float(i)), i) for i in range(10)])
    sliced = column_to_numpy(col.slice(3, 4))
    assert [v[1] for v in sliced] == [3, 4, 5, 6] and torch.equal(sliced[0][0], torch.full((2,), 3.0))
    chunked = pa.chunked_array([col.slice(8), col.slice(0, 2)])
    assert [v[1] for v in column_to_numpy(chunked)] == [8, 9, 0, 1]



FROM_NUMPY_SAMPLES = """
import numpy as np, torch, torchray_loader as rd
rd.DataContext.get_current().num_workers = 0
arr = np.random.default_rng(0).random((50_000, 16), dtype=np.float32)
class Samples(torch.utils.data.Dataset):
    def __len__(self):
        return len(arr)
    def __getitem__(self, i):
        return torch.from_numpy(arr[i])
for _ in range(4):
    assert sum(len(b["item"]) for b in rd.from_torch(Samples()).iter_torch_batches(batch_size=256)) == 50_000
print("ok")
"""


def test_tensors_pickled_into_object_columns_survive_garbage_collection():
    """The ``numpy()`` arrays of tensor reductions outlive the dump: freed mid-dump, a garbage
    collection (here in pandas' lazy import thread) crashed the process with SIGSEGV in about half
    of these runs."""
    import subprocess
    import sys

    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", FROM_NUMPY_SAMPLES], capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stderr[-2000:])
