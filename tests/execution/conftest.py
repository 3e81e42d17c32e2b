"""Fixtures for the execution tests: every test must leave no worker process and no transfer file.

Process-wide helpers that multiprocessing keeps on purpose (the forkserver and the resource tracker,
started by the first forkserver/spawn pool) are not leaks; they are stopped at the end of each
module so later tests elsewhere see no children either.
"""

from __future__ import annotations

import gc
import glob
import os
import time

import psutil
import pytest

from torchray_loader.execution import shm


def _helper_pids() -> set[int]:
    """PIDs of multiprocess's forkserver and resource tracker, if running."""
    pids: set[int] = set()
    try:
        from multiprocess import forkserver, resource_tracker
    except ImportError:  # pragma: no cover
        return pids
    for pid in (
        getattr(forkserver._forkserver, "_forkserver_pid", None),
        getattr(resource_tracker._resource_tracker, "_pid", None),
    ):
        if pid:
            pids.add(pid)
    return pids


def live_children() -> list[psutil.Process]:
    """Child processes (recursively) that are neither zombies nor multiprocessing's helpers."""
    helpers = _helper_pids()
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.pid not in helpers and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.fixture(name="live_children")
def live_children_fixture():
    """The ``live_children`` function, for tests that check processes mid-test."""
    return live_children


def transfer_files(owner_pid: int | None = None) -> list[str]:
    """Transfer files owned by ``owner_pid`` (default: this process), in every directory shm may use.

    Only this process's files: other test runs on the machine may create their own meanwhile."""
    pattern = f"{shm.PREFIX}{owner_pid or os.getpid()}_*"
    return sorted(f for d in shm.shm_dirs() for f in glob.glob(os.path.join(d, pattern)))


@pytest.fixture(autouse=True)
def no_worker_or_shm_leaks():
    """After each test: no child process and no ``torchray_*`` transfer file remain."""
    before = set(transfer_files())
    yield
    gc.collect()  # pools dropped without close() are cleaned up by their finalizer
    deadline = time.monotonic() + 5.0
    while live_children() and time.monotonic() < deadline:
        time.sleep(0.02)
    children = live_children()
    assert not children, f"leftover child processes: {[(p.pid, p.name()) for p in children]}"
    leaked = sorted(set(transfer_files()) - before)
    assert not leaked, f"leftover shared-memory files: {leaked}"


@pytest.fixture(autouse=True, scope="module")
def stop_multiprocessing_helpers():
    """Stop the forkserver and resource tracker after the module (they would outlive it)."""
    yield
    try:
        from multiprocess import forkserver, resource_tracker
    except ImportError:  # pragma: no cover
        return
    for helper in (forkserver._forkserver, resource_tracker._resource_tracker):
        try:
            helper._stop()
        except Exception:
            pass
