"""The process pool (``execution/process_pool.py``): same results as ``InlinePool``, exactly once,
through worker deaths, timeouts, errors, Ctrl-C and early exits, with bounded memory and zero copy."""

from __future__ import annotations

import gc
import mmap
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import psutil
import pyarrow as pa
import pytest

from torchray_loader.context import DataContext
from torchray_loader.errors import ReadError, TaskTimeoutError, UserCodeError, WorkerDiedError, mark_operator
from torchray_loader.execution import shm
from torchray_loader.execution.pool import InlinePool, make_pool
from torchray_loader.execution.process_pool import ProcessPool

pytestmark = pytest.mark.timeout(60)

# (start method, workers): every method once, fork (the default, and cheap) at every size.
POOL_CASES = [("fork", 1), ("fork", 2), ("fork", 4), ("forkserver", 2), ("spawn", 2)]
FORK_SIZES = [("fork", 1), ("fork", 2), ("fork", 4)]


def make_ctx(start_method: str = "fork", **kw) -> DataContext:
    ctx = DataContext(start_method=start_method)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


# ----------------------------------------------------------------------------- UDFs (module level)


def square(x):
    return x * x


def block_of(i):
    """A small Arrow block and a numpy array: what tasks really return."""
    return {"i": i, "table": pa.table({"x": np.arange(i, i + 1000)}), "arr": np.full(5000, i, dtype=np.int32)}


def sleep_then(args):
    i, delay = args
    time.sleep(delay)
    return i


def kill_self_once(args):
    """SIGKILL this worker the first time item ``victim`` runs (a marker file remembers)."""
    i, victim, marker = args
    if i == victim and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return i * 10


def always_killed(i):
    if i == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return i


def exit_hard(i):
    os._exit(7)


def hang(i):
    if i == 1:
        time.sleep(600)
    return i


def hang_once(args):
    i, marker = args
    if i == 1 and not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(600)
    return i


def fail_on_two(i):
    if i == 2:
        raise ValueError(f"bad item {i}")
    return i


def fail_marked(i):
    raise mark_operator(KeyError("missing"), "Map(my_udf)")


class _Unpicklable(Exception):
    def __init__(self):
        super().__init__("cannot travel")
        self.lock = threading.Lock()


def fail_unpicklable(i):
    raise _Unpicklable()


def fail_read_error(i):
    raise ReadError("broken.jpg", "cannot identify image file")


def pid_of(_):
    return os.getpid()


def slow_pid(_):
    time.sleep(0.05)
    return os.getpid()


def torch_threads(_):
    import torch

    return torch.get_num_threads()


WORKER_ID = None


def record_worker_id(worker_id):
    global WORKER_ID
    WORKER_ID = worker_id


def worker_id_and_pid(_):
    time.sleep(0.02)
    return WORKER_ID, os.getpid()


def big_array(i):
    return np.full(1 << 20, i, dtype=np.int64)


def passthrough_block(args):
    table, done_file, straggle_s, n = args
    if table["i"][0].as_py() == 0:  # the straggler holds back the ordered stream
        deadline = time.monotonic() + straggle_s
        # n - 2: one task may be queued behind this one on its worker (two tasks per worker)
        while time.monotonic() < deadline and os.path.getsize(done_file) < n - 2:
            time.sleep(0.01)
    else:
        with open(done_file, "ab") as f:
            f.write(b".")
    return table


class CountingFn:
    """A callable whose every unpickling appends a line to ``log`` (to count how often fn travels)."""

    def __init__(self, log):
        self.log = log

    def __reduce__(self):
        return (_rebuild_counting, (self.log,))

    def __call__(self, x):
        return x + 1


def _rebuild_counting(log):
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    return CountingFn(log)


# ----------------------------------------------------------------------------- results


