"""Differential tests: ``RayStyleLoader(ds, **kw)`` yields exactly what ``DataLoader(ds, **kw)`` yields.

Same values, dtypes, nesting and order, for map-style datasets of every sample kind and every
combination of batch_size / shuffle (seeded generator) / drop_last / num_workers, plus custom
collate_fn, samplers, batch samplers and DistributedSampler.
"""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch
from loader_cases import (
    PILDS,
    DictDS,
    FailingDS,
    GetItemsDS,
    NamedTupleDS,
    NumpyDS,
    RandomAugDS,
    StrDS,
    TensorDS,
    TupleDS,
    assert_same_batches,
    collate_list,
    collate_pil,
    collate_sum,
    collate_worker_id,
    mark_init,
)
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    RandomSampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)

from torchray_loader import RayStyleLoader

pytestmark = [pytest.mark.timeout(120), pytest.mark.filterwarnings("ignore:This DataLoader will create")]

DATASETS = {
    "tensor": TensorDS,
    "tuple": TupleDS,
    "dict": DictDS,
    "namedtuple": NamedTupleDS,
    "numpy": NumpyDS,
    "str": StrDS,
    "pil": PILDS,
}


def _both(make_ds, epochs: int = 1, seed: int | None = 7, **kw):
    """Run DataLoader and RayStyleLoader with the same arguments (and fresh equal generators)."""
    out = []
    for cls in (DataLoader, RayStyleLoader):
        args = dict(kw)
        if seed is not None and args.get("shuffle"):
            args["generator"] = torch.Generator().manual_seed(seed)
        loader = cls(make_ds(), **args)
        # Same global RNG states for the unseeded draws (and for num_workers=0 augmentations).
        torch.manual_seed(1234)
        np.random.seed(1234)
        random.seed(1234)
        out.append([b for _ in range(epochs) for b in loader])
    return out


COMBOS = [
    (bs, shuffle, drop_last, nw)
    for bs, shuffle, drop_last, nw in itertools.product([None, 1, 4], [False, True], [False, True], [0, 2])
    if not (bs is None and drop_last)
]
# Worker processes cost time: every sample kind runs these with num_workers=2, the dict kind runs
# every combination.
_NW2_FOR_ALL_KINDS = {(4, True, True, 2), (None, False, False, 2), (1, True, False, 2)}


@pytest.mark.parametrize("kind", sorted(DATASETS))
@pytest.mark.parametrize("bs,shuffle,drop_last,nw", COMBOS)
def test_same_batches_as_dataloader(kind, bs, shuffle, drop_last, nw):
    if nw == 2 and kind != "dict" and (bs, shuffle, drop_last, nw) not in _NW2_FOR_ALL_KINDS:
        pytest.skip("this num_workers=2 combination runs for the dict kind (nested tensors, floats, strings, lists)")
    make = DATASETS[kind]
    kw = dict(batch_size=bs, shuffle=shuffle, drop_last=drop_last, num_workers=nw)
    if kind == "pil" and bs is not None:
        kw["collate_fn"] = collate_pil  # default_collate cannot batch PIL images (tested below)
    expected, actual = _both(make, **kw)
    assert_same_batches(expected, actual)


@pytest.mark.parametrize("nw", [0, 2])
def test_pil_with_default_collate_raises_like_dataloader(nw):
    with pytest.raises(TypeError) as dl_err:
        list(DataLoader(PILDS(), batch_size=2, num_workers=nw))
    with pytest.raises(TypeError) as rs_err:
        list(RayStyleLoader(PILDS(), batch_size=2, num_workers=nw))
    assert "default_collate" in str(dl_err.value) and "default_collate" in str(rs_err.value)


@pytest.mark.parametrize("nw", [0, 2])
@pytest.mark.parametrize("collate", [collate_list, collate_sum])
def test_custom_collate_fn(nw, collate):
    expected, actual = _both(TensorDS, batch_size=3, shuffle=True, num_workers=nw, collate_fn=collate)
    assert_same_batches(expected, actual)


@pytest.mark.parametrize("nw", [0, 2])
def test_collate_fn_sees_the_worker_info_as_in_dataloader(nw):
    # (default_collate itself runs without it in workers: its batch goes through the transfer file,
    # not torch shared memory; the batches are the same, as every other test here checks.)
    expected, actual = _both(TensorDS, batch_size=3, num_workers=nw, collate_fn=collate_worker_id)
    assert_same_batches(expected, actual)
    assert {w for _, w in actual} == ({-1} if nw == 0 else {0, 1})


