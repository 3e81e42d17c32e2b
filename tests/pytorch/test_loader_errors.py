"""Bad input: the same errors DataLoader raises, and clear ones where RayStyleLoader differs."""

from __future__ import annotations

import pytest
import torch
from loader_cases import DyingDS, ShardedIterable, SlowDS, TensorDS
from torch.utils.data import DataLoader, RandomSampler

import torchray_loader as rd
from torchray_loader import RayStyleLoader, WorkerDiedError

pytestmark = pytest.mark.timeout(60)


def _error(cls, data, **kw) -> BaseException:
    with pytest.raises(Exception) as info:
        loader = cls(data, **kw)
        list(loader)
    return info.value


def _same_error(data_factory, **kw) -> BaseException:
    expected = _error(DataLoader, data_factory(), **kw)
    actual = _error(RayStyleLoader, data_factory(), **kw)
    assert type(actual) is type(expected)
    assert str(actual) == str(expected)
    return actual


@pytest.mark.parametrize("factory", [TensorDS, ShardedIterable])
@pytest.mark.parametrize(
    "kw",
    [
        dict(batch_size=0),
        dict(batch_size=-2),
        dict(prefetch_factor=2),
        dict(num_workers=2, prefetch_factor=-1),
        dict(num_workers=-1),
        dict(timeout=-1),
        dict(persistent_workers=True),
        dict(batch_size=None, drop_last=True),
        dict(multiprocessing_context="spawn"),
        dict(num_workers=1, multiprocessing_context="no-such-method"),
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_same_errors_as_dataloader(factory, kw):
    _same_error(factory, **kw)


@pytest.mark.parametrize(
    "kw",
    [
        dict(shuffle=True),
        dict(sampler=[0, 1]),
        dict(batch_sampler=[[0, 1]]),
    ],
    ids=["shuffle", "sampler", "batch_sampler"],
)
def test_iterable_dataset_rejects_what_dataloader_rejects(kw):
    err = _same_error(ShardedIterable, **kw)
    assert isinstance(err, ValueError)


@pytest.mark.parametrize(
    "kw",
    [
        dict(shuffle=True, sampler=[0, 1]),
        dict(batch_sampler=[[0, 1]], batch_size=2),
        dict(batch_sampler=[[0, 1]], drop_last=True),
    ],
    ids=["sampler+shuffle", "batch_sampler+batch_size", "batch_sampler+drop_last"],
)
def test_map_style_exclusive_options(kw):
    assert isinstance(_same_error(TensorDS, **kw), ValueError)


def test_shuffle_with_iterable_message():
    err = _same_error(ShardedIterable, shuffle=True)
    assert "expected unspecified shuffle option" in str(err)


@pytest.mark.parametrize("kw", [dict(batch_size=0), dict(prefetch_factor=2), dict(shuffle=True, timeout=-1)])
def test_torchray_dataset_gets_dataloaders_errors(kw):
    expected = _error(DataLoader, TensorDS(), **kw)
    actual = _error(RayStyleLoader, rd.range(10), **kw)
    assert type(actual) is type(expected) and str(actual) == str(expected)


@pytest.mark.parametrize("arg", ["sampler", "batch_sampler"])
def test_sampler_with_torchray_dataset_says_what_to_use(arg):
    value = RandomSampler(range(10)) if arg == "sampler" else [[0, 1]]
    with pytest.raises(ValueError, match=f"{arg} is not supported for a torchray Dataset: use shuffle=True"):
        RayStyleLoader(rd.range(10), **{arg: value})


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="shuffle_buffer_size needs shuffle=True"):
        RayStyleLoader(rd.range(4), shuffle_buffer_size=10)
    with pytest.raises(ValueError, match="shuffle_buffer_size must be a positive int"):
        RayStyleLoader(rd.range(4), shuffle=True, shuffle_buffer_size=0)
    with pytest.raises(ValueError, match="torchray Datasets only"):
        RayStyleLoader(TensorDS(), shuffle=True, shuffle_buffer_size=10)
    with pytest.raises(TypeError, match="seed must be an int"):
        RayStyleLoader(TensorDS(), seed="1")
    with pytest.raises(ValueError, match="shuffle=True over a torchray Dataset needs a batch_size"):
        RayStyleLoader(rd.range(4), shuffle=True, batch_size=None)
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator or None, got 42 \(seed= takes an int\)"):
        RayStyleLoader(TensorDS(), shuffle=True, generator=42)
    with pytest.raises(ValueError, match="not a RayStyleLoader state"):
        RayStyleLoader(TensorDS()).load_state_dict({"epoch": 0})
    state = RayStyleLoader(TensorDS()).state_dict()
    with pytest.raises(ValueError, match="is for a 'map' loader"):
        RayStyleLoader(rd.range(3)).load_state_dict(state)
    with pytest.raises(ValueError, match="epoch must be a non-negative int"):
        RayStyleLoader(TensorDS()).set_epoch(-1)


def test_len_unknown_for_filtered_dataset():
    loader = RayStyleLoader(rd.range(10).filter(lambda r: r["id"] % 2 == 0), batch_size=2)
    with pytest.raises(TypeError, match="not known before running"):
        len(loader)
    assert sum(len(b["id"]) for b in loader) == 5


def test_no_device_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ValueError, match="CUDA is not available"):
        RayStyleLoader(TensorDS(), device="cuda")


def test_timeout_raises_like_dataloader(no_leaks):
    with pytest.raises(RuntimeError, match="timed out after 2 seconds"):
        list(RayStyleLoader(SlowDS(), batch_size=2, num_workers=2, timeout=2))


def test_dead_worker_raises_instead_of_hanging(no_leaks):
    with pytest.raises(WorkerDiedError, match="exit code 3") as info:
        list(RayStyleLoader(DyingDS(), batch_size=2, num_workers=2))
    assert isinstance(info.value, RuntimeError)  # what `except RuntimeError` written for DataLoader catches


def test_zero_prefetch_factor_is_refused():
    with pytest.raises(ValueError, match="prefetch_factor must be a positive int, got 0"):
        RayStyleLoader(TensorDS(), num_workers=1, prefetch_factor=0)


def test_data_that_is_no_dataset_is_refused_at_construction():
    with pytest.raises(TypeError, match="data must be a torchray Dataset"):
        RayStyleLoader(5)


@pytest.mark.parametrize("field,value", [("epoch", -3), ("batches_yielded", -1), ("epoch", "1")])
def test_a_state_with_bad_counters_is_refused(field, value):
    loader = RayStyleLoader(TensorDS(4), batch_size=2)
    state = dict(loader.state_dict(), **{field: value})
    with pytest.raises(ValueError, match=f"state\\['{field}'\\] must be a non-negative int"):
        loader.load_state_dict(state)