@pytest.mark.parametrize("start_method,workers", POOL_CASES)
def test_results_equal_inline_pool_in_order(start_method, workers):
    items = list(range(23))
    expected = list(InlinePool().imap(block_of, items))
    with ProcessPool(workers, make_ctx(start_method)) as pool:
        got = list(pool.imap(block_of, items))
        assert list(pool.imap(square, range(50))) == [i * i for i in range(50)]  # persistent workers
    assert [g["i"] for g in got] == items
    for g, e in zip(got, expected, strict=True):
        assert g["table"].equals(e["table"]) and np.array_equal(g["arr"], e["arr"])


@pytest.mark.parametrize("start_method,workers", FORK_SIZES)
def test_unordered_is_a_permutation(start_method, workers):
    rng = random.Random(0)
    items = [(i, rng.random() * 0.01) for i in range(40)]
    with ProcessPool(workers, make_ctx(start_method)) as pool:
        got = list(pool.imap(sleep_then, items, ordered=False))
    assert sorted(got) == list(range(40))


@pytest.mark.parametrize("start_method,workers", FORK_SIZES)
def test_exactly_once_with_random_task_durations(start_method, workers):
    rng = random.Random(workers)
    items = [(i, rng.choice([0, 0, 0.001, 0.01])) for i in range(100)]
    with ProcessPool(workers, make_ctx(start_method)) as pool:
        assert list(pool.imap(sleep_then, items)) == list(range(100))
        assert sorted(pool.imap(sleep_then, items, ordered=False)) == list(range(100))


def test_lambdas_closures_and_generator_items():
    offset = 5
    with ProcessPool(2, make_ctx("spawn")) as pool:
        got = list(pool.imap(lambda x: x + offset, (i for i in range(10))))
    assert got == [i + 5 for i in range(10)]


def test_make_pool_builds_a_process_pool():
    pool = make_pool(2, make_ctx())
    try:
        assert isinstance(pool, ProcessPool) and pool.num_workers == 2
    finally:
        pool.close()


def test_arrow_block_items_go_through_shared_memory():
    blocks = [pa.table({"i": np.full(100_000, i)}) for i in range(6)]
    with ProcessPool(2, make_ctx()) as pool:
        sums = list(pool.imap(lambda t: pa.compute.sum(t["i"]).as_py(), iter(blocks)))
    assert sums == [100_000 * i for i in range(6)]


def test_fn_travels_once_per_worker_per_imap(tmp_path):
    log = tmp_path / "unpickled.log"
    log.touch()
    with ProcessPool(2, make_ctx()) as pool:
        assert list(pool.imap(CountingFn(str(log)), range(40))) == list(range(1, 41))
    pids = log.read_text().split()
    assert 1 <= len(pids) <= 2 and len(set(pids)) == len(pids)


def test_nested_imaps_on_one_pool():
    """The executor feeds one stage's output into the next stage on the same pool."""
    with ProcessPool(2, make_ctx()) as pool:
        inner = pool.imap(square, range(30))
        outer = pool.imap(lambda x: x + 1, inner)
        assert list(outer) == [i * i + 1 for i in range(30)]


def test_zero_copy_writable_result():
    with ProcessPool(2, make_ctx()) as pool:
        a, b = pool.imap(big_array, [1, 2])
    # After close, results stay valid: each holds its own mapping of an unlinked file.
    obj = a
    while isinstance(obj, (np.ndarray, memoryview)):
        obj = obj.base if isinstance(obj, np.ndarray) else obj.obj
    assert isinstance(obj, mmap.mmap), "the result was copied instead of mapped"
    assert a.flags.writeable
    a[:] = 7  # copy-on-write, private to this process
    assert int(a.sum()) == 7 * (1 << 20) and int(b[0]) == 2


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_reused_transfer_files_never_change_a_held_result(start_method):
    """Results are 8 MiB; the consumer keeps every third one and drops the rest, whose files the
    workers then write again. Every kept result still holds its own values at the end."""
    kept = []
    with ProcessPool(2, make_ctx(start_method)) as pool:
        for i, arr in enumerate(pool.imap(big_array, range(30))):
            assert int(arr[0]) == i and int(arr[-1]) == i
            if i % 3 == 0:
                kept.append((i, arr))
            del arr
            gc.collect()
    for i, arr in kept:
        assert int(arr.min()) == i and int(arr.max()) == i


