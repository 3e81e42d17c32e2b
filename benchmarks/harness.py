"""Timing, memory sampling and process isolation for the benchmark suite.

One *job* is one (workload, variant, impl, num_workers, repeat). A job runs in a child process (its
own, in full mode; one per (impl, num_workers) group in quick mode) so that the peak RSS of the
process tree and the time to first batch are those of a fresh training script:

* **time to first batch** runs from just after the imports (and after the benchmark data exists on
  disk or in memory) through building the pipeline (``ray.init`` included for Ray), creating the
  iterator and receiving the first batch;
* **rows/s** is measured over a full *warm* epoch (the second one, through a fresh iterator on the
  same pipeline object: new DataLoader workers, a new torchray execution, Ray already started), so
  one-off costs (imports in workers, page cache) are in the time to first batch, not in rows/s;
* **peak RSS** is the largest sum of RSS over the job process and all its descendants, sampled by a
  separate process (not a thread: no GIL contention with the loader) every 0.1 s; **peak PSS** (same,
  shared pages split between the processes that map them, so forked workers are not counted several
  times) is sampled every 2 s and at the end (a PSS sample makes the kernel walk every page table).

The consumer loop touches each batch minimally (reads one element) so the loader is what is measured.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

__all__ = [
    "Unavailable",
    "Result",
    "Job",
    "MemorySampler",
    "measure",
    "execute",
    "touch",
    "batch_rows",
    "consume",
    "run_jobs",
    "median",
]

MB = 1024 * 1024
#: A timed epoch stops this many seconds after its first batch (rows/s is then over the rows it delivered
#: and the whole time since the epoch began, and the row says so); keeps very slow configurations from
#: taking an hour. Set per job process from the CLI.
MAX_EPOCH_S: float | None = 60.0
REPO_ROOT = Path(__file__).resolve().parents[1]


class Unavailable(Exception):
    """A piece a workload needs is missing (not built yet, not installed, no CUDA)."""


@dataclass
class Result:
    """The outcome of one job. ``status`` is ``ok``, ``unavailable`` or ``error`` (then ``reason``)."""

    workload: str
    variant: str
    impl: str
    num_workers: int
    status: str = "ok"
    reason: str = ""
    repeat: int = 0
    rows: int = 0
    rows_per_s: float | None = None
    ttfb_s: float | None = None
    epoch_s: float | None = None
    cold_rows_per_s: float | None = None
    peak_rss_mb: float | None = None
    peak_pss_mb: float | None = None
    base_rss_mb: float | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Job:
    workload: str
    variant: str
    impl: str
    num_workers: int
    repeat: int
    quick: bool
    scale: float
    data_dir: str
    max_epoch_s: float | None = 60.0

    @property
    def key(self) -> str:
        return f"{self.workload}/{self.variant}/{self.impl}/nw={self.num_workers}/r{self.repeat}"


# ---------------------------------------------------------------------------------------- memory


_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def _pss(pid: int) -> int:
    """Proportional set size from the kernel's summary (``smaps_rollup``), not psutil's
    ``memory_full_info``, which parses the whole ``smaps`` (~1,000 mappings a torch process). Either
    way the kernel walks every page table (~35 ms a 600 MB process): sample it rarely."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:  # kernels before 4.14
        pass
    return getattr(psutil.Process(pid).memory_full_info(), "pss", 0)


def _tree_memory(pids: list[int], pss: bool) -> tuple[int, int]:
    """``(RSS, PSS)`` summed over ``pids`` (PSS 0 unless ``pss``); processes that exited count 0."""
    rss = pss_total = 0
    for pid in pids:
        try:
            rss += _rss(pid)
            if pss:
                pss_total += _pss(pid)
        except (OSError, ValueError, psutil.Error):
            continue
    return rss, pss_total


def _descendants(pid: int) -> list[int]:
    """``pid`` and its descendants, from ``/proc/<pid>/task/<tid>/children`` (psutil's ``children``
    scans every process of the machine: ~20 ms a call; it is the fallback where the kernel does not
    list children)."""
    if not os.path.exists(f"/proc/{pid}/task/{pid}/children"):  # pragma: no cover - kernel option
        try:
            return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
        except psutil.Error:
            return [pid]
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:  # exited
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
            except OSError:  # the thread exited meanwhile
                continue
    return out


