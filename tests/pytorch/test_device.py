"""Moving batches to a device (torchray_loader.pytorch.device).

The CPU tests drive the feeder's threading, closing and run-level moves with a stand-in for pinning
(pinning needs a CUDA driver). The ``cuda`` tests check the real path where a GPU exists: values,
dtypes and nesting equal the CPU batches; the consumer's stream waits on copies without the host
blocking; pinned staging is reused; batches survive in-place use on a non-default stream.
"""

from __future__ import annotations

import threading
from collections import namedtuple

import numpy as np
import pytest
import torch
from loader_cases import DictDS, TensorDS, assert_same_batches

import torchray_loader as rd
from torchray_loader import RayStyleLoader
from torchray_loader.iteration import BatchRun
from torchray_loader.pytorch import device as device_mod
from torchray_loader.pytorch.convert import RunBatches
from torchray_loader.pytorch.device import DeviceFeeder

pytestmark = pytest.mark.timeout(120)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
Pair = namedtuple("Pair", ["a", "b"])


def _prefetch_threads() -> int:
    return sum(t.name == "torchray-prefetch" for t in threading.enumerate())


def _double(row):
    return {"id": row["id"], "x": np.full(3, row["id"], dtype=np.float32), "name": str(row["id"])}


def _sum_collate(batch):
    return {"s": torch.as_tensor(batch["x"]).sum(1), "ids": (torch.as_tensor(batch["id"]), Pair(1, torch.ones(2)))}


def _tabular(n=1000):
    return np.arange(n * 4, dtype=np.float32).reshape(n, 4)


# ----------------------------------------------------------------------------------------- CPU


@pytest.fixture
def marked_pinning(monkeypatch):
    """Pinning replaced by a copy that records what it was given (pinning needs a CUDA driver)."""
    seen: list[tuple[int, ...]] = []

    def fake_pin(t):
        seen.append(tuple(t.shape))
        return t.clone()

    monkeypatch.setattr(device_mod, "_pinned", fake_pin)
    return seen


def _pinning_feeder() -> DeviceFeeder:
    feeder = DeviceFeeder(None, pin_memory=False)
    feeder.pin = feeder.active = True
    return feeder


def test_run_moves_with_one_copy_per_column(marked_pinning):
    x = torch.arange(40).reshape(20, 2)
    run = RunBatches({"x": x, "y": torch.arange(20)}, BatchRun(None, True, 3, 4, 3))  # type: ignore[arg-type]
    moved = _pinning_feeder().transfer(run)
    assert marked_pinning == [(12, 2), (12,)]  # rows 3..15 of each column, once
    got = [b["x"] for b in moved]
    assert [g.tolist() for g in got] == [x[3 + 4 * k : 7 + 4 * k].tolist() for k in range(3)]
    assert all(g.data_ptr() != x[3 + 4 * k].data_ptr() for k, g in enumerate(got))


def test_other_batches_move_tensor_by_tensor(marked_pinning):
    batch = {"a": torch.zeros(2), "nested": [Pair(torch.ones(1), "s")], "n": 3}
    (got,) = list(_pinning_feeder().transfer([batch]))
    assert marked_pinning == [(2,), (1,)]
    assert isinstance(got["nested"][0], Pair) and got["nested"][0].b == "s" and got["n"] == 3


@pytest.mark.parametrize("stop_after", [None, 2])
def test_feed_moves_in_a_thread_and_closes_the_source(marked_pinning, stop_after):
    closed = []

    def source():
        try:
            for i in range(6):
                yield {"x": torch.full((2,), i)}
        finally:
            closed.append(True)

    out = _pinning_feeder().feed(source())
    got = []
    for b in out:
        got.append(int(b["x"][0]))
        if stop_after is not None and len(got) == stop_after:
            break
    out.close()
    assert got == list(range(6))[: stop_after or 6]
    assert closed == [True]
    assert _prefetch_threads() == 0


def test_feed_stages_in_another_thread_than_the_one_driving_the_source(monkeypatch):
    threads = {"source": set(), "staging": set()}

    def recording_pin(t):
        threads["staging"].add(threading.get_ident())
        return t.clone()

    def source():
        for i in range(5):
            threads["source"].add(threading.get_ident())
            yield torch.full((2,), i)

    monkeypatch.setattr(device_mod, "_pinned", recording_pin)
    assert [int(b[0]) for b in _pinning_feeder().feed(source())] == list(range(5))
    (source_thread,), (staging_thread,) = threads["source"], threads["staging"]
    assert len({source_thread, staging_thread, threading.get_ident()}) == 3


def test_feed_reraises_the_source_error(marked_pinning):
    def source():
        yield {"x": torch.zeros(1)}
        raise KeyError("bad batch")

    with pytest.raises(KeyError, match="bad batch"):
        list(_pinning_feeder().feed(source()))
    assert _prefetch_threads() == 0


