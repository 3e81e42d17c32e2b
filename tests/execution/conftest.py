"""Fixtures for the execution tests: every test must leave no worker process and no transfer file.

Process-wide helpers that multiprocessing keeps on purpose (the forkserver and the resource tracker,
started by the first forkserver/spawn pool) are not leaks; they are stopped at the end of each
module so later tests elsewhere see no children either.
"""

from __future__ import annotations

import gc
import time

import leak_checks
import pytest
from leak_checks import live_children, transfer_files


@pytest.fixture(name="live_children")
def live_children_fixture():
    """The ``live_children`` function, for tests that check processes mid-test."""
    return live_children


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
    leak_checks.stop_multiprocessing_helpers()
