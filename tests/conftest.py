"""Shared fixtures: every test starts from a fresh DataContext and leaves no workers behind."""

from __future__ import annotations

import os

import pytest

import torchray_loader as rd


@pytest.fixture(autouse=True)
def fresh_data_context():
    """Each test gets its own DataContext (tests may tune it); progress bars are off in tests."""
    ctx = rd.DataContext()
    ctx.enable_progress_bars = False
    rd.DataContext._set_current(ctx)
    yield ctx
    rd.DataContext._set_current(rd.DataContext())


def _children() -> list:
    import psutil

    return [p for p in psutil.Process(os.getpid()).children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture
def no_leaks():
    """Assert the test left no child process and no shared-memory segment of the package."""
    import time

    before_shm = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    yield
    deadline = time.time() + 10
    while _children() and time.time() < deadline:
        time.sleep(0.05)
    assert not _children(), f"leftover child processes: {_children()}"
    if os.path.isdir("/dev/shm"):
        leaked = {f for f in set(os.listdir("/dev/shm")) - before_shm if f.startswith("torchray")}
        assert not leaked, f"leftover shared-memory files: {sorted(leaked)}"