@pytest.mark.parametrize("nw", [0, 2])
def test_getitems_is_used(nw):
    expected, actual = _both(GetItemsDS, batch_size=3, num_workers=nw)
    assert_same_batches(expected, actual)
    assert actual[0].tolist() == [[0, 1000], [1, 1000], [2, 1000]]


def _sampler_cases(ds):
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731 - fresh equal generators per loader
    return {
        "sequential": lambda: dict(sampler=SequentialSampler(ds)),
        "subset_random": lambda: dict(sampler=SubsetRandomSampler([1, 3, 5, 7, 9, 2], generator=g())),
        "weighted": lambda: dict(sampler=WeightedRandomSampler([0.1] * 5 + [1.0] * 6, 9, generator=g())),
        "random_replacement": lambda: dict(sampler=RandomSampler(ds, replacement=True, num_samples=7, generator=g())),
        "plain_list": lambda: dict(sampler=[10, 0, 5, 5, 2]),
        "batch_sampler_list": lambda: dict(batch_sampler=[[0, 1], [9], [4, 2, 3]], batch_size=1),
        "batch_sampler": lambda: dict(batch_sampler=BatchSampler(RandomSampler(ds, generator=g()), 3, True), batch_size=1),
    }


@pytest.mark.parametrize("nw", [0, 2])
@pytest.mark.parametrize("case", list(_sampler_cases(TensorDS())))
def test_samplers_and_batch_samplers(case, nw):
    ds = TensorDS()
    out = []
    for cls in (DataLoader, RayStyleLoader):
        kw = _sampler_cases(ds)[case]()
        if "batch_sampler" in kw:
            kw.pop("batch_size")
        else:
            kw["batch_size"] = 2
        out.append(list(cls(ds, num_workers=nw, **kw)))
    assert_same_batches(*out)


@pytest.mark.parametrize(
    "shuffle,drop_last,nw", [(True, False, 0), (False, True, 0), (True, True, 0), (True, False, 2)]
)
def test_distributed_sampler(shuffle, drop_last, nw):
    ds = TensorDS(11)
    for rank in range(3):
        out = []
        for cls in (DataLoader, RayStyleLoader):
            sampler = DistributedSampler(ds, num_replicas=3, rank=rank, shuffle=shuffle, seed=3, drop_last=drop_last)
            loader = cls(ds, batch_size=2, sampler=sampler, num_workers=nw)
            batches = []
            for epoch in range(2):
                sampler.set_epoch(epoch)
                batches.extend(loader)
            out.append(batches)
        assert_same_batches(*out)


def test_set_epoch_reaches_distributed_sampler():
    ds = TensorDS(11)
    sampler = DistributedSampler(ds, num_replicas=2, rank=0, shuffle=True, seed=3)
    loader = RayStyleLoader(ds, batch_size=2, sampler=sampler)
    loader.set_epoch(4)
    assert sampler.epoch == 4
    ref_sampler = DistributedSampler(ds, num_replicas=2, rank=0, shuffle=True, seed=3)
    ref_sampler.set_epoch(4)
    assert_same_batches(list(DataLoader(ds, batch_size=2, sampler=ref_sampler)), list(loader))


@pytest.mark.parametrize("nw", [0, 2])
def test_several_epochs_continue_the_generator(nw):
    expected, actual = _both(TensorDS, epochs=3, batch_size=4, shuffle=True, num_workers=nw)
    assert_same_batches(expected, actual)


@pytest.mark.parametrize("nw", [0, 2])
def test_unseeded_shuffle_draws_the_global_rng_like_dataloader(nw):
    expected, actual = _both(TensorDS, epochs=2, seed=None, batch_size=4, shuffle=True, num_workers=nw)
    assert_same_batches(expected, actual)


@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("nw", [0, 2, 3])
def test_worker_rngs_info_and_init_fn_match(nw, persistent):
    """Random augmentations in __getitem__ see the same worker seeds, ids and RNG streams."""
    if persistent and nw == 0:
        pytest.skip("persistent_workers needs num_workers > 0")
    kw = dict(batch_size=2, shuffle=True, num_workers=nw, worker_init_fn=mark_init, persistent_workers=persistent)
    expected, actual = _both(RandomAugDS, epochs=2, **kw)
    assert_same_batches(expected, actual)
    if nw:
        assert {int(w) for b in actual for w in b["worker"]} == set(range(nw))
        assert {int(m) for b in actual for m in b["init"]} == {100 + w for w in range(nw)}


