"""torchray Dataset input: arguments mapped onto iter_torch_batches; determinism, per-epoch reshuffle,
Ray collate semantics; device/pin_memory and stats for every input kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from loader_cases import DictDS, TensorDS, assert_same_batches, ids

import torchray_loader as rd
from torchray_loader import RayStyleLoader

pytestmark = pytest.mark.timeout(120)


def _features(row):
    return {"id": row["id"], "x": np.full(2, row["id"], dtype=np.float32)}


def _ds(n=60):
    return rd.range(n, override_num_blocks=6).map(_features)


def _epoch_ids(loader):
    return [b["id"].tolist() for b in loader]


@pytest.mark.parametrize("shuffle", [False, True])
def test_same_batches_for_any_num_workers(shuffle):
    a = list(RayStyleLoader(_ds(), batch_size=7, shuffle=shuffle, seed=5, num_workers=0))
    b = list(RayStyleLoader(_ds(), batch_size=7, shuffle=shuffle, seed=5, num_workers=2, prefetch_factor=3))
    assert_same_batches(a, b)
    assert sorted(ids(a, "id")) == list(range(60))
    assert a[0]["x"].dtype == torch.float32 and a[0]["x"].shape == (7, 2)


def test_shuffle_changes_each_epoch_and_is_reproducible():
    loader = RayStyleLoader(_ds(), batch_size=10, shuffle=True, seed=1, shuffle_buffer_size=30)
    e0, e1 = _epoch_ids(loader), _epoch_ids(loader)
    assert e0 != e1 and sorted(sum(e0, [])) == sorted(sum(e1, [])) == list(range(60))
    again = RayStyleLoader(_ds(), batch_size=10, shuffle=True, seed=1, shuffle_buffer_size=30)
    assert _epoch_ids(again) == e0
    again.set_epoch(1)
    assert _epoch_ids(again) == e1
    plain = _epoch_ids(RayStyleLoader(_ds(), batch_size=10))
    assert sum(plain, []) == list(range(60))


def test_unseeded_shuffle_follows_the_generator():
    a = _epoch_ids(RayStyleLoader(_ds(), batch_size=10, shuffle=True, generator=torch.Generator().manual_seed(3)))
    b = _epoch_ids(RayStyleLoader(_ds(), batch_size=10, shuffle=True, generator=torch.Generator().manual_seed(3)))
    assert a == b


def test_drop_last_len_and_batch_size_none():
    loader = RayStyleLoader(_ds(), batch_size=7, drop_last=True)
    assert len(loader) == 8 == len(list(loader))
    assert len(RayStyleLoader(_ds(), batch_size=7)) == 9
    blocks = list(RayStyleLoader(_ds(), batch_size=None))
    assert sum(len(b["id"]) for b in blocks) == 60


def _ray_collate(batch):
    assert isinstance(batch["x"], np.ndarray)
    return torch.as_tensor(batch["x"]).sum(1), torch.as_tensor(batch["id"])


def test_collate_fn_gets_numpy_dicts_like_ray():
    out = list(RayStyleLoader(_ds(), batch_size=20, collate_fn=_ray_collate))
    assert len(out) == 3 and torch.equal(out[0][0], 2 * out[0][1].float())


def test_data_iterator_input():
    it = _ds().streaming_split(2)[0]
    assert sorted(ids(list(RayStyleLoader(it, batch_size=5)), "id")) == sorted(ids([b for b in it.iter_batches(batch_size=5)], "id"))


@pytest.mark.parametrize("make", [lambda: TensorDS(9), lambda: _ds(9)], ids=["map", "arrow"])
def test_cpu_device_and_pin_memory_keep_values(make):
    plain = list(RayStyleLoader(make(), batch_size=4))
    for kw in [dict(device="cpu"), dict(pin_memory=True), dict(device="cpu", pin_memory=True)]:
        assert_same_batches(plain, list(RayStyleLoader(make(), batch_size=4, **kw)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.cuda
@pytest.mark.parametrize("nw", [0, 2])
def test_cuda_device_nested_batches(nw):
    batches = list(RayStyleLoader(DictDS(9), batch_size=4, num_workers=nw, device="cuda", pin_memory=True))
    ref = list(RayStyleLoader(DictDS(9), batch_size=4))
    for got, exp in zip(batches, ref, strict=True):
        assert got["x"].is_cuda and got["pair"][0].is_cuda
        assert torch.equal(got["x"].cpu(), exp["x"])
    arrow = list(RayStyleLoader(_ds(12), batch_size=4, device="cuda"))
    assert all(b["x"].is_cuda for b in arrow)


def test_stats():
    loader = RayStyleLoader(_ds(), batch_size=10)
    assert loader.stats() == "(not iterated yet)"
    list(loader)
    text = loader.stats()
    assert "6 batches" in text and "waited for data" in text and "Read" in text
    torch_loader = RayStyleLoader(TensorDS(9), batch_size=3)
    list(torch_loader)
    assert "3 batches" in torch_loader.stats()
