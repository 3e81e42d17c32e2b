"""Faults inside worker processes and inside the training loop, injected on purpose.

For every fault the test checks what the user sees (either every row exactly once, or one clear
exception) and, through the autouse ``no_leaks`` fixture, that nothing is left behind: no worker
process, no shared-memory file, no temp file. Every test has a timeout (pytest-timeout), so a hang
is a failure, never a stuck CI job.

Invariants exercised (DESIGN.md promises 1, 6, 7):

* a worker that dies (SIGKILL, the OOM killer's signal) or hangs past ``DataContext.task_timeout_s``
  is replaced and its task re-run up to ``DataContext.max_task_retries`` times; a re-run task's rows
  are delivered once, never twice;
* past the retries: :class:`WorkerDiedError` / :class:`TaskTimeoutError` naming the operator;
* ``RayStyleLoader(timeout=s)``: DataLoader's semantics, a ``RuntimeError("... timed out ...")`` after
  ``s`` seconds without a batch (no retry), chained to the ``TaskTimeoutError``;
* user code that raises surfaces as its own exception type, chained to a :class:`UserCodeError` that
  names the operator and carries the worker traceback;
* an exception in the training loop, ``break`` or dropping the iterator stops the workers.
"""

from __future__ import annotations

import collections
import gc
import os
import resource
import signal
import time

import numpy as np
import psutil
import pytest
import torch
from reliability_helpers import PerSampleTensors, first_time, wait_gone, workers
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import IterableDataset

import torchray_loader as rd
from torchray_loader.errors import TaskTimeoutError, UserCodeError, WorkerDiedError

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def two_workers(fresh_data_context):
    fresh_data_context.num_workers = 2
    return fresh_data_context


def ids_of(batches) -> list[int]:
    out: list[int] = []
    for b in batches:
        col = b["id"] if isinstance(b, dict) else b[0]
        out.extend(int(x) for x in col)
    return out


def assert_exactly_once(ids: list[int], n: int) -> None:
    dupes = [k for k, c in collections.Counter(ids).items() if c > 1]
    assert not dupes, f"delivered more than once: {dupes[:10]}"
    assert sorted(ids) == list(range(n)), f"missing: {sorted(set(range(n)) - set(ids))[:10]}"


# ----------------------------------------------------------------------------- UDFs injecting faults


def kill_once(markers, target: int):
    """A batch UDF whose worker SIGKILLs itself the first time it sees row ``target``."""

    def udf(batch):
        if (batch["id"] == target).any() and first_time(markers, f"kill-{target}"):
            os.kill(os.getpid(), signal.SIGKILL)
        return batch

    return udf


def kill_always(target: int):
    def udf(batch):
        if (batch["id"] == target).any():
            os.kill(os.getpid(), signal.SIGKILL)
        return batch

    return udf


def hang_once(markers, target: int):
    def udf(batch):
        if (batch["id"] == target).any() and first_time(markers, f"hang-{target}"):
            time.sleep(600)
        return batch

    return udf


def slow(batch):
    time.sleep(0.02)
    return batch


# ----------------------------------------------------------------------------- a worker is SIGKILLed


def test_worker_sigkilled_mid_task_is_replaced_and_rows_arrive_exactly_once(markers):
    ds = rd.range(300, override_num_blocks=15).map_batches(kill_once(markers, 137))
    assert_exactly_once(ids_of(ds.iter_batches(batch_size=7)), 300)
    assert os.path.exists(markers / "kill-137")  # the fault did happen


def test_worker_killed_on_every_attempt_raises_worker_died_error(fresh_data_context):
    fresh_data_context.max_task_retries = 1
    ds = rd.range(100, override_num_blocks=10).map_batches(kill_always(42))
    t0 = time.monotonic()
    with pytest.raises(WorkerDiedError) as info:
        ds.take_all()
    message = str(info.value)
    assert "SIGKILL" in message and "out of memory?" in message
    assert "MapBatches(kill_always" in message and "2 time(s)" in message
    assert time.monotonic() - t0 < 60


