"""``collate_into_transfer_file`` (``pytorch/collate.py``): default_collate's result, large tensors
stacked in place in the task's transfer file."""

from __future__ import annotations

import collections
import os

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from torchray_loader.blocks.buffers import MIN_TRANSFER_BYTES
from torchray_loader.execution import shm
from torchray_loader.pytorch.collate import collate_into_transfer_file

Point = collections.namedtuple("Point", ["image", "label"])


def _samples(n=8):
    return [
        {
            "image": torch.full((3, 128, 128), float(i)),  # 8 x 196 KiB: stacked in place
            "mask": torch.full((4,), i, dtype=torch.uint8),  # tiny: private memory
            "pair": (np.full((2, 2), i, dtype=np.int16), f"s{i}"),
            "point": Point(torch.tensor([i, i + 1]), i),
            "half": torch.full((64, 1024), i, dtype=torch.bfloat16),
        }
        for i in range(n)
    ]


def _assert_same(a, b):
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    else:
        assert a == b


@pytest.mark.parametrize("in_task", [False, True])
def test_equals_default_collate(in_task):
    samples = _samples()
    if in_task:
        with shm.task_arena():
            out = collate_into_transfer_file(samples)
    else:
        out = collate_into_transfer_file(samples)
    _assert_same(out, default_collate(samples))


def test_large_tensors_cross_without_a_copy(monkeypatch):
    samples = _samples()
    written = []
    real_write = shm._write_all
    monkeypatch.setattr(shm, "_write_all", lambda fd, view, off: (written.append(view.nbytes), real_write(fd, view, off)))
    with shm.task_arena() as arena:
        out = collate_into_transfer_file(samples)
        assert out["image"].nbytes >= MIN_TRANSFER_BYTES and out["half"].nbytes >= MIN_TRANSFER_BYTES
        ref = shm.dumps_to_shm(out, arena=arena)
    assert ref.path is not None and max(written) < out["half"].nbytes, "a stacked tensor was copied"
    _assert_same(shm.loads_from_shm(ref), default_collate(samples))
    assert not os.path.exists(ref.path)


def test_tensors_that_cannot_be_stacked_in_place_fall_back():
    grad = [torch.ones(512, 1024, requires_grad=True) for _ in range(2)]
    with shm.task_arena() as arena:
        out = collate_into_transfer_file(grad)
        assert arena.path is None  # nothing was allocated in the arena
    assert out.requires_grad and out.shape == (2, 512, 1024)
    with shm.task_arena(), pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        collate_into_transfer_file([torch.zeros(1 << 18), torch.zeros(1 << 18 + 1)])
