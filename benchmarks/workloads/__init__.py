"""The workloads. Each module exposes ``ID``, ``TITLE``, ``VARIANTS`` (variant -> implementations)
and ``run(impl, num_workers, quick, *, variant=None, scale=1.0, data_dir=None) -> Result``.

Implementations: ``torchray`` (the package's Dataset API), ``loader`` (``rd.RayStyleLoader`` over the
same torch dataset the DataLoader baseline uses), ``dataloader`` (``torch.utils.data.DataLoader``, the
code a user writes) and ``ray`` (the equivalent ``ray.data`` code).
"""

from __future__ import annotations

import importlib
from types import ModuleType

MODULES = {
    "W1": "w1_tabular",
    "W2": "w2_parquet",
    "W3": "w3_images",
    "W4": "w4_mnist",
    "W5": "w5_streaming",
    "W6": "w6_inference",
    "W7": "w7_gpu_feed",
}


def get_workload(workload_id: str) -> ModuleType:
    try:
        name = MODULES[workload_id.upper()]
    except KeyError:
        raise ValueError(f"unknown workload {workload_id!r}; known: {', '.join(MODULES)}") from None
    return importlib.import_module(f"{__name__}.{name}")
