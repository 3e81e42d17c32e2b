"""W2: 16 parquet files, 1M rows (62,500 rows x 34 columns each), batches of 256.

* dataloader: a map-style Dataset over the rows: all files read into memory with pyarrow at
  construction (one numpy array per column, shared with forked workers), ``__getitem__`` returns a
  dict row, ``default_collate`` builds the batch: what a user writes for tabular parquet data.
* torchray:   ``rd.read_parquet(dir).iter_torch_batches(batch_size=256)``
* ray:        the same with ``ray.data``
"""

from __future__ import annotations

from pathlib import Path

from ..data import parquet_dir
from ..harness import Result, execute, measure
from .common import data_dir as resolve_data_dir
from .common import new_result, prepare, ray_data, require, sizes, warm_epochs

ID = "W2"
TITLE = "16 parquet files, 1M rows x 34 columns, batch 256"
VARIANTS = {"default": ("torchray", "dataloader", "ray")}
BATCH = 256


class ParquetRows:
    """The idiomatic map-style dataset over parquet rows (a user's ``Dataset`` subclass)."""

    def __init__(self, root: str | Path) -> None:
        import pyarrow.parquet as pq

        table = pq.read_table(str(root))
        self.columns = {name: table.column(name).to_numpy() for name in table.column_names}
        self.length = table.num_rows

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        return {name: col[i] for name, col in self.columns.items()}


def run(impl: str, num_workers: int, quick: bool, *, variant: str | None = None, scale: float = 1.0,
        data_dir: str | None = None) -> Result:
    result = new_result(ID, variant or "default", impl, num_workers)

    def body(res: Result) -> Result:
        sz = sizes(quick, scale)
        root = parquet_dir(resolve_data_dir(data_dir), sz.parquet_files, sz.parquet_rows_per_file)
        res.extra["rows"] = sz.parquet_files * sz.parquet_rows_per_file
        rd = prepare(impl, res, num_workers)
        import pyarrow.parquet  # noqa: F401 - an import, not timed

        return measure(res, lambda: setup(impl, num_workers, root, res, rd), warm_epochs=warm_epochs(quick))

    return execute(result, body)


def setup(impl: str, num_workers: int, root: Path, res: Result, rd):
    if impl == "dataloader":
        from torch.utils.data import DataLoader, Dataset

        ds = type("ParquetRowsDataset", (ParquetRows, Dataset), {})(root)
        dl = DataLoader(ds, batch_size=BATCH, num_workers=num_workers)
        return lambda: dl
    if impl == "torchray":
        ds = require(rd, "read_parquet")(str(root))
        return lambda: ds.iter_torch_batches(batch_size=BATCH)
    if impl == "ray":
        ds = ray_data(res, num_workers).read_parquet(str(root))
        return lambda: ds.iter_torch_batches(batch_size=BATCH)
    raise ValueError(f"unknown impl {impl!r}")
