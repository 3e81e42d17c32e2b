"""``from_torch``: a torch dataset as a torchray :class:`~torchray_loader.Dataset` with column ``item``.

As in Ray, each sample becomes one row whose ``item`` column holds the sample as a Python object
(schema ``item  <class 'object'>``). Unlike Ray (one sequential read task), a map-style dataset is cut
into index ranges read in parallel by the worker processes; a torch ``IterableDataset`` is read by one
task (its order is only defined sequentially). The dataset reaches each worker once per execution
(``Read.shared``), not with every task. Datasets :func:`.batched_fetch.batched_samples` knows
(``TensorDataset``, torchvision's in-memory MNIST and CIFAR families) gather a range as one batch.
A block's samples of one layout (tuples, lists, dicts of equal-shape tensors, ints, floats) are
pickled and unpickled in bulk (:mod:`..blocks.uniform_pickle`), not one by one; others, PIL images
among them, take one pickle each.

Invariant: the rows come out in index order (``dataset[0]``, ``dataset[1]``, ...) whatever the number
of workers; block boundaries depend only on ``len(dataset)`` and ``override_num_blocks``.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from torch.utils.data import IterableDataset

from ..blocks.object_block import ObjectBlock
from ..blocks.tensors import PythonObjectType
from ..dataset import Dataset
from ..execution.pool import SharedRef
from ..io.read_task import ReadTask
from ..plan import Read
from .batched_fetch import batched_samples

__all__ = ["from_torch"]

#: Rows per block: per read task of a map-style dataset, per chunk of an IterableDataset. A sample is
#: a Python object of unknown size, often an image: small blocks keep the first batch early.
_ROWS_PER_BLOCK = 1024


def _read_range(dataset_ref: SharedRef, start: int, stop: int) -> Iterator[pa.Table | ObjectBlock]:
    dataset = dataset_ref.get()
    indices = list(range(start, stop))
    gather = batched_samples(dataset)
    if gather is not None:
        # Fresh objects (views of a batch gathered for this task): a UDF fused after the read may
        # take them as they are.
        yield ObjectBlock("item", gather(indices))
        return
    if (getitems := getattr(dataset, "__getitems__", None)) is not None:
        samples = list(getitems(indices))
    else:
        samples = [dataset[i] for i in indices]
    yield ObjectBlock("item", samples).to_table()  # pickled: the dataset may return objects it keeps


def _read_iterable(dataset: Any) -> Iterator[pa.Table]:
    pending: list[Any] = []
    for sample in dataset:
        pending.append(sample)
        if len(pending) >= _ROWS_PER_BLOCK:
            yield ObjectBlock("item", pending).to_table()
            pending = []
    if pending:
        yield ObjectBlock("item", pending).to_table()


def from_torch(dataset: Any, *, override_num_blocks: int | None = None) -> Dataset:
    """A Dataset with one row per sample of a torch dataset, in column ``item``.

    Works with any map-style dataset (``__getitem__`` and ``__len__``: torchvision's ``MNIST``,
    ``CIFAR10``, ``FakeData``, ``ImageFolder``...) and with ``IterableDataset``. Use ``map`` to turn
    ``item`` into tensor columns.

    Example:
        >>> import torch, torchray_loader as rd
        >>> ds = rd.from_torch(torch.utils.data.TensorDataset(torch.arange(3)))
        >>> print(ds.schema())
        Column  Type
        ------  ----
        item    <class 'object'>
        >>> ds.map(lambda row: {"x": int(row["item"][0])}).take_all()
        [{'x': 0}, {'x': 1}, {'x': 2}]
    """
    schema = pa.schema([("item", PythonObjectType())])
    if isinstance(dataset, IterableDataset):
        return Dataset(Read((ReadTask(functools.partial(_read_iterable, dataset)),), "ReadTorch", schema))
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise TypeError(
            f"from_torch expects a torch Dataset with __getitem__ and __len__, or an IterableDataset; "
            f"got {type(dataset).__name__}"
        )
    from ..read_api import _block_bounds

    n = len(dataset)
    ref = SharedRef(f"from_torch-{uuid.uuid4().hex}", dataset)
    tasks = tuple(
        ReadTask(functools.partial(_read_range, ref, a, b), num_rows=b - a)
        for a, b in _block_bounds(n, override_num_blocks, rows_per_block=_ROWS_PER_BLOCK)
        if b > a
    )
    return Dataset(Read(tasks, "ReadTorch", schema, shared={ref.key: dataset}))
