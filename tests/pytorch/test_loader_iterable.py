"""Torch IterableDatasets: sharded over workers with get_worker_info() and interleaved as DataLoader
does; and wrapping a RayStyleLoader in a DataLoader neither duplicates nor drops data."""

from __future__ import annotations

import collections

import pytest
import torch
from loader_cases import (
    NaiveIterable,
    RandomAugDS,
    ShardedIterable,
    TensorDS,
    TensorIterable,
    assert_same_batches,
    collate_list,
    ids,
    mark_init,
)
from torch.utils.data import DataLoader

import torchray_loader as rd
from torchray_loader import RayStyleLoader

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore:This DataLoader will create")]


def _both(make_ds, **kw):
    return [list(cls(make_ds(), **kw)) for cls in (DataLoader, RayStyleLoader)]


@pytest.mark.parametrize("nw", [0, 2, 3])
@pytest.mark.parametrize("bs,drop_last", [(None, False), (1, False), (3, False), (3, True)])
def test_sharded_iterable_matches_dataloader(nw, bs, drop_last):
    # 13 rows over 3 workers: shards of 5, 5, 3 - uneven ends exercise the skip-exhausted round robin.
    expected, actual = _both(ShardedIterable, batch_size=bs, drop_last=drop_last, num_workers=nw)
    assert_same_batches(expected, actual)


@pytest.mark.parametrize("nw", [0, 2])
def test_dict_samples_collate_fn_and_init_fn(nw):
    expected, actual = _both(TensorIterable, batch_size=4, num_workers=nw, worker_init_fn=mark_init)
    assert_same_batches(expected, actual)
    expected, actual = _both(TensorIterable, batch_size=3, num_workers=nw, collate_fn=collate_list)
    assert_same_batches(expected, actual)


def test_naive_iterable_duplicates_exactly_like_dataloader():
    expected, actual = _both(NaiveIterable, batch_size=2, num_workers=2)
    assert_same_batches(expected, actual)
    assert sorted(ids(actual)) == sorted(2 * list(range(0, 10, 2)))


def test_len_of_iterable_is_dataloaders():
    for kw in [dict(batch_size=4), dict(batch_size=4, drop_last=True), dict(batch_size=None)]:
        assert len(RayStyleLoader(ShardedIterable(13), **kw)) == len(DataLoader(ShardedIterable(13), **kw))
    with pytest.raises(TypeError):
        len(RayStyleLoader(NaiveIterable(), batch_size=2))


@pytest.mark.parametrize("nw", [0, 2])
def test_persistent_workers_iterate_again(nw, no_leaks):
    if nw == 0:
        loader = RayStyleLoader(ShardedIterable(), batch_size=2)
    else:
        loader = RayStyleLoader(ShardedIterable(), batch_size=2, num_workers=nw, persistent_workers=True)
    first, second = list(loader), list(loader)
    assert_same_batches(first, second)
    loader.close()


# ------------------------------------------------------------------------------ DataLoader(loader)


def _outer(loader, k):
    return list(DataLoader(loader, batch_size=None, num_workers=k))


@pytest.mark.parametrize("k", [2, 3])
def test_wrapped_map_style_is_exactly_once_and_in_order(k):
    inner = RayStyleLoader(TensorDS(11), batch_size=2, shuffle=True, seed=3, num_workers=2)
    inner.set_epoch(0)  # without it each outer epoch draws its own order (see the unseeded test)
    direct = list(RayStyleLoader(TensorDS(11), batch_size=2, shuffle=True, seed=3))
    wrapped = _outer(inner, k)
    # DataLoader's round robin over its workers restores the inner loader's order exactly.
    assert_same_batches(direct, wrapped)


@pytest.mark.parametrize("k", [2, 3])
def test_wrapped_iterable_is_exactly_once(k):
    inner = RayStyleLoader(ShardedIterable(13), batch_size=2, num_workers=2)
    wrapped = _outer(inner, k)
    assert sorted(ids(wrapped)) == list(range(13))
    naive = _outer(RayStyleLoader(NaiveIterable(5), batch_size=2), k)
    assert sorted(ids(naive)) == list(range(0, 10, 2))


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("shuffle", [False, True])
def test_wrapped_torchray_dataset_is_exactly_once(k, shuffle):
    ds = rd.range(53).map_batches(lambda b: {"id": b["id"], "sq": b["id"] ** 2}, batch_size=5)
    inner = RayStyleLoader(ds, batch_size=4, shuffle=shuffle, seed=1, num_workers=2)
    wrapped = _outer(inner, k)
    got = ids(wrapped, "id")
    assert sorted(got) == list(range(53))
    counter = collections.Counter(got)
    assert max(counter.values()) == 1


def test_wrapped_random_augmentations_use_dataloader_worker_rngs():
    inner = RayStyleLoader(RandomAugDS(8), batch_size=2, num_workers=2)
    wrapped = _outer(inner, 2)
    assert sorted(ids(wrapped, "i")) == list(range(8))
    # get_worker_info() inside the dataset is the outer DataLoader's (the inner loader runs inline).
    assert {int(w) for b in wrapped for w in b["worker"]} == {0, 1}


@pytest.mark.parametrize("nw", [0, 2])
def test_break_early_leaves_no_process(nw, no_leaks):
    loader = RayStyleLoader(ShardedIterable(100), batch_size=2, num_workers=nw)
    for i, _ in enumerate(loader):
        if i == 3:
            break
    loader2 = RayStyleLoader(TensorDS(50), batch_size=2, num_workers=nw)
    it = iter(loader2)
    next(it)
    del it


def test_user_error_in_iterable_keeps_type():
    class Boom(torch.utils.data.IterableDataset):
        def __iter__(self):
            yield 1
            raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(RayStyleLoader(Boom(), batch_size=1, num_workers=2))


@pytest.mark.parametrize("make", [lambda: TensorDS(17), lambda: rd.range(17, override_num_blocks=4)], ids=["map", "arrow"])
def test_wrapped_unseeded_shuffle_is_exactly_once_and_reshuffles(make):
    # No seed, no generator: the outer workers' RNGs differ, yet they must agree on the permutation.
    inner = RayStyleLoader(make(), batch_size=3, shuffle=True)
    outer = DataLoader(inner, batch_size=None, num_workers=2)
    epochs = []
    for _ in range(2):
        batches = list(outer)
        key = "id" if isinstance(batches[0], dict) else None
        got = ids(batches, key) if key else [int(x) // 10 for x in ids([b[:, 0] for b in batches])]
        assert sorted(got) == list(range(17))
        epochs.append(got)
    assert epochs[0] != epochs[1]


def test_persistent_workers_serve_interleaved_iterators_of_an_iterable():
    loader = RayStyleLoader(ShardedIterable(20), batch_size=2, num_workers=2, persistent_workers=True)
    try:
        expected = [b.tolist() for b in loader]
        a, b = iter(loader), iter(loader)
        got_a, got_b = [], []
        for x, y in zip(a, b, strict=True):  # both advance in turn
            got_a.append(x.tolist())
            got_b.append(y.tolist())
        got_a += [x.tolist() for x in a]
        got_b += [y.tolist() for y in b]
        assert got_a == expected and got_b == expected
    finally:
        loader.close()
