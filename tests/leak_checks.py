"""What a leak is, for every test directory: worker processes and ``torchray_*`` transfer files.

Multiprocessing's own long-lived helpers (the forkserver and the resource tracker, started by the
first forkserver/spawn pool) are not leaks.
"""

from __future__ import annotations

import glob
import os

import psutil

from torchray_loader.execution import shm


def _helper_modules() -> list[tuple[object, object]]:
    """(forkserver, resource_tracker) of multiprocess (the package's pools) and of the standard
    library's multiprocessing (torch's DataLoader, used by baselines and differential tests)."""
    import multiprocessing.forkserver
    import multiprocessing.resource_tracker

    out: list[tuple[object, object]] = [(multiprocessing.forkserver, multiprocessing.resource_tracker)]
    try:
        from multiprocess import forkserver, resource_tracker
    except ImportError:  # pragma: no cover
        return out
    return [*out, (forkserver, resource_tracker)]


def helper_pids() -> set[int]:
    """PIDs of the forkservers and resource trackers of multiprocess and multiprocessing, if running."""
    pids: set[int] = set()
    for forkserver, resource_tracker in _helper_modules():
        for pid in (
            getattr(forkserver._forkserver, "_forkserver_pid", None),
            getattr(resource_tracker._resource_tracker, "_pid", None),
        ):
            if pid:
                pids.add(pid)
    return pids


def live_children() -> list[psutil.Process]:
    """Child processes (recursively) that are neither zombies nor multiprocessing's helpers."""
    helpers = helper_pids()
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.pid not in helpers and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def transfer_files(owner_pid: int | None = None) -> list[str]:
    """Transfer files owned by ``owner_pid`` (default: this process), in every directory shm may use.

    Only that process's files: other test runs on the machine may create their own meanwhile."""
    pattern = f"{shm.PREFIX}{owner_pid or os.getpid()}_*"
    return sorted(f for d in shm.shm_dirs() for f in glob.glob(os.path.join(d, pattern)))


def stop_multiprocessing_helpers() -> None:
    """Stop the forkservers and resource trackers (they would outlive the tests that started them)."""
    for forkserver, resource_tracker in _helper_modules():
        for helper in (forkserver._forkserver, resource_tracker._resource_tracker):  # type: ignore[attr-defined]
            try:
                helper._stop()
            except Exception:  # noqa: BLE001 - best effort
                pass
