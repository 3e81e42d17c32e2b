"""Shared fixtures: every test starts from a fresh DataContext and leaves no workers behind."""

from __future__ import annotations

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


@pytest.fixture
def no_leaks():
    """Assert the test left no child process and no shared-memory file of the package."""
    import gc
    import time

    from leak_checks import live_children, transfer_files

    before = set(transfer_files())
    yield
    gc.collect()
    deadline = time.time() + 10
    while live_children() and time.time() < deadline:
        time.sleep(0.05)
    assert not live_children(), f"leftover child processes: {live_children()}"
    leaked = sorted(set(transfer_files()) - before)
    assert not leaked, f"leftover shared-memory files: {leaked}"
