"""torchray_loader: Ray Data pipelines for PyTorch on one machine, and a one-line DataLoader swap.

Example:
    >>> import torchray_loader as rd
    >>> ds = rd.range(6).map_batches(lambda b: {"x": b["id"] * 2}, batch_size=3)
    >>> [b["x"].tolist() for b in ds.iter_torch_batches(batch_size=3)]
    [[0, 2, 4], [6, 8, 10]]
"""

from .blocks import Schema
from .context import DataContext
from .dataset import DataIterator, Dataset, MaterializedDataset
from .errors import (
    ErrorBudgetExceeded,
    ReadError,
    TaskTimeoutError,
    TorchRayError,
    UserCodeError,
    WorkerDiedError,
)
from .plan.compute import ActorPoolStrategy, TaskPoolStrategy
from .read_api import *  # noqa: F403 - the sources are the public API
from .read_api import __all__ as _read_all

__version__ = "0.1.0"

from .blocks.block import start_arrow_warm_up as _start_arrow_warm_up  # noqa: E402

_start_arrow_warm_up()

# Sorted in place after the star-expansion, so ruff and mypy still see a literal list of names.
__all__ = [
    "ActorPoolStrategy",
    "DataContext",
    "DataIterator",
    "Dataset",
    "ErrorBudgetExceeded",
    "MaterializedDataset",
    "ReadError",
    "Schema",
    "TaskPoolStrategy",
    "TaskTimeoutError",
    "TorchRayError",
    "UserCodeError",
    "WorkerDiedError",
    *_read_all,
]
__all__.sort()


def __getattr__(name: str):
    # Heavy or optional pieces load on first use, so `import torchray_loader` stays fast.
    if name == "RayStyleLoader":
        from .pytorch.loader import RayStyleLoader

        return RayStyleLoader
    if name == "from_torch":
        from .pytorch.from_torch import from_torch

        return from_torch
    if name == "from_ray":
        from .integrations.ray import from_ray

        return from_ray
    raise AttributeError(f"module 'torchray_loader' has no attribute {name!r}")
