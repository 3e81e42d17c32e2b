"""``ThreadPool`` (execution/thread_pool.py): tasks that release the GIL, on threads of the consumer."""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import torchray_loader as rd
from torchray_loader.execution.thread_pool import ThreadPool

pytestmark = pytest.mark.timeout(60)


def _slow_square(x: int) -> int:
    time.sleep(0.01 * (5 - x % 5))  # later items finish first
    return x * x


def _fails_on_three(x: int) -> int:
    if x == 3:
        raise KeyError("three")
    return x


def test_results_in_order_or_as_completed():
    with ThreadPool(2) as pool:
        assert list(pool.imap(_slow_square, range(10))) == [x * x for x in range(10)]
        assert sorted(pool.imap(_slow_square, range(10), ordered=False)) == [x * x for x in range(10)]
        assert list(pool.imap(abs, [], start=True)) == []


def test_errors_keep_their_type_and_later_results_are_not_lost():
    with ThreadPool(2) as pool:
        it = pool.imap(_fails_on_three, range(6))
        assert [next(it) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(KeyError, match="three"):
            next(it)


def test_at_most_workers_plus_one_tasks_ahead_and_close_stops_the_rest():
    started: list[int] = []
    gate = threading.Event()

    def task(x: int) -> int:
        started.append(x)
        gate.wait(5)
        return x

    pool = ThreadPool(2)
    it = pool.imap(task, range(100), start=True)
    time.sleep(0.05)
    assert len(started) == 2  # two threads busy, one more task queued
    gate.set()
    assert next(it) == 0
    it.close()  # type: ignore[attr-defined]
    pool.close()
    assert len(started) <= 5  # nothing was started after the close
    assert not [t for t in threading.enumerate() if t.name.startswith("torchray-read")]


@pytest.mark.parametrize("preserve_order", [True, False])
def test_parquet_reads_run_on_threads_without_worker_processes(tmp_path, live_children, preserve_order):
    ctx = rd.DataContext.get_current()
    ctx.num_workers, ctx.preserve_order = 2, preserve_order
    for i in range(10):
        pq.write_table(pa.table({"id": np.arange(i * 100, (i + 1) * 100)}), tmp_path / f"{i:02d}.parquet")
    ds = rd.read_parquet(str(tmp_path))
    seen = []
    for batch in ds.iter_batches(batch_size=64):
        seen.extend(batch["id"].tolist())
        assert not live_children()  # no worker was started for an Arrow-only read
    assert (seen if preserve_order else sorted(seen)) == list(range(1000))
    # With a Python function after the read, or a task timeout (a thread cannot be stopped), the
    # tasks still go to worker processes.
    assert sorted(r["id"] for r in ds.map(_identity).take_all()) == list(range(1000))
    from torchray_loader.execution.executor import _Execution
    from torchray_loader.execution.stats import ExecutionStats

    ctx.task_timeout_s = 30.0
    execution = _Execution(ctx, ExecutionStats(), {}, None)
    try:
        assert not isinstance(execution.read_pool(ds._plan), ThreadPool)
    finally:
        execution.close()


def _identity(row):
    return row


class _Sized:
    def __init__(self, i: int, size_bytes: int) -> None:
        self.i, self.size_bytes = i, size_bytes


def test_tasks_ahead_stay_within_the_memory_budget():
    running: list[int] = []
    peak = [0]
    lock = threading.Lock()

    def task(item: _Sized) -> int:
        with lock:
            running.append(item.i)
            peak[0] = max(peak[0], len(running))
        time.sleep(0.01)
        with lock:
            running.remove(item.i)
        return item.i

    with ThreadPool(4, memory_budget_bytes=100) as pool:  # each task weighs 60: one at a time
        assert list(pool.imap(task, [_Sized(i, 60) for i in range(6)])) == list(range(6))
    assert peak[0] == 1
    peak[0] = 0
    with ThreadPool(4, memory_budget_bytes=None) as pool:
        assert list(pool.imap(task, [_Sized(i, 60) for i in range(12)])) == list(range(12))
    assert peak[0] > 1
