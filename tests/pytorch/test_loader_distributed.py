"""Distributed: each rank gets a disjoint shard, all ranks the same number of batches, the union is
the whole dataset (less drop_last), over 1-4 ranks; and a real 2-process gloo group."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from loader_cases import TensorDS, gloo_rank_main, ids

import torchray_loader as rd
from torchray_loader import RayStyleLoader
from torchray_loader.pytorch.sampling import rank_batch_sizes, recut, split_ranges

pytestmark = pytest.mark.timeout(180)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 400), world=st.integers(1, 4), batch=st.integers(1, 9), drop_last=st.booleans())
def test_rank_batch_sizes_properties(n, world, batch, drop_last):
    try:
        sizes = rank_batch_sizes(n, world, batch, drop_last)
    except ValueError:
        # Only when equal counts are impossible without repeating rows.
        assert not drop_last and n > 0 and n < world * math.ceil(n / (world * batch))
        return
    assert len(sizes) == world
    assert len({len(s) for s in sizes}) == 1, "every rank gets the same number of batches"
    for s in sizes:
        assert all(1 <= x <= batch for x in s)
        assert s == sorted(s, reverse=True), "only the last batches are short"
    total = sum(map(sum, sizes))
    if drop_last:
        assert all(x == batch for s in sizes for x in s) and 0 <= n - total < world * batch
    else:
        assert total == n


def test_split_ranges_and_recut():
    assert split_ranges(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]
    import numpy as np

    out = list(recut(iter([{"a": np.arange(4)}, {"a": np.arange(4, 6)}]), [3, 2, 1]))
    assert [b["a"].tolist() for b in out] == [[0, 1, 2], [3, 4], [5]]


def _per_rank(make_loader, world, monkeypatch, key=None):
    out = []
    for rank in range(world):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        loader = make_loader()
        batches = list(loader)
        assert len(loader) == len(batches)
        out.append([ids([b], key) for b in batches])
    return out


def _check_exactly_once(per_rank, n, batch, drop_last):
    counts = {len(r) for r in per_rank}
    assert len(counts) == 1, f"ranks got different batch counts: {[len(r) for r in per_rank]}"
    seen = [i for r in per_rank for b in r for i in b]
    assert len(seen) == len(set(seen)), "a row was delivered twice"
    assert all(1 <= len(b) <= batch for r in per_rank for b in r)
    if drop_last:
        assert set(seen) <= set(range(n)) and n - len(seen) < len(per_rank) * batch
    else:
        assert sorted(seen) == list(range(n))


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("batch,drop_last", [(3, False), (4, True), (1, False)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_map_style_ranks(world, batch, drop_last, shuffle, monkeypatch):
    n = 27 if batch != 1 else 24  # batch_size=1 needs a multiple of the world size
    per_rank = _per_rank(
        lambda: RayStyleLoader(TensorDS(n), batch_size=batch, shuffle=shuffle, drop_last=drop_last,
                               collate_fn=_collate_ids),
        world, monkeypatch,
    )
    _check_exactly_once(per_rank, n, batch, drop_last)


def _collate_ids(samples):
    return torch.stack([s[0] / 10 for s in samples]).long()


@pytest.mark.parametrize("world", [2, 3, 4])
def test_arrow_ranks(world, monkeypatch):
    for make, n in [
        (lambda: rd.range(53, override_num_blocks=5), 53),
        (lambda: rd.range(53, override_num_blocks=5).map_batches(_same, batch_size=7), 53),  # count unknown
    ]:
        for shuffle, batch, drop_last in [(True, 4, False), (False, 5, True), (True, 8, False)]:
            def make_loader(make=make, batch=batch, shuffle=shuffle, drop_last=drop_last):
                return RayStyleLoader(make(), batch_size=batch, shuffle=shuffle, drop_last=drop_last, seed=2)

            per_rank = _per_rank(make_loader, world, monkeypatch, key="id")
            _check_exactly_once(per_rank, n, batch, drop_last)


def _same(b):
    return b


def test_infeasible_equal_split_says_what_to_do(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="DistributedSampler"):
        list(RayStyleLoader(TensorDS(5), batch_size=1))


def test_shard_by_rank_false_and_user_sampler_see_everything(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert len(list(RayStyleLoader(TensorDS(10), batch_size=2, shard_by_rank=False))) == 5
    assert len(list(RayStyleLoader(TensorDS(10), batch_size=2, sampler=list(range(10))))) == 5
    assert len(list(RayStyleLoader(TensorDS(10), batch_size=2))) == 3


def test_resume_under_ranks(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    ref = [b[:, 0].tolist() for b in RayStyleLoader(TensorDS(40), batch_size=3, shuffle=True)]
    loader = RayStyleLoader(TensorDS(40), batch_size=3, shuffle=True)
    it = iter(loader)
    head = [next(it)[:, 0].tolist() for _ in range(2)]
    fresh = RayStyleLoader(TensorDS(40), batch_size=3, shuffle=True, num_workers=2)
    fresh.load_state_dict(loader.state_dict())
    assert head + [b[:, 0].tolist() for b in fresh] == ref


@pytest.mark.timeout(240)
def test_real_gloo_group_two_processes(tmp_path):
    import torch.multiprocessing as mp

    init_file = str(tmp_path / "init")
    mp.spawn(gloo_rank_main, args=(2, init_file, str(tmp_path)), nprocs=2, join=True)
    with open(tmp_path / "result.json") as f:
        ranks = json.load(f)
    for name, n in [("map_shuffle_nw2", 37), ("map_seq", 37), ("arrow_shuffle", 103)]:
        got = [r[name] for r in ranks]
        assert got[0]["num_batches"] == got[1]["num_batches"] == got[0]["len"] == got[1]["len"]
        all_ids = got[0]["ids"] + got[1]["ids"]
        assert sorted(all_ids) == list(range(n)), name
    odd = [r["arrow_filter"] for r in ranks]
    assert odd[0]["num_batches"] == odd[1]["num_batches"]
    assert sorted(odd[0]["ids"] + odd[1]["ids"]) == list(range(1, 61, 2))
    assert all(r["distributed_sampler_equal"] for r in ranks)


@pytest.mark.parametrize("unseeded", ["random_shuffle", "randomize_block_order", "repartition"])
def test_pipelines_shuffled_without_a_seed_split_disjointly(monkeypatch, unseeded):
    """Each rank runs its own pipeline: a random operator given no seed draws from the loader's
    epoch seed, which every rank agrees on, so the shares are disjoint (they overlapped)."""
    def make():
        ds = rd.range(200, override_num_blocks=8)
        ds = ds.repartition(5, shuffle=True) if unseeded == "repartition" else getattr(ds, unseeded)()
        return RayStyleLoader(ds, batch_size=10)

    per_rank = _per_rank(make, 2, monkeypatch, key="id")
    _check_exactly_once(per_rank, 200, 10, drop_last=False)
    assert sorted(i for r in per_rank for b in r for i in b) == list(range(200))
