"""A local Ray runtime for the Ray integration tests: started once per test module that asks for it,
shut down at the module's end (so later tests never fork a process that holds Ray's threads)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import torchray_loader

#: The directory holding the ``torchray_loader`` package: Ray workers must be able to import it.
PACKAGE_ROOT = str(Path(torchray_loader.__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[Any]:
    """``ray`` with a local runtime of 2 CPUs (``ray.init(num_cpus=2)``), no dashboard."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    if ray.is_initialized():  # pragma: no cover - someone else's runtime; do not own it
        yield ray
        return
    with pytest.MonkeyPatch.context() as mp:
        # Workers inherit the raylet's environment: make the package importable wherever pytest runs.
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p))
        mp.setenv("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            import ray.data

            ray.data.DataContext.get_current().enable_progress_bars = False
            yield ray
        finally:
            ray.shutdown()
