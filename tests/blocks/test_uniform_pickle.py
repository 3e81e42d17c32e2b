"""uniform_pickle: samples of one layout written and read in bulk, equal to one pickle each."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest
import torch

from torchray_loader.blocks.tensors import _object_column, column_to_numpy, uniform_object_column
from torchray_loader.blocks.uniform_pickle import dumps_uniform, loads_uniform


def _same(a, b) -> None:
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape, a.stride()) == (b.dtype, b.shape, b.stride()) and torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        assert (a.dtype, a.shape, a.strides, a.flags.writeable) == (b.dtype, b.shape, b.strides, b.flags.writeable)
        assert np.array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    else:
        assert a == b


UNIFORM = {
    "tensor_label": [(torch.randn(5), i) for i in range(7)],
    "dict_of_tensors": [{"x": torch.full((2, 3), float(i)), "y": torch.tensor(i)} for i in range(7)],
    "nested": [[np.arange(3, dtype=np.uint16) + i, (float(i) / 3, -(2**63) + i), {"é": 2**63 - 1}] for i in range(4)],
    "empty_containers": [((), [], {}, (torch.zeros(1, dtype=torch.bool),)) for _ in range(3)],
    "bare_tensor": [torch.full((2,), float(i), dtype=torch.float16) for i in range(3)],
    "bare_int": list(range(-3, 3)),
    "one_value": [{"a": 1.5}],
}


@pytest.mark.parametrize("name", list(UNIFORM))
def test_each_piece_loads_with_plain_pickle_and_bulk_reads_the_same(name):
    values = UNIFORM[name]
    data, offsets = dumps_uniform(values)
    pieces = [pickle.loads(data[offsets[i] : offsets[i + 1]]) for i in range(len(values))]
    bulk = loads_uniform(memoryview(data), offsets)
    for value, piece, read in zip(values, pieces, bulk, strict=True):
        _same(value, piece)
        _same(value, read)


@pytest.mark.parametrize("values", [
    [(torch.zeros(2), 1), (torch.zeros(3), 1)],  # shapes differ
    [(torch.zeros(2), 1), (torch.zeros(2, dtype=torch.float64), 1)],  # dtypes differ
    [1, 2.0],
    [True, False],
    [2**63],
    [torch.zeros(2, dtype=torch.bfloat16)],
    [torch.zeros(2, requires_grad=True)],
    [torch.zeros(3, 2).t()],
    [torch.zeros(2, dtype=torch.complex64)],
    [np.zeros(2, dtype=">f4")],
    [np.zeros(4)[::2]],
    [np.frombuffer(b"\0" * 8, dtype=np.float32)],  # read-only: its own pickle keeps that
    [np.float32(1.0)],
    [{"a": 1}, {"b": 1}],
    [{"a": 1, "b": 2}, {"b": 2, "a": 1}],
    [{1: 2}],
    [(1,), [1]],
    ["text"],
    [],
])
def test_values_without_one_layout_are_left_to_pickle(values):
    assert dumps_uniform(values) is None


def test_column_slices_are_read_in_bulk():
    values = UNIFORM["tensor_label"]
    column = uniform_object_column(values)
    for read, value in zip(column_to_numpy(column.slice(2, 4)), values[2:6], strict=True):
        _same(value, read)


@pytest.mark.parametrize("other", [
    [(torch.randn(5), 2**40)],  # same piece length and layout: read in bulk
    [(torch.randn(5).double()[:2], 1)],  # another layout
    [(torch.randn(5), 1, None)],  # written one by one
])
def test_concatenated_columns_are_read_equal(other):
    values = UNIFORM["tensor_label"] + other
    chunks = pa.chunked_array([uniform_object_column(UNIFORM["tensor_label"]), uniform_object_column(other) or _object_column(other)])
    for read, value in zip(column_to_numpy(chunks), values, strict=True):
        _same(value, read)


def test_a_piece_differing_from_its_template_is_left_to_pickle():
    data, offsets = dumps_uniform([(1.0, 2), (3.0, 4)])
    changed = bytearray(data)
    changed[offsets[1] + 2] ^= 1  # a header byte of the second piece
    assert loads_uniform(memoryview(bytes(changed)), offsets) is None
    assert loads_uniform(memoryview(data), offsets) == [(1.0, 2), (3.0, 4)]


def test_tensors_read_in_bulk_are_writable_and_independent():
    data, offsets = dumps_uniform([torch.zeros(3) for _ in range(4)])
    read = loads_uniform(memoryview(data), offsets)
    read[1].add_(1)
    assert [t.tolist() for t in read] == [[0.0] * 3, [1.0] * 3, [0.0] * 3, [0.0] * 3]


def test_keys_json_cannot_encode_fall_back_to_plain_pickles():
    assert dumps_uniform([{"\ud800": 1}, {"\ud800": 2}]) is None
