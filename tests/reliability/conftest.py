"""Fixtures for the fault-injection tests; the invariants they check are described in
:mod:`reliability_helpers`."""

from __future__ import annotations

import gc
import os
import tempfile
import time
from pathlib import Path

import leak_checks
import pytest
from reliability_helpers import live_children, transfer_files


@pytest.fixture(autouse=True)
def no_leaks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """After each test: no worker process, no transfer file of this process, no temp file.

    Yields the private temp directory (what ``tempfile.gettempdir()`` returns during the test).
    """
    private_tmp = tmp_path / "pkg-tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    before = set(transfer_files(os.getpid()))
    yield private_tmp

    def leftovers() -> tuple[list, list[str], list[str]]:
        children = live_children()
        files = sorted(set(transfer_files(os.getpid())) - before)
        # Only the package's own files (all named torchray*): libraries may cache things there too
        # (torch's inductor creates ``torchinductor_<user>`` on import).
        temps = sorted(p.name for p in private_tmp.iterdir() if p.name.startswith("torchray"))
        return children, files, temps

    if any(leftovers()):
        # Iterators and pools dropped without close() are cleaned up by their finalizers, at the
        # latest when the garbage collector breaks their reference cycles; workers take a moment
        # to exit. (Collected only when needed: a full collection costs about a second here.)
        gc.collect()
        deadline = time.monotonic() + 10.0
        while any(leftovers()) and time.monotonic() < deadline:
            time.sleep(0.05)
    children, files, temps = leftovers()
    assert not children, f"leftover child processes: {[(p.pid, p.name()) for p in children]}"
    assert not files, f"leftover shared-memory files: {files}"
    assert not temps, f"leftover temporary files: {temps}"


@pytest.fixture(autouse=True, scope="module")
def stop_multiprocessing_helpers():
    """Stop the forkserver and resource tracker after the module (they would outlive it)."""
    yield
    leak_checks.stop_multiprocessing_helpers()


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    """A directory for :func:`first_time` marker files."""
    d = tmp_path / "markers"
    d.mkdir()
    return d
