"""W5: a dataset 4x larger than the memory budget, streamed; the point is peak memory.

Rows are ``{"id": int64, "data": float32[1024]}`` (4 KiB), generated block by block in the workers
(seeded by the block's first id): 1 GiB against a 256 MiB budget in full mode.

* torchray:   ``DataContext.memory_budget_bytes = budget``;
  ``rd.range(n, override_num_blocks=k).map_batches(make_rows).iter_torch_batches(batch_size=256)``
* ray:        the same with ``ray.data``, object store limited to the budget
  (``ray.init(object_store_memory=...)`` and ``DataContext.execution_options.resource_limits``)
* dataloader: an ``IterableDataset`` that generates the same blocks, split across workers, and yields
  rows; ``DataLoader(ds, batch_size=256, num_workers=n)``

Peak PSS of the process tree is compared with budget + 500 MB (the target); RSS, which counts
memory shared by forked workers once per process, is reported too.
"""

from __future__ import annotations

import numpy as np

from ..harness import MB, Result, execute, measure
from .common import new_result, prepare, ray_data, sizes, warm_epochs

ID = "W5"
TITLE = "stream a dataset 4x the memory budget (peak memory)"
VARIANTS = {"default": ("torchray", "dataloader", "ray")}
BATCH = 256
ROW_FLOATS = 1024
ROW_BYTES = ROW_FLOATS * 4 + 8


def make_rows(batch: dict) -> dict:
    ids = np.asarray(batch["id"], dtype=np.int64)
    rng = np.random.default_rng(int(ids[0]) if len(ids) else 0)
    return {"id": ids, "data": rng.random((len(ids), ROW_FLOATS), dtype=np.float32)}


def plan(quick: bool, scale: float) -> tuple[int, int, int]:
    """(budget bytes, rows, blocks): blocks of 1/16 of the budget."""
    sz = sizes(quick, scale)
    budget = sz.stream_budget_mb * MB
    rows = sz.stream_factor * budget // ROW_BYTES
    rows_per_block = max(16, budget // 16 // ROW_BYTES)
    return budget, rows, max(1, -(-rows // rows_per_block))


class GeneratedRows:
    """The DataLoader baseline: an IterableDataset producing the same blocks, split across workers."""

    def __init__(self, rows: int, blocks: int) -> None:
        self.bounds = np.linspace(0, rows, blocks + 1).astype(np.int64)

    def __iter__(self):
        import torch
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        for b in range(wid, len(self.bounds) - 1, nw):
            block = make_rows({"id": np.arange(self.bounds[b], self.bounds[b + 1])})
            data = torch.from_numpy(block["data"])
            for i, row_id in enumerate(block["id"].tolist()):
                yield {"id": row_id, "data": data[i]}


def run(impl: str, num_workers: int, quick: bool, *, variant: str | None = None, scale: float = 1.0,
        data_dir: str | None = None) -> Result:
    result = new_result(ID, variant or "default", impl, num_workers)
    budget, rows, blocks = plan(quick, scale)

    def body(res: Result) -> Result:
        res.extra.update(rows=rows, blocks=blocks, budget_mb=budget / MB, dataset_mb=round(rows * ROW_BYTES / MB, 1))
        rd = prepare(impl, res, num_workers)
        if rd is not None:
            rd.DataContext.get_current().memory_budget_bytes = budget
        out = measure(res, lambda: setup(impl, num_workers, res, rd, budget, rows, blocks), warm_epochs=warm_epochs(quick))
        if out.peak_pss_mb is not None:
            out.extra["pss_over_budget_mb"] = round(out.peak_pss_mb - budget / MB, 1)
        return out

    return execute(result, body)


def setup(impl: str, num_workers: int, res: Result, rd, budget: int, rows: int, blocks: int):
    if impl == "dataloader":
        from torch.utils.data import DataLoader, IterableDataset

        ds = type("GeneratedRowsDataset", (GeneratedRows, IterableDataset), {})(rows, blocks)
        dl = DataLoader(ds, batch_size=BATCH, num_workers=num_workers)
        return lambda: dl
    if impl == "torchray":
        ds = rd.range(rows, override_num_blocks=blocks).map_batches(make_rows)
        return lambda: ds.iter_torch_batches(batch_size=BATCH)
    if impl == "ray":
        data = ray_data(res, num_workers, object_store_memory=max(budget, 80 * MB))
        ctx = data.DataContext.get_current()
        try:
            ctx.execution_options.resource_limits = ctx.execution_options.resource_limits.copy(
                object_store_memory=budget
            )
        except Exception as exc:  # noqa: BLE001 - API differences between Ray versions
            res.notes.append(f"could not set Ray's object store limit: {exc}")
        ds = data.range(rows, override_num_blocks=blocks).map_batches(make_rows)
        return lambda: ds.iter_torch_batches(batch_size=BATCH)
    raise ValueError(f"unknown impl {impl!r}")
