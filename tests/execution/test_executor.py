"""The executor's task bodies (``execution/executor.py``): blocks as they leave a task."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from torchray_loader.blocks import column_from_values, column_to_numpy
from torchray_loader.execution import shm
from torchray_loader.execution.executor import _tensors_in_transfer_file

pytestmark = pytest.mark.timeout(60)


def _per_row_images(n: int = 8, shape: tuple[int, ...] = (256, 256, 3)) -> pa.Table:
    """A read task's block: one chunk per image (each file made a one-row table)."""
    rng = np.random.default_rng(0)
    rows = [pa.table({"image": column_from_values(rng.integers(0, 256, (1, *shape), dtype=np.uint8)),
                      "path": [f"{i}.jpg"]}) for i in range(n)]
    return pa.concat_tables(rows)


def test_chunked_tensor_column_becomes_one_chunk_inside_the_transfer_file():
    block = _per_row_images()
    assert block.column("image").num_chunks == 8
    with shm.task_arena() as arena:
        out = _tensors_in_transfer_file(block)
        assert out.column("image").num_chunks == 1 and out.column("path").equals(block.column("path"))
        assert out.schema == block.schema
        np.testing.assert_array_equal(column_to_numpy(out.column("image")), column_to_numpy(block.column("image")))
        values = out.column("image").chunk(0).storage.values.buffers()[1]
        assert arena.span_of(memoryview(values)) is not None  # built in place: the transfer copies nothing
        ref = shm.dumps_to_shm(out, arena=arena)
    back = shm.loads_from_shm(ref)
    assert back.equals(block)


def test_unchanged_without_a_transfer_file_or_when_small_or_null():
    block = _per_row_images()
    assert _tensors_in_transfer_file(block) is block  # inline task: no arena
    small = _per_row_images(shape=(4, 4))
    with_nulls = pa.concat_tables([block, pa.table({
        "image": pa.nulls(1, block.schema.field("image").type), "path": ["x.jpg"]
    })])
    with shm.task_arena():
        assert _tensors_in_transfer_file(small) is small
        assert _tensors_in_transfer_file(with_nulls) is with_nulls
