"""W6: batch inference with a callable-class model under ``ActorPoolStrategy(size=2)``, 100k rows.

The model is an MLP 32 -> 512 -> 512 -> 16 built (seeded) in ``__init__``; ``__call__`` runs it under
``torch.inference_mode()`` on batches of 1,024 rows. The input is 100k x 32 float32 in memory,
as 20 arrays (as if it came from 20 files) so there is parallelism for two actors.

* torchray:   ``rd.from_numpy(parts).map_batches(Predictor, compute=rd.ActorPoolStrategy(size=2),
  batch_size=1024)``, consumed with ``iter_batches(batch_size=None)``
* ray:        the same with ``ray.data`` (Ray started with at least 2 CPUs, which the two actors need)
* dataloader: what a PyTorch user writes: ``DataLoader(TensorDataset(X), batch_size=1024,
  num_workers=n)`` and the model called in the main process
"""

from __future__ import annotations

import numpy as np

from ..data import tabular
from ..harness import Result, execute, measure
from .common import new_result, prepare, ray_data, require, sizes, warm_epochs

ID = "W6"
TITLE = "batch inference, callable class under ActorPoolStrategy(size=2), 100k rows"
VARIANTS = {"default": ("torchray", "dataloader", "ray")}
BATCH = 1024
PARTS = 20


def build_model():
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 16))
    return model.eval()


class Predictor:
    def __init__(self) -> None:
        self.model = build_model()

    def __call__(self, batch: dict) -> dict:
        import torch

        with torch.inference_mode():
            return {"output": self.model(torch.as_tensor(batch["data"])).numpy()}


def run(impl: str, num_workers: int, quick: bool, *, variant: str | None = None, scale: float = 1.0,
        data_dir: str | None = None) -> Result:
    result = new_result(ID, variant or "default", impl, num_workers)

    def body(res: Result) -> Result:
        X = tabular(sizes(quick, scale).inference_rows, seed=6)
        res.extra["rows"] = len(X)
        rd = prepare(impl, res, num_workers)
        import torch.nn  # noqa: F401 - imports are not timed

        return measure(res, lambda: setup(impl, num_workers, X, res, rd), warm_epochs=warm_epochs(quick))

    return execute(result, body)


def setup(impl: str, num_workers: int, X: np.ndarray, res: Result, rd):
    if impl == "dataloader":
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        model = build_model()
        dl = DataLoader(TensorDataset(torch.from_numpy(X)), batch_size=BATCH, num_workers=num_workers)

        def epoch():
            with torch.inference_mode():
                for (xb,) in dl:
                    yield {"output": model(xb)}

        return epoch
    parts = np.array_split(X, PARTS)
    if impl == "torchray":
        strategy = require(rd, "ActorPoolStrategy")(size=2)
        ds = rd.from_numpy(parts).map_batches(Predictor, compute=strategy, batch_size=BATCH)
        return lambda: ds.iter_batches(batch_size=None)
    if impl == "ray":
        data = ray_data(res, max(2, num_workers))
        ds = data.from_numpy(parts).map_batches(Predictor, compute=data.ActorPoolStrategy(size=2), batch_size=BATCH)
        return lambda: ds.iter_batches(batch_size=None)
    raise ValueError(f"unknown impl {impl!r}")
