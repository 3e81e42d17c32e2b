"""Object-column pickling: the C pickler with raw-bytes arrays and tensors, cloudpickle for code."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from torchray_loader.blocks.object_pickle import dumps_object


def _roundtrip(value):
    return pickle.loads(dumps_object(value))


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
    payload = dumps_object((row, 3))
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
        dumps_object({"lock": threading.Lock()})
