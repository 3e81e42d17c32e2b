"""W1: in-memory tabular data, 1M rows x 32 float32, batches of 256, shuffled.

* dataloader: ``DataLoader(TensorDataset(X), batch_size=256, shuffle=True, num_workers=n)``
* loader:     ``rd.RayStyleLoader(TensorDataset(X), batch_size=256, shuffle=True, num_workers=n)``
* torchray:   ``rd.from_numpy(X).iter_torch_batches(batch_size=256, local_shuffle_buffer_size=10_000)``
* ray:        the same with ``ray.data``
"""

from __future__ import annotations

from ..data import tabular
from ..harness import Result, execute, measure
from .common import SHUFFLE_BUFFER, new_result, prepare, ray_data, require, sizes, torchray, warm_epochs

ID = "W1"
TITLE = "in-memory tabular 1M x 32 float32, batch 256, shuffled"
VARIANTS = {"default": ("torchray", "loader", "dataloader", "ray")}
BATCH = 256


def run(impl: str, num_workers: int, quick: bool, *, variant: str | None = None, scale: float = 1.0,
        data_dir: str | None = None) -> Result:
    result = new_result(ID, variant or "default", impl, num_workers)

    def body(res: Result) -> Result:
        X = tabular(sizes(quick, scale).tabular_rows)
        res.extra["rows"] = len(X)
        prepare(impl, res, num_workers)
        return measure(res, lambda: setup(impl, num_workers, X, res), warm_epochs=warm_epochs(quick))

    return execute(result, body)


def setup(impl: str, num_workers: int, X, res: Result):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    if impl == "dataloader":
        dl = DataLoader(TensorDataset(torch.from_numpy(X)), batch_size=BATCH, shuffle=True, num_workers=num_workers)
        return lambda: dl
    if impl == "loader":
        rd = torchray(res, num_workers)
        loader = require(rd, "RayStyleLoader")(
            TensorDataset(torch.from_numpy(X)), batch_size=BATCH, shuffle=True, num_workers=num_workers
        )
        return lambda: loader
    if impl == "torchray":
        rd = torchray(res, num_workers)
        ds = rd.from_numpy(X)
        return lambda: ds.iter_torch_batches(batch_size=BATCH, local_shuffle_buffer_size=SHUFFLE_BUFFER)
    if impl == "ray":
        data = ray_data(res, num_workers)
        ds = data.from_numpy(X)
        return lambda: ds.iter_torch_batches(batch_size=BATCH, local_shuffle_buffer_size=SHUFFLE_BUFFER)
    raise ValueError(f"unknown impl {impl!r}")