@pytest.mark.parametrize("prefetch", [0, 2])
def test_iter_torch_batches_stages_whole_runs_off_the_consumers_thread(monkeypatch, prefetch):
    from torchray_loader.pytorch.convert import ParentCache

    threads: dict[str, set[int]] = {"convert": set(), "stage": set()}
    staged = []
    convert_run = ParentCache.convert_run

    def recording_convert(self, run):
        threads["convert"].add(threading.get_ident())
        return convert_run(self, run)

    def recording_pin(t):
        threads["stage"].add(threading.get_ident())
        staged.append(t.shape[0])
        return t.clone()

    monkeypatch.setattr(device_mod.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(ParentCache, "convert_run", recording_convert)
    monkeypatch.setattr(device_mod, "_pinned", recording_pin)
    ds = rd.from_numpy(_tabular(100)) if prefetch == 0 else rd.range(100, override_num_blocks=2)
    plain = list(ds.iter_torch_batches(batch_size=16, prefetch_batches=prefetch))
    threads["convert"].clear()
    pinned = list(ds.iter_torch_batches(batch_size=16, prefetch_batches=prefetch, pin_memory=True))
    assert_same_batches(plain, pinned)
    assert 0 < len(staged) < len(plain)  # whole runs, not batch by batch
    (convert_thread,), (stage_thread,) = threads["convert"], threads["stage"]
    if prefetch == 0:  # a dataset in memory: made and staged in the loop's thread, one piece ahead
        assert convert_thread == stage_thread == threading.get_ident()
    else:  # one thread makes pieces, another stages them
        assert len({convert_thread, stage_thread, threading.get_ident()}) == 3


def test_a_moved_piece_holds_about_piece_bytes(marked_pinning, monkeypatch):
    monkeypatch.setattr(device_mod.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(device_mod, "PIECE_BYTES", 300_000)
    wide = np.arange(400 * 1000, dtype=np.float64).reshape(400, 1000)  # 8 kB rows, 128 kB batches
    ds = rd.from_numpy(wide)
    pinned = list(ds.iter_torch_batches(batch_size=16, pin_memory=True))
    assert max(shape[0] for shape in marked_pinning) == 32  # two batches a piece: 256 kB <= 300 kB
    assert torch.equal(torch.cat([b["data"] for b in pinned]), torch.from_numpy(wide))


def test_closing_a_staged_iteration_early_stops_both_threads(marked_pinning, monkeypatch):
    monkeypatch.setattr(device_mod.torch.cuda, "is_available", lambda: True)
    batches = rd.range(10_000, override_num_blocks=8).iter_torch_batches(batch_size=16, pin_memory=True)
    assert next(batches)["id"].tolist() == list(range(16))
    assert _prefetch_threads() == 2
    batches.close()
    assert _prefetch_threads() == 0


def test_without_a_prefetch_thread_the_next_piece_moves_before_this_ones_batches(marked_pinning, monkeypatch):
    monkeypatch.setattr(device_mod.torch.cuda, "is_available", lambda: True)
    batches = rd.from_numpy(_tabular(1000)).iter_torch_batches(batch_size=16, pin_memory=True)
    first = next(batches)
    assert len(marked_pinning) == 2  # this piece, and the next one already on its way
    rest = list(batches)
    assert torch.equal(torch.cat([first["data"], *(b["data"] for b in rest)]), torch.from_numpy(_tabular(1000)))


@pytest.mark.parametrize("source", ["numpy", "loader"])
def test_a_device_other_than_cuda_gets_the_batches(source):
    if source == "numpy":
        batches = list(rd.from_numpy(_tabular(100)).iter_torch_batches(batch_size=16, device="meta"))
        tensors = [b["data"] for b in batches]
    else:
        tensors = list(RayStyleLoader(TensorDS(20), batch_size=8, device="meta"))
    assert tensors and all(t.device.type == "meta" for t in tensors)
    assert [t.shape[0] for t in tensors] == ([16] * 6 + [4] if source == "numpy" else [8, 8, 4])


def test_cpu_device_leaves_batches_alone():
    feeder = DeviceFeeder("cpu", pin_memory=True)
    assert not feeder.active or torch.cuda.is_available()
    batch = [{"x": torch.ones(1)}]
    assert DeviceFeeder("cpu", pin_memory=False).transfer(batch) is batch


# ---------------------------------------------------------------------------------------- CUDA


def _cpu(obj):
    return device_mod.map_tensors(obj, lambda t: t.cpu())


def _all_on_cuda(obj) -> bool:
    found = []
    device_mod.map_tensors(obj, lambda t: found.append(t.is_cuda))
    return bool(found) and all(found)


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("source", ["numpy", "map"])
def test_cuda_iter_torch_batches_equal_cpu(shuffle, source):
    if source == "numpy":
        ds = rd.from_numpy(_tabular(5000))
    else:
        ds = rd.range(3000, override_num_blocks=4).map(_double).drop_columns(["name"])
    kw = dict(batch_size=64, local_shuffle_buffer_size=512 if shuffle else None, local_shuffle_seed=3)
    cpu = list(ds.iter_torch_batches(**kw))
    gpu = list(ds.iter_torch_batches(device="cuda", **kw))
    assert all(_all_on_cuda(b) for b in gpu)
    assert_same_batches(cpu, [_cpu(b) for b in gpu])


@needs_cuda
@pytest.mark.cuda
def test_cuda_collate_fn_and_string_columns():
    ds = rd.range(200, override_num_blocks=3).map(_double)
    gpu = list(ds.iter_torch_batches(batch_size=32, device="cuda", collate_fn=_sum_collate))
    cpu = list(ds.iter_torch_batches(batch_size=32, collate_fn=_sum_collate))
    assert all(_all_on_cuda(b) for b in gpu)
    assert isinstance(gpu[0]["ids"][1], Pair) and gpu[0]["ids"][1].a == 1
    assert_same_batches(cpu, [_cpu(b) for b in gpu])
    mixed = next(iter(ds.iter_torch_batches(batch_size=32, device="cuda")))
    assert mixed["x"].is_cuda and mixed["name"] == [str(i) for i in range(32)]


@needs_cuda
@pytest.mark.cuda
def test_cuda_pin_memory_only_pins():
    batches = list(rd.from_numpy(_tabular(300)).iter_torch_batches(batch_size=64, pin_memory=True))
    assert all(b["data"].is_pinned() and not b["data"].is_cuda for b in batches)
    loader = list(RayStyleLoader(TensorDS(20), batch_size=8, pin_memory=True))
    assert all(b.is_pinned() for b in loader)


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("nw", [0, 2])
def test_cuda_loader_equals_dataloader(nw):
    ref = [_cpu(b) for b in torch.utils.data.DataLoader(DictDS(30), batch_size=8, num_workers=nw, pin_memory=True)]
    got = list(RayStyleLoader(DictDS(30), batch_size=8, num_workers=nw, device="cuda", pin_memory=True))
    assert all(_all_on_cuda(b) for b in got)
    assert_same_batches(ref, [_cpu(b) for b in got])


@needs_cuda
@pytest.mark.cuda
def test_cuda_host_does_not_wait_for_the_training_stream():
    it = iter(rd.range(20_000, override_num_blocks=4).iter_torch_batches(batch_size=256, device="cuda"))
    next(it)
    torch.cuda.synchronize()
    cycles_per_ms = 1_000_000  # ~1 GHz lower bound: at least ~0.5 s of GPU time below
    torch.cuda._sleep(500 * cycles_per_ms)  # a long training step queued on the current stream
    marker = torch.cuda.Event()
    marker.record()
    batch = next(it)  # must come back while that step still runs
    still_running = not marker.query()
    torch.cuda.synchronize()
    it.close()
    assert still_running, "fetching a batch waited for the training stream"
    assert batch["id"].is_cuda and batch["id"][0].item() == 256


@needs_cuda
@pytest.mark.cuda
def test_cuda_batches_are_safe_on_a_non_default_stream():
    data = _tabular(4096)
    train = torch.cuda.Stream()
    sums = []
    with torch.cuda.stream(train):
        for batch in rd.from_numpy(data).iter_torch_batches(batch_size=128, device="cuda"):
            torch.cuda._sleep(200_000)  # a step slow enough that later copies overlap it
            batch["data"].add_(1)  # in place, on the training stream
            sums.append(batch["data"].sum())
    torch.cuda.synchronize()
    expected = [float((data[i : i + 128] + 1).sum()) for i in range(0, 4096, 128)]
    assert [float(s) for s in sums] == pytest.approx(expected)
    assert float(data[0, 1]) == 1.0  # the user's array is untouched


@needs_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("make", ["runs", "loader"])
def test_cuda_pinned_staging_is_reused(make):
    stats = getattr(torch.cuda, "host_memory_stats", None)
    if stats is None or "num_host_alloc" not in stats():
        pytest.skip("torch.cuda.host_memory_stats has no num_host_alloc here")

    def epoch():
        if make == "runs":
            batches = rd.range(50_000, override_num_blocks=8).iter_torch_batches(batch_size=256, device="cuda")
        else:
            batches = iter(RayStyleLoader(TensorDS(2000), batch_size=16, device="cuda"))
        n = sum(1 for _ in batches)
        torch.cuda.synchronize()
        return n

    epoch()
    before = stats()["num_host_alloc"]
    n = epoch()
    assert n > 100
    assert stats()["num_host_alloc"] - before <= 4


@needs_cuda
@pytest.mark.cuda
def test_cuda_closing_mid_epoch_stops_the_threads():
    loader = RayStyleLoader(TensorDS(200), batch_size=4, num_workers=2, device="cuda")
    batches = iter(loader)
    for _ in range(3):
        next(batches)
    batches.close()
    loader.close()
    it = rd.range(10_000, override_num_blocks=4).iter_torch_batches(batch_size=64, device="cuda")
    next(it)
    it.close()
    torch.cuda.synchronize()
    assert _prefetch_threads() == 0


_CONSTRUCT = (
    "import torch, torch.utils.data as tud\n"
    "from torchray_loader import RayStyleLoader\n"
    "RayStyleLoader(tud.TensorDataset(torch.arange(8)), batch_size=4, device={device!r})\n"
    "print(torch.cuda.is_initialized())\n"
)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[needs_cuda, pytest.mark.cuda])])
def test_constructing_a_loader_does_not_start_cuda(device):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _CONSTRUCT.format(device=device)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]