def test_worker_killed_from_outside_while_iterating():
    """Kill a worker from another process (as the OOM killer would) between two batches."""
    ds = rd.range(400, override_num_blocks=40).map_batches(slow)
    ids: list[int] = []
    killed = None
    for i, batch in enumerate(ds.iter_batches(batch_size=10, prefetch_batches=0)):
        ids.extend(int(x) for x in batch["id"])
        if i == 3:
            pids = workers()
            assert pids, "iteration with num_workers=2 runs worker processes"
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
    assert killed is not None and not wait_gone([killed], 5)
    assert_exactly_once(ids, 400)


def test_loader_map_style_worker_killed_is_retried_and_batches_equal_dataloader(markers):
    class KillOnce(TorchDataset):
        def __len__(self):
            return 40

        def __getitem__(self, i):
            if i == 17 and first_time(markers, "loader-kill"):
                os.kill(os.getpid(), signal.SIGKILL)
            return torch.tensor(i)

    got = [b.tolist() for b in rd.RayStyleLoader(KillOnce(), batch_size=4, num_workers=2)]
    assert got == [list(range(i, i + 4)) for i in range(0, 40, 4)]  # DataLoader's batches, once each
    assert os.path.exists(markers / "loader-kill")


def test_loader_iterable_dataset_worker_killed_mid_stream_is_a_clear_error(markers):
    """An IterableDataset's stream lives in its worker: a killed worker cannot resume it, and the
    loader says so instead of silently restarting (which would deliver rows twice)."""

    class Stream(IterableDataset):
        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            for i in range(info.id, 60, info.num_workers):
                if i == 31 and first_time(markers, "stream-kill"):
                    os.kill(os.getpid(), signal.SIGKILL)
                yield torch.tensor(i)

    with pytest.raises(RuntimeError, match="lost its iterator"):
        list(rd.RayStyleLoader(Stream(), batch_size=3, num_workers=2))


# ----------------------------------------------------------------------------- a worker hangs


def test_hanging_task_is_killed_after_task_timeout_and_retried(fresh_data_context, markers):
    fresh_data_context.task_timeout_s = 2.0
    ds = rd.range(200, override_num_blocks=10).map_batches(hang_once(markers, 55))
    t0 = time.monotonic()
    assert_exactly_once(ids_of(ds.iter_batches(batch_size=16)), 200)
    assert os.path.exists(markers / "hang-55")
    assert time.monotonic() - t0 < 60


def test_task_hanging_on_every_attempt_raises_task_timeout_error(fresh_data_context):
    fresh_data_context.task_timeout_s = 1.0
    fresh_data_context.max_task_retries = 0

    def hang(batch):
        if (batch["id"] == 5).any():
            time.sleep(600)
        return batch

    t0 = time.monotonic()
    with pytest.raises(TaskTimeoutError, match=r"MapBatches\(.*hang\).*task_timeout_s=1\.0"):
        rd.range(20, override_num_blocks=4).map_batches(hang).take_all()
    assert time.monotonic() - t0 < 30
    assert isinstance(TaskTimeoutError("x"), TimeoutError)  # ``except TimeoutError`` works too


def test_loader_timeout_turns_a_hanging_worker_into_a_clear_error():
    class Hang(TorchDataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            if i == 9:
                time.sleep(600)
            return i

    loader = rd.RayStyleLoader(Hang(), batch_size=2, num_workers=2, timeout=2.0)
    got = []
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"timed out after 2\.0 seconds") as info:
        for batch in loader:
            got.append(batch.tolist())
    assert isinstance(info.value.__cause__, TaskTimeoutError)
    assert got == [[0, 1], [2, 3], [4, 5], [6, 7]]  # everything before the hang, in order
    assert time.monotonic() - t0 < 30


