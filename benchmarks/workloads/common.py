"""Shared pieces of the workloads: sizes, availability checks, Ray start-up."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import default_data_dir
from ..harness import Result, Unavailable

#: Shuffle window for Arrow pipelines (torchray and Ray): rows mixed across ~40 batches.
SHUFFLE_BUFFER = 10_000


@dataclass(frozen=True)
class Sizes:
    tabular_rows: int
    parquet_files: int
    parquet_rows_per_file: int
    images: int
    mnist_train: int
    stream_budget_mb: int
    stream_factor: int
    inference_rows: int


FULL = Sizes(1_000_000, 16, 62_500, 3_000, 60_000, 256, 4, 100_000)
QUICK = Sizes(50_000, 16, 2_000, 96, 4_096, 16, 4, 5_000)


def sizes(quick: bool, scale: float = 1.0) -> Sizes:
    base = QUICK if quick else FULL
    if scale == 1.0:
        return base

    def s(n: int, lo: int) -> int:
        return max(lo, int(n * scale))

    return Sizes(
        tabular_rows=s(base.tabular_rows, 512),
        parquet_files=base.parquet_files,
        parquet_rows_per_file=s(base.parquet_rows_per_file, 64),
        images=s(base.images, 16),
        mnist_train=s(base.mnist_train, 512),
        stream_budget_mb=s(base.stream_budget_mb, 4),
        stream_factor=base.stream_factor,
        inference_rows=s(base.inference_rows, 512),
    )


def warm_epochs(quick: bool) -> int:
    """Epochs timed after the first: one in full mode (rows/s of a warm epoch), none in quick mode
    (a smoke test: rows/s then includes start-up)."""
    return 0 if quick else 1


def data_dir(path: str | None) -> Path:
    return Path(path) if path else default_data_dir()


def new_result(workload: str, variant: str, impl: str, num_workers: int) -> Result:
    return Result(workload=workload, variant=variant, impl=impl, num_workers=num_workers)


# --------------------------------------------------------------------------------------- torchray


def torchray(result: Result, num_workers: int) -> Any:
    """``import torchray_loader as rd`` with ``DataContext.num_workers`` set, noting missing pieces."""
    try:
        import torchray_loader as rd
    except ImportError as exc:
        raise Unavailable(f"torchray_loader does not import: {exc}") from exc
    rd.DataContext.get_current().num_workers = num_workers
    # pyarrow imports pandas lazily, on its first array; torchray_loader starts that import in a
    # background thread at its own import. It is an import, so it is finished here, before the
    # clock starts (``import ray.data`` imports pandas itself, also before the clock).
    try:
        from torchray_loader.blocks.block import warm_up_arrow
    except ImportError:  # an older package: nothing started at import
        pass
    else:
        warm_up_arrow()
    if num_workers > 0 and not process_pool_available():
        result.notes.append("ran inline: torchray_loader/execution/process_pool.py not built yet")
    return rd


def process_pool_available() -> bool:
    try:
        return importlib.util.find_spec("torchray_loader.execution.process_pool") is not None
    except (ImportError, ValueError):
        return False


def require(rd: Any, name: str) -> Any:
    """``rd.<name>``, or an Unavailable naming the missing piece."""
    try:
        return getattr(rd, name)
    except (AttributeError, ImportError) as exc:
        raise Unavailable(f"torchray_loader.{name} not available yet ({type(exc).__name__}: {exc})") from exc


# ------------------------------------------------------------------------------------------- ray


def import_ray() -> Any:
    """``import ray.data`` (not timed), or Unavailable."""
    if importlib.util.find_spec("ray") is None:
        raise Unavailable("ray is not installed (pip install 'ray[data]')")
    try:
        import ray
        import ray.data
    except Exception as exc:  # noqa: BLE001 - a broken install is "unavailable"
        raise Unavailable(f"ray does not import: {type(exc).__name__}: {exc}") from exc
    return ray


def ray_data(result: Result, num_workers: int, **init_kwargs: Any) -> Any:
    """``ray.data`` on a local Ray started with ``num_cpus = max(1, num_workers)`` (once per process;
    the start-up is part of the time to first batch of the first Ray job in the process)."""
    ray = import_ray()
    cpus = max(1, num_workers)
    if not ray.is_initialized():
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, **init_kwargs)
    else:
        have = int(ray.cluster_resources().get("CPU", 0))
        if have != cpus:
            result.notes.append(f"ray already started with num_cpus={have}")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    result.extra["ray_version"] = ray.__version__
    return ray.data


def prepare(impl: str, result: Result, num_workers: int) -> Any:
    """The imports a script does before its pipeline (not timed): torch always, then
    torchray_loader (with ``DataContext.num_workers`` set) or ray. Returns ``rd`` for torchray impls."""
    import torch  # noqa: F401
    import torch.utils.data  # noqa: F401

    if impl in ("torchray", "loader"):
        return torchray(result, num_workers)
    if impl == "ray":
        import_ray()
    return None


def cpu_count() -> int:
    return os.cpu_count() or 1
