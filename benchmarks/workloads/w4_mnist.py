"""W4: ``torchvision.datasets.MNIST``-format files (60,000 28x28 images), batches of 256, shuffled.

The dataset is ``MNIST(root, train=True, download=False, transform=ToTensor())`` over locally
generated idx files.

* dataloader: ``DataLoader(mnist, batch_size=256, shuffle=True, num_workers=n)``
* loader:     ``rd.RayStyleLoader(mnist, batch_size=256, shuffle=True, num_workers=n)``
* torchray:   ``rd.from_torch(mnist).map_batches(items_to_columns)`` then
  ``iter_torch_batches(batch_size=256, local_shuffle_buffer_size=10_000)``
* ray:        the same with ``ray.data`` (its ``from_torch`` also yields rows ``{"item": (x, y)}``)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import mnist_root
from ..harness import Result, execute, measure
from .common import SHUFFLE_BUFFER, new_result, prepare, ray_data, require, sizes, warm_epochs
from .common import data_dir as resolve_data_dir

ID = "W4"
TITLE = "MNIST-format files (60k x 28x28) via torchvision.datasets.MNIST, batch 256"
VARIANTS = {"default": ("torchray", "loader", "dataloader", "ray")}
BATCH = 256


def items_to_columns(batch: dict) -> dict:
    """``{"item": [(image_tensor, label), ...]}`` -> ``{"image": ..., "label": ...}`` numpy columns."""
    items = batch["item"]
    return {
        "image": np.stack([np.asarray(x) for x, _ in items]),
        "label": np.asarray([y for _, y in items], dtype=np.int64),
    }


def mnist(root: Path):
    from torchvision import datasets, transforms

    return datasets.MNIST(str(root), train=True, download=False, transform=transforms.ToTensor())


def run(impl: str, num_workers: int, quick: bool, *, variant: str | None = None, scale: float = 1.0,
        data_dir: str | None = None) -> Result:
    result = new_result(ID, variant or "default", impl, num_workers)

    def body(res: Result) -> Result:
        sz = sizes(quick, scale)
        root = mnist_root(resolve_data_dir(data_dir), sz.mnist_train)
        res.extra["rows"] = sz.mnist_train
        rd = prepare(impl, res, num_workers)
        import torchvision.datasets  # noqa: F401 - imports are not timed
        import torchvision.transforms  # noqa: F401

        return measure(res, lambda: setup(impl, num_workers, root, res, rd), warm_epochs=warm_epochs(quick))

    return execute(result, body)


def setup(impl: str, num_workers: int, root: Path, res: Result, rd):
    from torch.utils.data import DataLoader

    if impl == "dataloader":
        dl = DataLoader(mnist(root), batch_size=BATCH, shuffle=True, num_workers=num_workers)
        return lambda: dl
    if impl == "loader":
        loader = require(rd, "RayStyleLoader")(mnist(root), batch_size=BATCH, shuffle=True, num_workers=num_workers)
        return lambda: loader
    if impl in ("torchray", "ray"):
        from_torch = require(rd, "from_torch") if impl == "torchray" else ray_data(res, num_workers).from_torch
        ds = from_torch(mnist(root)).map_batches(items_to_columns, batch_size=1024)
        return lambda: ds.iter_torch_batches(batch_size=BATCH, local_shuffle_buffer_size=SHUFFLE_BUFFER)
    raise ValueError(f"unknown impl {impl!r}")