@pytest.mark.parametrize("nw", [0, 2])
def test_user_exception_keeps_its_type(nw):
    with pytest.raises(KeyError, match="no sample 5"):
        list(RayStyleLoader(FailingDS(), batch_size=2, num_workers=nw))
    with pytest.raises(KeyError, match="no sample 5"):
        list(DataLoader(FailingDS(), batch_size=2, num_workers=nw))


def test_len_matches_dataloader():
    ds = TensorDS(11)
    for kw in [
        dict(batch_size=4),
        dict(batch_size=4, drop_last=True),
        dict(batch_size=None),
        dict(batch_size=3, sampler=[1, 2, 3, 4]),
        dict(batch_sampler=[[1], [2, 3]]),
    ]:
        assert len(RayStyleLoader(ds, **kw)) == len(DataLoader(ds, **kw)), kw


def test_in_order_false_and_timeout_are_accepted():
    expected, actual = _both(TensorDS, batch_size=3, num_workers=2, in_order=False, timeout=30)
    assert sorted(t.sum().item() for t in expected) == sorted(t.sum().item() for t in actual)


def test_multiprocessing_context_spawn():
    # Start methods do not change values: compare a spawn RayStyleLoader with a fork DataLoader.
    expected = list(DataLoader(TupleDS(), batch_size=4, shuffle=True, num_workers=2, generator=torch.Generator().manual_seed(1)))
    actual = list(
        RayStyleLoader(
            TupleDS(), batch_size=4, shuffle=True, num_workers=2, generator=torch.Generator().manual_seed(1),
            multiprocessing_context="spawn",
        )
    )
    assert_same_batches(expected, actual)


def _skip_bad_batches(loader) -> list:
    """The training loop that catches a bad batch and goes on: every other batch must still come."""
    seen, it = [], iter(loader)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return seen
        except KeyError:  # (DataLoader's workers rewrite the message: the type is compared)
            seen.append("skipped")
            continue
        seen.append(batch.tolist() if isinstance(batch, torch.Tensor) else batch)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
@pytest.mark.parametrize("nw", [0, 2])
@pytest.mark.parametrize("kw", [dict(batch_size=2), dict(batch_size=2, shuffle=True), dict(batch_size=None),
                                dict(batch_size=2, collate_fn=collate_list)], ids=str)
def test_the_iterator_goes_on_after_a_batch_raises(nw, kw, start_method):
    if start_method == "spawn" and nw == 0:
        pytest.skip("no workers to start")
    extra = dict(multiprocessing_context=start_method) if nw else {}
    if kw.get("shuffle"):
        extra["generator"] = torch.Generator().manual_seed(3)
    reference = {k: v for k, v in extra.items() if k != "multiprocessing_context"}  # values do not depend on it
    expected = _skip_bad_batches(DataLoader(FailingDS(), num_workers=nw, **kw, **reference))
    if kw.get("shuffle"):
        extra["generator"] = torch.Generator().manual_seed(3)
    loader = RayStyleLoader(FailingDS(), num_workers=nw, **kw, **extra)
    assert _skip_bad_batches(loader) == expected and any("skipped" in str(b) for b in expected)
    # The failed batch counts as delivered: a resume goes on after it, as the iterator did.
    assert loader.state_dict()["batches_yielded"] == 0  # the epoch finished
    it = iter(loader)
    delivered = 0
    while True:
        try:
            next(it)
        except KeyError:
            break
        delivered += 1
    state = loader.state_dict()
    it.close()
    fresh = RayStyleLoader(FailingDS(), num_workers=nw, **kw, **extra)
    fresh.load_state_dict(state)
    rest = _skip_bad_batches(fresh)
    assert "skipped" not in rest and delivered + 1 + len(rest) == len(expected)


def test_an_empty_batch_is_an_index_error_as_in_dataloader():
    ds = torch.utils.data.TensorDataset(torch.arange(5))
    for cls in (DataLoader, RayStyleLoader):
        with pytest.raises(IndexError):
            list(cls(ds, batch_sampler=[[1, 2], [], [3]]))