def mark_started(args):
    """Leave a file named after the item: proof that its task ran."""
    folder, i = args
    open(os.path.join(folder, str(i)), "w").close()
    return i


def _wait_for_file(path, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_start_submits_before_the_first_next(tmp_path):
    """A consumer driving several pools in turn starts them all at once (``start=True``)."""
    with ProcessPool(1, make_ctx()) as pool:
        lazy = pool.imap(mark_started, [(str(tmp_path / "lazy"), 0)])
        os.mkdir(tmp_path / "lazy")
        eager = pool.imap(mark_started, [(str(tmp_path), 0)], start=True)
        assert _wait_for_file(tmp_path / "0"), "start=True did not submit the first task"
        assert list(eager) == [0]  # the priming step is not a result
        assert os.listdir(tmp_path / "lazy") == []  # without start, nothing runs before next()
        assert list(lazy) == [0]


def test_worker_gets_more_tasks_while_the_caller_holds_a_result(tmp_path):
    """Refill happens before a result is yielded, not at the next ``next()``: a caller that is busy
    with a batch (or drives another pool) never leaves the worker idle."""
    with ProcessPool(1, make_ctx()) as pool:
        it = pool.imap(mark_started, [(str(tmp_path), i) for i in range(5)])
        assert next(it) == 0
        assert _wait_for_file(tmp_path / "1"), "the next task was not submitted before yielding"
        assert list(it) == [1, 2, 3, 4]


def faults_reallocating(nbytes):
    """Page faults of allocating, touching and freeing ``nbytes`` a second time in this process."""
    import resource

    np.ones(nbytes, np.uint8)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    np.ones(nbytes, np.uint8)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_workers_reuse_freed_memory():
    """A sample's buffers (here 4 MiB) are reused from the heap, not mapped and faulted in afresh
    for every sample (one page fault per 4 KiB)."""
    with ProcessPool(1, make_ctx()) as pool:
        faults = list(pool.imap(faults_reallocating, [4 << 20] * 3))
    assert max(faults) < 100, faults


def test_time_to_first_result_is_small():
    t0 = time.perf_counter()
    with ProcessPool(2, make_ctx("fork")) as pool:
        first = next(iter(pool.imap(square, range(4))))
        elapsed = time.perf_counter() - t0
    assert first == 0
    assert elapsed < 0.5, f"pool start + first result took {elapsed:.3f}s"


def test_worker_init_fn_and_torch_threads():
    import torch  # noqa: F401 - workers limit torch threads when torch is loaded

    with ProcessPool(2, make_ctx(), worker_init_fn=record_worker_id) as pool:
        seen = set(pool.imap(worker_id_and_pid, range(20)))
        assert set(pool.imap(torch_threads, range(4))) == {1}
    assert {wid for wid, _ in seen} <= {0, 1}
    assert len({pid for _, pid in seen}) == len({wid for wid, _ in seen})  # one id per process


def random_draws(_):
    time.sleep(0.02)
    return os.getpid(), random.random(), float(np.random.random())


def test_forked_workers_get_distinct_random_streams():
    """A seeded parent must not hand the same numpy/random state to every forked worker."""
    saved = random.getstate(), np.random.get_state()
    random.seed(0)
    np.random.seed(0)
    try:
        with ProcessPool(2, make_ctx("fork")) as pool:
            draws: dict[int, tuple[float, float]] = {}
            for pid, a, b in pool.imap(random_draws, range(8)):
                draws.setdefault(pid, (a, b))  # each worker's first draw (tasks run in order per worker)
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
    assert len(draws) == 2
    (a1, b1), (a2, b2) = draws.values()
    assert a1 != a2 and b1 != b2


def test_worker_init_fn_failure_is_raised():
    def bad_init(worker_id):
        raise RuntimeError(f"init failed in {worker_id}")

    with ProcessPool(1, make_ctx(), worker_init_fn=bad_init) as pool:
        with pytest.raises(RuntimeError, match="init failed in 0") as info:
            list(pool.imap(square, range(3)))
    assert isinstance(info.value.__cause__, UserCodeError)


def test_pool_grows_from_min_workers(live_children):
    with ProcessPool(4, make_ctx(), min_workers=1) as pool:
        assert len(live_children()) == 1
        pids = set(pool.imap(slow_pid, range(24)))
    assert len(pids) > 1  # grew with the queue


def test_pool_grows_only_while_no_worker_message_waits(live_children, monkeypatch):
    """A fork holds the consumer for milliseconds: a waiting result is handled before the next one,
    so the first result never waits for every fork."""
    with ProcessPool(4, make_ctx(), min_workers=1) as pool:
        waiting = [True]
        monkeypatch.setattr(pool, "_messages_waiting", lambda: waiting[0])
        results = pool.imap(slow_pid, range(24))
        first = next(results)
        assert len(live_children()) == 1  # every growth so far found a message waiting
        waiting[0] = False
        pids = {first, *results}
    assert len(pids) > 1  # grows once nothing waits


def test_messages_waiting_sees_a_result_before_it_is_read():
    with ProcessPool(1, make_ctx()) as pool:
        results = pool.imap(square, range(2))
        assert next(results) == 0
        assert _wait_until(pool._messages_waiting)  # the second result, not yet drained
        assert list(results) == [1] and not pool._messages_waiting()


def _wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_retire_idle_stops_workers_once_all_work_is_handed_out(live_children, start_method):
    """``retire_idle``: after the last task of every open imap, idle workers stop before
    ``close()``, the last one becoming the consumer's watchdog (one ``/bin/sh``, killed at close);
    a later imap starts workers again, with the same results."""
    def left() -> list[str]:  # the watchdog shell (and the ``sleep`` it may be running)
        names = []
        for p in live_children():
            try:
                names.append(p.name())
            except psutil.Error:  # exited meanwhile
                pass
        return sorted(n for n in names if n != "sleep")

    with ProcessPool(2, make_ctx(start_method), retire_idle=True) as pool:
        results = pool.imap(square, range(20))
        assert next(results) == 0
        assert len(live_children()) == 2  # tasks still to hand out: nobody retires
        assert list(results) == [i * i for i in range(1, 20)]
        assert _wait_until(lambda: left() == ["sh"])  # before close()
        assert pool._workers == [None, None]
        inner = pool.imap(square, range(30))  # nested: the outer imap is not done while inner runs
        assert list(pool.imap(lambda x: x + 1, inner)) == [i * i + 1 for i in range(30)]
        assert _wait_until(lambda: left() == ["sh"])  # still one watchdog
    assert not pool._retired  # reaped at close
    assert not live_children()


def test_a_consumer_killed_after_its_workers_retired_leaves_no_transfer_files(tmp_path):
    """The retired workers' watchdog removes the files a killed consumer still held (an all-to-all
    step holds every gathered block): nobody else would, the workers being gone."""
    from leak_checks import transfer_files

    script = tmp_path / "consumer.py"
    script.write_text(
        "import os, signal, numpy as np, torchray_loader as rd\n"
        "rd.DataContext.get_current().num_workers = 2\n"
        "def big(b):\n"
        "    return {'id': b['id'], 'x': np.ones((len(b['id']), 50_000), np.float32)}\n"
        "it = rd.range(200, override_num_blocks=10).map_batches(big).random_shuffle(seed=0).iter_batches(batch_size=20)\n"
        "next(it)\n"
        "print(os.getpid(), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    pid = int(proc.stdout.split()[0])
    assert _wait_until(lambda: not transfer_files(pid), timeout=10), transfer_files(pid)


def test_without_retire_idle_workers_wait_for_the_next_imap(live_children):
    with ProcessPool(2, make_ctx()) as pool:
        assert list(pool.imap(square, range(20))) == [i * i for i in range(20)]
        time.sleep(0.2)
        assert len(live_children()) == 2 and None not in pool._workers


# ----------------------------------------------------------------------------- worker death, timeouts


@pytest.mark.parametrize("start_method,workers", [*FORK_SIZES, ("spawn", 2)])
def test_sigkilled_worker_task_is_rerun_exactly_once(tmp_path, start_method, workers):
    marker = str(tmp_path / "killed")
    items = [(i, 7, marker) for i in range(20)]
    with ProcessPool(workers, make_ctx(start_method)) as pool:
        got = list(pool.imap(kill_self_once, items))
        assert os.path.exists(marker)
        assert got == [i * 10 for i in range(20)]
        # the replacement worker serves the next imap
        assert sorted(pool.imap(square, range(10), ordered=False)) == [i * i for i in range(10)]


def test_sigkilled_worker_unordered_still_exactly_once(tmp_path):
    marker = str(tmp_path / "killed")
    with ProcessPool(2, make_ctx()) as pool:
        got = list(pool.imap(kill_self_once, [(i, 3, marker) for i in range(30)], ordered=False))
    assert os.path.exists(marker) and sorted(got) == [i * 10 for i in range(30)]


def test_dead_worker_without_retries_raises_quickly():
    t0 = time.monotonic()
    with ProcessPool(2, make_ctx(max_task_retries=0)) as pool:
        with pytest.raises(WorkerDiedError, match=r"SIGKILL.*'Map\(always_killed\)'"):
            list(pool.imap(always_killed, range(6), name="Map(always_killed)"))
    assert time.monotonic() - t0 < 5


def test_worker_exiting_repeatedly_exhausts_retries():
    with ProcessPool(1, make_ctx(max_task_retries=2)) as pool:
        with pytest.raises(WorkerDiedError, match=r"exit code 7.*ran 3 time"):
            list(pool.imap(exit_hard, range(2)))


def test_hanging_task_times_out_after_retries():
    t0 = time.monotonic()
    with ProcessPool(2, make_ctx(task_timeout_s=0.3, max_task_retries=1)) as pool:
        with pytest.raises(TaskTimeoutError, match="task_timeout_s=0.3"):
            list(pool.imap(hang, range(4)))
    assert 0.6 <= time.monotonic() - t0 < 5  # two attempts of 0.3 s, then the error


def test_task_that_hangs_once_succeeds_on_retry(tmp_path):
    marker = str(tmp_path / "hung")
    with ProcessPool(2, make_ctx(task_timeout_s=0.3, max_task_retries=1)) as pool:
        assert list(pool.imap(hang_once, [(i, marker) for i in range(4)])) == [0, 1, 2, 3]


def slow_init(worker_id):
    time.sleep(0.6)


def test_task_timeout_counts_from_worker_ready_not_process_start():
    ctx = make_ctx(task_timeout_s=0.3, max_task_retries=0)
    with ProcessPool(2, ctx, worker_init_fn=slow_init) as pool:
        assert list(pool.imap(square, range(6))) == [i * i for i in range(6)]


def test_parent_death_mid_task_stops_the_worker():
    """A worker stuck in a task notices a dead parent too (a watchdog thread, not the task loop)."""
    script = textwrap.dedent(
        """
        import os, time
        from torchray_loader.context import DataContext
        from torchray_loader.execution.process_pool import ProcessPool
        pool = ProcessPool(1, DataContext(start_method="fork"))
        it = pool.imap(lambda _: (print(os.getpid(), flush=True), time.sleep(600)), range(1))
        try:
            next(it)
        except BaseException:
            pass
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        worker = int(proc.stdout.readline())
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 5
        while _running(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(worker), "the worker outlived its parent"
    finally:
        proc.kill()
        proc.stdout.close()


# ----------------------------------------------------------------------------- errors


def test_user_exception_keeps_type_and_worker_traceback():
    with ProcessPool(2, make_ctx()) as pool:
        got = []
        with pytest.raises(ValueError, match="bad item 2") as info:
            for x in pool.imap(fail_on_two, range(6), name="Map(fail_on_two)"):
                got.append(x)
        assert got == [0, 1]  # ordered: the error surfaces at its position
        cause = info.value.__cause__
        assert isinstance(cause, UserCodeError)
        assert cause.operator == "Map(fail_on_two)"
        assert "fail_on_two" in cause.worker_traceback and "ValueError: bad item 2" in cause.worker_traceback
        assert list(pool.imap(square, range(3))) == [0, 1, 4]  # the pool is still usable


def test_operator_mark_survives_pickling():
    with ProcessPool(1, make_ctx()) as pool:
        with pytest.raises(KeyError) as info:
            list(pool.imap(fail_marked, [1], name="stage"))
    assert info.value._torchray_operator == "Map(my_udf)"
    assert info.value.__cause__.operator == "Map(my_udf)"


def test_unpicklable_exception_becomes_user_code_error():
    with ProcessPool(1, make_ctx()) as pool:
        with pytest.raises(UserCodeError, match="_Unpicklable") as info:
            list(pool.imap(fail_unpicklable, [1]))
    assert "cannot travel" in info.value.worker_traceback


def test_package_errors_keep_their_type():
    with ProcessPool(1, make_ctx()) as pool:
        with pytest.raises(ReadError, match="broken.jpg") as info:
            list(pool.imap(fail_read_error, [1]))
    assert info.value.path == "broken.jpg"


def test_unpicklable_fn_is_a_type_error():
    gen = (i for i in range(3))  # generators cannot be pickled, even by dill
    with ProcessPool(1, make_ctx()) as pool:
        with pytest.raises(TypeError, match="fn of operator 'stage'"):
            pool.imap(lambda x: gen, [1], name="stage")


def test_unpicklable_item_is_a_type_error():
    with ProcessPool(1, make_ctx()) as pool:
        with pytest.raises(TypeError, match="item 1 of operator 'stage'"):
            list(pool.imap(square, [1, (i for i in range(2))], name="stage"))
        # The results before the bad item are delivered first, then the error.
        it = pool.imap(square, [3, (i for i in range(2)), 4], name="stage")
        assert next(it) == 9
        with pytest.raises(TypeError, match="item 1 of operator 'stage'"):
            next(it)


# ----------------------------------------------------------------------------- cleanup


def test_break_cancels_and_pool_stays_usable(live_children):
    with ProcessPool(2, make_ctx()) as pool:
        for x in pool.imap(sleep_then, [(i, 0.01) for i in range(100)]):
            if x == 3:
                break
        # stale results of the cancelled imap must not leak into this one
        assert list(pool.imap(square, range(20))) == [i * i for i in range(20)]
    assert not live_children()


def test_gc_of_unclosed_pool_stops_workers():
    pool = ProcessPool(2, make_ctx())
    it = pool.imap(big_array, range(8))
    next(it)
    del it, pool  # the finalizer closes it (the fixture checks processes and files)


def test_keyboard_interrupt_in_consumer_loop(live_children):
    with pytest.raises(KeyboardInterrupt):
        with ProcessPool(2, make_ctx()) as pool:
            for x in pool.imap(big_array, range(20)):
                if int(x[0]) == 2:
                    raise KeyboardInterrupt
    assert not live_children()


def test_ctrl_c_while_waiting_for_workers():
    """SIGINT lands while the consumer is blocked waiting: workers ignore it, the consumer stops, and
    the pool can run again (its bookkeeping was restored)."""
    # Python's handler, even where this process inherited an ignored SIGINT (a background job).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    with ProcessPool(2, make_ctx()) as pool:
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                list(pool.imap(sleep_then, [(i, 1.0) for i in range(4)]))
        finally:
            timer.cancel()
            signal.signal(signal.SIGINT, previous)
        assert list(pool.imap(square, range(8))) == [i * i for i in range(8)]


def test_workers_ignore_sigint():
    with ProcessPool(2, make_ctx(max_task_retries=0)) as pool:
        pids = set(pool.imap(slow_pid, range(8)))
        for pid in pids:
            os.kill(pid, signal.SIGINT)
        time.sleep(0.1)
        assert set(pool.imap(slow_pid, range(8))) == pids  # same processes, none died


def test_close_with_busy_workers_is_prompt():
    pool = ProcessPool(2, make_ctx())
    it = pool.imap(sleep_then, [(0, 0.0), (1, 30.0), (2, 30.0)], ordered=False)
    assert next(it) == 0  # the two others are running now
    t0 = time.monotonic()
    pool.close()
    assert time.monotonic() - t0 < 0.2 + 0.5  # no waiting for the tasks (0.5: a loaded machine)
    with pytest.raises(Exception, match="closed"):
        next(it)


def test_close_is_idempotent_and_results_outlive_it():
    pool = ProcessPool(2, make_ctx())
    results = list(pool.imap(big_array, range(3)))
    pool.close()
    pool.close()
    assert [int(r[-1]) for r in results] == [0, 1, 2]
    with pytest.raises(Exception, match="closed"):
        pool.imap(square, [1])


def test_workers_exit_when_the_parent_dies(tmp_path):
    script = textwrap.dedent(
        """
        import os, signal
        from torchray_loader.context import DataContext
        from torchray_loader.execution.process_pool import ProcessPool
        pool = ProcessPool(2, DataContext(start_method="fork"))
        pids = sorted(set(pool.imap(lambda _: (__import__("time").sleep(0.05), os.getpid())[1], range(8))))
        print(" ".join(map(str, pids)), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    pids = [int(p) for p in out.stdout.split()]
    assert pids, out.stderr
    deadline = time.monotonic() + 5
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in pids if _running(p)]
        time.sleep(0.05)
    assert not alive, f"orphaned workers still running: {alive}"


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# ----------------------------------------------------------------------------- bounded memory


def _shm_bytes_of_this_process() -> int:
    """Bytes of transfer files: mapped by this process (unlinked, '(deleted)') or still on disk."""
    total = 0
    with open("/proc/self/maps") as f:
        for line in f:
            if "/torchray_" in line:
                lo, hi = line.split()[0].split("-")
                total += int(hi, 16) - int(lo, 16)
    for d in shm.shm_dirs():
        for name in os.listdir(d):
            if name.startswith(f"torchray_{os.getpid()}_"):
                try:
                    total += os.path.getsize(os.path.join(d, name))
                except OSError:
                    pass
    return total


def _tree_rss(procs: list[psutil.Process]) -> int:
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def _peak_memory_delta(run) -> int:
    """Peak over a baseline of: RSS of this process and its workers + this process's transfer files
    (mapped, or not yet opened). Workers must be running already (their set is fixed here)."""
    procs = [psutil.Process(), *psutil.Process().children(recursive=True)]
    baseline = _tree_rss(procs) + _shm_bytes_of_this_process()
    peak = baseline
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss(procs) + _shm_bytes_of_this_process())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run()
    finally:
        stop.set()
        sampler.join()
    return peak - baseline


def _push_blocks(pool: ProcessPool, done_file: str, n: int, block_bytes: int, straggle_s: float) -> None:
    rows = block_bytes // 8

    def blocks():
        for i in range(n):  # generated lazily: the pool pulls them only when the budget allows
            yield (pa.table({"i": np.full(rows, i, dtype=np.int64)}), done_file, straggle_s, n)

    count = 0
    for i, table in enumerate(pool.imap(passthrough_block, blocks())):
        assert table["i"][0].as_py() == i
        count += 1
        del table
    assert count == n


@pytest.mark.timeout(90)
def test_memory_stays_bounded_by_the_budget(tmp_path):
    """512 MB of 8 MB blocks through a 64 MB budget, with a straggler at the head of the ordered
    stream (without backpressure every later result would pile up in the reorder buffer). Peak
    memory of the whole process tree, shared memory included, stays under budget + 250 MB; the
    same run without a budget goes far above (so the check means something)."""
    budget, block, n = 64 << 20, 8 << 20, 64
    done = tmp_path / "done"
    with ProcessPool(2, make_ctx(memory_budget_bytes=budget)) as pool:
        list(pool.imap(square, range(4)))  # warm the workers up before the baseline
        done.write_bytes(b"")
        bounded = _peak_memory_delta(lambda: _push_blocks(pool, str(done), n, block, 1.0))
    assert bounded < budget + (250 << 20), f"peak {bounded >> 20} MB over baseline"

    with ProcessPool(2, make_ctx(memory_budget_bytes=1 << 40)) as pool:
        list(pool.imap(square, range(4)))
        done.write_bytes(b"")
        unbounded = _peak_memory_delta(lambda: _push_blocks(pool, str(done), n, block, 10.0))
    assert unbounded > budget + (250 << 20), f"unbounded peak only {unbounded >> 20} MB: test not meaningful"


def arena_block_and_pid(_):
    from torchray_loader.blocks import buffers

    out = buffers.empty_rows(1 << 18, (), np.int64)  # 2 MiB: built in the task's transfer file
    out[:] = 7
    return os.getpid(), out


def _transfer_file_mappings(pid: int) -> list[str]:
    with open(f"/proc/{pid}/maps") as f:
        return [line for line in f if shm.PREFIX in line]


def test_an_idle_worker_lets_go_of_its_mapping_of_a_removed_transfer_file():
    with ProcessPool(1, make_ctx()) as pool:
        ((pid, out),) = list(pool.imap(arena_block_and_pid, range(1)))
        assert int(out.sum()) == 7 * (1 << 18)
        del out
        gc.collect()  # the file is free again: the worker keeps its mapping for its next write
        assert _transfer_file_mappings(pid)
        shm_dir = shm.shm_dirs()[0]
        for name in os.listdir(shm_dir):  # removed while the worker idles (as a sweep would)
            if name.startswith(f"{shm.PREFIX}{os.getpid()}_") and "_free_" in name:
                os.unlink(os.path.join(shm_dir, name))
        deadline = time.monotonic() + 10
        while _transfer_file_mappings(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _transfer_file_mappings(pid), "an idle worker holds the memory of a removed file"


SCRIPT_FUNCTIONS = """
import sys
import torch
from torch.utils.data import Dataset
from torchray_loader import RayStyleLoader
import torchray_loader as rd

HANDLE = None  # opened per worker by worker_init_fn, read by the dataset (the HDF5 / database pattern)

def open_handle(worker_id):
    global HANDLE
    HANDLE = f"handle-{worker_id}"

class Batch:
    def __init__(self, samples):
        self.samples = samples

def collate(samples):
    return Batch(samples)

class Handles(Dataset):
    def __len__(self):
        return 4
    def __getitem__(self, i):
        if HANDLE is None:
            raise RuntimeError("worker_init_fn's global is not seen")
        return HANDLE

if __name__ == "__main__":
    method = sys.argv[1]
    kw = dict(num_workers=2, multiprocessing_context=method)
    got = list(RayStyleLoader(Handles(), batch_size=2, worker_init_fn=open_handle, **kw))
    assert got == [["handle-0", "handle-0"], ["handle-1", "handle-1"]], got
    batch = next(iter(RayStyleLoader(Handles(), batch_size=2, worker_init_fn=open_handle, collate_fn=collate, **kw)))
    assert type(batch) is Batch, type(batch)
    # Defined under the guard: a spawned worker's __main__ lacks them, and they travel by value.
    scale = 3
    def times_scale(samples):
        return [len(s) * scale for s in samples]
    assert list(RayStyleLoader(Handles(), batch_size=2, worker_init_fn=open_handle, collate_fn=times_scale,
                               **kw)) == [[24, 24], [24, 24]]
    rd.DataContext.get_current().start_method = method
    rd.DataContext.get_current().num_workers = 2
    out = rd.range(4).map(lambda r: {"id": r["id"] * scale}).take_all()
    assert [r["id"] for r in out] == [0, 3, 6, 9], out
    print("ok")
"""


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_script_functions_reach_workers_by_name_else_by_value(tmp_path, start_method):
    """A script's functions and classes reach workers as the script's own, as DataLoader's workers
    see them (a global set by ``worker_init_fn`` is seen by the dataset; a class made in
    ``collate_fn`` is the script's); one the worker's ``__main__`` lacks arrives by value."""
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text(SCRIPT_FUNCTIONS)
    proc = subprocess.run([sys.executable, str(script), start_method], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