def sampler_main(pid: int, interval: float, pss_every: int) -> None:
    """Body of the sampler process: sample the tree of ``pid`` until a line arrives on stdin, then
    print the peaks as JSON. The tree is listed again with every PSS sample; RSS is read from
    ``statm`` in between: the sampler must cost next to nothing."""
    import select

    me = os.getpid()

    def tree() -> list[int]:
        return [p for p in _descendants(pid) if p != me]

    pids = tree()
    peak_rss = peak_pss = 0
    i = 0
    print("ready", flush=True)
    while True:
        pss = i % pss_every == 0
        if pss:
            pids = tree()
        rss, pss_total = _tree_memory(pids, pss)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss_total)
        i += 1
        if select.select([sys.stdin], [], [], interval)[0]:
            break
    rss, pss_total = _tree_memory(tree(), True)
    print(json.dumps({"rss": max(peak_rss, rss), "pss": max(peak_pss, pss_total)}), flush=True)


class MemorySampler:
    """Peak RSS (every ``interval`` s) and peak PSS (every ``pss_every`` samples, and at the end) of
    this process tree.

    PSS costs the kernel a walk of every page table (~35 ms a 600 MB process): sampled every 0.5 s
    over three processes, it took a fifth of a core away from the loaders being measured.

    The sampling runs in a separate process, so none of its work holds the measured process's GIL.
    """

    def __init__(self, interval: float = 0.1, pss_every: int = 20) -> None:
        self.interval = interval
        self.pss_every = pss_every
        self.peak_rss = 0
        self.peak_pss = 0
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> MemorySampler:
        code = "import sys; from benchmarks.harness import sampler_main; a = sys.argv[1:]; sampler_main(int(a[0]), float(a[1]), int(a[2]))"
        self._proc = subprocess.Popen(
            [sys.executable, "-c", code, str(os.getpid()), str(self.interval), str(self.pss_every)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
        )
        assert self._proc.stdout is not None
        if self._proc.stdout.readline().strip() != "ready":  # the first sample is taken: the base counts
            raise RuntimeError("the memory sampler process did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            out, _ = proc.communicate("stop\n", timeout=60)
            peaks = json.loads(out.strip().splitlines()[-1])
            self.peak_rss, self.peak_pss = peaks["rss"], peaks["pss"]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def current_rss_mb() -> float:
    return _tree_memory(_descendants(os.getpid()), pss=False)[0] / MB


# ---------------------------------------------------------------------------------------- batches


def _first_leaf(batch: Any) -> Any:
    """The tensor that carries the batch dimension: the first value of a dict batch, the first item of
    a collated ``(inputs, labels)`` tuple; a list of rows (strings, objects) is itself the leaf."""
    while True:
        if isinstance(batch, dict):
            if not batch:
                return None
            batch = next(iter(batch.values()))
        elif isinstance(batch, (list, tuple)) and batch and _looks_collated(batch):
            batch = batch[0]
        else:
            return batch


def _looks_collated(batch: Sequence[Any]) -> bool:
    # DataLoader's ``[x]`` / ``[images, labels]``: a few tensors/arrays with the same first dimension.
    if len(batch) > 4 and not isinstance(batch, tuple):
        return False
    try:
        n = batch[0].shape[0]
        return all(len(x.shape) > 0 and x.shape[0] == n for x in batch)
    except (AttributeError, TypeError, IndexError):
        return isinstance(batch[0], (dict, list, tuple))


def _rows(leaf: Any) -> int:
    shape = getattr(leaf, "shape", None)
    if shape is not None and len(shape) > 0:
        return int(shape[0])
    return len(leaf)


def _read_one(leaf: Any) -> None:
    shape = getattr(leaf, "shape", None)
    if shape is None:
        if len(leaf):
            _ = leaf[0]
        return
    if not len(shape) or not all(shape):
        return
    if type(leaf).__module__.startswith("torch") and leaf.device.type == "cpu" and not leaf.requires_grad:
        leaf.numpy().item(0)  # a few times cheaper than tensor indexing + .item()
        return
    v = leaf[(0,) * len(shape)]
    if hasattr(v, "item"):
        v.item()


def batch_rows(batch: Any) -> int:
    """Rows in a batch: the first dimension of its first tensor (dict, tuple or list batches)."""
    leaf = _first_leaf(batch)
    return 0 if leaf is None else _rows(leaf)


def touch(batch: Any) -> None:
    """Read one element of the batch (so lazily produced data is really there), nothing more."""
    leaf = _first_leaf(batch)
    if leaf is not None:
        _read_one(leaf)


def consume(batch: Any) -> int:
    """What the timed loops do with each batch: read one element, return the number of rows."""
    leaf = _first_leaf(batch)
    if leaf is None:
        return 0
    _read_one(leaf)
    return _rows(leaf)


# ---------------------------------------------------------------------------------------- measure


EpochFactory = Callable[[], Iterable[Any]]


def measure(
    result: Result,
    setup: Callable[[], EpochFactory],
    *,
    warm_epochs: int = 1,
    warmup_max_s: float = 5.0,
    min_warm_s: float = 3.0,
    consume: Callable[[Any], int] = consume,
) -> Result:
    """Fill ``result`` with the time to first batch, rows/s of warm epochs and peak memory.

    ``setup()`` builds the pipeline (timed as part of the time to first batch) and returns a
    zero-argument callable that gives a fresh iterable over one epoch each time it is called.
    With ``warm_epochs``, the first (cold) epoch is a warm-up that stops (``break``) after
    ``warmup_max_s`` seconds; then at least ``warm_epochs`` warm epochs run, more while they took
    less than ``min_warm_s`` in all, and rows/s is their rows over their time (each epoch's start-up
    included): a 0.2 s epoch alone is mostly noise on a shared machine. Without, rows/s is that of
    the whole cold epoch, set-up included.
    """
    import gc

    gc.collect()
    result.base_rss_mb = round(current_rss_mb(), 1)
    with MemorySampler() as mem:
        t0 = time.perf_counter()
        epoch = setup()
        it = iter(epoch())
        try:
            first = next(it)
        except StopIteration:
            raise RuntimeError("the pipeline produced no batches") from None
        result.ttfb_s = time.perf_counter() - t0
        rows = consume(first)
        first = batch = None
        deadline = t0 + warmup_max_s if warm_epochs > 0 else float("inf")
        complete = True
        for batch in it:
            rows += consume(batch)
            if time.perf_counter() > deadline:
                complete = False
                break
        close = getattr(it, "close", None)
        if close is not None and not complete:
            close()
        it = batch = None
        cold = time.perf_counter() - t0
        result.cold_rows_per_s = rows / cold if cold > 0 else None
        if complete:
            result.rows, result.rows_per_s, result.epoch_s = rows, result.cold_rows_per_s, cold
        else:
            result.extra["warmup"] = f"stopped after {rows} rows"
        warm_times, warm_rows = [], []
        limit = MAX_EPOCH_S or float("inf")
        while warm_epochs and (len(warm_times) < warm_epochs or sum(warm_times) < min_warm_s):
            t1 = time.perf_counter()
            n = 0
            partial = False
            first_at = None
            it = iter(epoch())
            for batch in it:
                n += consume(batch)
                now = time.perf_counter()
                if first_at is None:
                    first_at = now
                elif now - first_at > limit:  # counted from the first batch: a slow start is still measured
                    partial = True
                    break
            if partial and hasattr(it, "close"):
                it.close()
            it = batch = None
            warm_times.append(time.perf_counter() - t1)
            warm_rows.append(n)
            if partial:
                result.notes.append(f"partial epoch: {n:,} rows in {warm_times[-1]:.0f} s")
                result.extra["partial_epoch"] = True
                break
            elif complete and n != rows:
                result.notes.append(f"warm epoch gave {n} rows, first epoch {rows}")
                break
        if warm_times:
            result.rows = warm_rows[0]
            result.epoch_s = statistics.median(warm_times)
            result.rows_per_s = sum(warm_rows) / sum(warm_times) if sum(warm_times) > 0 else None
            result.extra["warm_epochs"] = len(warm_times)
        epoch = None
    result.peak_rss_mb = round(mem.peak_rss / MB, 1)
    result.peak_pss_mb = round(mem.peak_pss / MB, 1) if mem.peak_pss else None
    return result


def execute(result: Result, body: Callable[[Result], Result]) -> Result:
    """Run ``body(result)``, turning a missing piece into an ``unavailable`` row and any other
    exception into an ``error`` row (with the traceback in ``extra``), never raising."""
    try:
        return body(result)
    except Unavailable as exc:
        result.status, result.reason = "unavailable", str(exc)
    except (ImportError, AttributeError, NotImplementedError) as exc:
        # a piece of torchray_loader (or an optional library) that is not there yet
        result.status, result.reason = "unavailable", f"{type(exc).__name__}: {exc}"
        result.extra["traceback"] = traceback.format_exc()[-4000:]
    except BaseException as exc:  # noqa: BLE001 - a benchmark row, not a crash
        if isinstance(exc, KeyboardInterrupt):
            raise
        result.status, result.reason = "error", f"{type(exc).__name__}: {exc}"[:500]
        result.extra["traceback"] = traceback.format_exc()[-4000:]
    result.rows_per_s = result.ttfb_s = None
    return result


def median(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


# ---------------------------------------------------------------------------------------- children


def child_main(jobs_path: str, results_path: str) -> int:
    """Entry point of a job process: run each job in turn, appending one JSON line per event."""
    from .workloads import get_workload

    global MAX_EPOCH_S
    jobs = [Job(**j) for j in json.loads(Path(jobs_path).read_text())]
    with open(results_path, "a", buffering=1) as out:
        for job in jobs:
            out.write(json.dumps({"event": "start", "key": job.key, "t": time.time()}) + "\n")
            MAX_EPOCH_S = job.max_epoch_s
            module = get_workload(job.workload)
            res = module.run(
                job.impl, job.num_workers, job.quick, variant=job.variant, scale=job.scale, data_dir=job.data_dir
            )
            res.repeat = job.repeat
            out.write(json.dumps({"event": "result", "key": job.key, "result": res.to_dict()}) + "\n")
    try:
        import ray  # noqa: F401 - only if a workload imported it

        if "ray" in sys.modules and sys.modules["ray"].is_initialized():
            sys.modules["ray"].shutdown()
    except Exception:
        pass
    return 0


def _kill_tree(proc: subprocess.Popen) -> None:
    """Stop a child we started and everything it started, by process id."""
    try:
        parent = psutil.Process(proc.pid)
        procs = [*parent.children(recursive=True), parent]
    except psutil.Error:
        procs = []
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _read_events(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    if not path.exists():
        return [], offset
    with open(path) as f:
        f.seek(offset)
        data = f.read()
    lines = data.split("\n")
    complete, rest = lines[:-1], lines[-1]
    events = [json.loads(line) for line in complete if line.strip()]
    return events, offset + len(data) - len(rest)


def run_jobs(
    jobs: Sequence[Job],
    *,
    work_dir: Path,
    job_timeout_s: float,
    on_result: Callable[[Job, Result], None] | None = None,
) -> list[Result]:
    """Run ``jobs`` in order in one child process (restarted after a crash or a timeout, the lost
    job becoming an ``error`` row). Returns one Result per job."""
    work_dir.mkdir(parents=True, exist_ok=True)
    pending = list(jobs)
    results: dict[str, Result] = {}
    attempt = 0
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("TORCHRAY_PROGRESS_BARS", "0")
    env.setdefault("RAY_DEDUP_LOGS", "0")
    env.setdefault("PYTHONWARNINGS", "ignore")
    while pending:
        attempt += 1
        tag = f"{pending[0].workload}-{pending[0].impl}-nw{pending[0].num_workers}-{os.getpid()}-{attempt}-{time.time_ns()}"
        jobs_path = work_dir / f"jobs-{tag}.json"
        results_path = work_dir / f"events-{tag}.jsonl"
        log_path = work_dir / f"log-{tag}.txt"
        jobs_path.write_text(json.dumps([asdict(j) for j in pending]))
        by_key = {j.key: j for j in pending}
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks", "_child", str(jobs_path), str(results_path)],
                cwd=str(REPO_ROOT), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
            offset, current, started = 0, None, time.monotonic()
            failure = ""
            while True:
                events, offset = _read_events(results_path, offset)
                for ev in events:
                    if ev["event"] == "start":
                        current, started = ev["key"], time.monotonic()
                    elif ev["event"] == "result":
                        res = Result(**ev["result"])
                        results[ev["key"]] = res
                        current = None
                        if on_result:
                            on_result(by_key[ev["key"]], res)
                rc = proc.poll()
                if rc is not None:
                    events, offset = _read_events(results_path, offset)
                    for ev in events:
                        if ev["event"] == "result":
                            res = Result(**ev["result"])
                            results[ev["key"]] = res
                            if on_result:
                                on_result(by_key[ev["key"]], res)
                    if rc != 0:
                        failure = f"job process exited with code {rc} (log: {log_path})"
                    break
                if time.monotonic() - started > job_timeout_s:
                    _kill_tree(proc)
                    failure = f"timeout: no result after {job_timeout_s:.0f} s (log: {log_path})"
                    break
                time.sleep(0.2)
        remaining = [j for j in pending if j.key not in results]
        if remaining and failure:
            lost = next((j for j in remaining if j.key == current), remaining[0])
            res = Result(lost.workload, lost.variant, lost.impl, lost.num_workers, status="error",
                         reason=failure + _log_tail(log_path), repeat=lost.repeat)
            results[lost.key] = res
            if on_result:
                on_result(lost, res)
            remaining = [j for j in remaining if j.key != lost.key]
        elif remaining:  # exited cleanly without running them: should not happen
            for j in remaining:
                results[j.key] = Result(j.workload, j.variant, j.impl, j.num_workers, status="error",
                                        reason=f"not run (log: {log_path})", repeat=j.repeat)
            remaining = []
        pending = remaining
        for p in (jobs_path, results_path):
            p.unlink(missing_ok=True)
        if not failure:
            log_path.unlink(missing_ok=True)
    return [results[j.key] for j in jobs]


def _log_tail(path: Path, n: int = 400) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return ("; last output: " + " | ".join(lines[-3:])[-n:]) if lines else ""