# ----------------------------------------------------------------------------- out of memory


def test_worker_out_of_memory_under_rlimit_as_raises_memory_error_naming_the_operator():
    """A worker whose address space is capped (``RLIMIT_AS``, as a cgroup or ``ulimit -v`` would)
    fails the allocation: the user gets ``MemoryError`` chained to the operator's worker traceback."""

    def hog(batch):
        if (batch["id"] == 3).any():
            vms = psutil.Process().memory_info().vms
            resource.setrlimit(resource.RLIMIT_AS, (vms + (64 << 20), resource.RLIM_INFINITY))
            batch["big"] = np.ones((len(batch["id"]), 1 << 28), np.uint8)  # 256 MiB per row
        return batch

    with pytest.raises(MemoryError) as info:
        rd.range(8, override_num_blocks=4).map_batches(hog).take_all()
    cause = info.value.__cause__
    assert isinstance(cause, UserCodeError) and cause.operator.endswith("hog)")
    assert "MemoryError" in cause.worker_traceback


# ----------------------------------------------------------------------------- user code raises


def test_udf_raising_on_one_row_in_a_million_keeps_its_type_and_names_the_operator():
    bad = 765_432

    def check(batch):
        if (batch["id"] == bad).any():
            raise ValueError(f"row {bad} is corrupt")
        return batch

    ds = rd.range(1_000_000).map_batches(check, batch_size=None)
    delivered = 0
    with pytest.raises(ValueError, match=f"row {bad} is corrupt") as info:
        for batch in ds.iter_batches(batch_size=None, prefetch_batches=0):
            delivered += len(batch["id"])
    cause = info.value.__cause__
    assert isinstance(cause, UserCodeError)
    assert cause.operator.startswith("MapBatches(") and cause.operator.endswith(".check)")
    assert "in check" in cause.worker_traceback and "ValueError" in cause.worker_traceback
    assert 0 < delivered <= bad  # every block before the bad one, in order; nothing after


# ----------------------------------------------------------------------------- the training loop


class Boom(Exception):
    pass


def train_until_boom(batches, at: int) -> int:
    n = 0
    for _ in batches:
        n += 1
        if n == at:
            raise Boom("loss is NaN")
    return n


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            lambda: rd.range(2000, override_num_blocks=20).map_batches(slow).iter_torch_batches(batch_size=10),
            id="dataset",
        ),
        pytest.param(
            lambda: rd.RayStyleLoader(PerSampleTensors(torch.arange(200)), batch_size=4, num_workers=2),
            id="loader-map",
        ),
        pytest.param(
            lambda: rd.RayStyleLoader(rd.range(2000, override_num_blocks=20), batch_size=8, num_workers=2),
            id="loader-arrow",
        ),
    ],
)
def test_exception_in_the_training_loop_stops_the_workers(make):
    def train():
        return train_until_boom(make(), at=3)

    with pytest.raises(Boom):
        train()
    # No gc.collect(): the iterator was only referenced by the loop, so it is closed as the
    # exception leaves the frame, and the workers are gone right after.
    assert not wait_gone(workers(), 10)


def test_break_out_of_the_loop_stops_the_workers():
    for i, _ in enumerate(rd.range(2000, override_num_blocks=20).map_batches(slow).iter_batches(batch_size=10)):
        if i == 2:
            break
    assert not wait_gone(workers(), 10)


def test_iterator_dropped_without_closing_is_cleaned_up_by_garbage_collection():
    it = iter(rd.RayStyleLoader(rd.range(2000, override_num_blocks=20).map_batches(slow), batch_size=8, num_workers=2))
    next(it)
    assert workers()
    it2 = rd.range(2000, override_num_blocks=20).map_batches(slow).iter_batches(batch_size=10)
    next(it2)
    del it, it2
    gc.collect()
    assert not wait_gone(workers(), 10)
