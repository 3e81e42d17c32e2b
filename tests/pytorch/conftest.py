"""Fixtures for the RayStyleLoader tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def stop_multiprocessing_helpers():
    """Stop the long-lived helpers that spawn-based tests start (multiprocess's and the standard
    library's forkserver and resource tracker, e.g. from ``torch.multiprocessing.spawn``), so later
    tests' leak checks see no children."""
    yield
    import multiprocessing.forkserver
    import multiprocessing.resource_tracker

    from leak_checks import stop_multiprocessing_helpers as stop_multiprocess_helpers

    stop_multiprocess_helpers()
    for helper in (multiprocessing.forkserver._forkserver, multiprocessing.resource_tracker._resource_tracker):
        try:
            helper._stop()
        except Exception:  # noqa: BLE001 - best effort
            pass
