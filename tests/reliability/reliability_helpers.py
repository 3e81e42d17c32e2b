"""Helpers for the fault-injection tests (imported by the test modules and ``conftest.py``).

Every test in this directory runs under the autouse ``no_leaks`` fixture (``conftest.py``), which
states what no fault may leave behind (promise 6, "Clean"):

* no live child process (zombies and multiprocessing's own forkserver/resource tracker aside);
* no shared-memory transfer file ``torchray_<this pid>_*`` in any directory :mod:`shm` uses;
* no temporary file or directory: the package's temp files (read-error ledgers, spill
  directories, all named ``torchray*``) go to ``tempfile.gettempdir()``, which the fixture points at
  a private, initially empty directory for the duration of the test; none may remain afterwards.

Faults are injected with :func:`first_time` (a marker file created with ``O_EXCL``: true in exactly one
process, exactly once, so "fail on the first attempt, succeed on the retry" works across worker
processes) and by child interpreters (:func:`start_child` / :func:`finish_child`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import psutil
from leak_checks import live_children, transfer_files  # tests/leak_checks.py: what a leak is
from torch.utils.data import TensorDataset

__all__ = [
    "REPO_ROOT",
    "PerSampleTensors",
    "alive",
    "child_env",
    "finish_child",
    "first_time",
    "live_children",
    "start_child",
    "transfer_files",
    "wait_gone",
    "workers",
]

class PerSampleTensors(TensorDataset):
    """A ``TensorDataset`` fetched sample by sample in worker processes, as a user's own dataset is.

    (``RayStyleLoader`` gathers a plain ``TensorDataset`` in the training process, vectorised, whatever
    ``num_workers`` is; these tests are about what happens to the workers.)"""

    def __getitem__(self, index: int) -> tuple:
        return super().__getitem__(index)


#: The repository root: child interpreters import the package from here (no install needed).
REPO_ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------ processes


def alive(pids: Iterable[int]) -> list[int]:
    """The pids of ``pids`` that name a running (non-zombie) process."""
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_gone(pids: Iterable[int], timeout: float = 10.0) -> list[int]:
    """Wait until none of ``pids`` is alive; return those still alive after ``timeout``."""
    pids = list(pids)
    deadline = time.monotonic() + timeout
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive(pids)


# ------------------------------------------------------------------------------------------ faults


def first_time(directory: str | os.PathLike, key: str) -> bool:
    """True exactly once per ``(directory, key)``, across all processes (``O_EXCL`` marker file)."""
    try:
        fd = os.open(os.path.join(directory, key), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def workers() -> list[int]:
    """Pids of this process's live worker processes."""
    return [p.pid for p in live_children()]



# ------------------------------------------------------------------------------------------ children


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env["TORCHRAY_PROGRESS_BARS"] = "0"
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def start_child(code: str, *args: str, new_session: bool = False) -> subprocess.Popen:
    """Start ``python -c code args...``; ``code`` reports by printing one JSON object per line.

    ``new_session``: the child leads its own process group, so it may signal that group (a
    simulated Ctrl-C) without reaching pytest."""
    # A shell without job control starts background jobs with SIGINT ignored, and Python keeps an
    # ignored SIGINT: the child restores Python's own handler, so a simulated Ctrl-C is one.
    code = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n" + code
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        cwd=str(REPO_ROOT),
        start_new_session=new_session,
    )


def finish_child(proc: subprocess.Popen, timeout: float = 120.0) -> tuple[int, list[dict], str]:
    """Wait for a child of :func:`start_child`: ``(returncode, JSON lines it printed, stderr)``."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"child hung for {timeout}s; stdout={out[-2000:]!r} stderr={err[-2000:]!r}") from None
    reports = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return proc.returncode, reports, err
