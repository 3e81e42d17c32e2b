"""blocks.buffers: arrays built in the running task's transfer file, private memory elsewhere."""

from __future__ import annotations

import numpy as np

from torchray_loader.blocks import buffers


def test_without_a_task_arrays_are_private():
    assert buffers.transfer_buffer(1 << 20) is None
    out = buffers.empty_rows(3, (1024, 512), np.uint8)
    assert out.shape == (3, 1024, 512) and out.flags.writeable and out.flags.owndata


def test_a_task_allocator_backs_large_arrays_and_is_restored():
    asked = []

    def allocator(nbytes):
        asked.append(nbytes)
        return bytearray(nbytes)

    with buffers.allocating_in(allocator):
        big = buffers.empty_rows(2, (1024, 1024), np.float32)
        small = buffers.empty_rows(2, (4,), np.float32)  # under MIN_TRANSFER_BYTES: not worth a region
        with buffers.allocating_in(lambda n: None):  # a full shm directory: private memory
            full = buffers.empty_rows(2, (1024, 1024), np.float32)
        assert buffers.transfer_buffer(8) is not None  # the outer allocator is back
    assert asked == [8 << 20, 8]
    assert big.shape == (2, 1024, 1024) and not big.flags.owndata and big.flags.writeable
    assert small.flags.owndata and full.flags.owndata
    assert buffers.transfer_buffer(8) is None
